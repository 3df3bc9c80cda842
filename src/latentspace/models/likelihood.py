"""Pixel likelihoods shared by the AE and VAE: the reconstruction term in nats."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from latentspace.errors import ConfigError

__all__ = ["LIKELIHOODS", "check_likelihood", "mean_image", "reconstruction_nll"]

LIKELIHOODS = ("bernoulli", "gaussian")


def check_likelihood(name: str, gaussian_std: float) -> None:
    if name not in LIKELIHOODS:
        raise ConfigError(f"model.likelihood = {name!r} is not one of: {', '.join(LIKELIHOODS)}")
    if gaussian_std <= 0:
        raise ConfigError(f"model.gaussian_std = {gaussian_std} must be greater than 0")


def reconstruction_nll(
    logits: torch.Tensor, x: torch.Tensor, likelihood: str, gaussian_std: float
) -> torch.Tensor:
    """-log p(x | z) per image, summed over pixels: (B, C, H, W) -> (B,).

    bernoulli: binary cross-entropy on the decoder's logits (valid for continuous x in [0, 1] as
    the usual "continuous Bernoulli-free" convention). gaussian: fixed std, including the
    normalising constant, so both are in nats.
    """
    if likelihood == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        return nll.flatten(1).sum(1)
    mean = torch.sigmoid(logits)
    squared = (x - mean).pow(2).flatten(1).sum(1)
    pixels = x[0].numel()
    return squared / (2 * gaussian_std**2) + pixels * math.log(
        gaussian_std * math.sqrt(2 * math.pi)
    )


def mean_image(logits: torch.Tensor) -> torch.Tensor:
    """The decoder's expected image in [0, 1] under either likelihood."""
    return torch.sigmoid(logits)
