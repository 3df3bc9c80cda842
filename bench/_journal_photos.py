"""`bench/journal.py --photos`: the photo half. The held-out photos of `photos:test`, at their
native size (the codec is fully convolutional) unless `--size N` cuts centred N x N windows,
through a trained photo codec at each of its quality levels and through JPEG, WebP, AVIF and PNG
(bench/codecs.py's sweep, the same scores: SSIM, MS-SSIM, PSNR).

Bytes per image are counted as whole files (an album's bytes divided by its images; each
codec's file) and, beside them, as payload without headers (the album's coded images; each
codec's coded picture). Printed: every point, where latentspace's curve crosses WebP's, the
bytes of each codec at SSIM 0.85, 0.90 and 0.95 (interpolated) with latentspace's win or loss,
the weights' size spread over the test photos, and compress / decompress images/s. The same
goes to an HTML page (plot and tables) beside the printed table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

import latentspace as ls
from latentspace.journal import decode_album, encode_album, open_codec
from latentspace.runs import WEIGHTS, committed_epoch, weights_sha256

ROOT = Path(__file__).resolve().parents[1]
TARGETS = (0.85, 0.90, 0.95)
OURS = "latentspace"
# the photo recipe (docs/journal.md, "Photos", has the command and why): 128x128 crops, a code
# map at 1/8 of the side with 8 channels, 32 channels inside, four rates, squared error
PHOTO = [
    "data.crop=128",
    "data.flip=true",
    "data.val_fraction=0",
    "model.factor=8",
    "model.latent_dim=8",
    "model.width=32",
    "model.levels=9",
    "model.lambdas=0.1,0.03,0.01,0.003",
    "train.batch_size=9",
    "train.lr=0.002",
    "train.schedule=cosine",
    "train.min_lr=0.0001",
]
# seconds of training, only to prove the bench runs: a tiny model, a few epochs of small crops
QUICK = [
    "data.crop=64",
    "data.val_fraction=0.1",
    "model.factor=8",
    "model.latent_dim=4",
    "model.width=8",
    "model.levels=7",
    "model.lambdas=0.05,0.005",
    "train.batch_size=8",
    "train.lr=0.005",
]


def codecs_module() -> ModuleType:
    """bench/codecs.py, loaded by its path: `import codecs` would find Python's own module."""
    spec = importlib.util.spec_from_file_location("codecs_bench", ROOT / "bench" / "codecs.py")
    if spec is None or spec.loader is None:
        raise ImportError("bench/codecs.py not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def train_quick(threads: int) -> Path:
    """A tiny photo codec trained for seconds (cached under runs/, ignored by git)."""
    epochs = 6
    key = hashlib.sha256(json.dumps([QUICK, epochs]).encode()).hexdigest()[:8]
    out = ROOT / "runs" / f"bench-journal-photos-quick-{key}"
    if committed_epoch(out) == epochs:
        print(f"reusing {out}")
        return out
    config = ls.default_config("fsq", dataset="photos", epochs=epochs, device="cpu")
    config = ls.apply_overrides(config, [*QUICK, f"train.threads={threads}"])
    started = time.perf_counter()
    resume = committed_epoch(out) is not None
    ls.train(config, out, resume=resume, quiet=True, diagnostics=False, report=False)
    print(f"trained {out} in {time.perf_counter() - started:.0f} s ({epochs} epochs, tiny model)")
    return out


def centre(images: Sequence[np.ndarray], size: int | None) -> list[np.ndarray]:
    """Centred windows of at most size x size (each photo as it is when size is None)."""
    if size is None:
        return list(images)
    cut = []
    for image in images:
        h, w = image.shape[:2]
        top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
        cut.append(np.ascontiguousarray(image[top : top + size, left : left + size]))
    return cut


@dataclasses.dataclass(frozen=True)
class Speed:
    compress_per_s: float
    decompress_per_s: float


def round_trip(
    model: Any, tensors: Sequence[torch.Tensor], quality: int, weights: str, group_bytes: int = 0
) -> tuple[bytes, Any, float, float]:
    """The album of `tensors` at `quality`, decoded again: (album, decoded, seconds to compress,
    seconds to decompress). Both halves of the bench measure through this."""
    started = time.perf_counter()
    album = encode_album(model, tensors, quality, weights=weights, group_bytes=group_bytes)
    compress_s = time.perf_counter() - started
    started = time.perf_counter()
    decoded = decode_album(album, model, weights=weights, name="bench")
    return album, decoded, compress_s, time.perf_counter() - started


def journal_points(
    codecs: ModuleType, run: Path, images: Sequence[np.ndarray], threads: int
) -> tuple[list[object], dict[int, Speed]]:
    """codecs.Point per quality level of the run (bytes from the album itself) and the speed of
    compress and decompress at each, on `threads` threads."""
    torch.set_num_threads(threads)
    run = Path(run)
    _, model = open_codec(run)
    if int(model.image_shape[0]) != 3:
        raise SystemExit(f"{run} codes {model.image_shape[0]}-channel images; train it on photos")
    weights = weights_sha256(run)
    tensors = [torch.from_numpy(np.ascontiguousarray(i.transpose(2, 0, 1))) for i in images]
    points, speeds = [], {}
    for quality in range(1, model.quality_levels + 1):
        album, decoded, compress_s, decompress_s = round_trip(model, tensors, quality, weights)
        if decoded.problems:
            raise SystemExit(f"the album did not decode: {decoded.problems}")
        pixels = [i.transpose(1, 2, 0) for i in decoded.images if i is not None]
        score, multi, psnr = codecs.quality_scores(images, pixels)
        n = len(images)
        points.append(
            codecs.Point(
                codec=OURS,
                quality=quality,
                images=n,
                file_bytes=len(album) / n,
                payload_bytes=decoded.album.payload_bytes / n,
                ssim=score,
                ms_ssim=multi,
                psnr=psnr,
                encode_s=compress_s,
            )
        )
        speeds[quality] = Speed(n / compress_s, n / decompress_s)
    return points, speeds


def crossings(
    codecs: ModuleType, points: Sequence[object], other: str, steps: int = 400
) -> tuple[list[tuple[float, float]], tuple[float, float] | None]:
    """Where latentspace's bytes-against-SSIM curve crosses `other`'s: [(SSIM, bytes)], and the
    SSIM range the two curves share (None when they share none)."""

    def span(codec: str) -> tuple[float, float]:
        scores = [p.ssim for p in points if p.codec == codec]  # type: ignore[attr-defined]
        return min(scores), max(scores)

    if not any(p.codec == other for p in points):  # type: ignore[attr-defined]
        return [], None
    (a0, a1), (b0, b1) = span(OURS), span(other)
    low, high = max(a0, b0), min(a1, b1)
    if low >= high:
        return [], None
    found, previous = [], None
    for target in np.linspace(low, high, steps)[1:-1]:
        ours = codecs.bytes_at(points, OURS, float(target))
        theirs = codecs.bytes_at(points, other, float(target))
        if ours is None or theirs is None:
            continue
        gap = math.log(ours) - math.log(theirs)
        if previous is not None and (gap > 0) != (previous[1] > 0):
            found.append((float(target), ours))
        previous = (float(target), gap)
    return found, (low, high)


def comparison_rows(codecs: ModuleType, points: Sequence[object]) -> list[list[str]]:
    """Per SSIM target: latentspace's file (payload) bytes and each other codec's, with the
    ratio ours / theirs (below 1: latentspace wins)."""
    others = [c for c in dict.fromkeys(p.codec for p in points) if c not in (OURS, "png")]  # type: ignore[attr-defined]
    rows = []
    for target in TARGETS:
        ours = codecs.bytes_at(points, OURS, target)
        ours_payload = codecs.bytes_at(points, OURS, target, payload=True)
        row = [f"{target:.2f}", _bytes(ours, ours_payload)]
        for codec in others:
            theirs = codecs.bytes_at(points, codec, target)
            theirs_payload = codecs.bytes_at(points, codec, target, payload=True)
            cell = _bytes(theirs, theirs_payload)
            if ours is not None and theirs is not None:
                ratio = ours / theirs
                verdict = "wins" if ratio < 1 else "loses"
                cell += f", x{ratio:.2f}: {verdict} by {abs(1 - ratio) * 100:.0f}%"
            row.append(cell)
        rows.append(row)
    return [["SSIM", OURS, *others], *rows]


def _bytes(file: float | None, payload: float | None) -> str:
    if file is None:
        return "not reached"
    return f"{file:.0f} B ({payload:.0f})" if payload is not None else f"{file:.0f} B"


def weights_bytes(run: Path) -> tuple[int, int]:
    """(the run's weights file, what decompress needs: every tensor but the encoder's) in
    bytes, as stored (float32 weights, int32 tables)."""
    from safetensors import safe_open

    path = Path(run) / WEIGHTS
    decoder = 0
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():  # safe_open has keys(), not iteration
            if not key.startswith("encoder."):
                tensor = handle.get_tensor(key)
                decoder += tensor.numel() * tensor.element_size()
    return path.stat().st_size, decoder


def run_photos(
    run: Path | None, *, quick: bool, size: int | None, threads: int, html: Path
) -> None:
    """The photo half end to end: train (quick) or open the run, measure, print, write HTML."""
    codecs = codecs_module()
    run = run or train_quick(threads)
    images = centre(codecs.load_images("photos:test", None), size)
    shapes = sorted({i.shape[:2] for i in images})
    what = "native size" if size is None else f"centred windows of at most {size}x{size}"
    print(f"photos:test, {len(images)} held-out photos at {what}: {shapes}; run {run}")
    ours, speeds = journal_points(codecs, run, images, threads)
    points = [*ours, *codecs.sweep(images, codecs.QUICK if quick else codecs.CODECS)]
    codecs.print_points(points)
    lines = summary(codecs, points, run, len(images), speeds, threads)
    for line in lines:
        print(line)
    extra = [
        ("latentspace against the others", _html_table(comparison_rows(codecs, points))),
        ("Summary", "<ul>" + "".join(f"<li>{_escape(line)}</li>" for line in lines) + "</ul>"),
    ]
    title = f"photos:test at {what}, run {Path(run).name}"
    html.parent.mkdir(parents=True, exist_ok=True)
    page = codecs.write_page(points, html, title, TARGETS, extra)
    print(f"wrote {page}")


def summary(
    codecs: ModuleType,
    points: Sequence[object],
    run: Path,
    n: int,
    speeds: dict[int, Speed],
    threads: int,
) -> list[str]:
    """The printed conclusions: crossing with WebP, win/loss at each target, weights, speed."""
    lines = []
    found, shared = crossings(codecs, points, "webp")
    if shared is None:
        lines.append("latentspace's and WebP's SSIM ranges do not overlap: no crossing")
    elif not found:
        ours = codecs.bytes_at(points, OURS, (shared[0] + shared[1]) / 2)
        webp = codecs.bytes_at(points, "webp", (shared[0] + shared[1]) / 2)
        side = "below" if ours is not None and webp is not None and ours < webp else "above"
        lines.append(
            f"latentspace's curve stays {side} WebP's (fewer bytes: below) over the SSIM range "
            f"both reach, {shared[0]:.3f}..{shared[1]:.3f}: no crossing"
        )
    for ssim, at in found:
        lines.append(f"latentspace's curve crosses WebP's at SSIM {ssim:.3f}, {at:.0f} B per photo")
    table = comparison_rows(codecs, points)
    for row in table[1:]:
        cells = ", ".join(
            f"{name} {cell}" for name, cell in zip(table[0][1:], row[1:], strict=True)
        )
        lines.append(f"at SSIM {row[0]}: file (payload) bytes per photo: {cells}")
    whole, decoder = weights_bytes(run)
    lines.append(
        f"weights {whole / 1e3:.0f} kB ({whole / n:.0f} B per test photo); decompress needs "
        f"{decoder / 1e3:.0f} kB of them: {decoder / n:.0f} B per test photo amortised over "
        f"these {n}"
    )
    top = max(speeds)
    lines.append(
        f"{threads} thread(s), quality {top}: compress {speeds[top].compress_per_s:.2f} photos/s, "
        f"decompress {speeds[top].decompress_per_s:.2f} photos/s"
    )
    return lines


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def _html_table(rows: list[list[str]]) -> str:
    from latentspace.html import table

    return str(table(rows[1:], rows[0]))
