"""bias: with and without biases."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

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
from latentspace.imaging import save_grid
from latentspace.runs import load_model


@torch.no_grad()
def zero_input_response(path: Any) -> tuple[float, float, torch.Tensor]:
    """Feed an all-zero (black) image: (share of hidden ReLU units that answer, mean absolute
    error of its reconstruction, the reconstruction)."""
    model = load_model(path)
    fired: list[float] = []

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
        fired.append((out > 0).float().mean().item())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    black = torch.zeros(1, *model.image_shape)
    try:
        image = model.reconstruct(black)
    finally:
        for h in handles:
            h.remove()
    return sum(fired) / max(1, len(fired)), image.abs().mean().item(), image


def checks_for(rows: dict[bool, dict[str, float]]) -> list[Check]:
    """rows: bias on/off -> {"active": share of units answering a zero input, "error": black
    image reconstruction error}. The validation losses are reported beside, not judged: the
    claim is about answering a zero input."""
    on, off = rows[True], rows[False]
    return [
        Check(
            "with biases, neurons answer an all-zero input; without, none can",
            on["active"] > 0 and off["active"] == 0,
            f"units active on a black image: with {on['active']:.0%}, without {off['active']:.0%}",
        ),
        Check(
            "so only the network with biases reconstructs a black image as black",
            on["error"] < off["error"] / 2,
            f"mean absolute error: with {on['error']:.3f}, without {off['error']:.3f}",
        ),
    ]


def run(ctx: Context) -> tuple[list[Check], list[tuple[str, str]]]:
    per_trial = ctx.sample_budget() / 2
    n_train = int(min(30000, max(3000, per_trial / 4)))
    epochs = ctx.epochs_for([TrialSpec(n_train, 1000)] * 2, min_epochs=2, max_epochs=10)
    trials: dict[bool, Trial] = {}
    rows: dict[bool, dict[str, float]] = {}
    images = []
    for bias in (True, False):
        config = base_config(ctx, n_train, 1000, epochs, model__bias=bias)
        trial = trials[bias] = run_trial(
            ctx, "bias", "with-bias" if bias else "without-bias", config
        )
        active, error, image = zero_input_response(trial.path)
        images.append(image)
        rows[bias] = {"active": active, "error": error, "val": trial.final_val()}
    checks = checks_for(rows)
    out = ctx.out / "bias"
    val_png = line_plot(
        out / "val.png",
        {"with biases": trials[True].val(), "without biases": trials[False].val()},
        title="validation loss",
    )
    grid = save_grid(torch.cat(images), out / "black.png", nrow=2)
    table = html.table(
        [
            [
                "with biases" if b else "without biases",
                f"{r['active']:.0%}",
                f"{r['error']:.3f}",
                fmt(r["val"]),
            ]
            for b, r in rows.items()
        ],
        ["network", "units active on a black image", "black reconstruction error", "val loss"],
    )
    setup = (
        f"<p>MLP VAE (512, 256; latent 16), Adam 1e-3, batch 128, {n_train} training and 1000 "
        f"validation images, {epochs} epochs; only model.bias changes. A black image is all "
        "zeros: without biases every layer maps zero to zero, so the decoder can only answer "
        "sigmoid(0) = 0.5 grey.</p>"
    )
    on, off = rows[True]["val"], rows[False]["val"]
    observed = (
        f"<p>Effect on the fit (reported, not part of the verdict): validation loss with biases "
        f"{fmt(on)}, without {fmt(off)} ({(off - on) / on:+.2%} without). MNIST images are "
        "mostly black background, which a bias-free network can still produce through its "
        "hidden units as long as some input pixel is lit; only an entirely black input leaves "
        "it nothing but grey.</p>"
    )
    return checks, [
        ("Setup", setup),
        ("Numbers", table + observed),
        (
            "Curves and the black image",
            figure(val_png, "validation loss")
            + figure(grid, "reconstruction of a black image: with biases (left), without (right)"),
        ),
    ]


EXPERIMENT = Experiment(
    "bias",
    "biases",
    "A bias lets a neuron answer when all its inputs are zero; without biases a zero input gives "
    "zero in every layer, so the network cannot answer a blank input with anything but its "
    "neutral output.",
    run,
    weight=0.8,
)
