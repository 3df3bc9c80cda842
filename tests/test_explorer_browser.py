"""The explorer page in a real browser: Playwright drives Debian's Chromium (/usr/bin/chromium;
Playwright's own browser download does not work offline) against the real server (uvicorn on
127.0.0.1, a free port, in a thread). It hovers a point, clicks the map, drags a slider, builds
an interpolation and an A - B + C, and checks that decoded images appear and change."""

from __future__ import annotations

import json
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import latentspace as ls
from conftest import make_images
from latentspace.config import apply_overrides
from latentspace.explorer import bind, open_explorer
from latentspace.explorer.server import LOCAL_HOSTS, url_of

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's Chromium is not at /usr/bin/chromium (apt-get install chromium); "
    "Playwright's own browser download does not work offline",
)
sync_api = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real explorer server of a tiny VAE run."""
    from latentspace.explorer.app import create_app

    root = tmp_path_factory.mktemp("explorer")
    data = root / "tiny.npz"
    np.savez(data, images=make_images(64), labels=np.arange(64) % 4)
    config = ls.default_config(
        "vae", dataset=str(data), epochs=3, batch_size=16, latent_dim=3, hidden_sizes=(32,)
    )
    config = apply_overrides(config, ["data.val_fraction=0.5", "train.device=cpu"])
    ls.train(config, root / "run", quiet=True, diagnostics=False, report=False)
    explorer = open_explorer(ls.open_run(root / "run"), progress=False, log=lambda line: None)
    app = create_app(explorer, allowed_hosts=list(LOCAL_HOSTS))
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    with warnings.catch_warnings():
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "the explorer server did not start"
        yield url_of(sock)
        server.should_exit = True
        thread.join(10)
    sock.close()


def raw_get(url: str, path: str, host: str | None = None) -> tuple[int, dict[str, Any]]:
    """GET `path` exactly as written (no client normalises its dots): (status, JSON body)."""
    hostname, port = url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((hostname, int(port)), timeout=10) as connection:
        request = f"GET {path} HTTP/1.1\r\nHost: {host or hostname}\r\nConnection: close\r\n\r\n"
        connection.sendall(request.encode())
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"text": body.decode(errors="replace")}


def test_the_real_server_refuses_hostile_paths_and_keeps_serving(server: str) -> None:
    for path in [
        "/static/../runs.py",
        "/static/%2e%2e/runs.py",
        "/static/..%2f..%2fruns.py",
        "/static/%2E%2E%2F%2E%2E%2Fapp.py",
        "/../../etc/passwd",
        "/api/image/100000",
    ]:
        status, body = raw_get(server, path)
        assert 400 <= status < 500 and "error" in body, (path, status, body)
    status, body = raw_get(server, "/api/info", host="rebound.example.com")
    assert status == 400 and "error" in body
    assert raw_get(server, "/api/info")[0] == 200


def _src(page: Any, selector: str) -> str:
    return str(page.get_attribute(selector, "src") or "")


def _wait_for_new_image(page: Any, selector: str, before: str) -> str:
    """Wait until the <img> at `selector` shows a decoded image other than `before`."""
    page.wait_for_function(
        """([selector, before]) => {
            const img = document.querySelector(selector);
            return img.src.startsWith('data:image/png') && img.src !== before
                && img.complete && img.naturalWidth > 0;
        }""",
        arg=[selector, before],
        timeout=10000,
    )
    return _src(page, selector)


def _strip(page: Any, selector: str) -> list[str]:
    return list(
        page.eval_on_selector_all(
            f"{selector} img",
            "images => images.filter(i => i.complete && i.naturalWidth > 0).map(i => i.src)",
        )
    )


def test_hover_click_slider_interpolation_and_arithmetic_in_chromium(server: str) -> None:
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on(
                "request",
                lambda r: r.url.startswith((server, "data:")) or problems.append(r.url),
            )
            page.goto(server)
            page.wait_for_selector("body[data-ready='true']", timeout=15000)
            assert "32 images" in (page.text_content("#summary") or "")

            # hover: the point's own image and label appear
            x, y = page.evaluate("window.latentExplorer.pointOnPage(3)")
            page.mouse.move(x, y)
            page.wait_for_selector("#hover:not([hidden])", timeout=5000)
            page.wait_for_function(
                "() => { const i = document.getElementById('hover-image');"
                " return i.complete && i.naturalWidth === 12; }",
                timeout=5000,
            )
            assert (page.text_content("#hover-label") or "").startswith("#")

            # click two places on the map: a decoded image appears, then changes
            box = page.locator("#map").bounding_box()
            assert box is not None
            page.mouse.click(box["x"] + 0.3 * box["width"], box["y"] + 0.3 * box["height"])
            first = _wait_for_new_image(page, "#picked-image", "")
            page.click("button[data-slot='a']")
            page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + 0.7 * box["height"])
            second = _wait_for_new_image(page, "#picked-image", first)
            page.click("button[data-slot='b']")

            # drag the first slider to its right end: the value and the image change, and
            # releasing it shows that dimension's sweep
            slider = page.locator("#sliders input[data-dim='0']")
            shown = page.text_content("#sliders output")
            track = slider.bounding_box()
            assert track is not None
            middle_y = track["y"] + track["height"] / 2
            page.mouse.move(track["x"] + track["width"] / 2, middle_y)
            page.mouse.down()
            page.mouse.move(track["x"] + track["width"] - 1, middle_y, steps=8)
            page.mouse.up()
            dragged = _wait_for_new_image(page, "#picked-image", second)
            assert page.text_content("#sliders output") != shown
            page.wait_for_function(
                "() => document.querySelectorAll('#traversal img').length === 11", timeout=10000
            )
            page.click("button[data-slot='c']")

            # interpolate A -> B: two strips of decoded images, which change with B
            page.fill("#steps", "7")
            page.click("#interpolate")
            page.wait_for_function(
                "() => ['#lerp', '#slerp'].every(s => [...document.querySelectorAll(s + ' img')]"
                ".filter(i => i.complete && i.naturalWidth > 0).length === 7)",
                timeout=10000,
            )
            lerp = _strip(page, "#lerp")
            assert len(set(lerp)) > 1 and len(_strip(page, "#slerp")) == 7
            page.click("button[data-slot='b']")  # B is now the dragged code
            page.click("#interpolate")
            page.wait_for_function(
                "(before) => { const s = [...document.querySelectorAll('#lerp img')]"
                ".map(i => i.src); return s.length === 7 && s.join() !== before.join(); }",
                arg=lerp,
                timeout=10000,
            )

            # A - B + C
            page.click("#arithmetic")
            result = _wait_for_new_image(page, "#arithmetic-image", "")
            page.click("#arithmetic-pick")
            page.wait_for_function(
                "(src) => document.getElementById('picked-image').src === src",
                arg=result,
                timeout=5000,
            )
            assert dragged != first
        finally:
            browser.close()
    assert problems == []
