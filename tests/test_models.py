"""Every registered model family conforms to the GenerativeModel contract (timm-style: a family is
tested the moment it is registered)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from latentspace.config import TrainConfig
from latentspace.errors import ConfigError
from latentspace.models import MODELS, VAE, VAEConfig, build_model
from latentspace.models.vae import gaussian_kl

# the families these tests build for images (text families: tests/test_text.py)
IMAGE_FAMILIES = [name for name, cls in MODELS.items() if cls.inputs == "images"]

SHAPES = [(1, 12, 12), (3, 16, 16), (1, 13, 11)]


def _config(name: str, architecture: str) -> object:
    cls = MODELS[name].config_class
    return cls(latent_dim=3, architecture=architecture, hidden_sizes=(16,), channels=(4, 8))


@pytest.mark.parametrize("name", IMAGE_FAMILIES)
@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("shape", SHAPES)
def test_model_conforms(name: str, architecture: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(_config(name, architecture), shape, TrainConfig(lr=1e-3))
    optimizers = model.configure_optimizers()
    x = torch.rand(5, *shape)
    terms = model.training_step(x, optimizers)
    assert "total" in terms
    assert all(v.dim() == 0 and not v.requires_grad for v in terms.values()), "detached scalars"
    assert "total" in model.validation_step(x)
    model.eval()
    z = model.encode(x)
    assert z.shape == (5, 3)
    images = model.decode(z)
    assert images.shape == (5, *shape)
    assert images.min() >= 0 and images.max() <= 1
    generated = model.generate(4, generator=torch.Generator().manual_seed(1))
    assert generated.shape == (4, *shape)
    again = model.generate(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(generated, again), "generation with the same generator must repeat"


@pytest.mark.parametrize("name", IMAGE_FAMILIES)
def test_conv_weights_are_channels_last_and_compute_the_same(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(_config(name, "conv"), (1, 12, 12))
    kernels = [p for p in model.parameters() if p.dim() == 4]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    default = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    assert all(p.is_contiguous() for p in default.parameters())
    model.eval()
    default.eval()
    x = torch.rand(5, 1, 12, 12)
    terms = []
    for network in (model, default):
        torch.manual_seed(2)  # the same noise for the VAE's sampled code
        terms.append(network.validation_step(x))
    assert terms[0] == pytest.approx(terms[1], rel=1e-5)
    seeded = [
        network.generate(4, generator=torch.Generator().manual_seed(1))
        for network in (model, default)
    ]
    torch.testing.assert_close(*seeded)
    mlp = build_model(_config(name, "mlp"), (1, 12, 12))
    assert all(p.is_contiguous() for p in mlp.parameters())


@pytest.mark.parametrize("name", IMAGE_FAMILIES)
def test_training_step_changes_parameters(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(_config(name, "mlp"), (1, 8, 8))
    before = [p.detach().clone() for p in model.parameters()]
    model.training_step(torch.rand(8, 1, 8, 8), model.configure_optimizers())
    changed = [not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)]
    assert all(changed), "every parameter should receive a gradient step"


def test_kl_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    mu, logvar = torch.randn(6, 4), torch.randn(6, 4)
    posterior = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    prior = torch.distributions.Normal(torch.zeros(4), torch.ones(4))
    expected = torch.distributions.kl_divergence(posterior, prior)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)


@pytest.mark.parametrize("name", [n for n in IMAGE_FAMILIES if MODELS[n].monitor is not None])
def test_overfits_one_batch(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(_config(name, "mlp"), (1, 8, 8), TrainConfig(lr=1e-2))
    optimizers = model.configure_optimizers()
    x = (torch.rand(8, 1, 8, 8) > 0.5).float()
    first = model.validation_step(x)["reconstruction"]
    for _ in range(300):
        model.training_step(x, optimizers)
    last = model.validation_step(x)["reconstruction"]
    assert last < 0.25 * first, f"reconstruction went from {first:.1f} to {last:.1f}"


@pytest.mark.parametrize("name", IMAGE_FAMILIES)
def test_bf16_mixed_precision_trains_with_float32_weights(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(_config(name, "mlp"), (1, 8, 8), TrainConfig(lr=1e-2, precision="bf16"))
    optimizers = model.configure_optimizers()
    x = (torch.rand(8, 1, 8, 8) > 0.5).float()
    with model.autocast():
        assert model.decode(model.sample_latent(2)).dtype == torch.bfloat16
    first = float(model.training_step(x, optimizers)["total"])
    for _ in range(100):
        terms = model.training_step(x, optimizers)
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in terms.values())
    if MODELS[name].monitor is not None:  # a GAN's total is no objective that falls
        assert float(terms["total"]) < 0.7 * first
    assert all(p.dtype == torch.float32 for p in model.parameters()), "master weights stay fp32"


def test_vae_encode_is_deterministic_and_sampling_is_opt_in() -> None:
    model = VAE(VAEConfig(latent_dim=2, hidden_sizes=(8,)), (1, 6, 6)).eval()
    x = torch.rand(3, 1, 6, 6)
    assert torch.equal(model.encode(x), model.encode(x))
    a = model.encode(x, sample=True, generator=torch.Generator().manual_seed(0))
    b = model.encode(x, sample=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, model.encode(x))


def test_kl_warmup_ramps_the_weight() -> None:
    model = VAE(VAEConfig(latent_dim=2, hidden_sizes=(8,), kl_warmup_epochs=4, beta=2.0), (1, 6, 6))
    weights = []
    for epoch in range(6):
        model.on_epoch_start(epoch, 6)
        weights.append(model.kl_weight)
    assert weights == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    model.eval()
    assert model.kl_weight == 2.0, "validation uses the full objective"


def test_l1_l2_penalties_enter_the_loss() -> None:
    model = VAE(
        VAEConfig(latent_dim=2, hidden_sizes=(8,)), (1, 6, 6), TrainConfig(l1=1e-3, l2=1e-2)
    )
    optimizers = model.configure_optimizers()
    terms = {
        k: float(v) for k, v in model.training_step(torch.rand(4, 1, 6, 6), optimizers).items()
    }
    assert terms["l1"] > 0 and terms["l2"] > 0
    weights = [p for p in model.parameters() if p.dim() > 1]
    assert terms["l2"] == pytest.approx(
        1e-2 * sum(float(w.detach().pow(2).sum()) for w in weights), rel=0.05
    )


def test_conv_too_small_is_a_clear_error() -> None:
    config = dataclasses.replace(_config("vae", "conv"), channels=(4, 8, 16, 32))
    with pytest.raises(ConfigError, match="too small for 4 stride-2 conv layers"):
        build_model(config, (1, 8, 8))


def test_bad_model_values_are_rejected() -> None:
    with pytest.raises(ConfigError, match="activation"):
        VAE(VAEConfig(activation="softplus"), (1, 4, 4))
    with pytest.raises(ConfigError, match="latent_dim"):
        VAE(VAEConfig(latent_dim=0), (1, 4, 4))
