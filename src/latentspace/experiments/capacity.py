"""capacity: depth and width against loss and overfitting."""

from __future__ import annotations

import itertools

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

N_TRAIN = 1000
WIDTHS = ((32,), (128,), (512,))
DEPTHS = ((512,), (512, 512), (512, 512, 512))


def weights(hidden: tuple[int, ...]) -> int:
    sizes = [784, *hidden, 32]
    encoder = sum(a * b for a, b in itertools.pairwise(sizes))
    return encoder * 2  # the decoder mirrors it


def checks_for(rows: dict[tuple[int, ...], dict[str, float]]) -> list[Check]:
    """rows: hidden sizes -> {"train": final training loss, "gap": val - train}."""
    checks = []
    for axis, series in (("width", WIDTHS), ("depth", DEPTHS)):
        small, large = rows[series[0]], rows[series[-1]]
        checks.append(
            Check(
                f"more {axis} adds power: lower training loss",
                large["train"] < small["train"],
                f"{series[0]}: {fmt(small['train'])}, {series[-1]}: {fmt(large['train'])}",
            )
        )
        checks.append(
            Check(
                f"more {axis} risks overfitting: a larger train/validation gap",
                large["gap"] > small["gap"],
                f"{series[0]}: {small['gap']:.3g}, {series[-1]}: {large['gap']:.3g}",
            )
        )
    return checks


def run(ctx: Context) -> tuple[list[Check], list[tuple[str, str]]]:
    shapes = list(dict.fromkeys(WIDTHS + DEPTHS))
    n_val = 1000
    specs = [TrialSpec(N_TRAIN, n_val, 32, model_size(h)) for h in shapes]
    epochs = ctx.epochs_for(specs, min_epochs=5, max_epochs=100)
    trials: dict[tuple[int, ...], Trial] = {}
    for hidden in shapes:
        name = "hidden-" + "-".join(map(str, hidden))
        config = base_config(
            ctx, N_TRAIN, n_val, epochs, model__hidden_sizes=hidden, train__batch_size=32
        )
        trials[hidden] = run_trial(ctx, "capacity", name, config)
    rows = {}
    for h, t in trials.items():
        train = t.evaluated_train_loss()
        rows[h] = {"train": train, "val": t.final_val(), "gap": t.final_val() - train}
    checks = checks_for(rows)
    out = ctx.out / "capacity"
    figures = ""
    for axis, series in (("width", WIDTHS), ("depth", DEPTHS)):
        png = line_plot(
            out / f"{axis}.png",
            {
                **{f"{h} train": trials[h].train_data_loss() for h in series},
                **{f"{h} val": trials[h].val() for h in series},
            },
            ylabel="loss (nats per image)",
            title=f"{axis}: training and validation loss",
        )
        figures += figure(png, f"changing the {axis}")
    table = html.table(
        [
            [str(h), weights(h), fmt(r["train"]), fmt(r["val"]), f"{r['gap']:.3g}"]
            for h, r in rows.items()
        ],
        ["hidden sizes", "weights", "train loss", "val loss", "gap"],
    )
    setup = (
        f"<p>MLP VAE (latent 16), Adam 1e-3, batch 32, {N_TRAIN} training and {n_val} "
        f"validation images, {epochs} epochs; only the hidden layers change (width at depth 1, "
        "then depth at width 512). Training loss is the trained model's loss on its training images, measured like the validation loss.</p>"
    )
    return checks, [("Setup", setup), ("Numbers", table), ("Curves", figures)]


EXPERIMENT = Experiment(
    "capacity",
    "capacity: depth and width",
    "More layers and more neurons add power (the training loss falls lower) and the risk of "
    "overfitting (the gap between training and validation loss grows).",
    run,
)
