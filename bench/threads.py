"""Threads: samples/s of one MNIST epoch with 1 and with 2 torch threads, alternating.

The default (`latentspace._device.DEFAULT_CPU_THREADS`) should be whichever wins on a machine
like the one users run; on a busy 2-core machine OpenMP spin-waiting makes 2 threads lose.
`--model vae` trains an MLP VAE; `--model dcgan` the shipped mnist-dcgan config on the
first 12800 images (its larger convolutions split better between threads).

    .venv/bin/python bench/threads.py [--rounds 3] [--model vae|dcgan]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import latentspace as ls
from latentspace.config import apply_overrides, load_config


def epoch(threads: int, model: str) -> float:
    if model == "dcgan":
        overrides = ["train.epochs=1", "data.limit=12800", "data.val_fraction=0"]
        config = apply_overrides(
            load_config("mnist-dcgan"), [*overrides, f"train.threads={threads}"]
        )
    else:
        config = ls.default_config(
            "vae",
            dataset="mnist",
            epochs=1,
            hidden_sizes=(512, 256),
            latent_dim=32,
            val_fraction=0.0,
            threads=threads,
            device="cpu",
        )
    with tempfile.TemporaryDirectory() as tmp:
        run = ls.train(config, Path(tmp) / "r", quiet=True, diagnostics=False, report=False)
        return float(run.metrics[-1]["samples_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", choices=["vae", "dcgan"], default="vae")
    args = parser.parse_args()
    print(
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    one, two = [], []
    for i in range(args.rounds):
        one.append(epoch(1, args.model))
        two.append(epoch(2, args.model))
        print(f"round {i + 1}: 1 thread {one[-1]:7.0f}   2 threads {two[-1]:7.0f} samples/s")
    print(f"best: 2 threads / 1 thread = {max(two) / max(one):.2f}x")


if __name__ == "__main__":
    main()
