"""Images read a batch at a time: `Images` indexes like the uint8 (N, C, H, W) tensor that
`Batches` and every reader of a dataset use, but reads only the images asked for.

Its records come from a folder's on-disk cache (`DiskRecords`, written by data.cache) or from a
tensor in memory (`TensorRecords`, for crops and flips of a named dataset). A view also carries
the photo augmentation of data.crop and data.flip: indexing gives centre crops (validation, test,
every command), and `augmented(index, draws)` the random crops and flips of training batches,
with numbers the batches draw from their own seeded generator, so a resumed run cuts what an
uninterrupted one did.

Disk records are read with positioned reads into fresh buffers, never through a memory map:
every page of a map that is touched counts towards the process's resident memory, so one epoch
over a mapped folder grows it to the folder's size; pages read into a buffer that is then
dropped leave only the kernel's page cache, which is not the process's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import xxhash

from latentspace.errors import DataError

__all__ = ["INDEX_COLUMNS", "DiskRecords", "Images", "TensorRecords", "checksum"]

# the columns of a cache's index.npy, one row per image: which shard, where in it, the stored
# shape (C, H, W), and the checksum of its bytes
INDEX_COLUMNS = ("shard", "offset", "channels", "height", "width", "checksum")
_SHARD, _OFFSET, _C, _H, _W, _SUM = range(6)
_OPEN_SHARDS = 128  # shards a DiskRecords keeps open at most (a process has ~1024 descriptors)


def checksum(data: memoryview | bytes) -> int:
    """A record's checksum, checked on every read: XXH3 (64 bits, one dropped to fit int64). It
    costs 1 us on a 96x96 colour image where zlib's CRC-32 cost 25-50 us, half of a read."""
    return int(xxhash.xxh3_64_intdigest(data) >> 1)


class Records(Protocol):
    """Where `Images` reads from: N records, each (c, h, w) uint8 at its own size."""

    def __len__(self) -> int: ...
    def sizes(self) -> np.ndarray: ...  # (N, 3) int64: c, h, w of each record
    def read(self, rows: np.ndarray) -> list[np.ndarray]: ...
    def uniform(self, rows: np.ndarray, channels: int) -> torch.Tensor: ...
    def name(self, row: int) -> str: ...


class DiskRecords:
    """The records of a folder's cache (see data.cache for the layout). `on_damage(shard)` is
    told of a shard whose bytes fail their checksum before the one-line error is raised, so the
    cache can drop it and decode it again next time."""

    def __init__(
        self,
        shard_paths: Sequence[Path],
        index: np.ndarray,
        names: Sequence[str],
        on_damage: Callable[[int], None] = lambda shard: None,
    ) -> None:
        self.shard_paths = list(shard_paths)
        self.index = index
        self.names = list(names)
        self.on_damage = on_damage
        # shard -> an open descriptor, least recently used first: a shuffled batch touches most
        # shards, and opening each once a batch cost more than the checksums (bench/data_memory)
        self._files: dict[int, int] = {}

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the shards held open (they are opened again when read)."""
        files, self._files = getattr(self, "_files", {}), {}
        for descriptor in files.values():
            os.close(descriptor)

    def _descriptor(self, shard: int) -> int:
        descriptor = self._files.pop(shard, None)
        if descriptor is None:
            if len(self._files) >= _OPEN_SHARDS:
                os.close(self._files.pop(next(iter(self._files))))
            descriptor = os.open(self.shard_paths[shard], os.O_RDONLY | os.O_CLOEXEC)
        self._files[shard] = descriptor
        return descriptor

    def __len__(self) -> int:
        return len(self.index)

    def sizes(self) -> np.ndarray:
        return self.index[:, _C:_SUM]

    def name(self, row: int) -> str:
        return self.names[row]

    def _each(self, rows: np.ndarray, into: Callable[[int, int], np.ndarray]) -> None:
        """Read every row's bytes (grouped by shard, one open file per shard) into the buffer
        `into(position, nbytes)` gives; a short read or a wrong checksum is a DataError."""
        entries = self.index[rows].tolist()  # Python ints: cheaper per record than NumPy's
        by_shard: dict[int, list[int]] = {}
        for position, entry in enumerate(entries):
            by_shard.setdefault(entry[_SHARD], []).append(position)
        for shard, positions in by_shard.items():
            path = self.shard_paths[shard]
            try:
                descriptor = self._descriptor(shard)
                for position in positions:
                    _, offset, c, h, w, expected = entries[position]
                    buffer = into(position, c * h * w)
                    read = os.preadv(descriptor, [buffer.data], offset)  # no seek: positioned
                    if read != buffer.size or checksum(buffer.data) != expected:
                        self._damaged(shard, int(rows[position]))
            except OSError as error:
                raise DataError(
                    f"cannot read the image cache {path}: {error.strerror or error}; delete "
                    f"{path.parent} and it is decoded again"
                ) from None

    def _damaged(self, shard: int, row: int) -> None:
        path = self.shard_paths[shard]
        descriptor = self._files.pop(shard, None)
        if descriptor is not None:
            os.close(descriptor)
        self.on_damage(shard)
        raise DataError(
            f"the image cache {path} is damaged ({self.names[row]} fails its checksum): it is "
            "decoded again the next time this folder is used"
        )

    def read(self, rows: np.ndarray) -> list[np.ndarray]:
        sizes = self.sizes()[rows].tolist()
        pieces = [np.empty(c * h * w, dtype=np.uint8) for c, h, w in sizes]
        self._each(rows, lambda position, nbytes: pieces[position])
        return [piece.reshape(size) for piece, size in zip(pieces, sizes, strict=True)]

    def uniform(self, rows: np.ndarray, channels: int) -> torch.Tensor:
        """The records (all of one size) straight into one (B, C, H, W) tensor; a grey record
        read as colour is repeated on the 3 channels, as Pillow's convert("RGB") does."""
        if len(rows) == 0:
            return torch.empty((0, channels, 0, 0), dtype=torch.uint8)
        _, h, w = (int(v) for v in self.sizes()[rows[0]])
        out = torch.empty((len(rows), channels, h, w), dtype=torch.uint8)
        flat = out.numpy().reshape(len(rows), -1)
        grey = np.flatnonzero(self.index[rows, _C] != channels)
        pieces = {int(p): np.empty(h * w, dtype=np.uint8) for p in grey}
        self._each(rows, lambda position, nbytes: pieces.get(position, flat[position]))
        for position, piece in pieces.items():
            flat[position].reshape(channels, h * w)[:] = piece
        return out


class TensorRecords:
    """An (N, C, H, W) uint8 tensor in memory as records (all of one size)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor.cpu()

    def __len__(self) -> int:
        return len(self.tensor)

    def sizes(self) -> np.ndarray:
        return np.tile(np.array(self.tensor.shape[1:], dtype=np.int64), (len(self.tensor), 1))

    def name(self, row: int) -> str:
        return f"image {row}"

    def read(self, rows: np.ndarray) -> list[np.ndarray]:
        return list(self.tensor[torch.from_numpy(rows)].numpy())

    def uniform(self, rows: np.ndarray, channels: int) -> torch.Tensor:
        batch = self.tensor[torch.from_numpy(rows)]
        return batch if batch.shape[1] == channels else batch.expand(-1, channels, -1, -1)


def _rows(key: Any, count: int) -> np.ndarray:
    """The positions an index (int, slice, list, 1-D tensor or array of ints or bools) selects."""
    if isinstance(key, torch.Tensor):
        key = key.cpu().numpy()
    if isinstance(key, np.ndarray) and key.dtype.kind in "iu" and key.ndim == 1:
        # a batch's positions (the common case): checked and wrapped as indexing would, without
        # an arange of the whole dataset per batch (a larger dataset, larger allocations)
        if len(key) and not (-count <= key.min() and key.max() < count):
            raise IndexError(f"index out of range for {count} images")
        return np.where(key < 0, key + count, key).astype(np.int64)
    return np.arange(count)[key].reshape(-1).astype(np.int64)


class Images:
    """uint8 images (len, C, H, W) read from `records` on demand: `len()`, `.shape`,
    `[index]` (a tensor), `select(index)` (a view), `augmented(index, generator)`.

    rows: which records, in order (a view of a view is a view of the records). crop: the side of
    the square every image is cut to (centre crops by indexing, random ones in `augmented`);
    without it every record must have one size. flip: `augmented` mirrors half of them."""

    dtype = torch.uint8
    device = torch.device("cpu")  # the images stay on the host; Batches moves each batch

    def __init__(
        self,
        records: Records,
        channels: int,
        *,
        rows: np.ndarray | None = None,
        crop: int | None = None,
        flip: bool = False,
        augments: bool = False,
    ) -> None:
        self.records = records
        self.channels = channels
        self.rows = np.arange(len(records), dtype=np.int64) if rows is None else rows
        self.crop, self.flip, self.augments = crop, flip, augments
        sizes = records.sizes()[self.rows]
        if crop is not None:
            self.side = (crop, crop)
        elif len(sizes):
            self.side = (int(sizes[0, 1]), int(sizes[0, 2]))
            if not (sizes[:, 1:] == sizes[0, 1:]).all():
                raise ValueError("records of different sizes need a crop")  # callers check first
        else:
            self.side = (0, 0)

    def _view(self, **changes: Any) -> Images:
        settings = {"rows": self.rows, "crop": self.crop, "flip": self.flip}
        settings["augments"] = self.augments
        return Images(self.records, self.channels, **{**settings, **changes})

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), self.channels, *self.side))

    def __len__(self) -> int:
        return len(self.rows)

    def numel(self) -> int:
        return int(np.prod(self.shape))

    def to(self, device: torch.device | str) -> Images:
        """Itself: the images stay on the host and each batch is moved (see `device`)."""
        return self

    def select(self, index: Any) -> Images:
        """The images at `index`, as a view (nothing is read)."""
        return self._view(rows=self.rows[_rows(index, len(self.rows))])

    def training(self) -> Images:
        """This view, with random crops and flips for `Batches` to draw (`augments`)."""
        return self._view(augments=True)

    def __getitem__(self, key: Any) -> torch.Tensor:
        """Read the images `key` selects, as a tensor (centre crops with a crop); a tuple key
        indexes further into them, as on a tensor."""
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        batch = self._read(self.rows[_rows(key, len(self.rows))])
        if isinstance(key, int | np.integer):
            batch = batch[0]
        return batch[rest] if rest else batch

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        if self.crop is None:
            return self.records.uniform(rows, self.channels)
        middle = torch.full((len(rows), 2), 0.5)  # a draw of 0.5 places the window centrally
        return self._cut(rows, middle, torch.zeros(len(rows), dtype=torch.bool))

    def augmented(self, index: Any, draws: torch.Tensor) -> torch.Tensor:
        """The images at `index` (positions in this view) cut and mirrored as `draws` say:
        (len(index), 3) uniform numbers in [0, 1), drawn by the batches' generator, three an
        image whatever the settings (top, left, mirrored when < 0.5 under flip)."""
        rows = self.rows[_rows(index, len(self.rows))]
        mirror = draws[:, 2] < 0.5 if self.flip else torch.zeros(len(rows), dtype=torch.bool)
        if self.crop is None and not mirror.any():
            return self.records.uniform(rows, self.channels)
        return self._cut(rows, draws[:, :2], mirror)

    def _cut(self, rows: np.ndarray, where: torch.Tensor, mirror: torch.Tensor) -> torch.Tensor:
        """Windows of self.side from each record: where[i] in [0, 1)^2 places record i's window
        (top, left) between its first and last possible position."""
        height, width = self.side
        out = torch.empty((len(rows), self.channels, height, width), dtype=torch.uint8)
        for i, piece in enumerate(self.records.read(rows)):
            _, h, w = piece.shape
            top = min(int(where[i, 0] * (h - height + 1)), h - height)
            left = min(int(where[i, 1] * (w - width + 1)), w - width)
            window = piece[:, top : top + height, left : left + width]
            if mirror[i]:
                window = window[:, :, ::-1]
            out[i] = torch.from_numpy(np.ascontiguousarray(window))
        return out


def check_crop(images: Images | torch.Tensor, crop: int, names: Sequence[str] | None) -> None:
    """Every image is at least crop x crop, or one line naming the smallest."""
    sizes = images.records.sizes()[images.rows] if isinstance(images, Images) else None
    if sizes is None:
        sizes = np.tile(np.array(images.shape[1:]), (len(images), 1))
    sides = sizes[:, 1:].min(axis=1)
    if len(sides) and sides.min() < crop:
        i = int(sides.argmin())
        who = names[i] if names is not None else f"image {i}"
        raise DataError(
            f"data.crop = {crop}, but {who} is {sizes[i, 2]}x{sizes[i, 1]}: use a crop of at most "
            f"{sides.min()} or remove the smaller images"
        )
