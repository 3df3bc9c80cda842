"""Training on 2 processes (torchrun, gloo) against 1 process, one thread each, side by side.

Each model trains twice from the same config and seed: `latentspace train` in one process with
one thread, then `torchrun --nproc_per_node 2 -m latentspace train` (two processes of one thread,
the same global batch: each process takes half of every batch and the gradients are averaged).
Printed per model: samples/s of each (the median of its epochs after the first, from the run's
own epoch records), their ratio, and for the VAEs the loss on the test split after training
(the negative ELBO per image, averaged over the test images) with its relative difference.

Targets (issue 21): the conv VAE on Fashion-MNIST at >= 1.6x on a 2-core machine, its test loss
after 5 epochs within 1%; the 784-400-20 MLP VAE (where communication weighs more) and the MNIST
DCGAN (shipped config mnist-dcgan, in float32) printed. Run it alone on the machine: both sides
share its cores, so a neighbour's load bends the ratio.

    .venv/bin/python bench/ddp_speed.py            # full: 5 epochs of each model, 60000 images
    .venv/bin/python bench/ddp_speed.py --quick    # smoke: 1 epoch on 2048 images, float32
    .venv/bin/python bench/ddp_speed.py --only DCGAN --epochs 3 --limit 12800   # the GAN's ratio
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

import torch

import latentspace as ls
from latentspace.data import Batches, held_out
from latentspace.train import average_terms

# name -> (latentspace train arguments, whether the family has a test loss to compare)
MODELS: dict[str, tuple[list[str], bool]] = {
    "conv VAE, Fashion-MNIST": (
        ["--model", "vae", "--dataset", "fashion-mnist", "--set", "model.architecture=conv"],
        True,
    ),
    "MLP VAE 784-400-20, MNIST": (
        ["--model", "vae", "--dataset", "mnist", "--hidden", "400", "--latent-dim", "20"],
        True,
    ),
    # float32: the shipped config's bf16 is 10x slower on a CPU without bf16 units (this one)
    "DCGAN, MNIST (mnist-dcgan)": (["--config", "mnist-dcgan", "--precision", "fp32"], False),
}


def _train(arguments: list[str], out: Path, processes: int) -> float:
    """Train into `out` with `processes` processes of one thread; the wall seconds."""
    launcher = [sys.executable]
    if processes > 1:  # torchrun; --standalone: a rendezvous on a free local port
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [*launcher, "-m", "latentspace", "train", *arguments, "--out", str(out)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=environment, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _speed(run: ls.Run) -> float:
    """The median samples/s of the run's epochs after the first (which pays for warm-up)."""
    epochs = [r for r in run.metrics if r.get("kind") == "epoch"]
    speeds = [r["samples_per_s"] for r in (epochs[1:] or epochs)]
    return float(statistics.median(speeds))


def _test_loss(run: ls.Run) -> float:
    """The model's validation terms' total on the held-out (test) images."""
    images = held_out(run.config).images
    if images is None:
        return float("nan")
    batches = Batches(images.images, 500, device=run.model.device)
    torch.manual_seed(0)  # the VAE's loss draws one code per image
    return average_terms(run.model, batches)["total"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 epoch, 2048 images, float32"
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--only", help="train only the models whose name contains this")
    parser.add_argument(
        "--limit", type=int, default=0, help="train on the first N images (samples/s only)"
    )
    args = parser.parse_args(argv)
    epochs = 1 if args.quick else args.epochs
    common = ["--epochs", str(epochs), "--threads", "1", "--device", "cpu", "--quiet"]
    common += ["--no-report", "--no-diagnostics"]
    if args.limit and not args.quick:
        common += ["--set", f"data.limit={args.limit}"]
    if args.quick:  # float32: bf16 is slow on a CPU without bf16 units
        common += ["--set", "data.limit=2048", "--set", "train.precision=fp32"]
    print(f"{epochs} epoch(s) each; 1 process x 1 thread against 2 processes x 1 thread")
    with tempfile.TemporaryDirectory(prefix="ddp-speed-") as folder:
        for index, (name, (arguments, has_loss)) in enumerate(MODELS.items()):
            if args.only and args.only.lower() not in name.lower():
                continue
            runs: dict[int, tuple[ls.Run, float]] = {}
            for processes in (1, 2):
                out = Path(folder) / f"{index}-{processes}"
                wall = _train([*arguments, *common], out, processes)
                runs[processes] = (ls.open_run(out), wall)
            one, two = (_speed(runs[p][0]) for p in (1, 2))
            line = (
                f"{name}: 1 process {one:.0f} samples/s, 2 processes {two:.0f} samples/s, "
                f"ratio {two / one:.2f}x (wall {runs[1][1]:.0f}s / {runs[2][1]:.0f}s)"
            )
            if has_loss:
                loss_one, loss_two = (_test_loss(runs[p][0]) for p in (1, 2))
                difference = (loss_two - loss_one) / abs(loss_one)
                line += f"; test loss {loss_one:.2f} / {loss_two:.2f} ({100 * difference:+.2f}%)"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
