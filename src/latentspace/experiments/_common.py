"""What every experiment shares: a budget, trials that are normal runs, checks, figures, a page.

An experiment changes one hyperparameter and holds the rest. Each trial is `ls.train(config, dir,
quiet=True)` into `OUT/<experiment>/trials/<trial>`, so it is an ordinary run (with its
diagnostics.jsonl) that `latentspace diagnose` and the other commands can open. Sizes (training
images, epochs) come from the budget and a throughput measured at the start, so an experiment
scales with `--budget` and with how busy the machine is.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from latentspace import html
from latentspace.config import Config, apply_overrides
from latentspace.diagnostics import read_diagnostics
from latentspace.errors import TrainingDiverged
from latentspace.progress import Progress, planned_after
from latentspace.runs import read_metrics

__all__ = [
    "Check",
    "Context",
    "Experiment",
    "Result",
    "Speed",
    "Trial",
    "TrialSpec",
    "base_config",
    "line_plot",
    "run_trial",
    "verdict_of",
]

# Share of the budget planned for training; the rest covers evaluation, figures, and a machine
# that gets busier while the experiment runs.
_PLANNED = 0.7
REFERENCE_WEIGHTS = 784 * 512 + 512 * 256 + 256 * 32 + 16 * 256 + 256 * 512 + 512 * 784
REFERENCE_HIDDEN = (512, 256)


@dataclasses.dataclass(frozen=True)
class Check:
    """One part of a claim, decided from measured numbers."""

    claim: str
    passed: bool
    evidence: str


@dataclasses.dataclass(frozen=True)
class Speed:
    """What training costs on this machine now, measured by `measure_speed` on the reference
    model: seconds per training image = compute * size + step / batch_size (size: the model's
    weights relative to the reference), plus fixed seconds per epoch (validation set-up,
    checkpoint, diagnostics) and per trial (data loading, run directory)."""

    compute: float
    step: float
    per_epoch: float
    per_trial: float

    @property
    def samples_per_s(self) -> float:
        """Reference model, batch 128."""
        return 1.0 / (self.compute + self.step / 128)

    def trial_seconds(self, spec: TrialSpec, epochs: int) -> float:
        image = self.compute * spec.size + self.step / spec.batch_size
        val = 0.35 * self.compute * spec.size  # a forward pass is about a third of a step
        return self.per_trial + epochs * (self.per_epoch + spec.n_train * image + spec.n_val * val)


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    """What one planned trial trains: images, batch size, model size relative to the reference."""

    n_train: int
    n_val: int
    batch_size: int = 128
    size: float = 1.0


@dataclasses.dataclass
class Context:
    """Where an experiment writes, on what data, within how many seconds, at what speed."""

    out: Path
    dataset: str
    budget_s: float
    seed: int
    speed: Speed
    started: float = dataclasses.field(default_factory=time.perf_counter)
    # the planned seconds of each trial (set by `epochs_for`) and the measured ones so far: the
    # progress lines' time left
    planned: list[float] = dataclasses.field(default_factory=list)
    measured: list[float] = dataclasses.field(default_factory=list)
    progress: Progress | None = None
    dashboards: tuple[str, ...] = ()  # live loggers for every trial (latentspace.dashboards)

    @property
    def samples_per_s(self) -> float:
        return self.speed.samples_per_s

    def sample_budget(self) -> float:
        """Training samples of the reference model the budget pays for (a first sizing; the
        epochs are then fitted with `epochs_for`)."""
        return self.budget_s * _PLANNED * self.samples_per_s

    def epochs_for(self, specs: Sequence[TrialSpec], *, min_epochs: int, max_epochs: int) -> int:
        """The most epochs (within the bounds) for which all `specs` fit the planned budget. The
        specs are the experiment's trials: their planned seconds are kept for the progress."""
        planned = self.budget_s * _PLANNED
        fixed = sum(self.speed.trial_seconds(s, 0) for s in specs)
        per_epoch = sum(self.speed.trial_seconds(s, 1) for s in specs) - fixed
        epochs = int((planned - fixed) / max(per_epoch, 1e-9))
        epochs = max(min_epochs, min(max_epochs, epochs))
        self.planned = [self.speed.trial_seconds(s, epochs) for s in specs]
        return epochs

    def seconds_left(self) -> float:
        """The command's time left before the next trial: the planned seconds of the trials to
        come, at the pace measured on the ones done, and what the command plans after this
        experiment (`experiment all`)."""
        done = len(self.measured)
        pace = sum(self.measured) / max(sum(self.planned[:done]), 1e-9) if done else 1.0
        own = pace * sum(self.planned[done:])
        return own + planned_after(self.started + self.budget_s)

    def trial_starts(self, experiment: str, name: str) -> None:
        """One progress line (a bar on a terminal): which trial, n of N, the time left."""
        if not self.planned:  # a calibration context plans nothing: it takes seconds
            return
        if self.progress is None:
            self.progress = Progress(f"experiment {experiment}", len(self.planned), unit="step")
        self.progress.phase(f"trial {name}", left=self.seconds_left())

    def trial_ends(self, seconds: float) -> None:
        self.measured.append(seconds)
        if self.progress is not None:
            self.progress.advance()
            if self.progress.done >= self.progress.total:
                self.progress.close()


def model_size(hidden: tuple[int, ...], latent_dim: int = 16) -> float:
    """Weights of an MLP VAE with these hidden sizes on 28x28 images, relative to the reference."""
    encoder = [784, *hidden, 2 * latent_dim]
    decoder = [latent_dim, *reversed(hidden), 784]
    total = sum(a * b for a, b in itertools.pairwise(encoder))
    total += sum(a * b for a, b in itertools.pairwise(decoder))
    return total / REFERENCE_WEIGHTS


@dataclasses.dataclass
class Trial:
    """One training run of an experiment and what it recorded."""

    name: str
    path: Path
    metrics: list[dict[str, Any]]
    diagnostics: list[dict[str, Any]]
    seconds: float
    diverged: str = ""  # the divergence message when the loss became NaN/inf

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return [m for m in self.metrics if m.get("kind", "epoch") == "epoch"]

    def val(self) -> list[float]:
        return [e["val"]["total"] for e in self.epochs]

    def train_data_loss(self) -> list[float]:
        """Training loss without the L1/L2 penalty terms (comparable with validation)."""
        return [
            e["train"]["total"] - e["train"].get("l1", 0.0) - e["train"].get("l2", 0.0)
            for e in self.epochs
        ]

    def evaluated_train_loss(self) -> float:
        """The trained model's loss on its own training images, measured like validation
        (eval mode, after the last epoch, fixed seed), so that val - this is a fair gap."""
        import torch

        from latentspace.data import Batches, prepare_data
        from latentspace.runs import open_run
        from latentspace.train import average_terms

        if self.diverged:
            return math.inf
        run = open_run(self.path)
        train_set, _ = prepare_data(run.config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return average_terms(run.model, Batches(train_set.images, 256))["total"]

    def final_val(self) -> float:
        values = self.val()
        return values[-1] if values and not self.diverged else math.inf


@dataclasses.dataclass
class Result:
    name: str
    title: str
    claim: str
    checks: list[Check]
    page: Path
    seconds: float

    @property
    def supported(self) -> bool:
        return verdict_of(self.checks)

    @property
    def verdict_text(self) -> str:
        return "supported" if self.supported else "not supported on this run"


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    claim: str
    run: Callable[[Context], tuple[list[Check], list[tuple[str, str]]]]
    weight: float = 1.0  # share of `experiment all`'s budget
    inputs: str = "images"  # what it trains on: images (`experiment all`) or text (one by one)


def verdict_of(checks: Sequence[Check]) -> bool:
    """A claim is supported when every one of its checks passed (and there was something to check)."""
    return bool(checks) and all(c.passed for c in checks)


def base_config(ctx: Context, n_train: int, n_val: int, epochs: int, **changes: Any) -> Config:
    """The held-constant setup: an MLP VAE (512, 256, latent 16), Adam 1e-3, batch 128, one thread,
    the first n_train + n_val training images of the dataset, of which n_val are held out."""
    import latentspace as ls
    from latentspace.models import DEFAULT_MODEL

    config = ls.default_config(
        DEFAULT_MODEL,
        dataset=ctx.dataset,
        epochs=max(1, epochs),
        device="cpu",
        threads=1,
        seed=ctx.seed,
    )
    total = n_train + n_val
    overrides = [f"data.limit={total}", f"data.val_fraction={n_val / total}"]
    for key, value in changes.items():
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        overrides.append(f"{key.replace('__', '.')}={text}")
    return apply_overrides(config, overrides)


def _trial_loggers(ctx: Context, experiment: str, path: Path) -> list[object]:
    """--log for a trial: TensorBoard in its folder, MLflow in OUT/mlflow.db (experiment name)."""
    if not ctx.dashboards:
        return []
    from latentspace.dashboards import make_loggers

    uri = f"sqlite:///{(ctx.out / 'mlflow.db').resolve()}"
    return make_loggers(ctx.dashboards, path, tracking_uri=uri, experiment=experiment)


def run_trial(ctx: Context, experiment: str, name: str, config: Config) -> Trial:
    """Train `config` as a normal run in OUT/experiment/trials/name (replacing an older one)."""
    import latentspace as ls

    path = ctx.out / experiment / "trials" / name
    if path.exists():
        shutil.rmtree(path)
    ctx.trial_starts(experiment, name)
    start = time.perf_counter()
    diverged = ""
    loggers = _trial_loggers(ctx, experiment, path)
    try:
        # the experiment's page shows the trials: no report per trial
        ls.train(config, path, quiet=True, report=False, callbacks=loggers)
    except TrainingDiverged as error:
        diverged = str(error)
    finally:
        if loggers:
            from latentspace.dashboards import close_loggers

            close_loggers(loggers, path)
    seconds = time.perf_counter() - start
    ctx.trial_ends(seconds)
    return Trial(
        name,
        path,
        read_metrics(path),
        read_diagnostics(path),
        seconds,
        diverged,
    )


def line_plot(
    path: Path,
    series: dict[str, Sequence[float]],
    *,
    xlabel: str = "epoch",
    ylabel: str = "validation loss",
    title: str = "",
    logy: bool = False,
    x: Sequence[float] | None = None,
    logx: bool = False,
    marks: dict[str, float] | None = None,
) -> Path:
    """One line per series (x defaults to 1..n); `marks` draws labelled vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, values in series.items():
        xs = list(x) if x is not None else list(range(1, len(values) + 1))
        ys = [v if math.isfinite(v) else math.nan for v in values]
        ax.plot(xs[: len(ys)], ys, marker="." if len(ys) < 40 else None, label=label)
    for label, at in (marks or {}).items():
        ax.axvline(at, color="gray", linestyle="--", linewidth=1)
        ax.annotate(label, (at, 0.98), xycoords=("data", "axes fraction"), fontsize=8, va="top")
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def figure(path: Path, caption: str) -> str:
    return html.img_tag(path, caption)


def fmt(value: float, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "diverged" if value is not None else "-"
    return format(value, spec)


def write_page(
    ctx: Context,
    experiment: Experiment,
    checks: Sequence[Check],
    sections: Sequence[tuple[str, str]],
    seconds: float,
) -> Path:
    supported = verdict_of(checks)
    verdict = "supported" if supported else "not supported on this run"
    rows = [(c.claim, "yes" if c.passed else "no", c.evidence) for c in checks]
    head = [
        ("Claim", f"<p>{html.escape(experiment.claim)}</p>"),
        (
            f"Verdict: {verdict}",
            "<p>Computed from the numbers below: the claim is supported when every check "
            "passes.</p>" + html.table(rows, ["check", "passed", "measured"]),
        ),
    ]
    tail = [
        (
            "How it was run",
            f"<p class='note'>dataset {html.escape(ctx.dataset)}; seed {ctx.seed}; budget "
            f"{ctx.budget_s / 60:.1f} min; took {seconds:.0f} s"
            + (  # an experiment that sizes itself (on text) measures no reference image model
                f"; reference throughput at the start {ctx.samples_per_s:.0f} samples/s (one "
                "thread)"
                if ctx.speed.compute > 0
                else ""
            )
            + ". Every trial is a normal run under trials/ (open one with <code>latentspace "
            "diagnose</code>).</p>",
        )
    ]
    return html.write_page(
        ctx.out / experiment.name / "index.html",
        f"Experiment: {experiment.title}",
        [*head, *sections, *tail],
    )
