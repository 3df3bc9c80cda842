"""Overhead of the study machinery per trial, against a one-epoch MNIST trial (target < 5%).

The machinery is everything a worker does around training: counting the budget under the lock,
asking the sampler, recording the worker on the trial, telling the result, rewriting trials.csv
and best.toml (journal file storage). It is measured two ways, in one process:

1. stub trials: the worker loop with an objective that only suggests and builds the config
   (no training), for each sampler, over the first and the last 10 of 100 trials (the samplers'
   cost grows with the study);
2. real one-epoch MNIST trials: each trial's wall time minus the time spent inside training.

The baseline, a one-epoch MNIST trial, is `latentspace.train` on the default VAE timed directly.

    nice -n 5 .venv/bin/python bench/tune_overhead.py
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import latentspace as ls
from latentspace.tune.report import write_tables
from latentspace.tune.study import _quiet_optuna_warnings, open_study, options_for
from latentspace.tune.workers import _Objective, run_trial


class _StubObjective(_Objective):
    """Suggests and builds the config like a real trial, then returns a made-up loss."""

    def __call__(self, trial: Any) -> float:
        from latentspace.config import apply_overrides

        apply_overrides(self.base, self.space.suggest(trial))
        trial.set_user_attr("epochs", 1)
        return 100 + random.random()


def machinery(options: Any, stub: bool, count: int) -> list[tuple[float, float]]:
    """(wall seconds per trial, seconds inside the objective) for `count` trials."""
    timings = []
    with _quiet_optuna_warnings():
        study, storage = open_study(options, create=True, with_storage=True)
        base, space = options.base_config(), options.load_space()
        kind = _StubObjective if stub else _Objective
        objective = kind(options, base, space)
        for _ in range(count):
            start = time.perf_counter()
            trial = run_trial(study, storage, objective, options)
            write_tables(study, options, base, space)
            wall = time.perf_counter() - start
            inside = 0.0 if stub else float(trial.user_attrs["train_seconds"])
            timings.append((wall, inside))
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stub-trials", type=int, default=100)
    parser.add_argument("--real-trials", type=int, default=2)
    parser.add_argument("--samplers", default="tpe,gp,random")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    base = ls.default_config("vae", dataset="mnist", epochs=1, device="cpu")

    # the baseline: a one-epoch MNIST trial without any study
    with tempfile.TemporaryDirectory() as tmp:
        epoch_times = []
        for i in range(2):
            start = time.perf_counter()
            ls.train(base, Path(tmp) / f"plain{i}", quiet=True, report=False)
            epoch_times.append(time.perf_counter() - start)
    epoch = statistics.median(epoch_times)
    print(f"one-epoch MNIST trial (default VAE, plain train()): {epoch:.2f} s (median of 2)")

    space = {"train": {"epochs": 1}}
    for sampler in args.samplers.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            options = options_for(
                base, space, "bench", out=tmp, study="stub", trials=10**6, sampler=sampler,
                seed=0, quiet=True,
            )  # fmt: skip
            walls = [w for w, _ in machinery(options, stub=True, count=args.stub_trials)]
        first, last = statistics.mean(walls[:10]), statistics.mean(walls[-10:])
        print(
            f"{sampler:6s} stub trials: {1000 * first:7.1f} ms/trial over trials 1-10 "
            f"({100 * first / epoch:.2f}% of the epoch), {1000 * last:7.1f} ms over "
            f"{len(walls) - 9}-{len(walls)} ({100 * last / epoch:.2f}%)"
        )
    if args.real_trials:
        with tempfile.TemporaryDirectory() as tmp:
            options = options_for(
                base, {"replace": True, "train": {"epochs": 1}}, "bench", out=tmp, study="real",
                trials=10**6, sampler="tpe", seed=0, quiet=True,
            )  # fmt: skip
            timings = machinery(options, stub=False, count=args.real_trials)
        for wall, inside in timings:
            print(
                f"real one-epoch trial: {wall:.2f} s wall, {inside:.2f} s training, "
                f"machinery {1000 * (wall - inside):.0f} ms = {100 * (wall - inside) / inside:.2f}%"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
