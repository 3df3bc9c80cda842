"""GAN inversion: the code whose decoding is closest to an image, found by gradient descent in
latent space. A GAN has no encoder, so this is what its `encode` is; it is an optimisation of
hundreds of decoder passes, which is why the consumers time an encoder before using it often
(dashboards, the explorer's code cache).
"""

from __future__ import annotations

import torch

from latentspace.models.base import GenerativeModel

__all__ = ["invert"]


def invert(
    model: GenerativeModel,
    x: torch.Tensor,
    *,
    steps: int,
    restarts: int,
    lr: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The codes whose `model.decode` is closest to x. x: (B, C, H, W) -> (z (B, D), error (B,):
    mean squared pixel error of decode(z) against x).

    Adam (learning rate `lr`) on the codes for `steps` steps from `restarts` random starts per
    image (all in one batch), keeping the start that ends closest. Deterministic: starts come
    from `generator`, or a fixed seed. The model is in eval mode meanwhile."""
    generator = generator or torch.Generator().manual_seed(0)
    was_training = model.training
    model.eval()
    n = len(x)
    target = x.detach().repeat(restarts, 1, 1, 1)
    z = model.sample_latent(restarts * n, generator=generator).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    try:
        with torch.enable_grad():  # the CLI encodes under no_grad
            for _ in range(steps):
                # summed over images: each code's gradient is its own image's alone
                loss = (model.decode(z) - target).pow(2).flatten(1).mean(1).sum()
                (z.grad,) = torch.autograd.grad(loss, z)
                optimizer.step()
        with torch.no_grad():
            errors = (model.decode(z) - target).pow(2).flatten(1).mean(1)
            best = errors.view(restarts, n).argmin(0)
            index = best * n + torch.arange(n, device=best.device)
            codes, best_errors = z.detach()[index], errors[index]
    finally:
        model.train(was_training)
    return codes, best_errors
