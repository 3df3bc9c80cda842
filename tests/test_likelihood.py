"""Pixel likelihoods (models/likelihood.py) against oracles, the default for colour images, and
SSIM / MS-SSIM."""

from __future__ import annotations

import math

import pytest
import torch

from latentspace.errors import ConfigError, DataError
from latentspace.models import AEConfig, VAEConfig, build_model
from latentspace.models.likelihood import (
    PixelLikelihood,
    ms_ssim,
    ms_ssim_scales,
    resolve_likelihood,
    ssim,
)


def _logistic_mass(mean: float, scale: float, value: int) -> float:
    """P(pixel = value / 255) under a logistic discretised to 256 bins: the oracle, in float64."""
    cdf = lambda t: 1 / (1 + math.exp(-(t - mean) / scale))  # noqa: E731
    upper = 1.0 if value == 255 else cdf((value + 0.5) / 255)
    lower = 0.0 if value == 0 else cdf((value - 0.5) / 255)
    return upper - lower


def test_discretised_logistic_matches_the_oracle_and_sums_to_one() -> None:
    likelihood = PixelLikelihood("logistic", 1, 0.1)
    assert likelihood.log_scale is not None
    scale = float(likelihood.log_scale.detach().exp())
    values = torch.arange(256, dtype=torch.float32)
    x = (values / 255).reshape(256, 1, 1, 1)
    mean = 0.3
    logits = torch.full_like(x, math.log(mean / (1 - mean)))
    nll = likelihood(logits, x).detach().double()
    oracle = torch.tensor(
        [-math.log(_logistic_mass(mean, scale, v)) for v in range(256)], dtype=torch.float64
    )
    # rtol: where a bin holds under 1e-5 the density at its centre stands in for its mass
    torch.testing.assert_close(nll, oracle, rtol=2e-3, atol=1e-3)
    assert abs(float((-nll).exp().sum()) - 1.0) < 1e-4  # a probability mass on the 256 values


def test_discretised_logistic_stays_finite_far_from_its_mean() -> None:
    likelihood = PixelLikelihood("logistic", 3, 0.01)
    logits = torch.full((1, 3, 4, 4), -12.0, requires_grad=True)  # mean ~0, pixels at 0.5
    nll = likelihood(logits, torch.full((1, 3, 4, 4), 0.5))
    nll.sum().backward()
    assert bool(torch.isfinite(nll).all()) and float(nll[0].detach()) > 1000
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())


def test_learned_gaussian_matches_torch_distributions() -> None:
    likelihood = PixelLikelihood("gaussian_learned", 3, 0.2)
    assert likelihood.log_scale is not None
    with torch.no_grad():
        likelihood.log_scale.copy_(torch.tensor([-1.0, -2.0, -0.5]))
    logits, x = torch.randn(2, 3, 5, 4), torch.rand(2, 3, 5, 4)
    std = torch.tensor([-1.0, -2.0, -0.5]).exp().reshape(1, 3, 1, 1)
    oracle = -torch.distributions.Normal(torch.sigmoid(logits), std).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(likelihood(logits, x), oracle)


def test_fixed_likelihoods_hold_no_parameter() -> None:
    """Runs saved before learned scales load: their weights files have no log_scale."""
    for name in ("bernoulli", "gaussian"):
        assert list(PixelLikelihood(name, 3, 0.1).parameters()) == []


def test_auto_is_bernoulli_for_grey_and_logistic_for_colour() -> None:
    assert resolve_likelihood("auto", 1) == "bernoulli"
    assert resolve_likelihood("auto", 3) == "logistic"
    assert resolve_likelihood("gaussian", 3) == "gaussian"
    for config in (AEConfig(latent_dim=2, hidden_sizes=(8,)), VAEConfig(latent_dim=2)):
        colour = build_model(config, (3, 8, 8))
        grey = build_model(config, (1, 8, 8))
        assert colour.pixel_likelihood.likelihood == "logistic"  # type: ignore[union-attr]
        assert "pixel_likelihood.log_scale" in colour.state_dict()
        assert grey.pixel_likelihood.likelihood == "bernoulli"  # type: ignore[union-attr]
        assert "pixel_likelihood.log_scale" not in grey.state_dict()


def test_colour_losses_are_a_code_length_not_a_bernoulli_entropy() -> None:
    """A near-perfect RGB reconstruction costs few nats under the default, not ~0.6 per pixel."""
    torch.manual_seed(0)
    x = (torch.rand(2, 3, 16, 16) * 255).round() / 255
    logits = torch.logit(x.clamp(1e-3, 1 - 1e-3))
    bernoulli = PixelLikelihood("bernoulli", 3, 0.1)(logits, x)
    logistic = PixelLikelihood("auto", 3, 0.1)
    with torch.no_grad():
        logistic.log_scale.fill_(math.log(3e-4))  # type: ignore[union-attr]
    assert float(bernoulli.mean()) > 0.3 * x[0].numel()
    assert float(logistic(logits, x).detach().mean()) < 0.05 * x[0].numel()


def test_unknown_likelihood_is_one_line() -> None:
    with pytest.raises(ConfigError, match="model.likelihood = 'poisson' is not one of: auto"):
        AEConfig(likelihood="poisson").validate()


def test_ssim_and_ms_ssim_are_one_for_equal_images_and_fall_with_noise() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2), atol=1e-5)
    assert bool((ssim(noisy, x) < 0.9).all()) and bool((ms_ssim(noisy, x) < 0.95).all())


def test_ms_ssim_is_a_differentiable_loss() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 1, 48, 48)
    # near the target, as a decoder trained with MSE beside it is (from unrelated images the
    # clipped contrast term is 0 and so is its gradient)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1).requires_grad_()
    (1 - ms_ssim(y, x)).mean().backward()
    assert y.grad is not None and float(y.grad.abs().sum()) > 0


def test_ms_ssim_uses_the_scales_an_image_has_room_for() -> None:
    assert ms_ssim_scales(256, 512) == ms_ssim_scales(176, 176) == 5
    assert ms_ssim_scales(175, 300) == 4
    assert ms_ssim_scales(64, 64) == 3
    assert ms_ssim_scales(28, 28) == 2
    assert ms_ssim_scales(21, 40) == 1
    for side in (176, 175, 88, 64, 44, 22):  # every count it allows, torchmetrics computes
        x = torch.rand(1, 1, side, side)
        assert float(ms_ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(DataError, match="28x28 image is too small for MS-SSIM at 5 scales"):
        ms_ssim(torch.rand(1, 1, 28, 28), torch.rand(1, 1, 28, 28), scales=5)
    with pytest.raises(DataError, match="16x16 image is too small"):
        ms_ssim(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))
