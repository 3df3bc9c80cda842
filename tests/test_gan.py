"""The GAN family: its step, its losses, inversion, warnings, and a run used through the CLI."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

import latentspace as ls
from latentspace import cli
from latentspace.config import Config, apply_overrides
from latentspace.diagnostics import find_layers
from latentspace.errors import ConfigError, RunError
from latentspace.models import MODELS
from latentspace.models.gan import GAN
from latentspace.models.gan_losses import feature_matching, gan_losses
from latentspace.models.gan_regularisers import (
    MinibatchStd,
    gradient_penalty,
    group_spread,
    r1_penalty,
)
from latentspace.models.networks import network_path, register_network


@register_network
class TinyCritic(nn.Module):
    """A discriminator of your own that is no nn.Sequential: a linear score of the pixels."""

    def __init__(self, image_shape: tuple[int, int, int], features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(math.prod(image_shape), features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def gan_config(tiny_npz: Path, *overrides: str) -> Config:
    config = ls.default_config(
        "gan",
        dataset=str(tiny_npz),
        epochs=2,
        batch_size=16,
        latent_dim=2,
        hidden_sizes=(32,),
        device="cpu",
    )
    return apply_overrides(config, list(overrides))


def build(config: Config) -> tuple[GAN, list[torch.optim.Optimizer]]:
    model = MODELS["gan"](config.model, (1, 12, 12), config.train)
    assert isinstance(model, GAN)
    return model, model.configure_optimizers()


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("loss", ["nonsaturating", "hinge", "lsgan", "wgan-gp"])
def test_one_step_changes_both_networks(tiny_npz: Path, architecture: str, loss: str) -> None:
    config = gan_config(
        tiny_npz, f"model.architecture={architecture}", "model.channels=4,8", f"model.loss={loss}"
    )
    model, optimizers = build(config)
    before_g = [p.detach().clone() for p in model.generator.parameters()]
    before_d = [p.detach().clone() for p in model.discriminator.parameters()]
    terms = {
        k: float(v) for k, v in model.training_step(torch.rand(8, 1, 12, 12), optimizers).items()
    }
    assert {"d_loss", "g_loss", "d_real", "d_fake", "gp", "total"} <= set(terms)
    assert terms["total"] == pytest.approx(terms["d_loss"] + terms["g_loss"])
    assert all(np.isfinite(list(terms.values())))
    assert any(
        not torch.equal(a, b) for a, b in zip(before_g, model.generator.parameters(), strict=True)
    )
    assert any(
        not torch.equal(a, b)
        for a, b in zip(before_d, model.discriminator.parameters(), strict=True)
    )
    assert (terms["gp"] > 0) == (loss == "wgan-gp")


def test_losses_match_their_formulas() -> None:
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    softplus = np.logaddexp(0, [-2.0, 1.0, 0.5, -3.0, -0.5, 3.0])  # log(1 + e^v)
    expected = {  # (discriminator, generator), written out by hand for these four scores
        "nonsaturating": (softplus[:4].sum() / 2, softplus[4:].sum() / 2),
        "hinge": ((0 + 2 + 1.5 + 0) / 2, (-0.5 + 3) / 2),
        "lsgan": (0.5 * ((1 + 4) / 2 + (0.25 + 9) / 2), 0.5 * (0.25 + 16) / 2),
        "wgan-gp": ((0.5 - 3) / 2 - (2 - 1) / 2, (-0.5 + 3) / 2),
    }
    for loss, (d_expected, g_expected) in expected.items():
        d_loss, g_loss = gan_losses(loss, real, fake)
        assert float(d_loss) == pytest.approx(d_expected, rel=1e-6), loss
        assert float(g_loss) == pytest.approx(g_expected, rel=1e-6), loss


def test_d_steps_and_separate_learning_rates(tiny_npz: Path) -> None:
    config = gan_config(tiny_npz, "model.d_steps=3", "model.lr_d=0.004", "model.lr_g=0.001")
    model, (opt_d, opt_g) = build(config)
    model.training_step(torch.rand(8, 1, 12, 12), [opt_d, opt_g])
    assert opt_d.param_groups[0]["lr"] == 0.004 and opt_g.param_groups[0]["lr"] == 0.001
    assert opt_d.param_groups[0]["betas"] == (0.5, 0.999)
    d_weight = next(model.discriminator.parameters())
    g_weight = next(model.generator.parameters())
    assert int(opt_d.state[d_weight]["step"]) == 3
    assert int(opt_g.state[g_weight]["step"]) == 1


def test_l1_l2_penalties_reach_both_losses(tiny_npz: Path) -> None:
    plain, optimizers = build(gan_config(tiny_npz))
    terms = {
        k: float(v) for k, v in plain.training_step(torch.rand(8, 1, 12, 12), optimizers).items()
    }
    assert terms["l1"] == 0 and terms["l2"] == 0
    penalised, optimizers = build(gan_config(tiny_npz, "train.l1=0.001", "train.l2=0.01"))
    expected = [float(t.detach()) for t in penalised.penalties()]
    terms = {
        k: float(v)
        for k, v in penalised.training_step(torch.rand(8, 1, 12, 12), optimizers).items()
    }
    # measured before each network's step; both networks' weights counted
    assert terms["l1"] == pytest.approx(expected[0], rel=0.05)
    assert terms["l2"] == pytest.approx(expected[1], rel=0.05)


def test_gradient_penalty_matches_direct_computation() -> None:
    torch.manual_seed(0)
    real, fake = torch.rand(5, 1, 3, 3), torch.rand(5, 1, 3, 3)
    # a linear critic has gradient w everywhere: penalty (||w|| - 1)^2
    linear = nn.Sequential(nn.Flatten(), nn.Linear(9, 1))
    w = linear[1].weight.detach()
    penalty = gradient_penalty(linear, real, fake, generator=torch.Generator().manual_seed(1))
    assert float(penalty.detach()) == pytest.approx(float((w.norm() - 1) ** 2), rel=1e-5)

    # D(x) = sum x^2 has gradient 2 x_hat at x_hat = e x + (1 - e) G(z)
    class Square(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.pow(2).flatten(1).sum(1, keepdim=True)

    penalty = gradient_penalty(Square(), real, fake, generator=torch.Generator().manual_seed(2))
    eps = torch.rand(5, 1, 1, 1, generator=torch.Generator().manual_seed(2))
    mixed = eps * real + (1 - eps) * fake
    direct = ((2 * mixed).flatten(1).norm(dim=1) - 1).pow(2).mean()
    assert float(penalty.detach()) == pytest.approx(float(direct), rel=1e-5)


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_packed_discriminator_scores_packs_of_images(tiny_npz: Path, architecture: str) -> None:
    config = gan_config(
        tiny_npz, f"model.architecture={architecture}", "model.channels=4,8", "model.pack=3"
    )
    model, optimizers = build(config)
    x = torch.rand(7, 1, 12, 12)
    scores = model.score(x)
    assert scores.shape == (3,)  # ceil(7 / 3): the last pack is filled with the first images
    packed = torch.cat([x, x[:2]]).reshape(3, 3, 12, 12)
    assert torch.allclose(scores, model.discriminator(packed).squeeze(1))
    # one pack is one input: shuffling images between packs changes the scores
    assert not torch.allclose(model.score(x[[0, 3, 6, 1, 4, 2, 5]]), scores)
    terms = model.training_step(x, optimizers)  # a batch that is not a multiple of the pack
    assert all(torch.isfinite(v) for v in terms.values())
    with pytest.raises(ConfigError, match="model.pack"):
        gan_config(tiny_npz, "model.pack=0")


def test_gradient_penalty_of_a_packed_critic_takes_the_norm_per_pack() -> None:
    real, fake = torch.rand(6, 1, 3, 3), torch.rand(6, 1, 3, 3)

    def critic(x: torch.Tensor) -> torch.Tensor:  # D(pack of 2) = sum x^2 over the pack
        return x.pow(2).reshape(len(x) // 2, -1).sum(1)

    penalty = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(4))
    eps = torch.rand(6, 1, 1, 1, generator=torch.Generator().manual_seed(4))
    mixed = eps * real + (1 - eps) * fake
    direct = ((2 * mixed).reshape(3, -1).norm(dim=1) - 1).pow(2).mean()
    assert float(penalty.detach()) == pytest.approx(float(direct), rel=1e-5)


def test_group_spread_is_the_mean_deviation_within_each_group() -> None:
    x = torch.rand(6, 2, 3, 3)
    spread = group_spread(x, 4)  # groups: images 0-3, then the last two on their own
    first = x[:4].std(0, unbiased=False).mean()
    last = x[4:].std(0, unbiased=False).mean()
    assert torch.allclose(spread, torch.stack([first] * 4 + [last] * 2), atol=1e-6)
    assert float(group_spread(torch.ones(4, 5), 2).max()) < 1e-3  # look-alikes: about 0
    head = MinibatchStd(nn.Linear(5, 1), 2)
    features = torch.rand(4, 5)
    assert torch.equal(head(features), head.linear(features))  # the weight starts at 0
    with torch.no_grad():
        head.weight.fill_(2.0)
    expected = head.linear(features) + 2 * group_spread(features, 2)[:, None]
    assert torch.allclose(head(features), expected)


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_minibatch_std_lets_the_discriminator_see_variety(
    tiny_npz: Path, tmp_path: Path, architecture: str
) -> None:
    config = gan_config(
        tiny_npz,
        f"model.architecture={architecture}",
        "model.channels=4,8",
        "model.minibatch_std=4",
        "model.pack=2",
    )
    torch.manual_seed(0)
    model, optimizers = build(config)
    x = torch.rand(8, 1, 12, 12)
    assert model.score(x).shape == (4,)
    # the same first pack scores differently among copies of itself than among other images
    for layer in model.discriminator.modules():
        if isinstance(layer, MinibatchStd):
            layer.weight.data.fill_(1.0)  # as training would move it from 0
    varied, copies = torch.cat([x[:1], x[:1], x[2:]]), x[:1].expand(8, 1, 12, 12)
    assert not torch.allclose(model.score(varied)[:1], model.score(copies)[:1])
    plain, _ = build(apply_overrides(config, ["model.minibatch_std=0"]))
    assert torch.allclose(plain.score(varied)[:1], plain.score(copies)[:1])
    terms = model.training_step(torch.rand(7, 1, 12, 12), optimizers)  # 7: an incomplete group
    assert all(torch.isfinite(v) for v in terms.values())
    # a run saves and loads with the wider last layer (loading checks every tensor's shape)
    ls.train(
        apply_overrides(config, ["train.epochs=1"]), tmp_path / "run", quiet=True, report=False
    )
    loaded = ls.load(tmp_path / "run")
    assert isinstance(loaded, GAN)
    assert any(isinstance(m, MinibatchStd) for m in loaded.discriminator.modules())
    with pytest.raises(ConfigError, match="model.minibatch_std"):
        gan_config(tiny_npz, "model.minibatch_std=1")


def test_spectral_norm_bounds_the_discriminator_weights(tiny_npz: Path, tmp_path: Path) -> None:
    config = gan_config(
        tiny_npz, "model.architecture=conv", "model.channels=4,8", "model.spectral_norm=true"
    )
    torch.manual_seed(0)
    model, optimizers = build(config)
    for _ in range(20):  # each training forward runs one power iteration
        model.training_step(torch.rand(8, 1, 12, 12), optimizers)
    plain, _ = build(gan_config(tiny_npz, "model.architecture=conv", "model.channels=4,8"))

    def sigmas(gan: GAN) -> list[float]:  # largest singular value of each (out, in * k * k)
        weighted = [m for m in gan.discriminator.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        return [
            float(torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)) for m in weighted
        ]

    with torch.no_grad():  # the power iteration trails the updating weights; let it converge
        for _ in range(50):
            model.score(torch.rand(8, 1, 12, 12))
    assert len(sigmas(model)) == 3 and all(abs(s - 1) < 0.01 for s in sigmas(model))
    assert all(s < 0.5 for s in sigmas(plain))  # DCGAN's N(0, 0.02) initialisation
    # diagnostics still watch the discriminator (its weights are parametrized)
    assert any(layer.name.startswith("discriminator") for layer in find_layers(model))
    ls.train(
        apply_overrides(config, ["train.epochs=1"]), tmp_path / "run", quiet=True, report=False
    )
    loaded = ls.load(tmp_path / "run")
    x = torch.rand(4, 1, 12, 12)
    assert torch.equal(loaded.eval().score(x), ls.load(tmp_path / "run").eval().score(x))


def test_inversion_recovers_a_generating_code(tiny_npz: Path) -> None:
    model, _ = build(gan_config(tiny_npz, "model.inversion_steps=300"))
    model.eval()
    z0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        x = model.decode(z0)
    z, error = model.invert(x)
    assert z.shape == (4, 2) and error.shape == (4,)
    with torch.no_grad():
        baseline = (model.decode(torch.randn(4, 2)) - x).pow(2).flatten(1).mean(1)
    assert float(error.max()) < 1e-4 < float(baseline.min())
    assert torch.allclose(z, z0, atol=0.05)
    assert torch.equal(model.encode(x), z)  # deterministic
    assert model.last_inversion_error is not None


def test_encode_draws_its_starts_from_the_generator_given(tiny_npz: Path) -> None:
    model, _ = build(gan_config(tiny_npz, "model.inversion_steps=3"))
    x = torch.rand(4, 1, 12, 12)

    def encode(seed: int) -> torch.Tensor:
        return model.encode(x, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(encode(1), encode(1))  # deterministic given the generator
    assert not torch.allclose(encode(1), encode(2))  # other starts: 3 steps end elsewhere
    assert torch.equal(model.encode(x), encode(0))  # the default is a fixed seed


def test_a_discriminator_of_your_own_trains_but_cannot_be_split(tiny_npz: Path) -> None:
    own = f"model.encoder={network_path(TinyCritic)}"
    model, optimizers = build(gan_config(tiny_npz, own, "model.pack=2"))
    assert isinstance(model.discriminator, TinyCritic)
    x = torch.rand(7, 1, 12, 12)
    assert model.score(x).shape == (4,)
    terms = model.training_step(x, optimizers)  # the real scores need no split-off last layer
    assert all(torch.isfinite(v) for v in terms.values())
    assert np.isfinite(list(model.validation_step(x).values())).all()
    for key, value in (("minibatch_std", 2), ("feature_matching", 1.0)):
        with pytest.raises(ConfigError, match=f"model.{key} needs the built-in discriminator"):
            build(gan_config(tiny_npz, own, f"model.{key}={value}"))


def test_dcgan_init_leaves_a_network_of_your_own_as_it_was_given(tiny_npz: Path) -> None:
    config = gan_config(tiny_npz, "model.architecture=conv", "model.channels=4,8")
    own = TinyCritic((1, 12, 12), 1)
    given = {k: v.clone() for k, v in own.state_dict().items()}
    model = ls.models.build_model(config.model, (1, 12, 12), config.train, encoder=own)
    assert model.discriminator is own
    assert all(torch.equal(v, given[k]) for k, v in own.state_dict().items())
    generator = [m for m in model.generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert generator and all(float(m.weight.detach().std()) < 0.03 for m in generator)  # N(0, .02)


def test_r1_penalty_matches_direct_computation() -> None:
    real = torch.rand(6, 1, 3, 3)

    def critic(x: torch.Tensor) -> torch.Tensor:  # D(pack of 2) = sum x^3 over the pack
        return x.pow(3).reshape(len(x) // 2, -1).sum(1)

    penalty = r1_penalty(critic, real)
    direct = (3 * real.pow(2)).reshape(3, -1).pow(2).sum(1).mean()  # ||grad||^2 per pack
    assert float(penalty.detach()) == pytest.approx(float(direct), rel=1e-5)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(9, 1))
    r1_penalty(linear, real).backward()  # differentiable in D's weights: d||w||^2/dw = 2w
    weight = linear[1].weight
    assert weight.grad is not None
    assert torch.allclose(weight.grad, 2 * weight.detach())


def test_lazy_r1_penalises_every_kth_discriminator_step(tiny_npz: Path) -> None:
    config = gan_config(
        tiny_npz, "model.architecture=conv", "model.channels=4,8", "model.r1=2", "model.r1_every=3"
    )
    model, optimizers = build(config)
    x = torch.rand(8, 1, 12, 12)
    gps = [float(model.training_step(x, optimizers)["gp"]) for _ in range(6)]
    assert [gp > 0 for gp in gps] == [True, False, False, True, False, False]
    # the logged term is r1_every x the penalty, so its mean over steps estimates the penalty
    direct = float(r1_penalty(model.score, x).detach())
    assert float(model.training_step(x, optimizers)["gp"]) == pytest.approx(3 * direct, rel=1e-4)
    assert model.validation_step(x)["gp"] == pytest.approx(r1_penalty(model.score, x).item())


def test_r1_pulls_the_discriminator_gradient_down(tiny_npz: Path) -> None:
    x = torch.rand(16, 1, 12, 12)
    norms = {}
    for r1 in (0, 50):
        config = gan_config(tiny_npz, "model.architecture=conv", "model.channels=4,8")
        torch.manual_seed(0)
        model, optimizers = build(apply_overrides(config, [f"model.r1={r1}"]))
        for _ in range(30):
            model.training_step(x, optimizers)
        norms[r1] = float(r1_penalty(model.score, x).detach())
    assert norms[50] < 0.5 * norms[0]


def test_bad_gan_settings_are_config_errors(tiny_npz: Path) -> None:
    with pytest.raises(ConfigError, match="model.loss"):
        gan_config(tiny_npz, "model.loss=minimax")
    with pytest.raises(ConfigError, match="model.d_steps"):
        gan_config(tiny_npz, "model.d_steps=0")
    with pytest.raises(ConfigError, match="model.r1"):
        gan_config(tiny_npz, "model.r1=-1")
    with pytest.raises(ConfigError, match="model.r1_every"):
        gan_config(tiny_npz, "model.r1=1", "model.r1_every=0")
    with pytest.raises(ConfigError, match="two gradient penalties"):
        gan_config(tiny_npz, "model.r1=1", "model.loss=wgan-gp")


@pytest.mark.parametrize("ema", [0.0, 0.99])
def test_standing_statistics_are_the_mean_over_many_batches(tiny_npz: Path, ema: float) -> None:
    config = gan_config(
        tiny_npz, "model.architecture=conv", "model.channels=4,8", f"model.ema={ema}"
    )
    model, optimizers = build(config)
    for _ in range(5):
        model.training_step(torch.rand(8, 1, 12, 12), optimizers)
    decoder = model.generator if model.generator_ema is None else model.generator_ema
    norm = next(m for m in decoder.modules() if isinstance(m, nn.BatchNorm2d))
    inputs: list[torch.Tensor] = []
    hook = norm.register_forward_hook(lambda m, args, out: inputs.append(args[0].detach()))
    model.standing_statistics(batches=7, batch_size=5)
    hook.remove()
    assert len(inputs) == 7 and norm.momentum == 0.1 and decoder.training
    means = torch.stack([i.mean(dim=(0, 2, 3)) for i in inputs]).mean(0)
    variances = torch.stack([i.var(dim=(0, 2, 3)) for i in inputs]).mean(0)
    assert torch.allclose(norm.running_mean, means, atol=1e-6)
    assert torch.allclose(norm.running_var, variances, atol=1e-6)
    if ema:  # the trained generator keeps its own statistics
        trained = next(m for m in model.generator.modules() if isinstance(m, nn.BatchNorm2d))
        assert not torch.allclose(trained.running_mean, norm.running_mean)
    # another network (a copy, as bench/gan_epochs.py measures) gets them; the decoder keeps its own
    other = copy.deepcopy(model.generator)
    kept = norm.running_mean.clone()
    model.standing_statistics(batches=3, batch_size=5, network=other)
    assert torch.equal(norm.running_mean, kept)
    copied = next(m for m in other.modules() if isinstance(m, nn.BatchNorm2d))
    assert not torch.allclose(copied.running_mean, kept)


def test_moving_average_generator_decodes_and_trails_the_trained_one(tiny_npz: Path) -> None:
    model, optimizers = build(
        gan_config(tiny_npz, "model.architecture=conv", "model.channels=4,8", "model.ema=0.99")
    )
    assert model.generator_ema is not None
    assert not any(p.requires_grad for p in model.generator_ema.parameters())
    assert not any("generator_ema" in layer.name for layer in find_layers(model))  # not watched
    start = [p.detach().clone() for p in model.generator.parameters()]
    for p, q in zip(start, model.generator_ema.parameters(), strict=True):
        assert torch.equal(p, q)  # starts as a copy of the initial generator
    for _ in range(30):
        model.training_step(torch.rand(8, 1, 12, 12), optimizers)
    assert int(model.ema_updates) == 30
    # the decay warms up: d_t = min(0.99, (1 + t) / (10 + t)), so the average has moved from the
    # initial weights but is not the trained generator's
    pairs = list(
        zip(start, model.generator_ema.parameters(), model.generator.parameters(), strict=True)
    )
    assert any(not torch.equal(s, e) for s, e, _ in pairs)
    assert any(not torch.equal(e, g) for _, e, g in pairs)
    for ema_buffer, buffer in zip(
        model.generator_ema.buffers(), model.generator.buffers(), strict=True
    ):
        assert torch.equal(ema_buffer, buffer)  # batch norm statistics are copied
    model.eval()
    z = torch.randn(4, 2)
    with torch.no_grad():
        assert torch.equal(model.decode(z), torch.sigmoid(model.generator_ema(z)))
        assert not torch.equal(model.decode(z), torch.sigmoid(model.generator(z)))
    plain, _ = build(gan_config(tiny_npz))
    assert plain.generator_ema is None and "ema_updates" not in plain.state_dict()
    with pytest.raises(ConfigError, match="model.ema"):
        gan_config(tiny_npz, "model.ema=1")


@pytest.mark.parametrize("extra", [[], ["model.r1=1", "model.r1_every=3"]], ids=["ema", "lazy-r1"])
def test_resume_with_moving_average_equals_uninterrupted(
    tiny_npz: Path, tmp_path: Path, extra: list[str]
) -> None:
    config = gan_config(
        tiny_npz,
        "model.architecture=conv",
        "model.channels=4,8",
        "model.ema=0.9",
        "train.epochs=3",
        *extra,
    )
    ls.train(config, tmp_path / "straight", quiet=True, report=False)

    class InterruptAfterFirst:
        def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
            if record["epoch"] == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ls.train(
            config,
            tmp_path / "resumed",
            quiet=True,
            callbacks=[InterruptAfterFirst()],
            report=False,
        )
    ls.train(config, tmp_path / "resumed", resume=True, quiet=True, report=False)
    straight = safetensors.torch.load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = safetensors.torch.load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert any(key.startswith("generator_ema.") for key in straight)
    assert set(straight) == set(resumed)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_run_saved_before_the_r1_counter_loads(tiny_npz: Path, tmp_path: Path) -> None:
    config = gan_config(tiny_npz, "model.r1=1", "model.r1_every=3")
    ls.train(config, tmp_path / "run", quiet=True, report=False)
    weights = tmp_path / "run" / "model.safetensors"
    tensors = safetensors.torch.load_file(str(weights))
    assert int(tensors.pop("r1_updates")) > 0
    safetensors.torch.save_file(tensors, str(weights), metadata={"epoch": "2"})
    loaded = ls.load(tmp_path / "run")
    assert int(loaded.r1_updates) == 0
    assert torch.equal(loaded.generator[0].weight, tensors["generator.0.weight"])
    tensors.pop("generator.0.weight")  # a learned weight is never optional
    safetensors.torch.save_file(tensors, str(weights), metadata={"epoch": "2"})
    with pytest.raises(RunError, match="missing generator.0.weight"):
        ls.load(tmp_path / "run")


class Capture:
    """Generates from the trainer's in-memory model once training has finished."""

    images: torch.Tensor

    def on_train_end(self, trainer: Any) -> None:
        self.images = trainer.model.generate(6, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_run_saves_loads_and_generates_identically(
    tiny_npz: Path, tmp_path: Path, ema: float
) -> None:
    config = gan_config(
        tiny_npz, "model.architecture=conv", "model.channels=4,8", f"model.ema={ema}"
    )
    capture = Capture()
    ls.train(config, tmp_path / "run", callbacks=[capture], quiet=True, report=False)
    loaded = ls.load(tmp_path / "run")
    assert isinstance(loaded, GAN) and (loaded.generator_ema is not None) == (ema > 0)
    again = loaded.generate(6, generator=torch.Generator().manual_seed(5))
    assert torch.equal(again, capture.images)
    z = torch.randn(3, 2)
    assert torch.equal(loaded.decode(z), ls.load(tmp_path / "run").decode(z))
    records = [r for r in ls.open_run(tmp_path / "run").metrics if r["kind"] == "epoch"]
    assert len(records) == 2 and {"d_real", "d_fake", "gp"} <= set(records[-1]["val"])


def test_cli_uses_a_gan_run(tiny_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    train = ["train", "--model", "gan", "--dataset", str(tiny_npz), "--out", str(run)]
    train += ["--epochs", "1", "--latent-dim", "2", "--hidden", "32", "--batch-size", "16"]
    train += ["--quiet", "--no-report", "--set", "model.inversion_steps=20"]
    assert cli.main(train) == 0
    codes = tmp_path / "codes.npz"
    assert cli.main(["encode", str(run), str(tiny_npz), "--out", str(codes), "--limit", "5"]) == 0
    assert np.load(codes)["codes"].shape == (5, 2)
    assert cli.main(["decode", str(run), str(codes), "--out", str(tmp_path / "d.png")]) == 0
    assert cli.main(["generate", str(run), "-n", "4", "--out", str(tmp_path / "g.png")]) == 0
    assert (
        cli.main(
            ["reconstruct", str(run), str(tiny_npz), "-n", "3", "--out", str(tmp_path / "r.png")]
        )
        == 0
    )
    output = capsys.readouterr().out
    assert "mean squared error" in output
    assert all((tmp_path / f).exists() for f in ("d.png", "g.png", "r.png"))


def test_discriminator_can_be_wider_than_the_generator(tiny_npz: Path) -> None:
    config = gan_config(
        tiny_npz, "model.architecture=conv", "model.channels=4,8", "model.d_channels=6,12"
    )
    model, _ = build(config)
    convs = [m for m in model.discriminator.modules() if isinstance(m, nn.Conv2d)]
    transposed = [m for m in model.generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [6, 12]
    assert [c.in_channels for c in transposed] == [8, 4]
    assert model.score(torch.rand(3, 1, 12, 12)).shape == (3,)


@pytest.mark.parametrize("name", ["mnist-dcgan", "fashion-dcgan"])
def test_shipped_dcgan_configs_build(name: str) -> None:
    config = ls.load_config(name)  # shipped with the package
    model = MODELS["gan"](config.model, (1, 28, 28))
    assert model.generate(2).shape == (2, 1, 28, 28)
    assert config.model.pack == 2  # the discriminator scores pairs of images
    assert model.score(torch.rand(4, 1, 28, 28)).shape == (2,)


def test_feature_matching_compares_mean_features_in_their_own_scale() -> None:
    torch.manual_seed(0)
    real = torch.randn(256, 20)
    assert float(feature_matching(real, real)) == 0.0
    shifted = real + torch.tensor([2.0] + [0.0] * 19)  # one feature's mean moves by 2
    value = float(feature_matching(shifted, real))
    assert value == pytest.approx(4.0 / 20 / float(real.var(0).mean()), rel=1e-5)
    assert float(feature_matching(10 * shifted, 10 * real)) == pytest.approx(value, rel=1e-5)
    # two halves of one sample differ by sampling noise only: about 2 / 128 of the variance
    assert float(feature_matching(real[:128], real[128:])) < 3 * 2 / 128 < 0.25 * value


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_feature_matching_reaches_the_generator_only(tiny_npz: Path, architecture: str) -> None:
    overrides = (f"model.architecture={architecture}", "model.channels=4,8", "model.pack=2")
    x = torch.rand(8, 1, 12, 12)
    steps = {}
    for weight in (0.0, 100.0):
        torch.manual_seed(0)
        model, optimizers = build(
            gan_config(tiny_npz, *overrides, f"model.feature_matching={weight}")
        )
        terms = model.training_step(x, optimizers)
        steps[weight] = (model, terms)
    (plain, plain_terms), (matched, matched_terms) = steps[0.0], steps[100.0]
    assert "matching" not in plain_terms and float(matched_terms["matching"]) > 0
    assert float(matched_terms["g_loss"]) > float(plain_terms["g_loss"])
    for a, b in zip(
        plain.discriminator.parameters(), matched.discriminator.parameters(), strict=True
    ):
        assert torch.equal(a, b)  # the discriminator's step does not see the term
    assert any(
        not torch.allclose(a, b)
        for a, b in zip(plain.generator.parameters(), matched.generator.parameters(), strict=True)
    )
    with pytest.raises(ConfigError, match="model.feature_matching"):
        gan_config(tiny_npz, "model.feature_matching=-1")
