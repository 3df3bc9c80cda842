"""DCGAN vs the foundation VAE on MNIST and Fashion-MNIST, under the same training-time budget,
scored by FID/KID in latentspace's own classifier features (not Inception: not comparable with
published numbers) against the floor (real training images vs the same real test images), plus
the class distribution of the samples (target: all 10 classes within 20% of uniform).

    nice -n 5 .venv/bin/python bench/gan_vs_vae.py --minutes 15 --out runs/bench-gan

"15 minutes on 2 cores": each model trains on --threads torch threads (default 2) until the next
epoch would overrun --minutes x --threads of the training process's CPU time (or its epoch cap).
CPU time rather than wall-clock time, so that other jobs on a shared machine do not shorten a
model's training. CPU time stands for --minutes on --threads cores only while the threads keep
busy, so the wall-clock time is printed and saved beside it: on the 2-core machine the MNIST
DCGAN used 30.5 CPU minutes in 15.3 minutes (docs/gans.md). Results are printed and written to
OUT/results.json; run directories stay in OUT, and a run directory that already exists there is
reused, not retrained (its CPU time is read from OUT/NAME/bench_time.json).
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
from latentspace._device import DEFAULT_CPU_THREADS
from latentspace.analysis.classifier import feature_network
from latentspace.analysis.quality import QualityReport, evaluate_quality
from latentspace.config import apply_overrides, load_config
from latentspace.train import StopTraining, Trainer

CONFIGS = {"mnist": "mnist-dcgan", "fashion-mnist": "fashion-dcgan"}  # shipped configs


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


def train_timed(config: ls.Config, out: Path, minutes: float) -> tuple[ls.Run, dict[str, float]]:
    """(run, {"cpu_seconds", "wall_seconds", "epochs"} of its training); a finished run in `out`
    is reused."""
    timing = out / "bench_time.json"
    if (out / "config.json").exists():
        run = ls.open_run(out)
        epochs = [r for r in run.metrics if r.get("kind") == "epoch"]
        if timing.exists():
            times = {k: float(v) for k, v in json.loads(timing.read_text()).items()}
        else:  # a run from before the CPU-time budget: its wall-clock time
            wall = sum(r["seconds"] for r in epochs)
            times = {"cpu_seconds": wall, "wall_seconds": wall}
        return run, {**times, "epochs": len(epochs)}
    start, wall = time.process_time(), time.perf_counter()
    run = ls.train(config, out, callbacks=[TimeBudget(minutes * 60)], report=False)
    times = {"cpu_seconds": time.process_time() - start, "wall_seconds": time.perf_counter() - wall}
    timing.write_text(json.dumps(times) + "\n")
    epochs = [r for r in run.metrics if r.get("kind") == "epoch"]
    return run, {**times, "epochs": len(epochs)}


def row(name: str, report: QualityReport, times: dict[str, float], threads: int) -> dict[str, Any]:
    return {
        "model": name,
        "epochs": int(times["epochs"]),
        "threads": threads,
        "train_cpu_minutes": round(times["cpu_seconds"] / 60, 2),
        "train_wall_minutes": round(times["wall_seconds"] / 60, 2),
        **dataclasses.asdict(report),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(CONFIGS))
    parser.add_argument(
        "--minutes", type=float, default=15.0, help="training budget per model, in minutes"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads (cores) per model (default 2)"
    )
    parser.add_argument(
        "--gan-epochs", type=int, default=None, help="epoch cap for the GAN (default: its config's)"
    )
    parser.add_argument("--vae-epochs", type=int, default=30, help="epoch cap for the VAE")
    parser.add_argument(
        "-n",
        type=int,
        default=50000,
        help="generated images per model (default 50000: the largest class deviation of 10000 "
        "samples of one generator ranged over 19.8-24.5%% between two sample seeds)",
    )
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
    torch.set_num_threads(args.threads)
    budget = args.minutes * args.threads  # CPU minutes
    threads_set = [f"train.threads={args.threads}"]
    results: list[dict[str, Any]] = []
    for dataset in args.datasets:
        _, info = feature_network(dataset)
        print(f"{dataset}: {info.label}, test accuracy {info.test_accuracy:.4f}", flush=True)
        cap = [] if args.gan_epochs is None else [f"train.epochs={args.gan_epochs}"]
        gan_config = apply_overrides(
            load_config(CONFIGS[dataset]), [*threads_set, *cap, *args.overrides]
        )
        vae_config = apply_overrides(
            ls.default_config("vae", dataset=dataset, epochs=args.vae_epochs), threads_set
        )
        for name, config in (("dcgan", gan_config), ("vae", vae_config)):
            run, times = train_timed(config, args.out / f"{dataset}-{name}", budget)
            report = evaluate_quality(run, n=args.n)
            threads = run.config.train.threads or DEFAULT_CPU_THREADS  # a reused run's own
            results.append({"dataset": dataset, **row(name, report, times, threads)})
            print(
                f"--- {dataset} {name}: {times['epochs']:.0f} epochs in "
                f"{times['cpu_seconds'] / 60:.1f} CPU min ({times['wall_seconds'] / 60:.1f} min "
                f"wall-clock, {threads} thread{'s' if threads > 1 else ''})",
                flush=True,
            )
            for line in report.lines():
                print(line, flush=True)
        gan, vae = results[-2], results[-1]
        print(
            f"=== {dataset}: FID ({gan['features']}) DCGAN {gan['fid']:.2f}, VAE {vae['fid']:.2f}, "
            f"floor {gan['floor_fid']:.2f}; DCGAN/VAE = {gan['fid'] / vae['fid']:.3f}; "
            f"DCGAN classes {gan['max_deviation']:.1%} off uniform at most "
            f"({'meets' if gan['max_deviation'] <= 0.2 else 'misses'} the 20% target)",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
