"""Test negative ELBO of the pytorch/examples VAE shape (784-400-20, Adam 1e-3, batch 128, BCE on
continuous pixels) trained with latentspace for 10 epochs. Target: <= 106 nats within 10 epochs
(pytorch/examples reads about 106.7 after 7).

The test-set figure after each epoch comes from a callback; training itself is `ls.train`.

    .venv/bin/python bench/mnist_elbo.py [--epochs 10] [--device cpu|cuda] [--precision fp32|bf16]

The test ELBO is always computed in float32, also for a model trained with bf16 mixed precision.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch

import latentspace as ls
from latentspace.data import Batches, resolve
from latentspace.train import average_terms


class TestELBO:
    def __init__(self) -> None:
        self.test = resolve("mnist:test").images
        self.curve: list[float] = []

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        torch.manual_seed(0)  # one posterior sample per image, the same each epoch
        terms = average_terms(trainer.model, Batches(self.test, 500, device=trainer.device))
        self.curve.append(terms["total"])
        print(
            f"epoch {record['epoch']:2d}: test -ELBO {terms['total']:.2f} nats "
            f"(reconstruction {terms['reconstruction']:.2f}, KL {terms['kl']:.2f})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    args = parser.parse_args()
    config = ls.default_config(
        "vae",
        dataset="mnist",
        epochs=args.epochs,
        hidden_sizes=(400,),
        latent_dim=20,
        batch_size=128,
        lr=1e-3,
        device=args.device,
        precision=args.precision,
        val_fraction=0.0,
    )
    probe = TestELBO()
    with tempfile.TemporaryDirectory() as tmp:
        run = ls.train(config, Path(tmp) / "run", quiet=True, callbacks=[probe], report=False)
        seconds = sum(r["seconds"] for r in run.metrics)
    best = min(probe.curve)
    print(
        f"best test -ELBO {best:.2f} nats at epoch {probe.curve.index(best) + 1} "
        f"({seconds:.0f} s of training); target <= 106 within 10 epochs: "
        f"{'reached' if best <= 106 else 'NOT reached'}"
    )


if __name__ == "__main__":
    main()
