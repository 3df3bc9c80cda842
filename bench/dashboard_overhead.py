"""Cost of the live dashboards per epoch: the 784-400-20 MLP VAE on MNIST trained without a
logger, with TensorBoardLogger and with MLflowLogger (its default store, RUN/mlflow.db), in the
same process, one thread, the three alternating (the order rotated each repeat). Target: a run
with --log tensorboard costs < 3% more time per epoch than one without.

Per-epoch time is the wall time between consecutive on_epoch_end calls (steps, validation,
checkpoint, diagnostics and every callback), the first epoch of each run left out (warm-up);
the median over all repeats is compared. On a machine shared with other work, the wall times of
separate runs differ by more than the effect, so two steadier measures are printed too: the
process's CPU time per epoch (the writer threads included; waits on the disk, such as SQLite's
fsync, excluded) and the wall and CPU time spent inside the logger's own hooks, which is the
overhead itself (the first epoch's decisions included, spread over the run's epochs).

    .venv/bin/python bench/dashboard_overhead.py [--images 10000] [--epochs 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import latentspace as ls
from latentspace.dashboards import MLflowLogger, TensorBoardLogger
from latentspace.train import train

HOOKS = ("on_train_start", "on_batch_end", "on_checkpoint", "on_epoch_end", "on_train_end")


class Timed:
    """Forwards the trainer's hooks to `inner`, timing each (seconds by hook name)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.seconds: dict[str, float] = dict.fromkeys(HOOKS, 0.0)
        self.cpu: dict[str, float] = dict.fromkeys(HOOKS, 0.0)  # the process's, all threads
        for hook in HOOKS:
            method = getattr(inner, hook, None)
            if method is not None:
                setattr(self, hook, self._timed(hook, method))

    def _timed(self, hook: str, method: Any) -> Any:
        def call(*args: Any) -> None:
            start, start_cpu = time.perf_counter(), time.process_time()
            method(*args)
            self.seconds[hook] += time.perf_counter() - start
            self.cpu[hook] += time.process_time() - start_cpu

        return call

    def per_epoch(self, epochs: int, cpu: bool = False) -> float:
        spent = self.cpu if cpu else self.seconds
        return (spent["on_checkpoint"] + spent["on_epoch_end"] + spent["on_batch_end"]) / epochs


class EpochClock:
    """Wall and CPU time of each epoch: between consecutive on_epoch_end calls (placed last)."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def on_train_start(self, trainer: object) -> None:
        self.marks = [(time.perf_counter(), time.process_time())]

    def on_epoch_end(self, trainer: object, record: dict[str, Any]) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))

    def steady_epochs(self, clock: int) -> list[float]:
        """Every epoch but the first, by wall (clock 0) or CPU time (clock 1)."""
        marks = [m[clock] for m in self.marks]
        return [b - a for a, b in itertools.pairwise(marks[1:])]


def make_logger(name: str) -> object | None:
    return {"none": None, "tensorboard": TensorBoardLogger(), "mlflow": MLflowLogger()}[name]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    # MLflow's SQL store deprecation warning (SQLAlchemy 2.1) is silenced by the logger itself
    warnings.simplefilter("default")
    torch.set_num_threads(1)
    config = ls.default_config(
        "vae",
        dataset=args.dataset,
        limit=args.images,
        epochs=args.epochs,
        hidden_sizes=(400,),
        latent_dim=20,
        device="cpu",
        threads=1,
    )
    names = ["none", "tensorboard", "mlflow"]
    epochs: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    hooks: dict[str, list[Timed]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = names[repeat % 3 :] + names[: repeat % 3]
            for name in order:
                clock = EpochClock()
                logger = make_logger(name)
                timed = Timed(logger) if logger is not None else None
                callbacks = [c for c in (timed, clock) if c is not None]
                out = Path(tmp) / f"{name}-{repeat}"
                train(config, out, quiet=True, callbacks=callbacks)
                epochs[name].extend(clock.steady_epochs(0))
                cpu[name].extend(clock.steady_epochs(1))
                if timed is not None:
                    hooks[name].append(timed)
    print(
        f"MLP VAE 784-400-20, {args.dataset}, {args.images} images, {args.epochs} epochs per run "
        f"(the first left out), 1 thread, {args.repeats} runs each, alternating"
    )
    base = statistics.median(epochs["none"])
    base_cpu = statistics.median(cpu["none"])
    print(
        f"no logger:   median epoch {base:.3f} s, CPU {base_cpu:.3f} s "
        f"({len(epochs['none'])} epochs)"
    )
    for name in names[1:]:
        median = statistics.median(epochs[name])
        median_cpu = statistics.median(cpu[name])
        wall = statistics.median(t.per_epoch(args.epochs) for t in hooks[name])
        used = statistics.median(t.per_epoch(args.epochs, cpu=True) for t in hooks[name])
        start = statistics.median(t.seconds["on_train_start"] for t in hooks[name])
        end = statistics.median(t.seconds["on_train_end"] for t in hooks[name])
        print(
            f"{name + ':':12} median epoch {median:.3f} s, ratio {median / base:.3f}; "
            f"CPU {median_cpu:.3f} s, ratio {median_cpu / base_cpu:.3f}"
        )
        print(
            f"{'':12} in its hooks per epoch: {wall * 1000:.1f} ms wall ({wall / base:.2%} of an "
            f"epoch), {used * 1000:.1f} ms CPU ({used / base_cpu:.2%}); "
            f"once: start {start:.2f} s, end {end:.2f} s"
        )


if __name__ == "__main__":
    main()
