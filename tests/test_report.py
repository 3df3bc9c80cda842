"""The report: written after training, survives a broken figure, and renders in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from latentspace.analysis import report
from latentspace.analysis.report import write_report
from latentspace.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FIGURES = ["losses", "reconstructions", "samples", "interpolation", "traversal", "latent-map"]

# Runs in the page after it loads: every <img> decoded (naturalWidth > 0), and any error or
# console.error recorded, written into the DOM for --dump-dom to print.
_CHECK = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message || e.type)), true);
const __consoleError = console.error;
console.error = (...args) => { window.__errors.push(args.join(" ")); __consoleError(...args); };
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const result = {
    images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    errors: window.__errors,
  };
  const pre = document.createElement("pre");
  pre.id = "latentspace-check";
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
});
</script>"""


def _render(html: Path, tmp_path: Path) -> tuple[dict[str, object], list[str]]:
    """Open `html` (with the check script injected) in headless Chromium; returns the check's
    result and the console lines Chromium logged."""
    page = tmp_path / "checked.html"
    page.write_text(html.read_text().replace("<head>", "<head>" + _CHECK, 1))
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="latentspace-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no check result from chromium (exit {done.returncode}): {done.stderr[-500:]}"
    text = found.group(1).replace("&quot;", '"').replace("&amp;", "&")
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(text), console


def test_report_renders_in_headless_chromium(tiny_run: Path, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("chromium not installed: `apt-get install chromium` (make test does it)")
    path = write_report(tiny_run)
    html = path.read_text()
    for name in FIGURES:
        assert (tiny_run / f"{name}.png").exists(), name
    assert "could not be made" not in html
    assert 'src="data:image/png;base64,' in html and "file://" not in html
    result, console = _render(path, tmp_path)
    assert result["images"] == html.count("<img") >= len(FIGURES)
    assert result["broken"] == [] and result["errors"] == []
    assert console == []


def test_a_figure_that_fails_is_named_and_the_rest_remain(
    tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the decoder is on fire\nsecond line")

    monkeypatch.setattr(report, "traversal_images", broken)
    html = write_report(tiny_run).read_text()
    assert "This figure could not be made: the decoder is on fire" in html
    assert "second line" not in html
    assert "Not made: Traversal" in html and html.count("<img") >= len(FIGURES) - 1


def test_train_writes_the_report_unless_told_not_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import make_images

    data = tmp_path / "d.npz"
    np.savez(data, images=make_images(40), labels=np.arange(40) % 2)
    common = ["--dataset", str(data), "--epochs", "1", "--batch-size", "16", "--latent-dim", "2"]
    common += ["--hidden", "16", "--device", "cpu", "--quiet"]
    assert main(["train", *common, "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "report.html").exists()
    assert main(["train", *common, "--out", str(tmp_path / "b"), "--no-report"]) == 0
    assert not (tmp_path / "b" / "report.html").exists()
    assert capsys.readouterr().out == ""  # --quiet: no report line either
