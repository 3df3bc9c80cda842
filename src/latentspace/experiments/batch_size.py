"""batch-size: time per epoch, memory, final loss and gradient noise across batch sizes."""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from latentspace import html
from latentspace.data import prepare_data, to_float
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
from latentspace.models import GenerativeModel
from latentspace.runs import load_model

SIZES = (16, 64, 256, 1024)


def checks_for(
    noise: dict[int, float], memory: dict[int, float], finals: dict[int, float]
) -> list[Check]:
    """noise: relative gradient noise E|g_B - G|^2 / |G|^2; memory: bytes of one forward pass;
    finals: validation loss after the same number of epochs. All keyed by batch size."""
    sizes = sorted(noise)
    noise_falls = all(noise[a] > noise[b] for a, b in itertools.pairwise(sizes))
    memory_rises = all(memory[a] < memory[b] for a, b in itertools.pairwise(sizes))
    small, large = sizes[0], sizes[-1]
    return [
        Check(
            "larger batches are steadier: gradient noise falls as the batch grows",
            noise_falls,
            ", ".join(f"B={b}: {noise[b]:.3g}" for b in sizes),
        ),
        Check(
            "larger batches cost more memory per step",
            memory_rises,
            ", ".join(f"B={b}: {memory[b] / 2**20:.2f} MiB" for b in sizes),
        ),
        Check(
            "smaller batches update faster: more progress in the same epochs",
            finals[small] < finals[large],
            f"after equal epochs B={small}: {fmt(finals[small])}, B={large}: {fmt(finals[large])}",
        ),
    ]


def forward_bytes(model: GenerativeModel, x: torch.Tensor) -> int:
    """Bytes of every tensor the model's leaf modules produce in one training forward pass."""
    total = 0

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        model.loss(x)
    finally:
        for h in handles:
            h.remove()
    return total


def gradient_noise(
    model: GenerativeModel, images: torch.Tensor, sizes: tuple[int, ...]
) -> dict[int, float]:
    """E|g_B - G|^2 / |G|^2 for each batch size B, G the gradient over all `images` (uint8).
    B times this is the simple gradient-noise scale of McCandlish et al. 2018 (for B << N)."""
    torch.manual_seed(0)

    def gradient(x: torch.Tensor) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        model.loss(x).total.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    chunks = [to_float(images[i : i + 512]) for i in range(0, len(images), 512)]
    full = torch.stack([gradient(c) * len(c) for c in chunks]).sum(0) / len(images)
    noise = {}
    for b in sizes:
        count = max(1, min(8, len(images) // b))
        deviations = [
            (gradient(to_float(images[i * b : (i + 1) * b])) - full).pow(2).sum().item()
            for i in range(count)
        ]
        noise[b] = sum(deviations) / count / full.pow(2).sum().item()
    return noise


def run(ctx: Context) -> tuple[list[Check], list[tuple[str, str]]]:
    per_trial = ctx.sample_budget() * 0.8 / len(SIZES)  # small batches cost more per sample
    n_train = int(min(20000, max(3000, per_trial / 4)))
    specs = [TrialSpec(n_train, 1000, b) for b in SIZES]
    epochs = ctx.epochs_for(specs, min_epochs=2, max_epochs=8)
    trials: dict[int, Trial] = {}
    for b in SIZES:
        config = base_config(ctx, n_train, 1000, epochs, train__batch_size=b)
        trials[b] = run_trial(ctx, "batch-size", f"batch-{b}", config)
    finals = {b: t.final_val() for b, t in trials.items()}
    epoch_s = {b: sum(e["seconds"] for e in t.epochs) / len(t.epochs) for b, t in trials.items()}
    middle = trials[SIZES[1]]
    model = load_model(middle.path)
    model.train()
    train_set, _ = prepare_data(base_config(ctx, n_train, 1000, epochs))
    images = train_set.images[:4096]
    noise = gradient_noise(model, images, SIZES)
    memory = {b: float(forward_bytes(model, to_float(images[:b]))) for b in SIZES}
    checks = checks_for(noise, memory, finals)
    out = ctx.out / "batch-size"
    curves = line_plot(
        out / "curves.png",
        {f"batch {b}": t.val() for b, t in trials.items()},
        title="validation loss per epoch",
    )
    noise_png = line_plot(
        out / "noise.png",
        {"E|g_B - G|² / |G|²": [noise[b] for b in SIZES]},
        x=list(SIZES),
        logx=True,
        logy=True,
        xlabel="batch size",
        ylabel="relative gradient noise",
        title="gradient noise against batch size (trained model of the B=64 trial)",
    )
    scale = SIZES[0] * noise[SIZES[0]]
    rows = [
        [
            b,
            len(t.epochs),
            f"{epoch_s[b]:.2f}",
            f"{memory[b] / 2**20:.2f}",
            f"{noise[b]:.3g}",
            fmt(finals[b]),
        ]
        for b, t in trials.items()
    ]
    table = html.table(
        rows,
        ["batch", "epochs", "s per epoch", "forward MiB", "gradient noise", "final val loss"],
    )
    setup = (
        f"<p>MLP VAE (512, 256; latent 16), Adam 1e-3, {n_train} training and 1000 validation "
        f"images, {epochs} epochs for every batch size; only the batch size changes. Gradient "
        "noise is measured on the trained B=64 model: up to 8 disjoint batches of each size "
        "against the gradient over 4096 images. Memory is the bytes of every tensor produced by "
        f"one training forward pass. Simple gradient-noise scale B·noise ≈ {scale:.0f} images "
        "(McCandlish et al. 2018): batches much smaller than that are noise-dominated.</p>"
    )
    return checks, [
        ("Setup", setup),
        ("Numbers", table),
        ("Curves", figure(curves, "validation loss") + figure(noise_png, "gradient noise")),
    ]


EXPERIMENT = Experiment(
    "batch-size",
    "batch size",
    "Larger batches give steadier (less noisy) gradients but cost more memory per step; smaller "
    "batches take more, noisier updates and so make more progress per epoch.",
    run,
)
