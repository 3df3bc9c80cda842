"""DCGAN vs the foundation VAE on MNIST and Fashion-MNIST, under the same training-time budget,
scored by FID/KID in latentspace's own classifier features (not Inception: not comparable with
published numbers) against the floor (real training images vs the same real test images), plus
the class distribution of the samples (target: all 10 classes within 20% of uniform).

    nice -n 5 .venv/bin/python bench/gan_vs_vae.py --minutes 15 --out runs/bench-gan

Each model trains until the next epoch would overrun --minutes of the training process's CPU
time (or its epoch cap). Training runs on one torch thread, so that is the time one idle core
would take, whatever else the machine is doing; wall-clock time on a shared machine would charge
a model for the other jobs. Results are printed and written to OUT/results.json; run directories
stay in OUT, and a run directory that already exists there is reused, not retrained (its CPU time
is read from OUT/NAME/bench_time.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

import latentspace as ls
from latentspace.classifier import feature_network
from latentspace.config import apply_overrides, load_config
from latentspace.quality import QualityReport, evaluate_quality
from latentspace.train import StopTraining, Trainer

CONFIGS = {"mnist": "configs/mnist-dcgan.toml", "fashion-mnist": "configs/fashion-dcgan.toml"}


class TimeBudget:
    """Stops training when one more epoch (as long as the average one so far) would pass
    `seconds` of this process's CPU time (time.process_time: all its threads, no other job's)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.process_time()

    def on_train_start(self, trainer: Trainer) -> None:
        self.start = time.process_time()

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        elapsed = time.process_time() - self.start
        per_epoch = elapsed / max(1, len([r for r in trainer.records if r["kind"] == "epoch"]))
        if elapsed + per_epoch > self.seconds:
            raise StopTraining(f"time budget: {elapsed / 60:.1f} CPU min used")


def train_timed(config: ls.Config, out: Path, minutes: float) -> tuple[ls.Run, float, int]:
    """(run, CPU seconds of training, epochs); a finished run in `out` is reused."""
    timing = out / "bench_time.json"
    if (out / "config.json").exists():
        run = ls.open_run(out)
        epochs = [r for r in run.metrics if r.get("kind") == "epoch"]
        if timing.exists():
            seconds = float(json.loads(timing.read_text())["cpu_seconds"])
        else:  # a run from before the CPU-time budget: its wall-clock time
            seconds = sum(r["seconds"] for r in epochs)
        return run, seconds, len(epochs)
    start, wall = time.process_time(), time.perf_counter()
    run = ls.train(config, out, callbacks=[TimeBudget(minutes * 60)])
    seconds = time.process_time() - start
    wall = time.perf_counter() - wall
    timing.write_text(json.dumps({"cpu_seconds": seconds, "wall_seconds": wall}) + "\n")
    epochs = [r for r in run.metrics if r.get("kind") == "epoch"]
    return run, seconds, len(epochs)


def row(name: str, report: QualityReport, seconds: float, epochs: int) -> dict[str, Any]:
    return {
        "model": name,
        "epochs": epochs,
        "train_cpu_minutes": round(seconds / 60, 2),
        **dataclasses.asdict(report),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(CONFIGS))
    parser.add_argument(
        "--minutes", type=float, default=15.0, help="training budget per model, in CPU minutes"
    )
    parser.add_argument(
        "--gan-epochs", type=int, default=None, help="epoch cap for the GAN (default: its config's)"
    )
    parser.add_argument("--vae-epochs", type=int, default=30, help="epoch cap for the VAE")
    parser.add_argument("-n", type=int, default=10000, help="generated images per model")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-gan"))
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override the DCGAN configs (repeatable)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: list[dict[str, Any]] = []
    for dataset in args.datasets:
        _, info = feature_network(dataset)
        print(f"{dataset}: {info.label}, test accuracy {info.test_accuracy:.4f}", flush=True)
        cap = [] if args.gan_epochs is None else [f"train.epochs={args.gan_epochs}"]
        gan_config = apply_overrides(load_config(CONFIGS[dataset]), [*cap, *args.overrides])
        vae_config = ls.default_config("vae", dataset=dataset, epochs=args.vae_epochs)
        for name, config in (("dcgan", gan_config), ("vae", vae_config)):
            run, seconds, epochs = train_timed(config, args.out / f"{dataset}-{name}", args.minutes)
            report = evaluate_quality(run, n=args.n)
            results.append({"dataset": dataset, **row(name, report, seconds, epochs)})
            print(
                f"--- {dataset} {name}: {epochs} epochs in {seconds / 60:.1f} CPU min", flush=True
            )
            for line in report.lines():
                print(line, flush=True)
        gan, vae = results[-2], results[-1]
        print(
            f"=== {dataset}: FID ({gan['features']}) DCGAN {gan['fid']:.2f}, VAE {vae['fid']:.2f}, "
            f"floor {gan['floor_fid']:.2f}; DCGAN/VAE = {gan['fid'] / vae['fid']:.3f}; "
            f"DCGAN classes within {gan['max_deviation']:.0%} of uniform "
            f"({'meets' if gan['max_deviation'] <= 0.2 else 'misses'} the 20% target)",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
