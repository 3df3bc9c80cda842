"""learning-rate: a log-spaced sweep; too high overshoots, too low crawls."""

from __future__ import annotations

import math
from typing import Any

from latentspace import html
from latentspace.experiments._common import (
    Check,
    Context,
    Experiment,
    Trial,
    TrialSpec,
    base_config,
    figure,
    fmt,
    line_plot,
    run_trial,
)

RATES = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
MARGIN = 0.05  # "worse" means a final validation loss more than 5% above the best


def divergence(trial: Trial) -> str:
    """Why the trial diverged, or "" when it did not: its loss became NaN or infinite (the
    trainer stopped it), or at its last epoch its loss was above the untrained model's (the
    diagnostics' "diverged" finding: whatever it learned is lost, though the number is finite).
    The one definition behind the table, the sweep plot and the checks."""
    if trial.diverged:
        return "loss became NaN or infinite"
    last = trial.diagnostics[-1] if trial.diagnostics else {}
    if "diverged" in last.get("active", []):
        return "loss above the untrained model's"
    return ""


def final_losses(trials: dict[float, Trial]) -> dict[float, float]:
    """Learning rate -> validation loss after the last epoch; inf for a trial that diverged."""
    return {r: math.inf if divergence(t) else t.final_val() for r, t in trials.items()}


def checks_for(finals: dict[float, float], firsts: dict[float, float]) -> list[Check]:
    """finals / firsts: learning rate -> validation loss after the last / first epoch (inf when
    the run diverged). Pure, so the verdict can be tested on synthetic numbers."""
    rates = sorted(finals)
    best = min(rates, key=lambda r: finals[r])
    low, high = rates[0], rates[-1]
    top_bad = not math.isfinite(finals[high]) or finals[high] > finals[best] * (1 + MARGIN)
    low_progress = firsts[low] - finals[low]
    best_progress = firsts[best] - finals[best]
    crawls = finals[low] > finals[best] * (1 + MARGIN) and low_progress > 0
    return [
        Check(
            "the best learning rate lies inside the range, not at either end",
            best not in (low, high),
            f"best {best:g} (validation loss {fmt(finals[best])})",
        ),
        Check(
            "the highest rate overshoots: it diverges or ends clearly worse than the best",
            top_bad,
            f"lr {high:g}: {fmt(finals[high])} vs best {fmt(finals[best])}",
        ),
        Check(
            "the lowest rate crawls: still improving, but far behind the best",
            crawls,
            f"lr {low:g}: {fmt(finals[low])} (improved {fmt(low_progress, '.3g')} after epoch 1; "
            f"the best improved {fmt(best_progress, '.3g')})",
        ),
    ]


def run(ctx: Context) -> tuple[list[Check], list[tuple[str, str]]]:
    per_trial = ctx.sample_budget() / len(RATES)
    n_train = int(min(20000, max(2000, per_trial / 4)))
    spec = TrialSpec(n_train, 1000)
    epochs = ctx.epochs_for([spec] * len(RATES), min_epochs=2, max_epochs=10)
    trials: dict[float, Trial] = {}
    for rate in RATES:
        config = base_config(ctx, n_train, 1000, epochs, train__lr=rate)
        trials[rate] = run_trial(ctx, "learning-rate", f"lr-{rate:g}", config)
    finals = final_losses(trials)
    firsts = {r: (t.val()[0] if t.val() else math.inf) for r, t in trials.items()}
    checks = checks_for(finals, firsts)
    out = ctx.out / "learning-rate"
    curves = line_plot(
        out / "curves.png",
        {f"lr {r:g}": t.val() for r, t in trials.items()},
        logy=True,
        title="validation loss per epoch",
    )
    sweep = line_plot(
        out / "sweep.png",
        # diverged (by `divergence`, as in the table) is drawn at 1e4, everything else as measured
        {"final validation loss": [finals[r] if math.isfinite(finals[r]) else 1e4 for r in RATES]},
        x=list(RATES),
        logx=True,
        logy=True,
        xlabel="learning rate (Adam)",
        title="final validation loss against learning rate (diverged runs drawn at 1e4)",
    )
    rows: list[list[Any]] = []
    for r, t in trials.items():
        warnings = [w for d in t.diagnostics for w in d.get("warnings", [])]
        why = divergence(t)
        rows.append(
            [
                f"{r:g}",
                fmt(firsts[r]),
                fmt(t.val()[-1]) if t.val() else "-",  # as measured, even when it diverged
                f"yes: {why}" if why else "no",
                len(warnings),
                f"{t.seconds:.1f}",
            ]
        )
    table = html.table(
        rows,
        ["learning rate", "val loss, epoch 1", "val loss, last", "diverged", "warnings", "s"],
    )
    warn_list = "".join(
        f"<li>lr {r:g}: {html.escape(w)}</li>"
        for r, t in trials.items()
        for d in t.diagnostics
        for w in d.get("warnings", [])[:2]
    )
    setup = (
        f"<p>MLP VAE (512, 256; latent 16), Adam, batch 128, {n_train} training and 1000 "
        f"validation images, {epochs} epochs; only the learning rate changes.</p>"
    )
    return checks, [
        ("Setup", setup),
        ("Numbers", table),
        ("Curves", figure(curves, "validation loss per epoch") + figure(sweep, "the sweep")),
        ("What the diagnostics said", f"<ul>{warn_list}</ul>" if warn_list else "<p>none</p>"),
    ]


EXPERIMENT = Experiment(
    "learning-rate",
    "learning rate",
    "A learning rate that is too high overshoots (the loss diverges or stalls high); one that is "
    "too low crawls (the loss falls, but slowly); the best lies in between.",
    run,
)
