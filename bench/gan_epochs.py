"""Epoch by epoch: how a DCGAN's samples improve under the CPU-time budget of gan_vs_vae.py.

    nice -n 5 .venv/bin/python bench/gan_epochs.py mnist --out /tmp/gan-epochs/mnist \\
        --set model.lr_d=4e-4 --extra-ema 0.999 --from-epoch 10

Trains the shipped mnist-dcgan config (or fashion-dcgan) with --set overrides on --threads torch
threads until one more epoch would pass --minutes x --threads of the process's CPU time, as the
bench does. After every epoch from --from-epoch on, it measures the generator being trained
("raw"), its moving average when model.ema > 0 ("ema") and the moving averages of any --extra-ema
decays kept beside the run ("ema0.999"): each gets, on a copy, standing batch-norm statistics
over 20000 codes (as a finished run does), then generates 20000 images. One JSON line per epoch:
each generator's class shares under latentspace's classifier, their largest deviation from
uniform, and FID (latentspace classifier features; the first 10000 images) against the 10000
test images. The measuring is not charged to the budget. Lines go to OUT/epochs.jsonl.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import latentspace as ls
from latentspace.analysis.classifier import FeatureNetwork, feature_network
from latentspace.analysis.quality import class_distribution, fid_kid, uniform_deviation
from latentspace.config import apply_overrides, load_config
from latentspace.data import resolve
from latentspace.models.gan import GAN
from latentspace.models.moving_average import update_moving_average
from latentspace.train import StopTraining, Trainer

STANDING = 20000  # codes for each probe's batch-norm statistics
SAMPLES = 20000  # images per probe: class shares from all, FID from the first 10000
CONFIGS = {"mnist": "mnist-dcgan", "fashion-mnist": "fashion-dcgan"}  # shipped configs


class EpochProbe:
    """Keeps the extra moving averages and measures every generator after every epoch."""

    def __init__(
        self,
        network: FeatureNetwork,
        reference: torch.Tensor,
        minutes: float,
        extra: list[float],
        log: Path,
        first: int = 1,
    ) -> None:
        self.network, self.reference = network, reference
        self.first = first
        self.seconds = minutes * 60
        self.decays = extra
        self.averages: dict[float, nn.Module] = {}
        self.updates = 0
        self.log = log
        self.start = self.measuring = 0.0

    def on_train_start(self, trainer: Trainer) -> None:
        model = trainer.model
        assert isinstance(model, GAN)
        self.start = time.process_time()
        self.averages = {
            d: copy.deepcopy(model.generator).requires_grad_(False) for d in self.decays
        }

    @torch.no_grad()
    def on_batch_end(self, trainer: Trainer, x: torch.Tensor, terms: Any) -> None:
        if not self.averages:
            return
        start = time.process_time()
        generator = trainer.model.generator
        assert isinstance(generator, nn.Module)
        updates = torch.tensor(self.updates)
        for decay, average in self.averages.items():  # the same rule as the run's own average
            update_moving_average(average, generator, updates, decay)
        self.updates += 1
        self.measuring += time.process_time() - start

    @torch.no_grad()
    def _samples(self, model: GAN, generator: nn.Module) -> torch.Tensor:
        """SAMPLES images from a copy of `generator` with standing batch-norm statistics over
        STANDING codes (as the run's own sampling after training; the statistics left by training
        make the class shares swing by several points between otherwise equal generators)."""
        generator = copy.deepcopy(generator)
        batch = model.train_config.batch_size
        model.standing_statistics(STANDING // batch, batch, network=generator)
        generator.eval()
        seeded = torch.Generator().manual_seed(0)
        images = [
            torch.sigmoid(generator(model.sample_latent(1000, generator=seeded)))
            for _ in range(SAMPLES // 1000)
        ]
        return torch.cat(images)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        start = time.process_time()
        used = start - self.start - self.measuring
        model = trainer.model
        assert isinstance(model, GAN)
        row: dict[str, Any] = {
            "epoch": record["epoch"],
            "cpu_minutes": round(used / 60, 2),
            "lr": record["lr"],
            "d_real": round(record["train"]["d_real"], 3),
            "d_fake": round(record["train"]["d_fake"], 3),
        }
        generators: list[tuple[str, nn.Module]] = []
        if record["epoch"] >= self.first:
            generators.append(("raw", model.generator))
            if model.generator_ema is not None:
                generators.append(("ema", model.generator_ema))
            generators += [(f"ema{d:g}", average) for d, average in self.averages.items()]
        for name, generator in generators:
            images = self._samples(model, generator)
            shares = class_distribution(images, self.network)
            row[name] = {
                "deviation": round(uniform_deviation(shares), 3),
                "fid": round(
                    fid_kid(self.reference, images[:10000], self.network, kid_subsets=5)[0], 2
                ),
                "classes": [round(v, 3) for v in shares.tolist()],
            }
        self.measuring += time.process_time() - start
        print(json.dumps(row), flush=True)
        with self.log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if used + used / record["epoch"] > self.seconds:
            raise StopTraining(f"time budget: {used / 60:.1f} CPU min used")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=list(CONFIGS))
    parser.add_argument("--out", type=Path, required=True, help="a new run directory")
    parser.add_argument("--minutes", type=float, default=15.0, help="minutes of training")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument(
        "--from-epoch", type=int, default=1, help="measure from this epoch on (default 1)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--extra-ema", default="", help="more moving-average decays to measure, e.g. 0.99,0.999"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    network, _ = feature_network(args.dataset)
    reference = resolve(f"{args.dataset}:test").images
    config = apply_overrides(
        load_config(CONFIGS[args.dataset]), [f"train.threads={args.threads}", *args.overrides]
    )
    extra = [float(d) for d in args.extra_ema.split(",") if d]
    args.out.mkdir(parents=True, exist_ok=True)
    probe = EpochProbe(
        network,
        reference,
        args.minutes * args.threads,
        extra,
        args.out / "epochs.jsonl",
        args.from_epoch,
    )
    ls.train(config, args.out, callbacks=[probe], quiet=True, diagnostics=False, report=False)


if __name__ == "__main__":
    main()
