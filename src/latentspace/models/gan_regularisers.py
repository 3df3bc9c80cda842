"""What keeps GAN training stable and its samples varied, beyond the losses: each piece as its
paper describes it.

- gradient penalties on the discriminator's input gradient: WGAN-GP's, at points between real
  and generated images (Gulrajani et al. 2017), and R1, on real images only (Mescheder et al.
  2018);
- spectral normalisation of the discriminator's weights (Miyato et al. 2018);
- PacGAN packing: the discriminator judges several images at once (Lin et al. 2018);
- minibatch standard deviation: the discriminator sees how much a group of inputs varies
  (Karras et al. 2018);
- DCGAN's initialisation and the generator's batch normalisation (Radford et al. 2016), which
  the DCGAN paper found kept deep generators from collapsing all samples to one point.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MinibatchStd",
    "dcgan_init",
    "gradient_penalty",
    "group_spread",
    "pack_images",
    "r1_penalty",
    "spectral_normalise",
    "with_batch_norm",
]


# ---- gradient penalties ----------------------------------------------------------------------
def _input_gradients(
    critic: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor
) -> torch.Tensor:
    """The critic's gradient with respect to its inputs, one flattened row per score: (S, -1). A
    critic that scores packs of images (PacGAN) returns fewer scores than images; each row then
    holds a pack's gradient, a last incomplete pack padded with zeros. Differentiable in the
    critic's weights when gradients are enabled (training); validation runs under no_grad."""
    inputs = inputs.detach().requires_grad_(True)
    training = torch.is_grad_enabled()  # build a graph through the gradient only when training
    with torch.enable_grad():
        scores = critic(inputs)
        (grad,) = torch.autograd.grad(scores.float().sum(), inputs, create_graph=training)
    per_score = -(-len(inputs) // scores.numel())  # images per score: 1, or the pack size
    flat = grad.float().flatten(1)
    missing = scores.numel() * per_score - len(inputs)
    if missing:
        flat = F.pad(flat, (0, 0, 0, missing))
    return flat.reshape(scores.numel(), -1)


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """mean over the critic's scores of (||grad_x D(x_hat)||_2 - 1)^2 at x_hat = e x + (1 - e)
    G(z), one e ~ U(0, 1) per image (Gulrajani et al. 2017, Algorithm 1); the norm is taken over
    each pack's gradient when the critic scores packs of images."""
    eps = torch.rand(len(real), 1, 1, 1, generator=generator).to(real.device)
    mixed = eps * real + (1.0 - eps) * fake.detach()
    return (_input_gradients(critic, mixed).norm(dim=1) - 1.0).pow(2).mean()


def r1_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """mean over the critic's scores of ||grad_x D(x)||^2 on real images x (Mescheder et al. 2018,
    eq. 9, without the gamma / 2); per pack when the critic scores packs of images."""
    return _input_gradients(critic, real).pow(2).sum(dim=1).mean()


# ---- the discriminator's weights and inputs --------------------------------------------------
def spectral_normalise(network: nn.Module) -> None:
    """Divide the weight of every Conv2d and Linear layer of `network` by its largest singular
    value (Miyato et al. 2018), estimated by one power iteration per training forward pass."""
    for layer in list(network.modules()):  # a list: parametrizing adds modules while we walk
        if isinstance(layer, nn.Conv2d | nn.Linear):
            nn.utils.parametrizations.spectral_norm(layer)


def pack_images(x: torch.Tensor, pack: int) -> torch.Tensor:
    """PacGAN (Lin et al. 2018): `pack` consecutive images side by side in the channel axis, so
    the discriminator judges them together. (B, C, H, W) -> (ceil(B / pack), pack * C, H, W); a
    last incomplete pack is filled with the batch's first images. pack = 1 returns x."""
    if pack > 1:
        if len(x) % pack:
            fill = torch.arange(pack - len(x) % pack, device=x.device) % len(x)
            x = torch.cat([x, x[fill]])
        x = x.reshape(len(x) // pack, pack * x.shape[1], *x.shape[2:])
    return x


def group_spread(x: torch.Tensor, group: int) -> torch.Tensor:
    """(B, ...) -> (B,): for each group of `group` consecutive inputs, the standard deviation of
    every feature over the group, averaged over the features (Karras et al. 2018, section 3); each
    input gets its group's value. A last incomplete group is measured on its own (a group of one
    has spread 0)."""
    n = len(x)
    whole = n - n % group
    spreads = []
    for part, size in ((x[:whole], group), (x[whole:], n - whole)):
        if len(part):
            grouped = part.float().reshape(len(part) // size, size, -1)
            # by hand: torch's var over a middle dimension is ~50x slower on the CPU
            centered = grouped - grouped.mean(1, keepdim=True)
            spread = (centered.square().mean(1) + 1e-8).sqrt().mean(1)
            spreads.append(spread.repeat_interleave(size))
    return torch.cat(spreads).to(x.dtype)


class MinibatchStd(nn.Module):
    """The discriminator's last layer with minibatch standard deviation (Karras et al. 2018): its
    score of each input is `linear(features) + weight * group_spread(features)`, so a generator
    whose samples look alike gives itself away. Karras et al. append the spread as one more
    channel; as the next layer here is linear, that is the same as this added term, which keeps
    the features' memory layout (a concatenated channel made the convolutions' backward pass
    1.3x slower on the CPU). The weight starts at 0: a plain discriminator at first."""

    def __init__(self, linear: nn.Linear, group: int) -> None:
        super().__init__()
        self.linear, self.group = linear, group
        self.weight = nn.Parameter(torch.zeros(linear.out_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        spread = group_spread(features, self.group)
        return self.linear(features) + spread[:, None] * self.weight

    def extra_repr(self) -> str:
        return f"group={self.group}"


# ---- DCGAN (Radford et al. 2016) -------------------------------------------------------------
def dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) weights, as in DCGAN (Radford et al. 2016, section 4)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


def with_batch_norm(network: nn.Sequential) -> nn.Sequential:
    """Insert BatchNorm between every hidden Linear/ConvTranspose2d and its activation (DCGAN's
    generator; not after the output layer)."""
    layers = list(network)
    result: list[nn.Module] = []
    for i, layer in enumerate(layers):
        result.append(layer)
        followed_by_activation = i + 1 < len(layers) and not isinstance(
            layers[i + 1], nn.Linear | nn.ConvTranspose2d | nn.Unflatten | nn.Dropout
        )
        if followed_by_activation and isinstance(layer, nn.Linear):
            result.append(nn.BatchNorm1d(layer.out_features))
        elif followed_by_activation and isinstance(layer, nn.ConvTranspose2d):
            result.append(nn.BatchNorm2d(layer.out_channels))
    return nn.Sequential(*result)
