"""Overhead of the training diagnostics: the MNIST MLP VAE trained with diagnostics on and off,
in the same process, one thread, alternating, best of N each. Prints the ratio (target <= 1.05).

    .venv/bin/python bench/diagnostics_overhead.py [--images 20000] [--epochs 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import latentspace as ls
from latentspace.diagnostics import read_diagnostics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = ls.default_config(
        "vae",
        dataset=args.dataset,
        limit=args.images,
        epochs=args.epochs,
        device="cpu",
        threads=1,
    )
    times: dict[bool, list[float]] = {True: [], False: []}
    own: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for on in (False, True):
                out = Path(tmp) / f"{'on' if on else 'off'}-{repeat}"
                start = time.perf_counter()
                ls.train(config, out, quiet=True, diagnostics=on, report=False)
                times[on].append(time.perf_counter() - start)
                if on:
                    own.append(sum(r["seconds"] for r in read_diagnostics(out)))
    off, on = min(times[False]), min(times[True])
    print(
        f"MLP VAE (512, 256; latent 16), {args.dataset}, {args.images} images, "
        f"{args.epochs} epochs, 1 thread, best of {args.repeats}"
    )
    print(f"diagnostics off: {off:.2f} s   on: {on:.2f} s   ratio on/off: {on / off:.3f}")
    print(
        f"time the callback itself measured: {min(own):.3f} s "
        f"({min(own) / off:.1%} of the run without it)"
    )


if __name__ == "__main__":
    main()
