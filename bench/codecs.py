"""The codecs people use, measured on the same images as latentspace's: JPEG (Pillow, optimised
Huffman tables), WebP, AVIF (Pillow's own libavif) and PNG (lossless, for scale).

For each codec and quality: bytes per image counted two ways, and the quality of the decoded
images (SSIM, MS-SSIM where an image is large enough, PSNR), averaged over the images.

- file bytes: the whole file, headers included.
- payload bytes: the file without the container and headers that can be told apart from the
  coded picture. JPEG: only the entropy-coded scan data (SOI/EOI, APPn, DQT quantisation
  tables, DHT Huffman tables, SOF and SOS headers removed; with optimize=True the Huffman tables
  are fitted per image, so this understates what a decoder needs a little). WebP: the VP8/VP8L
  bitstream after its frame header (RIFF 12 + chunk 8 + VP8 key-frame header 10 bytes, or the
  5-byte VP8L header; VP8X/ALPH chunks are dropped). AVIF: the AV1 data in the `mdat` box
  (ftyp, meta and the box header removed). PNG: the zlib streams of the IDAT chunks.

SSIM and MS-SSIM are latentspace's (torchmetrics: 11x11 Gaussian window, sigma 1.5, data range
1; colour averaged over channels); MS-SSIM uses its 5 published scales and is left out for an
image with a side under 176 pixels. PSNR is averaged over images (an exact image counts
as 100 dB). `bytes_at` interpolates a codec's bytes at a given quality score; core's
bench/journal.py imports this module for its comparison.

    .venv/bin/python bench/codecs.py --quick                      # 100 images, 3 qualities
    .venv/bin/python bench/codecs.py --images fashion-mnist:test  # the full sweep, 10000 images
    .venv/bin/python bench/codecs.py --images photos:test         # a folder of photos, any size
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import json
import math
import struct
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, features

__all__ = [
    "CODECS",
    "Point",
    "bytes_at",
    "decode",
    "encode",
    "main",
    "measure",
    "payload_bytes",
    "print_points",
    "sweep",
    "write_page",
]

# quality settings swept for each codec (None: the codec has one setting)
CODECS: dict[str, tuple[int | None, ...]] = {
    "jpeg": (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95),
    "webp": (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100),
    "avif": (0, 10, 20, 30, 40, 50, 60, 70, 80, 90),
    "png": (None,),
}
QUICK: dict[str, tuple[int | None, ...]] = {
    "jpeg": (10, 50, 90),
    "webp": (10, 50, 90),
    "avif": (20, 60),
    "png": (None,),
}
_FORMATS = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF", "png": "PNG"}
_EXACT_PSNR = 100.0  # dB for an image decoded exactly


@dataclasses.dataclass(frozen=True)
class Point:
    """One codec at one quality over a set of images: means per image."""

    codec: str
    quality: int | None
    images: int
    file_bytes: float
    payload_bytes: float
    ssim: float
    ms_ssim: float | None  # None when the images are too small for 5 scales
    psnr: float
    encode_s: float  # seconds to encode all the images


def available(codec: str) -> bool:
    """Whether this Pillow writes `codec` (AVIF needs Pillow built with libavif)."""
    return codec in ("jpeg", "png") or bool(features.check(codec))


def encode(image: np.ndarray, codec: str, quality: int | None) -> bytes:
    """image: (H, W) grey or (H, W, 3) RGB uint8 -> the file's bytes."""
    options: dict[str, object] = {"jpeg": {"optimize": True}, "png": {"optimize": True}}.get(
        codec, {}
    )
    if quality is not None:
        options["quality"] = quality
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, _FORMATS[codec], **options)
    return buffer.getvalue()


def decode(data: bytes, like: np.ndarray) -> np.ndarray:
    """The file's pixels in the layout of `like` (WebP has no grey: its RGB is made grey)."""
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("L" if like.ndim == 2 else "RGB")
        return np.asarray(image)


def _jpeg_payload(data: bytes) -> int:
    """Bytes of entropy-coded scan data: everything after each SOS header up to the next marker
    that is not a stuffed 0xFF00 or a restart marker (RSTn keep their two bytes)."""
    i, payload = 2, 0  # after SOI
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError(f"not a JPEG marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xD9:  # EOI
            break
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        i += 2 + length
        if marker != 0xDA:  # not SOS: a header segment
            continue
        start = i
        while i + 1 < len(data) and not (
            data[i] == 0xFF and data[i + 1] not in (0x00, *range(0xD0, 0xD8))
        ):
            i += 1
        payload += i - start
    return payload


def _riff_payload(data: bytes) -> int:
    """WebP: the VP8 (lossy) or VP8L (lossless) bitstream without its frame header."""
    i = 12  # RIFF, size, WEBP
    while i + 8 <= len(data):
        tag, size = data[i : i + 4], struct.unpack("<I", data[i + 4 : i + 8])[0]
        if tag == b"VP8 ":
            return size - 10  # 3-byte frame tag, 3-byte start code, 4 bytes of dimensions
        if tag == b"VP8L":
            return size - 5  # signature and 4 bytes of dimensions and flags
        i += 8 + size + (size & 1)
    raise ValueError("no VP8 or VP8L chunk in this WebP file")


def _box_payload(data: bytes) -> int:
    """AVIF (ISO base media file): the content of the top-level `mdat` boxes."""
    i, payload = 0, 0
    while i + 8 <= len(data):
        size, kind = struct.unpack(">I", data[i : i + 4])[0], data[i + 4 : i + 8]
        header = 8
        if size == 1:  # a 64-bit size follows
            size, header = struct.unpack(">Q", data[i + 8 : i + 16])[0], 16
        elif size == 0:  # to the end of the file
            size = len(data) - i
        if kind == b"mdat":
            payload += size - header
        i += size
    return payload


def _png_payload(data: bytes) -> int:
    """PNG: the data of the IDAT chunks (the zlib stream)."""
    i, payload = 8, 0
    while i + 8 <= len(data):
        size, kind = struct.unpack(">I", data[i : i + 4])[0], data[i + 4 : i + 8]
        if kind == b"IDAT":
            payload += size
        i += 12 + size
    return payload


_PAYLOADS: dict[str, Callable[[bytes], int]] = {
    "jpeg": _jpeg_payload,
    "webp": _riff_payload,
    "avif": _box_payload,
    "png": _png_payload,
}


def payload_bytes(codec: str, data: bytes) -> int:
    """The coded picture's bytes without the container (see the module docstring)."""
    return _PAYLOADS[codec](data)


def _as_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """(N, H, W) or (N, H, W, 3) uint8 of one size -> (N, C, H, W) floats in [0, 1]."""
    array = np.stack(images)
    if array.ndim == 3:
        array = array[:, :, :, None]
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255


def quality_scores(
    originals: Sequence[np.ndarray], decoded: Sequence[np.ndarray]
) -> tuple[float, float | None, float]:
    """Mean (SSIM, MS-SSIM or None, PSNR) over the images; images of one size are scored in
    batches of 500, others one at a time."""
    from latentspace.models.likelihood import MS_SSIM_WEIGHTS, ms_ssim, ms_ssim_scales, ssim

    groups: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(originals):
        groups.setdefault(image.shape, []).append(index)
    ssims, ms_ssims, psnrs = [], [], []
    for shape, indices in groups.items():
        for start in range(0, len(indices), 500):
            chunk = indices[start : start + 500]
            x = _as_tensor([originals[i] for i in chunk])
            y = _as_tensor([decoded[i] for i in chunk])
            ssims.append(ssim(y, x))
            if ms_ssim_scales(shape[0], shape[1]) == len(MS_SSIM_WEIGHTS):
                ms_ssims.append(ms_ssim(y, x, scales=5))
            mse = (x - y).pow(2).flatten(1).mean(1)
            exact = torch.full_like(mse, _EXACT_PSNR)
            psnrs.append(torch.where(mse > 0, -10 * torch.log10(mse.clamp_min(1e-20)), exact))
    ms = float(torch.cat(ms_ssims).mean()) if len(ms_ssims) == len(groups) and ms_ssims else None
    return float(torch.cat(ssims).mean()), ms, float(torch.cat(psnrs).mean())


def measure(images: Sequence[np.ndarray], codec: str, quality: int | None) -> Point:
    """One codec at one quality over `images` ((H, W) or (H, W, 3) uint8, any sizes)."""
    start = time.perf_counter()
    files = [encode(image, codec, quality) for image in images]
    seconds = time.perf_counter() - start
    decoded = [decode(data, image) for data, image in zip(files, images, strict=True)]
    score, multi, psnr = quality_scores(images, decoded)
    n = len(images)
    return Point(
        codec=codec,
        quality=quality,
        images=n,
        file_bytes=sum(map(len, files)) / n,
        payload_bytes=sum(payload_bytes(codec, data) for data in files) / n,
        ssim=score,
        ms_ssim=multi,
        psnr=psnr,
        encode_s=seconds,
    )


def sweep(
    images: Sequence[np.ndarray],
    codecs: dict[str, tuple[int | None, ...]] | None = None,
    log: Callable[[str], None] = print,
) -> list[Point]:
    """Every available codec at each of its qualities; a codec this Pillow lacks is skipped with
    a printed note."""
    points = []
    for codec, qualities in (codecs or CODECS).items():
        if not available(codec):
            log(f"{codec}: skipped, this Pillow cannot write it (pip install pillow-avif-plugin)")
            continue
        for quality in qualities:
            points.append(measure(images, codec, quality))
    return points


def bytes_at(
    points: Sequence[Point], codec: str, target: float, metric: str = "ssim", payload: bool = False
) -> float | None:
    """The codec's bytes per image where its curve reaches `target` of `metric` (ssim, ms_ssim,
    psnr): log(bytes) interpolated linearly between the two qualities around it. None when
    the curve never reaches the target, or starts above it (it would be extrapolation)."""
    field = "payload_bytes" if payload else "file_bytes"
    curve = sorted(
        (getattr(p, field), getattr(p, metric))
        for p in points
        if p.codec == codec and getattr(p, metric) is not None
    )
    for (b0, m0), (b1, m1) in itertools.pairwise(curve):
        if m0 <= target <= m1 and m1 > m0:
            t = (target - m0) / (m1 - m0)
            return math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0)))
    return None


def write_page(
    points: Sequence[Point],
    path: Path,
    title: str,
    targets: Sequence[float],
    extra: Sequence[tuple[str, str]] = (),
) -> Path:
    """An HTML page: bytes per image against SSIM for each codec (file bytes solid, payload
    dashed) and the table of every point; `extra` (heading, HTML) sections go after the
    plot (bench/journal.py adds its comparisons)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latentspace.html import img_tag, table
    from latentspace.html import write_page as write_html

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for codec in dict.fromkeys(p.codec for p in points):
        mine = sorted((p for p in points if p.codec == codec), key=lambda p: p.file_bytes)
        line = axis.plot([p.file_bytes for p in mine], [p.ssim for p in mine], "o-", label=codec)
        axis.plot(
            [p.payload_bytes for p in mine],
            [p.ssim for p in mine],
            "--",
            color=line[0].get_color(),
            alpha=0.6,
        )
    axis.set(xscale="log", xlabel="bytes per image (solid: file, dashed: payload)", ylabel="SSIM")
    axis.grid(alpha=0.3)
    axis.legend()
    png = path.with_suffix(".png")
    figure.savefig(png, dpi=110, bbox_inches="tight")
    plt.close(figure)
    rows = [
        [
            p.codec,
            "-" if p.quality is None else p.quality,
            f"{p.file_bytes:.1f}",
            f"{p.payload_bytes:.1f}",
            f"{p.ssim:.4f}",
            "-" if p.ms_ssim is None else f"{p.ms_ssim:.4f}",
            f"{p.psnr:.2f}",
        ]
        for p in points
    ]
    header = ["codec", "quality", "file B", "payload B", "SSIM", "MS-SSIM", "PSNR dB"]
    at = [
        [codec, *(_fmt(bytes_at(points, codec, t)) for t in targets)]
        for codec in dict.fromkeys(p.codec for p in points)
    ]
    sections = [
        ("Rate and quality", img_tag(png, title)),
        ("File bytes per image at SSIM", table(at, ["codec", *map(str, targets)])),
        *extra,
        ("Every point", table(rows, header)),
    ]
    return write_html(path, title, sections)


def print_points(points: Sequence[Point], log: Callable[[str], None] = print) -> None:
    """The table of every point: file and payload bytes per image, scores, encode speed."""
    log(
        f"{'codec':<12}{'quality':>8}{'file B':>10}{'payload B':>11}{'SSIM':>8}"
        f"{'MS-SSIM':>9}{'PSNR':>7}{'enc img/s':>11}"
    )
    for p in points:
        multi = "-" if p.ms_ssim is None else f"{p.ms_ssim:.4f}"
        quality = "-" if p.quality is None else str(p.quality)
        log(
            f"{p.codec:<12}{quality:>8}{p.file_bytes:>10.1f}{p.payload_bytes:>11.1f}"
            f"{p.ssim:>8.4f}{multi:>9}{p.psnr:>7.2f}{p.images / p.encode_s:>11.1f}"
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def load_images(spec: str, limit: int | None) -> list[np.ndarray]:
    """A dataset name (`fashion-mnist:test`), a `.npy`/`.npz`, or a folder of image files read
    at their own sizes (a photo collection's split, `photos:test`, is one); (H, W) grey or
    (H, W, 3) RGB uint8 each."""
    from latentspace.data.photos import photo_folder

    path = photo_folder(spec) or Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        images = []
        for file in files[:limit]:
            with Image.open(file) as image:
                images.append(np.asarray(image.convert("L" if image.mode == "L" else "RGB")))
        return images
    import latentspace as ls

    array = ls.resolve(spec).images[:limit].numpy()  # (N, C, H, W)
    return [a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0) for a in array]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default="fashion-mnist:test", help="dataset, file or folder")
    parser.add_argument("--limit", type=int, default=None, help="the first N images only")
    parser.add_argument("--quick", action="store_true", help="100 images, 3 qualities a codec")
    parser.add_argument("--out", default="runs/bench-codecs", help="folder for the page")
    parser.add_argument("--targets", default="0.85,0.9,0.91,0.92,0.95", help="SSIM levels")
    args = parser.parse_args(argv)
    limit = 100 if args.quick and args.limit is None else args.limit
    images = load_images(args.images, limit)
    sizes = sorted({image.shape[:2] for image in images})
    print(f"{len(images)} images from {args.images}, sizes {sizes[0]}..{sizes[-1]}")
    points = sweep(images, QUICK if args.quick else CODECS)
    print_points(points)
    targets = [float(t) for t in args.targets.split(",")]
    for target in targets:
        parts = [
            f"{codec} {_fmt(bytes_at(points, codec, target))} "
            f"({_fmt(bytes_at(points, codec, target, payload=True))})"
            for codec in dict.fromkeys(p.codec for p in points)
        ]
        print(f"file (payload) bytes per image at SSIM {target}: " + ", ".join(parts))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "codecs.json").write_text(json.dumps([dataclasses.asdict(p) for p in points], indent=1))
    page = write_page(points, out / "codecs.html", f"Codecs on {args.images}", targets)
    print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
