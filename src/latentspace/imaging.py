"""Pictures: image grids and image files from (N, C, H, W) tensors in [0, 1]."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from latentspace.runs import atomic_write

__all__ = ["image_grid", "save_grid", "save_images", "to_pil"]


def to_pil(image: torch.Tensor) -> Image.Image:
    """(C, H, W) in [0, 1] -> a PIL image (L or RGB)."""
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    if array.shape[0] == 1:
        return Image.fromarray(array[0], mode="L")
    return Image.fromarray(array.transpose(1, 2, 0), mode="RGB")


def image_grid(
    images: torch.Tensor, nrow: int | None = None, padding: int = 2, scale: int | None = None
) -> Image.Image:
    """Tile (N, C, H, W) images into rows of `nrow` (default: a near-square grid) on a white
    background; small images are enlarged by an integer `scale` so the grid is readable."""
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    scale = scale or max(1, 64 // max(h, w))
    canvas = np.full(
        (rows * (h + padding) + padding, nrow * (w + padding) + padding, c), 255, dtype=np.uint8
    )
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        canvas[top : top + h, left : left + w] = pixels[i].transpose(1, 2, 0)
    grid = Image.fromarray(canvas[..., 0] if c == 1 else canvas, mode="L" if c == 1 else "RGB")
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    return grid


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    path = Path(path)
    grid = image_grid(images, nrow)
    atomic_write(path, lambda tmp: grid.save(tmp, format="PNG"))
    return path


def save_images(
    images: torch.Tensor, folder: str | Path, names: Sequence[str] | None = None
) -> Path:
    """One PNG per image in `folder` (names default to 000000.png, ...)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        name = Path(names[i]).with_suffix(".png").name if names is not None else f"{i:06d}.png"
        to_pil(image).save(folder / name, format="PNG")
    return folder
