"""regularization: L1 and L2 strengths against weight norms, sparsity and the train/val gap."""

from __future__ import annotations

import itertools
from typing import Any

import torch

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
from latentspace.runs import load_model

N_TRAIN = 300
L2 = (1e-2, 1e-1)
L1 = (1e-3, 1e-2)
NEAR_ZERO = 1e-3  # a weight counts as "zero" (sparse) below this magnitude


def weight_stats(path: Any) -> tuple[float, float]:
    """(L2 norm of all weight matrices, fraction of their entries with |w| < NEAR_ZERO)."""
    weights = [p.detach() for p in load_model(path).parameters() if p.dim() > 1]
    flat = torch.cat([w.flatten() for w in weights])
    return flat.norm().item(), (flat.abs() < NEAR_ZERO).float().mean().item()


def checks_for(rows: dict[str, dict[str, float]]) -> list[Check]:
    """rows: trial name ("none", "l2=...", "l1=...") -> {"strength", "norm", "sparsity", "gap"}.
    gap = final validation loss - final training data loss (penalty excluded)."""
    none = rows["none"]
    l2 = sorted((r for n, r in rows.items() if n.startswith("l2")), key=lambda r: r["strength"])
    l1 = sorted((r for n, r in rows.items() if n.startswith("l1")), key=lambda r: r["strength"])
    norms = [none["norm"]] + [r["norm"] for r in l2]
    sparsity = [none["sparsity"]] + [r["sparsity"] for r in l1]
    strongest = [l2[-1], l1[-1]]
    return [
        Check(
            "L2 restrains the weights: their norm falls as the L2 strength grows",
            all(a > b for a, b in itertools.pairwise(norms)),
            "weight norm " + " > ".join(f"{v:.3g}" for v in norms),
        ),
        Check(
            "L1 makes weights sparse: the share of near-zero weights grows with L1",
            all(a < b for a, b in itertools.pairwise(sparsity)),
            f"|w| < {NEAR_ZERO:g}: " + " < ".join(f"{v:.1%}" for v in sparsity),
        ),
        Check(
            "both penalties shrink the train/validation gap (less overfitting)",
            all(r["gap"] < none["gap"] for r in strongest),
            f"gap none {none['gap']:.3g}, strongest L2 {l2[-1]['gap']:.3g}, "
            f"strongest L1 {l1[-1]['gap']:.3g}",
        ),
    ]


def run(ctx: Context) -> tuple[list[Check], list[tuple[str, str]]]:
    settings: list[tuple[str, dict[str, Any]]] = [("none", {})]
    settings += [(f"l2={v:g}", {"train__l2": v}) for v in L2]
    settings += [(f"l1={v:g}", {"train__l1": v}) for v in L1]
    n_val = 500
    specs = [TrialSpec(N_TRAIN, n_val, 32)] * len(settings)
    epochs = ctx.epochs_for(specs, min_epochs=10, max_epochs=150)
    trials: dict[str, Trial] = {}
    rows: dict[str, dict[str, float]] = {}
    for name, change in settings:
        config = base_config(ctx, N_TRAIN, n_val, epochs, train__batch_size=32, **change)
        trial = trials[name] = run_trial(ctx, "regularization", name, config)
        norm, sparsity = weight_stats(trial.path)
        rows[name] = {
            "strength": float(next(iter(change.values()), 0.0)),
            "norm": norm,
            "sparsity": sparsity,
            "gap": trial.final_val() - trial.evaluated_train_loss(),
            "val": trial.final_val(),
            "train": trial.evaluated_train_loss(),
        }
    checks = checks_for(rows)
    out = ctx.out / "regularization"
    gaps = line_plot(
        out / "gap.png",
        {
            n: [v - t for v, t in zip(tr.val(), tr.train_data_loss(), strict=True)]
            for n, tr in trials.items()
        },
        ylabel="validation - training loss",
        title="train/validation gap per epoch",
    )
    val_png = line_plot(
        out / "val.png", {n: tr.val() for n, tr in trials.items()}, title="validation loss"
    )
    table = html.table(
        [
            [
                n,
                fmt(r["train"]),
                fmt(r["val"]),
                f"{r['gap']:.3g}",
                f"{r['norm']:.3g}",
                f"{r['sparsity']:.1%}",
            ]
            for n, r in rows.items()
        ],
        ["penalty", "train loss", "val loss", "gap", "weight norm", f"|w| < {NEAR_ZERO:g}"],
    )
    setup = (
        f"<p>MLP VAE (512, 256; latent 16), Adam 1e-3, batch 32, {N_TRAIN} training and {n_val} "
        f"validation images (small on purpose, so that it overfits), {epochs} epochs; only the "
        "penalty changes: loss + l1·Σ|w| or + l2·Σw² over weight matrices (biases are not "
        "penalised). The gap is the final validation loss minus the trained model's loss on its "
        "own training images measured the same way (penalty excluded); the curves use the "
        "epoch's mean training loss.</p>"
    )
    return checks, [
        ("Setup", setup),
        ("Numbers", table),
        ("Curves", figure(gaps, "train/validation gap") + figure(val_png, "validation loss")),
    ]


EXPERIMENT = Experiment(
    "regularization",
    "L1 and L2 regularization",
    "L1 and L2 penalties restrain the weights (L2 shrinks their norm, L1 drives many to zero) and "
    "so reduce overfitting: the gap between training and validation loss narrows.",
    run,
)
