"""Images from the user's own files: a folder of pictures or a NumPy array.

Every size a file can claim is checked before anything that size is allocated: an image's pixel
count from its header (Pillow reads headers lazily) against `MAX_IMAGE_PIXELS`, a folder's decoded
total and an array header's shape against `memory_budget()`. Pixels are read as they are meant to
be seen: EXIF orientation applied, 16-bit grayscale scaled (not clipped) to 8 bits.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from latentspace.data.imageset import ImageSet
from latentspace.data.store import Images
from latentspace.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_PIXELS",
    "load_array",
    "load_folder",
    "load_image",
    "memory_budget",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_VECTOR_SUFFIXES = (".svg", ".svgz", ".eps", ".pdf")
# Integer grayscale wider than 8 bits: Pillow opens 16-bit PNG, TIFF and PGM as one of these, and
# its convert("L") clips them at 255, so they are scaled here instead.
_WIDE_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_GRAY_MODES = ("1", "L", "LA", "F", *_WIDE_GRAY_MODES)
_ORIENTATION = 0x0112  # EXIF tag; values 5-8 turn the picture a quarter, swapping width and height

# 8192 x 8192: one image decoded as RGBA then takes at most 256 MiB, and a picture larger than that
# is more than a model at data.size <= 4096 can use; a header claiming more is a decompression
# bomb or a mistake. It is below Pillow's own MAX_IMAGE_PIXELS, so Pillow's warning never fires for
# an image accepted here.
MAX_IMAGE_PIXELS = 8192 * 8192
_FALLBACK_BUDGET = 8 * 2**30


def memory_budget() -> int:
    """Bytes a dataset may take in memory: half the machine's physical memory, because the images
    stay in memory as uint8 and the training / validation split copies them (8 GiB where the
    operating system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (AttributeError, ValueError, OSError):
        return _FALLBACK_BUDGET


def _amount(n_bytes: int) -> str:
    """Bytes for a person: '73.2 GiB', '3.0 MiB'."""
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


class _Unusable(Exception):
    """Why one file is not used; `kind` groups the files in the one warning."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


_KINDS = {  # kind -> how the warning counts it
    "unreadable": "unreadable image(s)",
    "too large": "image(s) over the pixel limit",
    "not an image": "file(s) that are not images",
}


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise _Unusable(
            "too large",
            f"{width}x{height} = {width * height} pixels, more than the limit of "
            f"{MAX_IMAGE_PIXELS} (8192x8192)",
        )


def _too_large(error: Image.DecompressionBombError) -> _Unusable:
    # Pillow refuses in Image.open, before the size can be read; its message carries the count
    found = re.search(r"\((\d+) pixels\)", str(error))
    if found is None or int(found.group(1)) <= MAX_IMAGE_PIXELS:  # Pillow's limit set lower
        return _Unusable("too large", str(error))
    return _Unusable(
        "too large",
        f"{found.group(1)} pixels, more than the limit of {MAX_IMAGE_PIXELS} (8192x8192)",
    )


_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)


@dataclasses.dataclass(frozen=True)
class _Header:
    size: tuple[int, int]  # (width, height) as seen, after EXIF orientation when the header has it
    mode: str


def _header(path: Path) -> _Header:
    """Size and mode from the file's header; nothing is decoded. Raises _Unusable."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit; the lower one here is checked just below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                (width, height), mode = image.size, image.mode
                _check_pixels(width, height)
                # only when the header already holds EXIF: getexif() on a PNG decodes it
                if "exif" in image.info and image.getexif().get(_ORIENTATION) in (5, 6, 7, 8):
                    width, height = height, width
    except Image.DecompressionBombError as error:
        raise _too_large(error) from None
    except _READ_ERRORS as error:
        raise _Unusable("unreadable", str(error)) from None
    return _Header((width, height), mode)


def _decode(path: Path) -> Image.Image:
    """The decoded image, EXIF orientation applied and wide grayscale scaled to 8-bit 'L'."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_pixels(*image.size)  # again: the file may differ from its first reading
                image.load()  # decode now, so a truncated file fails here and not later
                upright = ImageOps.exif_transpose(image)  # a copy, usable after the file closes
    except Image.DecompressionBombError as error:
        raise _too_large(error) from None
    except _READ_ERRORS as error:
        raise _Unusable("unreadable", str(error)) from None
    return _eight_bit(upright)


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale -> 'L' by x / 257, rounded (65535 -> 255); mode 'I' is read as 16-bit,
    which is what Pillow makes of 16-bit PNG and PGM files."""
    if image.mode not in _WIDE_GRAY_MODES:
        return image
    wide = np.clip(np.asarray(image).astype(np.int32), 0, 65535)
    return Image.fromarray(((wide + 128) // 257).astype(np.uint8))


def load_image(path: Path, channels: int | None = None, size: int | None = None) -> torch.Tensor:
    """One image file -> (C, H, W) uint8. Raises DataError naming the file when unusable."""
    if not path.is_file():
        raise DataError(f"image {path} not found")
    try:
        image = _decode(path)
    except _Unusable as error:
        raise DataError(f"cannot read image {path}: {error.reason}") from None
    return _to_tensor(image, channels or (1 if image.mode in _GRAY_MODES else 3), size)


def _pixels(image: Image.Image, channels: int, size: int | None) -> np.ndarray:
    """A decoded image -> (C, H, W) uint8, C = `channels`, resized to size x size when given.
    NumPy only: the cache's worker processes call it without touching torch."""
    image = image.convert("L" if channels == 1 else "RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return np.require(
        array[None] if array.ndim == 2 else array.transpose(2, 0, 1), None, ["C", "W"]
    )


def _to_tensor(image: Image.Image, channels: int, size: int | None) -> torch.Tensor:
    return torch.from_numpy(_pixels(image, channels, size))


def _describe(skipped: list[tuple[str, _Unusable]], folder: Path, limit: int = 10) -> str:
    """'2 unreadable image(s), 1 file(s) that are not images in FOLDER: a.png (why); ...'."""
    counts = {kind: sum(e.kind == kind for _, e in skipped) for kind in _KINDS}
    summary = ", ".join(f"{n} {_KINDS[kind]}" for kind, n in counts.items() if n)
    listed = "; ".join(f"{name} ({error.reason})" for name, error in skipped[:limit])
    more = f"; and {len(skipped) - limit} more" if len(skipped) > limit else ""
    return f"{summary} in {folder}: {listed}{more}"


def _classify(folder: Path) -> tuple[list[tuple[Path, _Header]], list[tuple[str, _Unusable]]]:
    """Every file below `folder`: (images with their headers, skipped files with the reason)."""
    usable: list[tuple[Path, _Header]] = []
    skipped: list[tuple[str, _Unusable]] = []
    for path in sorted(p for p in folder.rglob("*") if not p.is_dir()):
        name = str(path.relative_to(folder))
        suffix = path.suffix.lower()
        if not path.is_file():
            skipped.append((name, _Unusable("not an image", "not a file: a broken link?")))
        elif suffix in _VECTOR_SUFFIXES:
            skipped.append((name, _Unusable("not an image", "vector image: convert it to PNG")))
        elif suffix not in IMAGE_SUFFIXES:
            skipped.append((name, _Unusable("not an image", "not an image file")))
        else:
            try:
                usable.append((path, _header(path)))
            except _Unusable as error:
                skipped.append((name, error))
    return usable, skipped


def _common_size(folder: Path, usable: list[tuple[Path, _Header]]) -> tuple[int, int]:
    (a, first), *rest = usable
    other = next(((p, h) for p, h in rest if h.size != first.size), None)
    if other is not None:
        b, second = other
        raise DataError(
            f"images in {folder} have different sizes ({first.size[0]}x{first.size[1]} in "
            f"{a.name}, {second.size[0]}x{second.size[1]} in {b.name}): pass --size N to resize "
            "them all to NxN"
        )
    return first.size


def load_folder(
    folder: Path, size: int | None = None, channels: int | None = None, strict: bool = False
) -> ImageSet:
    """Every image below `folder` (recursive). Labels come from first-level sub-folder names when
    every image sits in one. Files that are not images, and images that cannot be read or claim
    more than MAX_IMAGE_PIXELS, are skipped with one warning naming each (with `strict`, such an
    image is an error)."""
    usable, skipped = _classify(folder)
    if not usable:
        if not skipped:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in folder {folder}")
        raise DataError(f"no usable image in folder {folder}: {_describe(skipped, folder)}")
    width, height = (size, size) if size is not None else _common_size(folder, usable)
    if channels is None:
        channels = 1 if all(h.mode in _GRAY_MODES for _, h in usable) else 3
    needed, budget = len(usable) * channels * height * width, memory_budget()
    if needed > budget:
        raise DataError(
            f"the {len(usable)} images in {folder} need {_amount(needed)} in memory at "
            f"{channels}x{height}x{width}, more than the {_amount(budget)} allowed (half this "
            "machine's memory): pass a smaller --size or use fewer images"
        )
    images = torch.empty((len(usable), channels, height, width), dtype=torch.uint8)
    kept: list[Path] = []
    for path, _ in usable:
        try:
            tensor = _to_tensor(_decode(path), channels, size)
        except _Unusable as error:
            skipped.append((str(path.relative_to(folder)), error))
            continue
        if tensor.shape[1:] != images.shape[2:]:  # EXIF turned it, and the header did not say so
            raise DataError(
                f"images in {folder} have different sizes ({width}x{height}, and "
                f"{tensor.shape[2]}x{tensor.shape[1]} in {path.name} as it is shown): pass "
                "--size N to resize them all to NxN"
            )
        images[len(kept)] = tensor
        kept.append(path)
    if skipped:
        skipped.sort(key=lambda item: item[0])
        failed = [item for item in skipped if item[1].kind != "not an image"]
        if strict and failed:  # strict is about images; other files are still only named
            raise DataError(f"{_describe(failed, folder)} (an error under data.strict)")
        if not kept:
            raise DataError(f"no usable image in folder {folder}: {_describe(skipped, folder)}")
        warnings.warn(f"skipped {_describe(skipped, folder)}", stacklevel=2)
    return _image_set(folder, images[: len(kept)], [path.relative_to(folder) for path in kept])


def _image_set(folder: Path, images: torch.Tensor | Images, relative: list[Path]) -> ImageSet:
    """Labels from first-level sub-folder names when every image sits in one of several."""
    labels = classes = None
    if all(len(r.parts) > 1 for r in relative):
        classes = sorted({r.parts[0] for r in relative})
        if len(classes) > 1:
            index = {c: i for i, c in enumerate(classes)}
            labels = torch.tensor([index[r.parts[0]] for r in relative], dtype=torch.int64)
        else:
            classes = None
    return ImageSet(
        images=images,
        labels=labels,
        names=[str(r) for r in relative],
        classes=classes,
        source=str(folder),
    )


def _to_nchw(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3:
        return array[:, None]
    if array.ndim == 4 and array.shape[1] in (1, 3):
        return array
    if array.ndim == 4 and array.shape[3] in (1, 3):
        return array.transpose(0, 3, 1, 2)
    raise DataError(
        f"array in {path} has shape {array.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) "
        "with C = 1 or 3"
    )


def _to_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (np.nanmin(array) < 0 or np.nanmax(array) > 1 or np.isnan(array).any()):
            raise DataError(f"float array in {path} must hold values in [0, 1]; rescale it")
        return np.rint(array * 255).astype(np.uint8)
    if (
        np.issubdtype(array.dtype, np.integer)
        and array.size
        and array.min() >= 0
        and array.max() <= 255
    ):
        return array.astype(np.uint8)
    raise DataError(f"array in {path} has dtype {array.dtype}; use uint8 0..255 or float 0..1")


def _check_array_header(stream: IO[bytes], data_bytes: int, where: str) -> None:
    """Read a .npy header from `stream` and refuse a shape larger than the `data_bytes` that
    follow the header, or than memory_budget(), before NumPy allocates it."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
    else:  # 2.0 and 3.0 share the layout; 3.0 only allows UTF-8 field names
        shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    claimed = math.prod(shape) * dtype.itemsize
    held = data_bytes - stream.tell()  # the stream starts at the magic string
    if claimed > held:
        raise DataError(
            f"{where}: its header claims {shape} {dtype} ({_amount(claimed)}), but only "
            f"{max(held, 0)} bytes follow it; the file is damaged or truncated"
        )
    if claimed > memory_budget():
        raise DataError(
            f"{where} holds {shape} {dtype}: {_amount(claimed)}, more than the "
            f"{_amount(memory_budget())} allowed (half this machine's memory); use fewer images"
        )


def _check_array_file(path: Path) -> None:
    """Check the header of a .npy file, or of every .npy member of a .npz (zip) file."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if info.filename.endswith(".npy"):
                        with archive.open(info) as member:
                            where = f"{path} (member {info.filename})"
                            _check_array_header(member, info.file_size, where)
        else:
            with path.open("rb") as stream:
                _check_array_header(stream, path.stat().st_size, str(path))
    except FileNotFoundError:
        raise DataError(f"array file {path} not found") from None
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read {path}: {error}") from None


def load_array(path: Path) -> ImageSet:
    """A `.npy` array of images, or a `.npz` with `images` (or `x`) and optional `labels` (or `y`).
    Array headers are checked before anything is allocated."""
    _check_array_file(path)
    try:
        array, labels = _read_arrays(path)
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read {path}: {error}") from None
    images = _to_uint8(_to_nchw(np.asarray(array), path), path)
    if len(images) == 0:
        raise DataError(f"array in {path} holds no images")
    label_tensor = None
    if labels is not None:
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"labels in {path} must be {len(images)} integers, got {labels.shape}")
        label_tensor = torch.from_numpy(labels.astype(np.int64))
    return ImageSet(
        images=torch.from_numpy(np.ascontiguousarray(images)), labels=label_tensor, source=str(path)
    )


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return loaded, None
    with loaded:
        keys = list(loaded.keys())
        key = next((k for k in ("images", "x", "X") if k in keys), keys[0] if keys else None)
        if key is None:
            raise DataError(f"{path} holds no arrays")
        label_key = next((k for k in ("labels", "y", "Y") if k in keys), None)
        return loaded[key], (loaded[label_key] if label_key is not None else None)
