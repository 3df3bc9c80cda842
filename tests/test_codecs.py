"""bench/codecs.py: the classic-codec baselines (container parsing, scores, interpolation)."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def codecs() -> Any:
    path = Path(__file__).parents[1] / "bench" / "codecs.py"
    spec = importlib.util.spec_from_file_location("codecs_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _images(n: int, shape: tuple[int, ...]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    smooth = [np.cumsum(rng.integers(0, 9, shape), axis=0) for _ in range(n)]
    return [(s * 255 // max(1, s.max())).astype(np.uint8) for s in smooth]


def test_payload_is_the_coded_picture_without_headers(codecs: Any) -> None:
    image = _images(1, (32, 24, 3))[0]
    for codec in ("jpeg", "webp", "png", *(["avif"] if codecs.available("avif") else [])):
        data = codecs.encode(image, codec, None if codec == "png" else 50)
        payload = codecs.payload_bytes(codec, data)
        assert 0 < payload < len(data), codec
        assert np.array_equal(codecs.decode(data, image).shape, image.shape)
    # JPEG: the scan data is what lies between the SOS header and EOI
    data = codecs.encode(image, "jpeg", 50)
    sos = data.index(b"\xff\xda")
    scan = len(data) - (sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")) - 2
    assert codecs.payload_bytes("jpeg", data) == scan
    # PNG: the IDAT data is the zlib stream
    png = codecs.encode(image, "png", None)
    with Image.open(io.BytesIO(png)) as opened:
        assert np.array_equal(np.asarray(opened), image)


def test_lossless_png_scores_perfectly_and_jpeg_rises_with_quality(codecs: Any) -> None:
    images = _images(6, (28, 28))
    png = codecs.measure(images, "png", None)
    assert png.ssim == pytest.approx(1.0) and png.psnr == 100.0 and png.ms_ssim is None
    low, high = codecs.measure(images, "jpeg", 10), codecs.measure(images, "jpeg", 90)
    assert low.file_bytes < high.file_bytes and low.ssim < high.ssim < 1.0
    assert low.payload_bytes < low.file_bytes


def test_ms_ssim_only_for_images_large_enough(codecs: Any) -> None:
    large = codecs.measure(_images(1, (176, 180, 3)), "webp", 50)
    assert codecs.measure(_images(1, (175, 180, 3)), "webp", 50).ms_ssim is None
    assert large.ms_ssim is not None and 0 < large.ms_ssim <= 1


def test_bytes_at_interpolates_log_bytes_and_refuses_to_extrapolate(codecs: Any) -> None:
    point = codecs.Point
    points = [
        point("x", 1, 10, 100.0, 80.0, 0.80, None, 20.0, 1.0),
        point("x", 2, 10, 400.0, 300.0, 0.90, None, 25.0, 1.0),
    ]
    assert codecs.bytes_at(points, "x", 0.85) == pytest.approx(200.0)  # geometric mean
    assert codecs.bytes_at(points, "x", 0.90) == pytest.approx(400.0)
    assert codecs.bytes_at(points, "x", 0.95) is None
    assert codecs.bytes_at(points, "x", 0.70) is None
    assert codecs.bytes_at(points, "x", 22.5, metric="psnr") == pytest.approx(200.0)


def test_the_page_has_the_plot_and_the_table(codecs: Any, tmp_path: Path) -> None:
    points = codecs.sweep(_images(4, (28, 28)), {"jpeg": (20, 80), "png": (None,)})
    page = codecs.write_page(points, tmp_path / "codecs.html", "test", [0.9])
    text = page.read_text()
    assert "data:image/png;base64" in text and "payload B" in text and "jpeg" in text
