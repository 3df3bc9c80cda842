"""Explorer latency: how fast a click on the map comes back decoded (target: p95 < 50 ms for the
784-400-20 MNIST VAE on one CPU thread).

Starts the real server (`latentspace explore RUN --threads 1 --port 0`, its own process), sends
N clicks at random points of the map as POST /api/point over HTTP (one keep-alive connection,
one at a time, as a page does), and times each round trip. In this process, on one thread, it
then times the same work without HTTP: the bare `model.decode` of one code, and the whole click
(`code_at` + decode + PNG). Prints p50/p95/p99 and the ratios, since machines are noisy.

    .venv/bin/python bench/explorer_latency.py [--run RUN] [--requests 1000] [--work DIR]

Without --run it trains a 784-400-20 VAE on MNIST for --epochs (default 1) into --work (kept,
reused by the next call); MNIST comes from `make data`.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

import latentspace as ls
from latentspace.explorer import open_explorer

URL = re.compile(r"at (http://\S+/) ")


def trained_run(work: Path, epochs: int) -> Path:
    out = work / f"mnist-vae-784-400-20-{epochs}ep"
    if (out / "model.safetensors").is_file():
        print(f"reusing {out}")
        return out
    config = ls.default_config(
        "vae",
        dataset="mnist",
        epochs=epochs,
        latent_dim=20,
        hidden_sizes=(400,),
        device="cpu",
    )
    start = time.perf_counter()
    ls.train(config, out, quiet=True, diagnostics=False, report=False)
    print(f"trained {out} ({epochs} epoch(s), {time.perf_counter() - start:.0f} s)")
    return out


def start_server(run: Path, limit: int) -> tuple[subprocess.Popen[str], str, float]:
    command = [sys.executable, "-m", "latentspace", "explore", str(run), "--port", "0"]
    command += ["--threads", "1", "--limit", str(limit)]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        found = URL.search(line)
        if found:
            return process, found.group(1), time.perf_counter() - start
    process.wait()
    raise SystemExit(f"the explorer did not start (exit {process.returncode})")


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)} | {"max": float(ms.max())}


def line(name: str, stats: dict[str, float]) -> str:
    return f"{name:<44} " + "  ".join(f"{k} {v:7.3f} ms" for k, v in stats.items())


def clicks(n: int, bounds: tuple[float, float, float, float], seed: int) -> np.ndarray:
    low_x, high_x, low_y, high_y = bounds
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(low_x, high_x, n), rng.uniform(low_y, high_y, n)], axis=1)


def over_http(url: str, n: int, seed: int) -> tuple[list[float], dict[str, float]]:
    with httpx.Client(base_url=url, timeout=30) as client:
        start = time.perf_counter()
        response = client.get("/api/map")
        map_s = time.perf_counter() - start
        points = response.json()
        bounds = (min(points["x"]), max(points["x"]), min(points["y"]), max(points["y"]))
        extra = {"map_ms": map_s * 1000, "map_kib": len(response.content) / 1024}
        extra["points"] = len(points["x"])
        for x, y in clicks(20, bounds, seed + 1):  # warm-up: connection, allocator, caches
            client.post("/api/point", json={"x": float(x), "y": float(y)})
        times = []
        for x, y in clicks(n, bounds, seed):
            start = time.perf_counter()
            reply = client.post("/api/point", json={"x": float(x), "y": float(y)})
            times.append(time.perf_counter() - start)
            if reply.status_code != 200:
                raise SystemExit(f"POST /api/point answered {reply.status_code}: {reply.text}")
    return times, extra


def in_process(run: Path, n: int, limit: int, seed: int) -> tuple[list[float], list[float]]:
    """(bare decode of one code, the whole click without HTTP) in seconds, one thread."""
    torch.set_num_threads(1)
    explorer = open_explorer(ls.open_run(run), limit=limit, progress=False, log=lambda s: None)
    points = explorer.points
    bounds = (
        float(points[:, 0].min()),
        float(points[:, 0].max()),
        float(points[:, 1].min()),
        float(points[:, 1].max()),
    )
    where = clicks(n, bounds, seed)
    codes = [explorer.code_at(float(x), float(y))[None] for x, y in where]
    model = explorer.run.model
    decode, click = [], []
    with torch.no_grad():
        for code in codes[:20]:
            model.decode(code)
        for code in codes:
            start = time.perf_counter()
            model.decode(code)
            decode.append(time.perf_counter() - start)
    for x, y in where:
        start = time.perf_counter()
        explorer.decode(explorer.code_at(float(x), float(y))[None])
        click.append(time.perf_counter() - start)
    return decode, click


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained run (default: train the VAE)")
    parser.add_argument("--work", type=Path, help="where the default VAE is trained and kept")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the default VAE")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=10000, help="points on the map")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = args.work or Path(tempfile.gettempdir()) / "latentspace-explorer-bench"
    run = args.run or trained_run(work, args.epochs)
    config = ls.open_run(run).config
    print(f"run {run}: {config.model.name}, latent_dim {config.model.latent_dim}")

    server, url, startup_s = start_server(run, args.limit)
    try:
        http, extra = over_http(url, args.requests, args.seed)
    finally:
        server.terminate()
        server.wait(10)
    decode, click = in_process(run, args.requests, args.limit, args.seed)

    print(
        f"server ready in {startup_s:.1f} s (encode + map of {extra['points']} held-out images); "
        f"GET /api/map {extra['map_ms']:.0f} ms, {extra['map_kib']:.0f} KiB"
    )
    print(f"{args.requests} clicks, one at a time, one torch thread in each process:")
    served = percentiles(http)
    bare = percentiles(decode)
    print(line("server: POST /api/point over HTTP", served))
    print(line("in-process click (code_at + decode + PNG)", percentiles(click)))
    print(line("in-process model.decode of one code", bare))
    print(
        f"ratio server / in-process decode: p50 {served['p50'] / bare['p50']:.1f}x, "
        f"p95 {served['p95'] / bare['p95']:.1f}x; mean {statistics.mean(http) * 1000:.3f} ms"
    )
    verdict = "met" if served["p95"] < 50 else "NOT met"
    print(f"target p95 < 50 ms: {verdict} (p95 {served['p95']:.2f} ms)")


if __name__ == "__main__":
    main()
