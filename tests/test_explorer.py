"""`latentspace explore`: the explorer's API through starlette's TestClient, on tiny AE, VAE and
GAN runs: the map, hover images, decoding a map point (the exact inverse of PCA), sliders,
interpolation, arithmetic, the codes cache of a slow encoder, the CLI, and hostile requests."""

from __future__ import annotations

import base64
import io
import json
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import latentspace as ls
from conftest import make_images
from latentspace import runs
from latentspace.cli import main
from latentspace.config import apply_overrides
from latentspace.errors import ConfigError
from latentspace.explorer import codes as explorer_codes
from latentspace.explorer import open_explorer, require_server
from latentspace.explorer.session import Explorer, png

pytest.importorskip("starlette")
pytest.importorskip("httpx")
with warnings.catch_warnings():
    # starlette 1.x prefers the httpx2 package for its TestClient and warns when it finds httpx
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from latentspace.explorer.app import create_app

FAMILIES = ("vae", "ae", "gan")
N_HELD_OUT = 32  # 64 images, half held out
PROBE = 3  # images encoded to time an encoder: one to warm it up, then two


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=make_images(64), labels=np.arange(64) % 4)
    return path


def train_tiny(data: Path, out: Path, family: str, latent_dim: int = 3) -> Path:
    """One epoch of a tiny run; a GAN inverts in a few steps so its codes come quickly."""
    config = ls.default_config(
        family,
        dataset=str(data),
        epochs=1,
        batch_size=16,
        latent_dim=latent_dim,
        hidden_sizes=(32,),
        device="cpu",
    )
    overrides = ["data.val_fraction=0.5"]
    if family == "gan":
        overrides += ["model.inversion_steps=5", "model.inversion_restarts=1"]
    ls.train(apply_overrides(config, overrides), out, quiet=True, diagnostics=False, report=False)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {family: train_tiny(data, root / family, family) for family in FAMILIES}


def quiet_explorer(run_dir: Path, **options: Any) -> Explorer:
    return open_explorer(ls.open_run(run_dir), progress=False, log=lambda line: None, **options)


@pytest.fixture(scope="module")
def explorers(trained: dict[str, Path]) -> dict[str, Explorer]:
    return {family: quiet_explorer(path) for family, path in trained.items()}


@pytest.fixture(scope="module")
def client(explorers: dict[str, Explorer]) -> Iterator[TestClient]:
    with TestClient(create_app(explorers["vae"])) as test_client:
        yield test_client


def image_of(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def decoded_by_model(explorer: Explorer, code: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        image = explorer.run.model.decode(code[None].float())[0]
    return np.asarray(Image.open(io.BytesIO(png(image))))


# ---- every family, through the model contract only ---------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_maps_decodes_traverses_interpolates_and_adds(
    family: str, explorers: dict[str, Explorer]
) -> None:
    explorer = explorers[family]
    with TestClient(create_app(explorer)) as http:
        info = http.get("/api/info").json()
        assert info["latent_dim"] == 3 and info["points"] == N_HELD_OUT
        assert info["image_shape"] == [1, 12, 12] and info["classes"] == ["0", "1", "2", "3"]
        assert len(info["low"]) == len(info["high"]) == 3
        assert all(lo < hi for lo, hi in zip(info["low"], info["high"], strict=True))
        points = http.get("/api/map").json()
        assert len(points["x"]) == len(points["y"]) == len(points["label"]) == N_HELD_OUT
        assert set(points["label"]) <= {0, 1, 2, 3}

        picked = http.post("/api/point", json={"x": points["x"][0], "y": points["y"][0]}).json()
        assert image_of(picked["image"]).shape == (12, 12)
        decoded = http.post("/api/decode", json={"code": picked["code"]}).json()
        assert np.array_equal(image_of(decoded["image"]), image_of(picked["image"]))

        sweep = http.post("/api/traverse", json={"code": picked["code"], "dim": 1, "steps": 5})
        values = sweep.json()["values"]
        assert len(sweep.json()["images"]) == 5
        assert values[0] == pytest.approx(info["low"][1]) and values[-1] == pytest.approx(
            info["high"][1]
        )

        strips = http.post("/api/interpolate", json={"a": 0, "b": 1, "steps": 6}).json()
        assert len(strips["lerp"]) == len(strips["slerp"]) == 6

        result = http.post("/api/arithmetic", json={"a": 0, "b": 1, "c": 2}).json()
        items = [http.get(f"/api/item/{i}").json()["code"] for i in range(3)]
        expected = np.array(items[0]) - np.array(items[1]) + np.array(items[2])
        assert np.allclose(result["code"], expected, atol=1e-5)
        exact = explorer.codes[0] - explorer.codes[1] + explorer.codes[2]
        assert np.array_equal(image_of(result["image"]), decoded_by_model(explorer, exact))


def test_hovering_shows_the_held_out_image_and_its_label(
    client: TestClient, explorers: dict[str, Explorer]
) -> None:
    response = client.get("/api/image/5")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(response.content)))
    assert np.array_equal(shown, explorers["vae"].images.images[5, 0].numpy())
    item = client.get("/api/item/5").json()
    assert np.array_equal(image_of(item["original"]), shown)
    assert item["label"] == str(int(explorers["vae"].images.labels[5])) and item["index"] == 5


def test_a_click_decodes_the_exact_inverse_of_the_pca_map(explorers: dict[str, Explorer]) -> None:
    """The code of a clicked point lies on the map's plane and projects back onto the point;
    the image is the model's decoding of that code."""
    explorer = explorers["vae"]
    assert explorer.plane is not None
    mean, directions = explorer.plane
    with TestClient(create_app(explorer)) as http:
        for x, y in [(0.3, -0.2), (float(explorer.points[4, 0]), float(explorer.points[4, 1]))]:
            picked = http.post("/api/point", json={"x": x, "y": y}).json()
            code = torch.tensor(picked["code"])
            back = (code - mean) @ directions.T
            assert torch.allclose(back, torch.tensor([x, y]), atol=1e-4)
            assert np.array_equal(image_of(picked["image"]), decoded_by_model(explorer, code))
    # a map point that is an item's projection decodes that item's code projected on the plane
    item = explorer.codes[4]
    assert torch.allclose(
        explorer.code_at(*explorer.points[4].tolist()),
        mean + (item - mean) @ directions.T @ directions,
        atol=1e-5,
    )


def test_a_two_dimensional_latent_space_is_its_own_map(tmp_path: Path, data: Path) -> None:
    run = train_tiny(data, tmp_path / "run", "vae", latent_dim=2)
    explorer = quiet_explorer(run)
    assert explorer.axes == ("z0", "z1")
    assert torch.equal(explorer.points, explorer.codes)
    assert torch.equal(explorer.code_at(0.5, -1.5), torch.tensor([0.5, -1.5]))


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_a_nonlinear_map_click_weights_the_codes_of_the_nearest_points(
    trained: dict[str, Path], method: str
) -> None:
    pytest.importorskip("sklearn" if method == "tsne" else "umap")
    explorer = quiet_explorer(trained["ae"], method=method)
    assert explorer.points.shape == (len(explorer.codes), 2)
    assert explorer.plane is None and "nearest" in explorer.click()
    assert explorer.axes[0].startswith({"tsne": "t-SNE", "umap": "UMAP"}[method])
    # on a point: that point's own code; between points: inside the box of the codes
    assert torch.equal(explorer.code_at(*explorer.points[3].tolist()), explorer.codes[3])
    middle = explorer.points[:2].mean(0)
    code = explorer.code_at(*middle.tolist())
    assert bool((code >= explorer.codes.min(0).values - 1e-6).all())
    assert bool((code <= explorer.codes.max(0).values + 1e-6).all())
    with TestClient(create_app(explorer)) as http:
        assert http.get("/api/info").json()["method"] == method
        assert http.post("/api/point", json={"x": 0.0, "y": 0.0}).status_code == 200


def test_interpolation_ends_are_the_items_and_slerp_differs_from_lerp(client: TestClient) -> None:
    a, b = (client.get(f"/api/item/{i}").json() for i in (0, 7))
    strips = client.post("/api/interpolate", json={"a": a["code"], "b": 7, "steps": 8}).json()
    assert np.array_equal(image_of(strips["lerp"][0]), image_of(a["image"]))
    assert np.array_equal(image_of(strips["lerp"][-1]), image_of(b["image"]))
    inner = [
        (image_of(p), image_of(q)) for p, q in zip(strips["lerp"], strips["slerp"], strict=True)
    ]
    assert any(not np.array_equal(p, q) for p, q in inner[1:-1])


def test_a_slider_changes_the_decoded_image(client: TestClient) -> None:
    code = client.get("/api/item/2").json()["code"]
    info = client.get("/api/info").json()
    moved = [*code]
    moved[0] = info["high"][0]
    first = image_of(client.post("/api/decode", json={"code": code}).json()["image"])
    second = image_of(client.post("/api/decode", json={"code": moved}).json()["image"])
    assert not np.array_equal(first, second)


# ---- the page and its files ------------------------------------------------------------------
def test_the_page_and_its_files_are_served_from_the_package(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name, kind in [("explorer.js", "text/javascript"), ("explorer.css", "text/css")]:
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
    # nothing is fetched from elsewhere: every src and href is a path of this server
    from latentspace.explorer.app import STATIC

    for path in STATIC.iterdir():
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path


# ---- hostile requests ---------------------------------------------------------------------------
HOSTILE: list[tuple[str, str, Any, int]] = [
    ("GET", "/static/../runs.py", None, 404),
    ("GET", "/static/%2e%2e/runs.py", None, 404),
    ("GET", "/static/%2e%2e%2fruns.py", None, 404),
    ("GET", "/static/..%2F..%2F..%2Fetc%2Fpasswd", None, 404),
    ("GET", "/static/%252e%252e%252fruns.py", None, 404),
    ("GET", "/static/explorer.js%00.png", None, 404),
    ("GET", "/static/", None, 404),
    ("GET", "/static//etc/passwd", None, 404),
    ("GET", "/api/image/32", None, 404),
    ("GET", "/api/image/99999999999999999999999", None, 404),
    ("GET", "/api/image/-1", None, 400),
    ("GET", "/api/image/abc", None, 400),
    ("GET", "/api/image/1.5", None, 400),
    ("GET", "/api/item/%2e%2e", None, 400),
    ("GET", "/nothing/here", None, 404),
    ("GET", "/api/decode", None, 405),
    ("POST", "/api/decode", {"code": [1, 2]}, 400),
    ("POST", "/api/decode", {"code": [1, 2, 3, 4]}, 400),
    ("POST", "/api/decode", {"code": ["a", "b", "c"]}, 400),
    ("POST", "/api/decode", {"code": [True, 0, 0]}, 400),
    ("POST", "/api/decode", {"code": [1e39, 0, 0]}, 400),
    ("POST", "/api/decode", {"code": [10**400, 0, 0]}, 400),
    ("POST", "/api/decode", {"code": [[1], [2], [3]]}, 400),
    ("POST", "/api/decode", {"code": "0,0,0"}, 400),
    ("POST", "/api/decode", {"code": None}, 400),
    ("POST", "/api/decode", {}, 400),
    ("POST", "/api/decode", [0, 0, 0], 400),
    ("POST", "/api/decode", b'{"code": [NaN, 0, 0]}', 400),
    ("POST", "/api/decode", b'{"code": [Infinity, 0, 0]}', 400),
    ("POST", "/api/decode", b'{"code": [0, 0, 0]', 400),
    ("POST", "/api/decode", b"\xff\xfe\x00garbage", 400),
    ("POST", "/api/decode", b"[" * 40000, 400),
    ("POST", "/api/decode", b"[" + b"0," * 2_000_000 + b"0]", 413),
    ("POST", "/api/point", {"x": "1", "y": 0}, 400),
    ("POST", "/api/point", {"x": 1e309, "y": 0}, 400),
    ("POST", "/api/point", {"x": 0}, 400),
    ("POST", "/api/traverse", {"code": 0, "dim": 3}, 400),
    ("POST", "/api/traverse", {"code": 0, "dim": 0, "steps": 1000}, 400),
    ("POST", "/api/traverse", {"code": 0, "dim": 0, "steps": "5"}, 400),
    ("POST", "/api/traverse", {"code": 0, "dim": 0.5}, 400),
    ("POST", "/api/interpolate", {"a": 0, "b": 999}, 404),
    ("POST", "/api/interpolate", {"a": 0, "b": -1}, 400),
    ("POST", "/api/interpolate", {"a": 0, "b": 1, "steps": 1}, 400),
    ("POST", "/api/arithmetic", {"a": 0, "b": 1}, 400),
    ("POST", "/api/arithmetic", {"a": [3e38, 0, 0], "b": [-3e38, 0, 0], "c": 0}, 400),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), HOSTILE)
def test_a_hostile_request_is_a_4xx_with_a_json_message_and_the_server_keeps_serving(
    client: TestClient, method: str, path: str, body: Any, status: int
) -> None:
    if isinstance(body, bytes):
        response = client.request(method, path, content=body)
    elif body is not None:
        response = client.request(method, path, content=json.dumps(body))
    else:
        response = client.request(method, path)
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert isinstance(message, str) and message and "\n" not in message and len(message) < 200
    assert client.get("/api/info").status_code == 200


def test_a_lying_content_length_is_refused(client: TestClient) -> None:
    for length in ["abc", "99999999999"]:
        response = client.post("/api/decode", content=b"{}", headers={"Content-Length": length})
        assert 400 <= response.status_code < 500
        assert "error" in response.json()


def test_a_loopback_explorer_answers_only_its_own_host_names(
    explorers: dict[str, Explorer],
) -> None:
    app = create_app(explorers["vae"], allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1:8765") as http:
        assert http.get("/api/info").status_code == 200
    with TestClient(app, base_url="http://rebound.example.com") as http:
        refused = http.get("/api/info")
        assert refused.status_code == 400 and "localhost" in refused.json()["error"]


# ---- a slow encoder's codes: computed once, cached by the weights ---------------------------
def test_slow_codes_are_cached_by_weights_and_resumed(
    trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    run_dir = tmp_path / "gan"
    shutil.copytree(trained["gan"], run_dir)
    monkeypatch.setattr(explorer_codes, "_SLOW_BATCH", 8)
    slow = {"progress": False, "log": lambda line: None, "encode_budget_s": 1e-9}
    first = open_explorer(ls.open_run(run_dir), **slow)
    cache = run_dir / explorer_codes.CACHE
    assert cache.is_file()

    encoded: list[int] = []

    def counting(run: runs.Run) -> runs.Run:
        original = run.model.encode

        def encode(x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            encoded.append(len(x))
            return original(x, **kwargs)

        monkeypatch.setattr(run.model, "encode", encode)
        return run

    again = open_explorer(counting(ls.open_run(run_dir)), **slow)
    assert torch.equal(again.codes, first.codes)
    assert sum(encoded) == PROBE  # the probe that times the encoder, nothing more

    # half the codes cached (an interrupted start): only the rest are encoded
    with np.load(cache) as stored:
        partial = {k: stored[k] for k in stored.files}
    partial["codes"] = partial["codes"][:16]
    with cache.open("wb") as handle:
        np.savez(handle, **partial)
    encoded.clear()
    resumed = open_explorer(counting(ls.open_run(run_dir)), **slow)
    assert torch.allclose(resumed.codes, first.codes, atol=1e-6)
    assert sum(encoded) - PROBE == N_HELD_OUT - 16

    # other weights: the codes are computed again
    run = ls.open_run(run_dir)
    with torch.no_grad():
        next(run.model.parameters()).add_(0.05)
    runs.save_model(run_dir, run.model, epoch=1)
    encoded.clear()
    open_explorer(counting(ls.open_run(run_dir)), **slow)
    assert sum(encoded) - PROBE == N_HELD_OUT


def test_a_damaged_cache_is_ignored(trained: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "gan"
    shutil.copytree(trained["gan"], run_dir)
    (run_dir / explorer_codes.CACHE).write_bytes(b"PK\x03\x04 not a zip")
    lines: list[str] = []
    explorer = open_explorer(
        ls.open_run(run_dir), progress=False, log=lines.append, encode_budget_s=1e-9
    )
    assert len(explorer) == N_HELD_OUT and any("encoding 32 images" in line for line in lines)


# ---- the command ----------------------------------------------------------------------------
def test_the_command_binds_loopback_and_serves_the_map(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import latentspace.explorer as explorer_package

    served: dict[str, Any] = {}

    def serve(explorer: Explorer, sock: socket.socket, *, open_browser: bool = False) -> None:
        served.update(points=len(explorer), address=sock.getsockname(), browser=open_browser)
        sock.close()

    monkeypatch.setattr(explorer_package, "serve", serve)
    assert main(["explore", str(trained["ae"]), "--port", "0", "--limit", "10"]) == 0
    assert served["points"] == 10 and served["address"][0] == "127.0.0.1"
    assert served["browser"] is False


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--limit", "0"], "--limit 0"),
        (["--limit", "10001"], "1 to 10000"),
        (["--host", "no such host.invalid"], "--host"),
    ],
)
def test_the_command_refuses_in_one_line(
    trained: dict[str, Path], capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    assert main(["explore", str(trained["vae"]), "--port", "0", *arguments]) == 1
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error


def test_a_port_in_use_is_one_line(
    trained: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["explore", str(trained["vae"]), "--port", str(port)]) == 1
    error = capsys.readouterr().err.strip()
    assert f"127.0.0.1:{port}" in error and "--port" in error and "\n" not in error


def test_the_socket_says_tcp_so_responses_are_not_held_back() -> None:
    """asyncio sets TCP_NODELAY on a connection only when the listening socket's protocol is
    IPPROTO_TCP; a socket made with proto 0 answered every request ~40 ms late (Nagle's
    algorithm waiting for the client's delayed ACK)."""
    from latentspace.explorer import bind

    with bind("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP


def test_without_the_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'latentspace\[explore\]'"):
        require_server()
