"""epochs: on a small subset, validation loss turns upward; early stopping stops near its best."""

from __future__ import annotations

from latentspace import html
from latentspace.experiments._common import (
    Check,
    Context,
    Experiment,
    TrialSpec,
    base_config,
    figure,
    fmt,
    line_plot,
    run_trial,
)

PATIENCE = 5
N_TRAIN = 200
UPTURN = 0.02  # validation loss must end at least 2% above its best


def early_stop_epoch(val: list[float], patience: int) -> int | None:
    """The epoch the trainer's rule (no improvement for `patience` epochs) would stop at."""
    best, bad = float("inf"), 0
    for epoch, value in enumerate(val, start=1):
        if value < best:
            best, bad = value, 0
        else:
            bad += 1
            if bad >= patience:
                return epoch
    return None


def checks_for(train: list[float], val: list[float], stopped_at: int | None) -> list[Check]:
    """train / val: per-epoch losses of the long run; stopped_at: where the early-stopping run
    ended (None when it ran to the end)."""
    best_epoch = min(range(len(val)), key=lambda i: val[i]) + 1
    rose = val[-1] / val[best_epoch - 1] - 1
    train_falls = train[-1] < train[best_epoch - 1]
    predicted = early_stop_epoch(val, PATIENCE)
    return [
        Check(
            "with more epochs, validation loss turns upward while training loss keeps falling",
            rose > UPTURN and train_falls and best_epoch < len(val),
            f"best validation loss {fmt(val[best_epoch - 1])} at epoch {best_epoch} of "
            f"{len(val)}, last {fmt(val[-1])} ({rose:+.1%}); training loss "
            f"{fmt(train[best_epoch - 1])} then, {fmt(train[-1])} at the end",
        ),
        _stop_check(val, stopped_at, predicted, best_epoch),
    ]


def _stop_check(
    val: list[float], stopped_at: int | None, predicted: int | None, best: int
) -> Check:
    claim = (
        f"early stopping (patience {PATIENCE}) stops where its rule says, before the end, with "
        "a better model than training to the end"
    )
    if stopped_at is None or stopped_at >= len(val):
        return Check(claim, False, f"it never stopped early (the curve predicts {predicted})")
    at = val[stopped_at - 1]
    return Check(
        claim,
        stopped_at == predicted and at < val[-1],
        f"stopped at epoch {stopped_at} (the long run's curve predicts {predicted}) with "
        f"validation loss {fmt(at)}: {at / val[best - 1] - 1:+.1%} against the best "
        f"(epoch {best}), {at / val[-1] - 1:+.1%} against training to the end",
    )


def run(ctx: Context) -> tuple[list[Check], list[tuple[str, str]]]:
    n_val = 500
    # the early-stopping run usually stops well before the end: planned as half a run
    specs = [TrialSpec(N_TRAIN, n_val, 32), TrialSpec(N_TRAIN // 2, n_val // 2, 32)]
    epochs = ctx.epochs_for(specs, min_epochs=20, max_epochs=300)
    config = base_config(ctx, N_TRAIN, n_val, epochs, train__batch_size=32)
    long = run_trial(ctx, "epochs", "no-early-stopping", config)
    stopped_config = base_config(
        ctx, N_TRAIN, n_val, epochs, train__batch_size=32, train__patience=PATIENCE
    )
    stopped = run_trial(ctx, "epochs", f"patience-{PATIENCE}", stopped_config)
    train, val = long.train_data_loss(), long.val()
    stopped_at = len(stopped.epochs) if len(stopped.epochs) < epochs else None
    checks = checks_for(train, val, stopped_at)
    best_epoch = min(range(len(val)), key=lambda i: val[i]) + 1
    marks: dict[str, float] = {"best": best_epoch}
    if stopped_at:
        marks["early stop"] = stopped_at
    png = line_plot(
        ctx.out / "epochs" / "curves.png",
        {"training": train, "validation": val},
        ylabel="loss (nats per image)",
        title=f"{N_TRAIN} training images, batch 32",
        marks=marks,
    )
    overfit_warnings = [
        f"epoch {d['epoch']}: {w}" for d in long.diagnostics for w in d.get("warnings", [])
    ]
    rows: list[list[object]] = [
        ["epochs run", len(val), len(stopped.epochs)],
        [
            "best validation loss (epoch)",
            f"{fmt(min(val))} ({best_epoch})",
            fmt(min(stopped.val())),
        ],
        ["final validation loss", fmt(val[-1]), fmt(stopped.val()[-1])],
        ["final training loss", fmt(train[-1]), fmt(stopped.train_data_loss()[-1])],
        ["seconds", f"{long.seconds:.1f}", f"{stopped.seconds:.1f}"],
    ]
    setup = (
        f"<p>MLP VAE (512, 256; latent 16), Adam 1e-3, batch 32, only {N_TRAIN} training images "
        f"(and {n_val} validation images), up to {epochs} epochs; the second run is the same "
        f"with early stopping (train.patience = {PATIENCE}).</p>"
    )
    warn = "".join(f"<li>{html.escape(w)}</li>" for w in overfit_warnings[:6])
    return checks, [
        ("Setup", setup),
        ("Numbers", html.table(rows, ["", "no early stopping", f"patience {PATIENCE}"])),
        ("Curves", figure(png, "training and validation loss per epoch")),
        ("What the diagnostics said", f"<ul>{warn}</ul>" if warn else "<p>none</p>"),
    ]


EXPERIMENT = Experiment(
    "epochs",
    "epochs",
    "Training longer on few images overfits: validation loss reaches a minimum and turns upward "
    "while training loss keeps falling; early stopping ends training near that minimum.",
    run,
    weight=0.8,
)
