"""The GPU path, measured: one prepared script to run when a GPU machine is lent.

Three measurements of the conv VAE (latentspace's `model.architecture = "conv"` VAE) on 28x28
images, each printed as a ratio against its baseline measured in the same run:

1. latentspace's trainer (`ls.train`: data resident on the GPU, fused Adam, loss terms read every
   25 steps, channels-last weights) in float32 and bf16 against the textbook PyTorch loop on the
   same GPU and the same network: a `TensorDataset` through a `DataLoader` (pinned memory), each
   batch moved with `.to(device)`, non-fused Adam, `loss.item()` after every step;
2. the same trainer with the networks compiled (`nn.Module.compile`, torch.compile in place)
   against eager, on a fixed number of steps after the compilation;
3. 1 -> N GPUs: `torchrun --nproc_per_node n -m latentspace train` for n = 1, 2, 4, ... up to the
   GPUs present (NCCL), samples/s from the runs' epoch records, the same global batch.

The images are generated (blobs, the shape of Fashion-MNIST: speed does not depend on content),
so nothing is downloaded. `--dry` runs every part on the CPU with a few hundred images and gloo
processes instead of GPUs, to check the script itself where no GPU is lent.

    .venv/bin/python bench/gpu_check.py            # on the GPU machine (about 5 minutes)
    .venv/bin/python bench/gpu_check.py --dry      # anywhere: a smoke run on the CPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

import latentspace as ls
from latentspace.config import Config, apply_overrides
from latentspace.models import build_model


def _images(n: int, seed: int = 0) -> np.ndarray:
    """n blobs, (n, 28, 28) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    centres = rng.uniform(4, 24, (n, 2, 1, 1))
    radii = rng.uniform(2, 9, (n, 1, 1))
    blobs = np.exp(-((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) / (2 * radii**2))
    return (blobs * 255).astype(np.uint8)


def _config(data: Path, device: str, epochs: int, *overrides: str) -> Config:
    config = ls.default_config("vae", dataset=str(data), epochs=epochs, batch_size=128)
    return apply_overrides(
        config, ["model.architecture=conv", f"train.device={device}", *overrides]
    )


def _speed(run: ls.Run) -> float:
    """The median samples/s of the run's epochs after the first (which pays for warm-up)."""
    epochs = [r for r in run.metrics if r.get("kind") == "epoch"]
    return float(statistics.median(r["samples_per_s"] for r in (epochs[1:] or epochs)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def textbook(config: Config, images: np.ndarray, epochs: int) -> float:
    """The pytorch/examples loop around the same network; samples/s of its epochs after the
    first (median)."""
    device = torch.device(config.train.device)
    torch.manual_seed(0)
    model = build_model(config.model, (1, 28, 28), config.train).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    floats = torch.from_numpy(images).unsqueeze(1).float().div(255)
    loader = DataLoader(
        TensorDataset(floats),
        batch_size=config.train.batch_size,
        shuffle=True,
        pin_memory=device.type == "cuda",
    )
    speeds = []
    for _ in range(epochs):
        _sync(device)
        started = time.perf_counter()
        for (x,) in loader:
            x = x.to(device)
            loss = model.loss(x).total
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()  # the textbook loop logs every step
        _sync(device)
        speeds.append(len(floats) / (time.perf_counter() - started))
    return float(statistics.median(speeds[1:] or speeds))


def trainer_speed(config: Config, out: Path) -> float:
    return _speed(ls.train(config, out, quiet=True, report=False, diagnostics=False))


def compiled_ratio(config: Config, images: np.ndarray, steps: int) -> tuple[float, float]:
    """(compiled / eager training steps per second, seconds the compilation took), on one
    batch repeated, after warm-up."""
    device = torch.device(config.train.device)
    x = torch.from_numpy(images[: config.train.batch_size]).unsqueeze(1).float().div(255)
    x = x.to(device)
    rates, compile_seconds = [], 0.0
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model(config.model, (1, 28, 28), config.train).to(device)
        optimizers = model.configure_optimizers()
        started = time.perf_counter()
        if compiled:
            for network in model.children():  # the encoder and the decoder
                network.compile()
        for _ in range(3):
            model.training_step(x, optimizers)
        _sync(device)
        if compiled:
            compile_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(steps):
            model.training_step(x, optimizers)
        _sync(device)
        rates.append(steps / (time.perf_counter() - started))
    return rates[1] / rates[0], compile_seconds


def scaling(data: Path, device: str, epochs: int, folder: Path, dry: bool) -> dict[int, float]:
    """samples/s of torchrun with 1, 2, 4, ... processes (one per GPU; gloo CPU processes of one
    thread when dry)."""
    most = 2 if dry else torch.cuda.device_count()
    counts = [n for n in (1, 2, 4, 8, 16) if n <= most]
    speeds = {}
    for n in counts:
        out = folder / f"torchrun-{n}"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={n}",
            "-m",
            "latentspace",
            "train",
            "--dataset",
            str(data),
            "--set",
            "model.architecture=conv",
            "--epochs",
            str(epochs),
            "--batch-size",
            "128",
            "--device",
            device,
            "--threads",
            "1",
            "--out",
            str(out),
            "--quiet",
            "--no-report",
            "--no-diagnostics",
        ]
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        speeds[n] = _speed(ls.open_run(out))
    return speeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="a smoke run on the CPU")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.dry and not torch.cuda.is_available():
        print("no CUDA GPU is visible: run with --dry to check the script on the CPU")
        return 1
    device = "cpu" if args.dry else "cuda"
    n, epochs, steps = (512, 2, 5) if args.dry else (60000, args.epochs, 200)
    if not args.dry:
        print(
            f"{torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} GPU(s), torch "
            f"{torch.__version__}",
            flush=True,
        )
    images = _images(n)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as name:
        folder = Path(name)
        data = folder / "blobs.npy"
        np.save(data, images)
        base = textbook(_config(data, device, epochs), images, epochs)
        print(f"textbook loop, float32: {base:.0f} samples/s", flush=True)
        for precision in ("fp32", "bf16"):
            config = _config(data, device, epochs, f"train.precision={precision}")
            speed = trainer_speed(config, folder / f"trainer-{precision}")
            print(
                f"latentspace, {precision}: {speed:.0f} samples/s, {speed / base:.2f}x the "
                "textbook loop",
                flush=True,
            )
        ratio, seconds = compiled_ratio(_config(data, device, 1), images, steps)
        print(
            f"torch.compile (encoder and decoder): {ratio:.2f}x eager steps/s, after "
            f"{seconds:.0f}s of compilation",
            flush=True,
        )
        speeds = scaling(data, device, epochs, folder, args.dry)
        one = speeds[1]
        for count, speed in speeds.items():
            print(
                f"torchrun, {count} x {'CPU process' if args.dry else 'GPU'}: {speed:.0f} "
                f"samples/s, {speed / one:.2f}x one",
                flush=True,
            )
        if len(speeds) == 1:
            print("one GPU here: no 1 -> N scaling to measure")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
