"""Pictures: image grids and image files from (N, C, H, W) tensors in [0, 1].

A grid a person looks at says what it shows: `save_grid(..., title=, rows=, columns=, marked=)`
draws a title, a label per row and per column and a frame around marked tiles, with Pillow's
default font (no font files), around the same tiles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from latentspace.runs import atomic_write

__all__ = ["image_grid", "label_grid", "save_grid", "save_images", "to_pil"]

_INK = (20, 20, 20)
_MARK = (220, 40, 40)
_GAP = 4  # pixels between a label and what it labels


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


def _fit(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: float) -> str:
    """`text` shortened with '..' until it is at most `width` pixels wide."""
    if font.getlength(text) <= width or len(text) <= 2:
        return text
    while len(text) > 2 and font.getlength(text + "..") > width:
        text = text[:-1]
    return text + ".."


def _wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: float) -> list[str]:
    """Words of `text` in lines of at most `width` pixels (a longer word stands alone)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def label_grid(
    grid: Image.Image,
    cell: tuple[int, int],
    origin: tuple[int, int] = (0, 0),
    *,
    title: str = "",
    rows: Sequence[str] = (),
    columns: Sequence[str] = (),
    marked: Sequence[tuple[int, int]] = (),
) -> Image.Image:
    """`grid` on a larger white canvas: the title above (wrapped), `columns` over the columns,
    `rows` left of the rows, and a red frame around each (row, column) in `marked`. `cell`:
    the (width, height) step from one tile to the next; `origin`: the first tile's top left."""
    font = ImageFont.load_default(size=12)  # Pillow's own font: no font files needed
    line = int(font.getbbox("Ag")[3]) + _GAP
    left = int(max((font.getlength(r) for r in rows), default=0)) + 2 * _GAP if rows else 0
    width = max(left + grid.width + _GAP, 320 if title else 0)
    title_lines = _wrap(title, font, width - 2 * _GAP) if title else []
    top = len(title_lines) * line + (_GAP if title_lines else 0) + (line if columns else 0)
    canvas = Image.new("RGB", (width, top + grid.height + _GAP), "white")
    canvas.paste(grid.convert("RGB"), (left, top))
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(title_lines):
        draw.text((_GAP, _GAP // 2 + i * line), text, fill=_INK, font=font)
    step_x, step_y = cell
    x0, y0 = left + origin[0], top + origin[1]
    for k, text in enumerate(columns):
        text = _fit(text, font, step_x - 2)
        x = x0 + k * step_x + (step_x - font.getlength(text)) / 2
        draw.text((x, top - line), text, fill=_INK, font=font)
    for r, text in enumerate(rows):
        y = y0 + r * step_y + (step_y - line) / 2
        draw.text((_GAP, y), text, fill=_INK, font=font)
    for r, k in marked:
        x, y = x0 + k * step_x, y0 + r * step_y
        draw.rectangle((x - 2, y - 2, x + step_x - 1, y + step_y - 1), outline=_MARK, width=2)
    return canvas


def save_grid(
    images: torch.Tensor,
    path: str | Path,
    nrow: int | None = None,
    *,
    title: str = "",
    rows: Sequence[str] = (),
    columns: Sequence[str] = (),
    marked: Sequence[tuple[int, int]] = (),
) -> Path:
    """The grid of `images` as a PNG; with labels (see `label_grid`) drawn around its tiles."""
    path = Path(path)
    n, _, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    scale = max(1, 64 // max(h, w))
    grid = image_grid(images, nrow, scale=scale)
    if title or rows or columns or marked:
        padding = 2  # image_grid's
        cell = ((w + padding) * scale, (h + padding) * scale)
        grid = label_grid(
            grid,
            cell,
            (padding * scale // 2, padding * scale // 2),
            title=title,
            rows=rows,
            columns=columns,
            marked=marked,
        )
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
