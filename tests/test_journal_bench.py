"""bench/journal.py's photo half: where two rate-quality curves cross and who wins at a target,
on made-up curves whose answer is known."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).parents[1] / "bench"


@pytest.fixture(scope="module")
def photos() -> Any:
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("_journal_photos", BENCH / "_journal_photos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _curve(codecs: Any, codec: str, pairs: list[tuple[float, float]]) -> list[Any]:
    """Points of (bytes, SSIM); payload = bytes - 10."""
    return [
        codecs.Point(codec, q, 6, b, b - 10, s, None, 30.0, 1.0) for q, (b, s) in enumerate(pairs)
    ]


def test_the_crossing_and_the_win_or_loss_at_each_target(photos: Any) -> None:
    """Ours: 1000 B at SSIM 0.80 to 4000 B at 1.00, WebP: 2000 B to 3000 B (each log-linear in
    SSIM). At t = (SSIM - 0.8) / 0.2 ours is 1000 * 4**t and WebP 2000 * 1.5**t: they cross at
    t = log 2 / log(8/3) (SSIM 0.941); ours wins below it (0.85, 0.90) and loses above (0.95)."""
    codecs = photos.codecs_module()
    ours = _curve(codecs, "latentspace", [(1000, 0.80), (4000, 1.00)])
    webp = _curve(codecs, "webp", [(2000, 0.80), (3000, 1.00)])
    found, shared = photos.crossings(codecs, [*ours, *webp], "webp", steps=2001)
    t = math.log(2) / math.log(8 / 3)
    assert shared == (0.80, 1.00)
    assert len(found) == 1 and found[0][0] == pytest.approx(0.80 + 0.2 * t, abs=1e-3)
    rows = photos.comparison_rows(codecs, [*ours, *webp])
    assert rows[0] == ["SSIM", "latentspace", "webp"]
    at_85 = rows[1]  # t = 0.25: ours 1000 * 4**0.25, webp 2000 * 1.5**0.25
    ratio = 4**0.25 / (2 * 1.5**0.25)
    assert at_85[0] == "0.85" and f"x{ratio:.2f}: wins" in at_85[2]
    assert (
        rows[3][1]
        == f"{1000 * 4**0.75:.0f} B ({photos.codecs_module().bytes_at(ours, 'latentspace', 0.95, payload=True):.0f})"
    )
    assert "loses" in rows[3][2]  # at 0.95 (t = 0.75) ours is past the crossing


def test_no_shared_range_means_no_crossing(photos: Any) -> None:
    codecs = photos.codecs_module()
    ours = _curve(codecs, "latentspace", [(100, 0.40), (200, 0.50)])
    webp = _curve(codecs, "webp", [(2000, 0.80), (3000, 1.00)])
    assert photos.crossings(codecs, [*ours, *webp], "webp") == ([], None)
    assert photos.comparison_rows(codecs, [*ours, *webp])[1][1] == "not reached"
