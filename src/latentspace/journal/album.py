"""Images to an album and back through a run's model: `compress`, `decompress`, and the
in-memory `encode_album` / `decode_album` that the files and the benchmark share.

The model is reached through what it declares (`to_symbols`, `from_symbols`, `frequency_table`,
`quality_levels`, `code_shape`, `check_size`), never by its family. An album records the SHA-256
of the weights it was made with and is refused by any other model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from latentspace.data.files import IMAGE_SUFFIXES, load_image
from latentspace.errors import ConfigError, DataError
from latentspace.journal.coding import SymbolCoder
from latentspace.journal.container import (
    Album,
    AlbumError,
    Entry,
    Stream,
    by_size,
    pack,
    unpack,
    who,
)
from latentspace.models import MODELS
from latentspace.run_files import atomic_write
from latentspace.runs import Run, open_run, weights_sha256

__all__ = [
    "Compressed",
    "Decoded",
    "compress",
    "decode_album",
    "decompress",
    "encode_album",
    "open_codec",
    "read_images",
]

_CAPABILITIES = (
    "to_symbols",
    "from_symbols",
    "frequency_table",
    "context_channels",
    "spatial_context",
    "quality_levels",
    "code_shape",
)
# images per network pass. Smaller passes stay in the CPU's caches: the Fashion-MNIST codec's
# decoder on one thread (2048 images, the other core busy) ran 10-40% faster in passes of 64 to
# 128 images than of 512 (width 64: about 1070 against 780 images/s; width 32: 2840 against 2110)
_CHUNK = 128


@dataclasses.dataclass(frozen=True)
class Compressed:
    """What `compress` wrote: the album, its images, its quality and its bytes (whole file, and
    the payloads alone)."""

    path: Path
    images: int
    quality: int
    bytes: int
    payload_bytes: int


@dataclasses.dataclass(frozen=True)
class Decoded:
    """An album read back: images (C, H, W) uint8 by index (None where `problems` says why),
    their names, and the album's header."""

    album: Album
    images: list[np.ndarray | None]
    names: list[str]

    @property
    def problems(self) -> dict[int, str]:
        return self.album.problems


def open_codec(run_dir: str | Path, device: str = "cpu") -> tuple[Run, Any]:
    """A run and its model, refused in one line unless the model can compress."""
    run = open_run(run_dir, device)
    if not all(hasattr(run.model, name) for name in _CAPABILITIES):
        able = [name for name, cls in MODELS.items() if hasattr(cls, "to_symbols")]
        raise ConfigError(
            f"{run.path} is a {run.model.name} model, which has no entropy model to compress "
            f"with: train a model of family {' or '.join(able)}"
        )
    return run, run.model


# ---- in memory ----------------------------------------------------------------------------------
def encode_album(
    model: Any,
    images: Sequence[torch.Tensor],
    quality: int,
    *,
    weights: str,
    run_path: str = "",
    names: Sequence[str] | None = None,
    group_bytes: int = 0,
) -> bytes:
    """images: (C, H, W) uint8 each, any size the model codes -> the album's bytes. Each image
    is its own stream, or with group_bytes > 0 images of a size share streams of about that many
    bytes (coding.SymbolCoder.encode_many)."""
    for image in images:
        model.check_size(image.shape[1], image.shape[2])
    coder = SymbolCoder(
        model.frequency_table(quality), model.context_channels, model.spatial_context
    )
    streams: list[Stream] = []
    for members in by_size([(i.shape[1], i.shape[2]) for i in images]).values():
        for start in range(0, len(members), _CHUNK):
            chosen = members[start : start + _CHUNK]
            x = torch.stack([images[i] for i in chosen]).float() / 255
            symbols = model.to_symbols(x, quality).cpu().numpy()
            taken = 0
            for count, payload in coder.encode_many(symbols, group_bytes):
                streams.append(Stream(tuple(chosen[taken : taken + count]), payload))
                taken += count
    labels = list(names) if names is not None else [""] * len(images)
    entries = [
        Entry(int(i.shape[1]), int(i.shape[2]), label)
        for i, label in zip(images, labels, strict=True)
    ]
    channels = int(images[0].shape[0]) if images else int(model.image_shape[0])
    return pack(Album(weights, quality, channels, run_path, entries, streams))


def _check_header(album: Album, model: Any, weights: str, name: str, run: str) -> None:
    if album.weights_sha256 != weights:
        raise AlbumError(
            f"{name} was made with the model whose weights have SHA-256 {album.weights_sha256}, "
            f"but {run} has {weights}: decompress it with the run that made it (--run)"
        )
    if not 1 <= album.quality <= model.quality_levels or album.channels != model.image_shape[0]:
        raise AlbumError(f"{name} is damaged (quality {album.quality}, {album.channels} channels)")


def decode_album(
    data: bytes, model: Any, *, weights: str, name: str, run: str = "the run"
) -> Decoded:
    """An album's bytes -> its images. A wrong model, a damaged header or index, or a future
    format raise AlbumError; an image that cannot be read is None with its problem, and every
    other image is decoded."""
    album = unpack(data, name)
    _check_header(album, model, weights, name, run)
    coder = SymbolCoder(
        model.frequency_table(album.quality), model.context_channels, model.spatial_context
    )
    problems, entries = album.problems, album.entries
    codes: dict[int, np.ndarray] = {}
    readable: dict[tuple[int, int], list[Stream]] = {}
    for stream in album.streams:
        first = entries[stream.members[0]]
        try:
            model.check_size(first.height, first.width)
        except DataError as error:
            for i in stream.members:
                problems[i] = f"{who(i, entries[i].name)}: {error}"
            continue
        readable.setdefault((first.height, first.width), []).append(stream)
    for size, streams in readable.items():
        symbols = coder.decode_many(
            [s.payload for s in streams], model.code_shape(*size), [len(s.members) for s in streams]
        )
        indices = [i for s in streams for i in s.members]
        for i, code in zip(indices, symbols, strict=True):
            if code is None:
                problems[i] = f"{who(i, entries[i].name)} is damaged (its code does not decode)"
            else:
                codes[i] = code
    images: list[np.ndarray | None] = [None] * len(album.entries)
    sizes = [(e.height, e.width) for e in album.entries]
    decodable = list(codes)
    for size, members in by_size([sizes[i] for i in decodable]).items():
        indices = [decodable[k] for k in members]
        for start in range(0, len(indices), _CHUNK):
            chosen = indices[start : start + _CHUNK]
            batch = torch.from_numpy(np.stack([codes[i] for i in chosen])).long()
            pixels = model.from_symbols(batch, album.quality, size)
            as_bytes = (pixels * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
            for i, image in zip(chosen, as_bytes, strict=True):
                images[i] = image
    names = [e.name or f"{i + 1:06d}.png" for i, e in enumerate(album.entries)]
    return Decoded(album, images, names)


# ---- files -----------------------------------------------------------------------------------
def read_images(
    inputs: Sequence[str | Path], channels: int
) -> tuple[list[torch.Tensor], list[str]]:
    """Image files, and the image files inside folders (sorted, sub-folders included), as
    (C, H, W) uint8 at their own size with `channels` channels; names: a file's own name, or its
    path inside the folder it was found in."""
    found: list[tuple[Path, str]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            inside = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            found += [(p, p.relative_to(item).as_posix()) for p in inside if p.is_file()]
        elif item.is_file():
            found.append((item, item.name))
        else:
            raise DataError(f"{item} not found: give image files or folders of them")
    if not found:
        raise DataError(f"no images in {', '.join(map(str, inputs))}")
    seen: dict[str, Path] = {}
    for path, name in found:
        key = str(Path(name).with_suffix(".png"))
        if key in seen:
            raise DataError(f"{seen[key]} and {path} would both decompress to {key}: rename one")
        seen[key] = path
    return [load_image(path, channels) for path, _ in found], [name for _, name in found]


def compress(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    quality: int | None = None,
    bytes_per_image: float | None = None,
    group_bytes: int = 0,
    device: str = "cpu",
) -> Compressed:
    """Compress image files (and folders of them) into the album `out`, written atomically.
    quality: 1..the model's levels (default: the highest); bytes_per_image: the highest quality
    whose album takes at most that many bytes per image (whole file); group_bytes: 0 (each
    image its own stream) or the bytes that images share a stream up to (`encode_album`)."""
    if quality is not None and bytes_per_image is not None:
        raise ConfigError("give a quality or a byte budget, not both")
    if group_bytes < 0:
        raise ConfigError(f"group bytes = {group_bytes} must be 0 (each image alone) or more")
    run, model = open_codec(run_dir, device)
    images, names = read_images(inputs, int(model.image_shape[0]))
    weights, run_path = weights_sha256(run.path), str(Path(run.path).resolve())
    levels = [quality] if quality is not None else list(range(model.quality_levels, 0, -1))
    for level in levels:
        data = encode_album(
            model,
            images,
            level,
            weights=weights,
            run_path=run_path,
            names=names,
            group_bytes=group_bytes,
        )
        if bytes_per_image is None or len(data) / len(images) <= bytes_per_image:
            break
    else:
        raise ConfigError(
            f"even quality 1 takes {len(data) / len(images):.1f} bytes per image, more than "
            f"--bytes {bytes_per_image:g}: give a larger budget"
        )
    path = Path(out)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    payload = unpack(data, str(path)).payload_bytes
    return Compressed(path, len(images), level, len(data), payload)


def _safe_name(name: str) -> Path | None:
    """The relative .png path an image's name decompresses to, or None when the name could
    write outside the output folder."""
    path = Path(name)
    if (
        not name
        or "\\" in name
        or "\0" in name
        or path.is_absolute()
        or any(part in ("", ".", "..") for part in name.split("/"))
    ):
        return None
    return path.with_suffix(".png")


def _write_png(path: Path, image: np.ndarray) -> None:
    """(C, H, W) uint8 -> a PNG file, written atomically."""
    picture = Image.fromarray(image[0] if len(image) == 1 else image.transpose(1, 2, 0))
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def decompress(
    album_path: str | Path,
    out: str | Path,
    *,
    run_dir: str | Path | None = None,
    device: str = "cpu",
) -> list[Path]:
    """Decompress an album into PNG files in the folder `out` (named after the originals, with
    .png), each written atomically; returns their paths. The run is the one the album names,
    unless `run_dir` is given. An image that cannot be read raises AlbumError naming it, after
    every other image is written."""
    album_path = Path(album_path)
    try:
        data = album_path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {album_path}: {error.strerror or error}") from None
    if run_dir is None:
        run_dir = unpack(data, str(album_path)).run_path
        if not run_dir or not Path(run_dir).is_dir():
            raise AlbumError(
                f"{album_path} was made with the run at {run_dir or '(unrecorded)'}, which is not "
                "there: give the run with --run"
            )
    run, model = open_codec(run_dir, device)
    decoded = decode_album(
        data, model, weights=weights_sha256(run.path), name=str(album_path), run=str(run.path)
    )
    problems, written = dict(decoded.problems), []
    for i, (image, name) in enumerate(zip(decoded.images, decoded.names, strict=True)):
        relative = _safe_name(name)
        if relative is None:
            problems.setdefault(i, f"image {i + 1} has an unsafe name {name!r}; not written")
        if image is None or relative is None:
            continue
        target = Path(out) / relative
        _write_png(target, image)
        written.append(target)
    if problems:
        listed = "; ".join(problems[i] for i in sorted(problems))
        raise AlbumError(
            f"{album_path}: {listed}; the other {len(written)} images were written to {out}"
        )
    return written
