"""Images from the user's own files: a folder of pictures or a NumPy array."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from latentspace.data.imageset import ImageSet
from latentspace.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "load_array", "load_folder", "load_image"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _open(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()  # decode now, so a truncated file fails here and not later
        return image.copy()


def load_image(path: Path, channels: int | None = None, size: int | None = None) -> torch.Tensor:
    """One image file -> (C, H, W) uint8. Raises DataError naming the file when unreadable."""
    try:
        image = _open(path)
    except FileNotFoundError:
        raise DataError(f"image {path} not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read image {path}: {error}") from None
    return _to_tensor(image, channels or (1 if image.mode in _GRAY_MODES else 3), size)


def _to_tensor(image: Image.Image, channels: int, size: int | None) -> torch.Tensor:
    image = image.convert("L" if channels == 1 else "RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy())


def load_folder(
    folder: Path, size: int | None = None, channels: int | None = None, strict: bool = False
) -> ImageSet:
    """Every image below `folder` (recursive). Labels come from first-level sub-folder names when
    every image sits in one. Unreadable files are skipped with one warning listing them."""
    paths = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in folder {folder}")
    opened: list[tuple[Path, Image.Image]] = []
    broken: list[str] = []
    for path in paths:
        try:
            opened.append((path, _open(path)))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            broken.append(str(path.relative_to(folder)))
    if broken:
        listed = ", ".join(broken[:10]) + (
            f" and {len(broken) - 10} more" if len(broken) > 10 else ""
        )
        if strict:
            raise DataError(f"{len(broken)} unreadable image(s) in {folder}: {listed}")
        warnings.warn(
            f"skipped {len(broken)} unreadable image(s) in {folder}: {listed}", stacklevel=2
        )
    if not opened:
        raise DataError(f"none of the {len(paths)} image files in {folder} could be read")
    if size is None:
        sizes = {image.size for _, image in opened}
        if len(sizes) > 1:
            (a, ia), (b, ib) = (
                next(iter(opened)),
                next(p for p in opened if p[1].size != opened[0][1].size),
            )
            raise DataError(
                f"images in {folder} have different sizes ({ia.size[0]}x{ia.size[1]} in {a.name}, "
                f"{ib.size[0]}x{ib.size[1]} in {b.name}): pass --size N to resize them all to NxN"
            )
    if channels is None:
        channels = 1 if all(image.mode in _GRAY_MODES for _, image in opened) else 3
    images = torch.stack([_to_tensor(image, channels, size) for _, image in opened])
    relative = [path.relative_to(folder) for path, _ in opened]
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


def load_array(path: Path) -> ImageSet:
    """A `.npy` array of images, or a `.npz` with `images` (or `x`) and optional `labels` (or `y`)."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"array file {path} not found") from None
    except (ValueError, OSError) as error:
        raise DataError(f"cannot read {path}: {error}") from None
    labels = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            key = next((k for k in ("images", "x", "X") if k in keys), keys[0] if keys else None)
            if key is None:
                raise DataError(f"{path} holds no arrays")
            array = loaded[key]
            label_key = next((k for k in ("labels", "y", "Y") if k in keys), None)
            if label_key is not None:
                labels = loaded[label_key]
    else:
        array = loaded
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
