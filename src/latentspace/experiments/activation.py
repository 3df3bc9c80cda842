"""activation: ReLU, leaky ReLU, Sigmoid and Tanh in a deep MLP."""

from __future__ import annotations

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
    model_size,
    run_trial,
)

ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")
HIDDEN = (256, 256, 256, 256, 256)
DEAD = 0.1  # "ReLU leaves dead units": at least this fraction in some layer


def summary(trial: Trial) -> dict[str, Any]:
    """Per-activation numbers from the trial's diagnostics.jsonl (median over epochs of the
    first-to-last gradient ratio; first-layer gradient norm, dead and saturated fractions at the
    last epoch)."""
    diags = trial.diagnostics
    ratios = sorted(d["grad_ratio"] for d in diags if d.get("grad_ratio") is not None)
    last = diags[-1]["layers"] if diags else {}
    first: dict[str, Any] = next(iter(last.values()), {})
    dead = [s["dead_fraction"] for s in last.values() if "dead_fraction" in s]
    saturated = [s["saturated_fraction"] for s in last.values() if "saturated_fraction" in s]
    return {
        "ratio": ratios[len(ratios) // 2] if ratios else float("nan"),
        "first_grad": first.get("grad_norm_mean") or float("nan"),
        "dead": max(dead) if dead else None,
        "saturated": max(saturated) if saturated else None,
        "val": trial.val(),
    }


def checks_for(stats: dict[str, dict[str, Any]]) -> list[Check]:
    """stats: activation -> summary(); speed is the validation loss after the first epoch."""
    relu, sig, tanh = stats["relu"], stats["sigmoid"], stats["tanh"]
    return [
        Check(
            "Sigmoid suffers vanishing gradients: a much smaller first-to-last gradient ratio "
            "than ReLU",
            sig["ratio"] < relu["ratio"] / 10,
            f"sigmoid {sig['ratio']:.2g}, relu {relu['ratio']:.2g}",
        ),
        Check(
            "Tanh suffers vanishing gradients: a smaller first-to-last gradient ratio than ReLU",
            tanh["ratio"] < relu["ratio"],
            f"tanh {tanh['ratio']:.2g}, relu {relu['ratio']:.2g}",
        ),
        Check(
            "so Sigmoid converges more slowly: higher validation loss after the first and "
            "the last epoch",
            sig["val"][0] > relu["val"][0] and sig["val"][-1] > relu["val"][-1],
            f"epoch 1: sigmoid {fmt(sig['val'][0])}, relu {fmt(relu['val'][0])}; last: "
            f"sigmoid {fmt(sig['val'][-1])}, relu {fmt(relu['val'][-1])}",
        ),
        Check(
            f"ReLU can leave dead units: at least {DEAD:.0%} never fire in some layer",
            relu["dead"] is not None and relu["dead"] >= DEAD,
            f"largest dead fraction {fmt(relu['dead'], '.0%')}",
        ),
    ]


def run(ctx: Context) -> tuple[list[Check], list[tuple[str, str]]]:
    per_trial = ctx.sample_budget() / len(ACTIVATIONS)
    n_train = int(min(20000, max(2000, per_trial / 4)))
    spec = TrialSpec(n_train, 1000, 128, model_size(HIDDEN))
    epochs = ctx.epochs_for([spec] * len(ACTIVATIONS), min_epochs=2, max_epochs=10)
    trials = {}
    for name in ACTIVATIONS:
        config = base_config(
            ctx, n_train, 1000, epochs, model__hidden_sizes=HIDDEN, model__activation=name
        )
        trials[name] = run_trial(ctx, "activation", name, config)
    stats = {name: summary(t) for name, t in trials.items()}
    checks = checks_for(stats)
    out = ctx.out / "activation"
    val_png = line_plot(
        out / "val.png", {n: s["val"] for n, s in stats.items()}, title="validation loss"
    )
    ratio_png = line_plot(
        out / "ratio.png",
        {
            n: [d.get("grad_ratio") or float("nan") for d in t.diagnostics]
            for n, t in trials.items()
        },
        ylabel="first / last layer gradient norm",
        logy=True,
        title="gradient reaching the first layer, relative to the last",
    )
    table = html.table(
        [
            [
                n,
                f"{s['ratio']:.2g}",
                f"{s['first_grad']:.3g}",
                fmt(s["dead"], ".0%"),
                fmt(s["saturated"], ".0%"),
                fmt(s["val"][0]),
                fmt(s["val"][-1]),
            ]
            for n, s in stats.items()
        ],
        [
            "activation",
            "grad ratio",
            "1st-layer grad",
            "dead",
            "saturated",
            "val, epoch 1",
            "val, last",
        ],
    )
    setup = (
        f"<p>MLP VAE with hidden sizes {HIDDEN} (12 weight layers in all), latent 16, Adam 1e-3, "
        f"batch 128, {n_train} training and 1000 validation images, {epochs} epochs; only the "
        "activation changes. Gradient numbers come from each run's diagnostics (first encoder "
        "layer against last decoder layer); dead = largest share of ReLU units silent on 512 "
        "validation images; saturated = largest share of sigmoid/tanh outputs with slope under "
        "5% of its peak.</p>"
    )
    return checks, [
        ("Setup", setup),
        ("Numbers", table),
        (
            "Curves",
            figure(ratio_png, "gradient ratio per epoch") + figure(val_png, "validation loss"),
        ),
    ]


EXPERIMENT = Experiment(
    "activation",
    "activation functions",
    "In a deep network Sigmoid and Tanh suffer vanishing gradients (little gradient reaches the "
    "first layers), so they learn more slowly; ReLU keeps gradients alive but can leave dead units.",
    run,
)
