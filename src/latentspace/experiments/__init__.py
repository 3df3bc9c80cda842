"""Small controlled experiments: change one hyperparameter, hold the rest, train on real data,
and say whether the textbook claim held on this run, from the measured numbers.

    latentspace experiment learning-rate --budget 3
    latentspace experiment all --budget 20 --out experiments

Each experiment lives in its own module and returns its checks and HTML sections; `run_all` gives
each a share of the budget (what one leaves unused goes to the next) and writes an index page.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from latentspace import html
from latentspace.errors import ConfigError
from latentspace.experiments import (
    activation,
    batch_size,
    bias,
    capacity,
    epochs,
    learning_rate,
    posterior_collapse,
    regularization,
)
from latentspace.experiments._common import (
    Check,
    Context,
    Experiment,
    Result,
    Speed,
    base_config,
    run_trial,
    verdict_of,
    write_page,
)
from latentspace.runs import atomic_write

__all__ = [
    "EXPERIMENTS",
    "Check",
    "Result",
    "measure_speed",
    "run_all",
    "run_experiment",
    "verdict_of",
]

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        learning_rate.EXPERIMENT,
        batch_size.EXPERIMENT,
        epochs.EXPERIMENT,
        regularization.EXPERIMENT,
        capacity.EXPERIMENT,
        activation.EXPERIMENT,
        bias.EXPERIMENT,
        posterior_collapse.EXPERIMENT,
    )
}
# what each kind of experiment trains on when --dataset is not given
DEFAULT_DATASETS = {"images": "mnist", "text": "fortunes"}
DEFAULT_MINUTES = 3.0  # one experiment alone, without --budget


def measure_speed(out: Path, dataset: str, seed: int) -> Speed:
    """What training the reference model costs now (a few seconds): seconds per image at batch
    128 and 32 (giving compute and per-step costs), and the fixed costs of an epoch and a trial
    (from 2 and 10 epochs on 64 images)."""
    probe = Context(out, dataset, 0.0, seed, Speed(0.0, 0.0, 0.0, 0.0))

    def trial(name: str, n_train: int, n_val: int, epochs: int, batch: int) -> tuple[float, float]:
        config = base_config(probe, n_train, n_val, epochs, train__batch_size=batch)
        t = run_trial(probe, "_calibration", name, config)
        # the last epoch's loop time: the first steps of a process pay one-off set-up costs
        return t.seconds, t.epochs[-1]["seconds"] / n_train

    _, per_image_128 = trial("batch-128", 1280, 256, 2, 128)
    _, per_image_32 = trial("batch-32", 640, 256, 2, 32)
    short, _ = trial("short", 64, 64, 2, 128)
    long, _ = trial("long", 64, 64, 10, 128)
    shutil.rmtree(out / "_calibration", ignore_errors=True)
    step = max(0.0, (per_image_32 - per_image_128) / (1 / 32 - 1 / 128))
    compute = max(1e-7, per_image_128 - step / 128)
    per_epoch = max(0.0, (long - short) / 8)
    return Speed(compute, step, per_epoch, max(0.0, short - 2 * per_epoch))


def _check_dataset(dataset: str, inputs: str = "images") -> None:
    if inputs == "text":
        from latentspace.data.text import is_text

        if not is_text(dataset):
            raise ConfigError(
                f"this experiment trains on sentences: use --dataset fortunes or a .txt file of "
                f"one sentence a line (got {dataset!r})"
            )
        return
    if dataset not in ("mnist", "fashion-mnist"):
        raise ConfigError(
            f"experiments run on 28x28 digit or clothing images: use --dataset mnist or "
            f"fashion-mnist (got {dataset!r})"
        )


def _run(experiment: Experiment, ctx: Context) -> Result:
    start = time.perf_counter()
    checks, sections = experiment.run(ctx)
    seconds = time.perf_counter() - start
    page = write_page(ctx, experiment, checks, sections, seconds)
    return Result(experiment.name, experiment.title, experiment.claim, checks, page, seconds)


def run_experiment(
    name: str,
    out: str | Path,
    *,
    dataset: str | None = None,
    budget_minutes: float | None = None,
    seed: int = 0,
    speed: Speed | None = None,
    dashboards: Sequence[str] = (),
) -> Result:
    """Run one experiment into OUT/NAME (index.html, PNGs, trials/) on `dataset` (default: mnist,
    or fortunes for one that trains on text); `dashboards` names live loggers for every trial
    (latentspace.dashboards.LOGGERS)."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)}")
    inputs = EXPERIMENTS[name].inputs
    dataset = dataset or DEFAULT_DATASETS[inputs]
    _check_dataset(dataset, inputs)
    out = Path(out)
    if inputs != "images":  # the reference speed is an image model's; a text one sizes itself
        speed = speed or Speed(0.0, 0.0, 0.0, 0.0)
    speed = speed or measure_speed(out, dataset, seed)
    budget = 60 * (budget_minutes if budget_minutes is not None else DEFAULT_MINUTES)
    ctx = Context(out, dataset, budget, seed, speed, dashboards=tuple(dashboards))
    return _run(EXPERIMENTS[name], ctx)


def run_all(
    out: str | Path,
    *,
    dataset: str | None = None,
    budget_minutes: float | None = None,
    seed: int = 0,
    log: bool = True,
    dashboards: Sequence[str] = (),
) -> Path:
    """Every image experiment within `budget_minutes` in all; writes OUT/index.html (and the verdicts
    as OUT/results.json) and returns the page's path."""
    dataset = dataset or DEFAULT_DATASETS["images"]
    _check_dataset(dataset)
    out = Path(out)
    start = time.perf_counter()
    # all the image experiments, on one dataset (a text one runs alone, on its corpus)
    pending = [e for e in EXPERIMENTS.values() if e.inputs == "images"]
    total = 60 * (budget_minutes if budget_minutes is not None else DEFAULT_MINUTES * len(pending))
    speed = measure_speed(out, dataset, seed)
    results: list[Result] = []
    while pending:
        experiment = pending.pop(0)
        left = total - (time.perf_counter() - start)
        share = experiment.weight / (experiment.weight + sum(e.weight for e in pending))
        budget = max(10.0, left * share)
        ctx = Context(out, dataset, budget, seed, speed, dashboards=tuple(dashboards))
        result = _run(experiment, ctx)
        results.append(result)
        if log:
            print(f"{result.name}: {result.verdict_text} ({result.seconds:.0f} s)", flush=True)
    seconds = time.perf_counter() - start
    rows = "".join(
        f"<tr><td><a href='{html.escape(r.name)}/index.html'>{html.escape(r.title)}</a></td>"
        f"<td>{html.escape(r.verdict_text)}</td><td>{sum(c.passed for c in r.checks)}/"
        f"{len(r.checks)}</td><td>{r.seconds:.0f}</td><td>{html.escape(r.claim)}</td></tr>"
        for r in results
    )
    table = (
        "<table><tr><th>experiment</th><th>verdict</th><th>checks passed</th><th>s</th>"
        f"<th>claim</th></tr>{rows}</table>"
    )
    note = (
        f"<p class='note'>dataset {html.escape(dataset)}; budget {total / 60:.1f} min; took "
        f"{seconds / 60:.1f} min; reference throughput at the start {speed.samples_per_s:.0f} samples/s.</p>"
    )
    summary = {
        "dataset": dataset,
        "budget_s": total,
        "seconds": round(seconds, 1),
        "samples_per_s": round(speed.samples_per_s, 1),
        "experiments": [
            {
                "name": r.name,
                "verdict": r.verdict_text,
                "seconds": round(r.seconds, 1),
                "checks": [dataclasses.asdict(c) for c in r.checks],
            }
            for r in results
        ],
    }
    text = json.dumps(summary, indent=2) + "\n"
    atomic_write(out / "results.json", lambda tmp: tmp.write_text(text))
    return html.write_page(
        out / "index.html", "latentspace experiments", [("Results", table + note)]
    )
