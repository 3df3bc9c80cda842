"""Generative adversarial network (Goodfellow et al. 2014) with DCGAN-style conv networks (Radford
et al. 2016) or MLPs, and three losses: non-saturating, hinge and WGAN-GP (Gulrajani et al. 2017).

The generator is the shared decoder (`build_decoder`, sigmoid output in [0, 1]); the
discriminator is the shared encoder with one output (`build_encoder(..., out_features=1)`), a raw
score (a logit for the non-saturating loss). The model owns its step: `configure_optimizers`
returns [discriminator optimizer, generator optimizer] and `training_step` takes `d_steps`
discriminator steps, then one generator step, so the generic trainer never learns the word "gan".

`encode` is GAN inversion: gradient descent in latent space from several random starts, keeping
the best code per image (`invert` also returns the reconstruction error it reached).

With `ema` > 0 the model also keeps an exponential moving average of the generator's weights
(`generator_ema`, as in Karras et al. 2018 and Brock et al. 2019), updated after every generator
step and saved with the run; `decode` (so `generate`, `encode` and the rest) uses it, while
training and its logged terms use the generator being trained.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import update_bn

from latentspace.errors import ConfigError
from latentspace.models.base import GenerativeModel, make_optimizer
from latentspace.models.layers import NetworkConfig, make_activation
from latentspace.models.networks import make_decoder, make_encoder
from latentspace.settings import TrainConfig

__all__ = [
    "GAN",
    "GANConfig",
    "GANLoss",
    "MinibatchStd",
    "gan_losses",
    "gradient_penalty",
    "group_spread",
    "update_moving_average",
]

LOSSES = ("nonsaturating", "hinge", "lsgan", "wgan-gp")
# the discriminator's loss below which it has won outright, and what that means, per loss
WON_BELOW = {
    "hinge": (0.02, "every margin satisfied"),
    "lsgan": (0.01, "scores on their targets, 1 for real and 0 for generated images"),
}


@dataclasses.dataclass(frozen=True)
class GANConfig(NetworkConfig):
    name: str = "gan"
    loss: str = "nonsaturating"  # nonsaturating | hinge | lsgan | wgan-gp
    gp_weight: float = 10.0  # wgan-gp: weight of the gradient penalty (Gulrajani et al. use 10)
    d_steps: int = 1  # discriminator steps per generator step (WGAN-GP: 5), on the same batch
    lr_d: float | None = None  # discriminator learning rate; None: train.lr
    lr_g: float | None = None  # generator learning rate; None: train.lr
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas of both players (DCGAN: 0.5, 0.999)
    d_activation: str = "leaky_relu"  # the discriminator's activation (slope 0.2 as in DCGAN)
    d_channels: tuple[int, ...] = ()  # conv: the discriminator's channels; empty: `channels`
    d_hidden_sizes: tuple[int, ...] = ()  # mlp: the discriminator's layers; empty: `hidden_sizes`
    batch_norm: bool = True  # batch normalisation in the generator's hidden layers (DCGAN)
    inversion_steps: int = 200  # encode: Adam steps in latent space per restart
    inversion_restarts: int = 4  # encode: random starting codes per image; the best is kept
    inversion_lr: float = 0.05  # encode: Adam learning rate in latent space
    ema: float = 0.0  # decay of a moving average of G's weights used to decode; 0 = off
    pack: int = 1  # PacGAN: the discriminator judges `pack` images at once (1 = one at a time)
    spectral_norm: bool = False  # divide each of D's weights by its largest singular value
    minibatch_std: int = 0  # D sees the spread of each group of this many inputs; 0 = off
    r1: float = 0.0  # R1 penalty weight gamma: gamma/2 E||grad_x D(x)||^2 on real images; 0 = off
    r1_every: int = 1  # lazy R1: compute it every this many discriminator steps, weighted by that
    feature_matching: float = 0.0  # weight of G's mean-feature term (Salimans 2016); 0 = off

    def validate(self) -> None:
        super().validate()
        make_activation(self.d_activation)
        if any(c < 1 for c in (*self.d_channels, *self.d_hidden_sizes)):
            raise ConfigError(
                f"model.d_channels = {self.d_channels} and model.d_hidden_sizes = "
                f"{self.d_hidden_sizes} must be positive (or empty: the generator's)"
            )
        if self.loss not in LOSSES:
            raise ConfigError(f"model.loss = {self.loss!r} is not one of: {', '.join(LOSSES)}")
        if self.gp_weight < 0:
            raise ConfigError(f"model.gp_weight = {self.gp_weight} must be 0 or more")
        if self.d_steps < 1:
            raise ConfigError(f"model.d_steps = {self.d_steps} must be at least 1")
        for key in ("lr_d", "lr_g", "inversion_lr"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ConfigError(f"model.{key} = {value} must be greater than 0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"model.betas = {self.betas}: both must be in [0, 1)")
        if self.minibatch_std < 0 or self.minibatch_std == 1:
            raise ConfigError(
                f"model.minibatch_std = {self.minibatch_std}: give a group size of 2 or more "
                "(0 = off)"
            )
        if self.r1 < 0 or self.r1_every < 1:
            raise ConfigError(
                f"model.r1 = {self.r1} must be 0 or more and model.r1_every = {self.r1_every} at "
                "least 1"
            )
        if self.r1 and self.loss == "wgan-gp":
            raise ConfigError(
                "model.r1 and model.loss = 'wgan-gp' are two gradient penalties: set model.r1 = 0 "
                "(or gp_weight for WGAN-GP's own)"
            )
        if self.feature_matching < 0:
            raise ConfigError(
                f"model.feature_matching = {self.feature_matching} must be 0 or more (0 = off)"
            )
        if self.pack < 1:
            raise ConfigError(f"model.pack = {self.pack} must be at least 1 (1 = no packing)")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"model.ema = {self.ema} must be in [0, 1) (0 = off)")
        if self.inversion_steps < 1 or self.inversion_restarts < 1:
            raise ConfigError(
                f"model.inversion_steps = {self.inversion_steps} and model.inversion_restarts = "
                f"{self.inversion_restarts} must both be at least 1"
            )


class GANLoss(NamedTuple):
    """Averaged over the batch. `gp` is the unweighted gradient penalty: WGAN-GP's, or R1's times
    the lazy-R1 weight (0 when neither); `discriminator` already includes it, weighted."""

    discriminator: torch.Tensor
    gp: torch.Tensor


def gan_losses(
    loss: str, real_scores: torch.Tensor, fake_scores: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(discriminator loss, generator loss) from raw scores D(x), D(G(z)): (B,) each, batch means.

    nonsaturating: -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))) and -log sigmoid(D(G(z)))
    (Goodfellow et al. 2014, section 3); hinge: relu(1 - D(x)) + relu(1 + D(G(z))) and -D(G(z))
    (Lim & Ye 2017); lsgan: ((D(x) - 1)^2 + D(G(z))^2) / 2 and (D(G(z)) - 1)^2 / 2 (Mao et al.
    2017, targets 0 and 1); wgan-gp: D(G(z)) - D(x) and -D(G(z)), the penalty added by the caller."""
    if loss == "nonsaturating":
        d_loss = F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()
        return d_loss, F.softplus(-fake_scores).mean()
    if loss == "hinge":
        d_loss = F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()
        return d_loss, -fake_scores.mean()
    if loss == "lsgan":
        d_loss = 0.5 * ((real_scores - 1.0).pow(2).mean() + fake_scores.pow(2).mean())
        return d_loss, 0.5 * (fake_scores - 1.0).pow(2).mean()
    return fake_scores.mean() - real_scores.mean(), -fake_scores.mean()


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


def feature_matching(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The squared distance between the mean features of generated and real images, divided by
    the real features' mean variance (so the weight does not depend on their scale): Salimans et
    al. 2016, section 3.1, on the discriminator's last hidden layer. (B, F) each; a first moment
    of the whole batch, so the generator is told when it makes too many of one kind of image,
    which a per-image score cannot see."""
    scale = real.var(0).mean().detach().clamp_min(1e-12)
    return (fake.mean(0) - real.mean(0)).pow(2).mean() / scale


@torch.no_grad()
def update_moving_average(
    average: nn.Module, current: nn.Module, updates: torch.Tensor, decay: float
) -> None:
    """average <- d average + (1 - d) current for the weights, with d = min(decay, (1 + t) /
    (10 + t)) after t = `updates` earlier updates (so early averages do not hold on to the random
    initial weights); buffers (batch norm statistics) are copied."""
    t = updates.to(torch.float32)
    d = torch.clamp((1.0 + t) / (10.0 + t), max=decay)
    for averaged, weights in zip(average.parameters(), current.parameters(), strict=True):
        averaged.lerp_(weights, 1.0 - d)
    for kept, buffer in zip(average.buffers(), current.buffers(), strict=True):
        kept.copy_(buffer)


def _dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) weights, as in DCGAN (Radford et al. 2016, section 4)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


def _with_batch_norm(network: nn.Sequential) -> nn.Sequential:
    """Insert BatchNorm between every hidden Linear/ConvTranspose2d and its activation."""
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


def _pairwise_spread(images: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance between the images of a batch, per pixel (RMS): a cheap measure of
    diversity. (B, C, H, W) -> scalar."""
    flat = images.flatten(1)
    if len(flat) < 2:
        return torch.zeros((), device=images.device)
    return torch.pdist(flat).mean() / flat.shape[1] ** 0.5


class GAN(GenerativeModel):
    """Images are (B, C, H, W) floats in [0, 1]; codes (B, D) drawn from N(0, I)."""

    name = "gan"
    config_class = GANConfig
    config: GANConfig
    monitor = None  # d_loss + g_loss is minimised by neither player: nothing to stop early on
    optional_state = frozenset({"r1_updates"})  # runs saved before it start the lazy R1 phase at 0
    ema_updates: torch.Tensor  # a buffer, only with ema > 0: generator steps averaged so far
    r1_updates: torch.Tensor  # a buffer, only with r1 > 0: discriminator steps taken so far

    def __init__(
        self,
        config: GANConfig,
        image_shape: tuple[int, int, int],
        train: TrainConfig | None = None,
        *,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ) -> None:
        """encoder: your own discriminator, decoder: your own generator (models/networks.py)."""
        super().__init__(config, image_shape, train)
        generator = make_decoder(config, image_shape, decoder)
        if config.batch_norm and isinstance(generator, nn.Sequential):
            generator = _with_batch_norm(generator)
        self.generator = generator
        d_config = dataclasses.replace(
            config,
            activation=config.d_activation,
            channels=config.d_channels or config.channels,
            hidden_sizes=config.d_hidden_sizes or config.hidden_sizes,
        )
        c, h, w = image_shape  # PacGAN: `pack` images side by side in the channel axis
        self.discriminator = make_encoder(d_config, (c * config.pack, h, w), 1, encoder)
        if config.minibatch_std:
            layers = cast(nn.Sequential, self.discriminator)
            assert isinstance(layers[-1], nn.Linear)
            layers[-1] = MinibatchStd(layers[-1], config.minibatch_std)
        for layer in self.discriminator.modules():
            if isinstance(layer, nn.LeakyReLU):
                layer.negative_slope = 0.2  # DCGAN's slope; torch's default 0.01 is nearly ReLU
        if config.architecture == "conv":
            _dcgan_init(self)
        if config.spectral_norm:  # Miyato et al. 2018; one power iteration per training forward
            for layer in list(self.discriminator.modules()):
                if isinstance(layer, nn.Conv2d | nn.Linear):
                    nn.utils.parametrizations.spectral_norm(layer)
        # the moving average starts as a copy of the initial generator; a buffer counts its updates
        self.generator_ema: nn.Module | None = None
        if config.ema > 0:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.last_inversion_error: torch.Tensor | None = None
        if config.r1 > 0:  # discriminator steps so far, saved so a resumed run keeps the lazy phase
            self.register_buffer("r1_updates", torch.zeros((), dtype=torch.long))
        self._r1_step: int | None = None  # its value on the host, read once (no sync per step)

    # ---- the two players ---------------------------------------------------------------------
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The discriminator's raw score: (B, C, H, W) -> (B,), or with `pack` = m > 1 one score
        per m consecutive images, (ceil(B / m),) (PacGAN, Lin et al. 2018: a discriminator that
        sees several samples at once notices when they lack variety, which penalises dropped
        modes). A last incomplete pack is filled with the batch's first images."""
        return self.discriminator(self._packed(x)).squeeze(1)

    def _packed(self, x: torch.Tensor) -> torch.Tensor:
        m = self.config.pack
        if m > 1:
            if len(x) % m:
                fill = torch.arange(m - len(x) % m, device=x.device) % len(x)
                x = torch.cat([x, x[fill]])
            x = x.reshape(len(x) // m, m * x.shape[1], *x.shape[2:])
        return x

    def _features_and_score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the discriminator's last hidden layer, its score), one row per score."""
        layers = cast(nn.Sequential, self.discriminator)
        features = layers[:-1](self._packed(x))
        return features, layers[-1](features).squeeze(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The generator: z (B, D) -> images (B, C, H, W) in [0, 1]. With `ema` > 0, the moving
        average of its weights."""
        generator = self.generator if self.generator_ema is None else self.generator_ema
        return torch.sigmoid(generator(z))

    def _fake(self, z: torch.Tensor) -> torch.Tensor:
        """The generator being trained (never the moving average): z -> images in [0, 1]."""
        return torch.sigmoid(self.generator(z))

    def _update_ema(self) -> None:
        if self.generator_ema is not None:
            update_moving_average(
                self.generator_ema, self.generator, self.ema_updates, self.config.ema
            )
            self.ema_updates.add_(1)

    @torch.no_grad()
    def standing_statistics(
        self, batches: int = 1000, batch_size: int = 64, network: nn.Module | None = None
    ) -> None:
        """Recompute the batch-norm statistics of `network`, by default the generator that
        decodes (the moving average with `ema`), as the mean over `batches` seeded batches of
        `batch_size` codes ("standing
        statistics", Brock et al. 2019, appendix C.1), with torch's `update_bn`. Training leaves
        the statistics of its last few batches (momentum 0.1), and the moving average copies the
        trained generator's, which were measured with other weights. 1000 batches by default
        (64000 codes): with 100, the largest class-share deviation from uniform of one MNIST
        generator's 10000 samples ranged over 14.8-23.1% between three seeds of the statistics."""
        if network is None:
            network = self.generator if self.generator_ema is None else self.generator_ema
        seeded = torch.Generator().manual_seed(0)
        codes = (self.sample_latent(batch_size, generator=seeded) for _ in range(batches))
        update_bn(codes, network)

    def on_train_end(self, batches: Iterable[torch.Tensor]) -> None:
        """Standing batch-norm statistics for sampling, at the training batch size."""
        self.standing_statistics(batch_size=self.train_config.batch_size)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """[discriminator optimizer, generator optimizer], each with its own learning rate and
        the GAN's betas (train.optimizer chooses the kind)."""
        gan_train = dataclasses.replace(self.train_config, betas=self.config.betas)
        return [
            make_optimizer(self.discriminator.parameters(), gan_train, self.config.lr_d),
            make_optimizer(self.generator.parameters(), gan_train, self.config.lr_g),
        ]

    def _discriminator_loss(
        self,
        x: torch.Tensor,
        fake: torch.Tensor,
        generator: torch.Generator | None = None,
        r1_weight: float = 1.0,
    ) -> tuple[GANLoss, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The discriminator's loss with its gradient penalty: WGAN-GP's, or R1 scaled by
        `r1_weight` (lazy R1 passes r1_every on the steps that compute it and 0 on the others);
        then D(x), D(G(z)) and D's last hidden layer on x, detached (for feature matching)."""
        real_features, real_scores = self._features_and_score(x)
        fake_scores = self.score(fake)
        d_loss, _ = gan_losses(self.config.loss, real_scores, fake_scores)
        gp = torch.zeros((), device=x.device)
        if self.config.loss == "wgan-gp":
            gp = gradient_penalty(self.score, x, fake, generator=generator)
            d_loss = d_loss + self.config.gp_weight * gp
        elif self.config.r1 and r1_weight:
            gp = r1_weight * r1_penalty(self.score, x)
            d_loss = d_loss + 0.5 * self.config.r1 * gp
        detached = (real_scores.detach(), fake_scores.detach(), real_features.detach())
        return (GANLoss(d_loss, gp), *detached)

    def _mean_outputs(self, scores: torch.Tensor) -> torch.Tensor:
        """D's mean output: a probability for the non-saturating loss, else the raw score."""
        return (
            torch.sigmoid(scores).mean() if self.config.loss == "nonsaturating" else scores.mean()
        )

    def training_step(
        self, x: torch.Tensor, optimizers: list[torch.optim.Optimizer]
    ) -> dict[str, torch.Tensor]:
        """d_steps discriminator steps on batch x, then one generator step. Terms: d_loss, g_loss
        (each with its network's l1/l2 terms; g_loss also with feature_matching x matching, the
        unweighted feature-matching term, logged when on), d_real and d_fake (mean D(x), D(G(z)): a
        probability for the non-saturating loss, the raw score otherwise), gp (unweighted),
        diversity (spread of the generated batch / spread of the real batch; near 0 = collapse),
        l1, l2, and total = d_loss + g_loss, which neither player minimises: it is logged so the
        trainer can watch it for divergence."""
        opt_d, opt_g = optimizers
        d_params = list(self.discriminator.parameters())
        g_params = list(self.generator.parameters())
        every = self.config.r1_every
        for _ in range(self.config.d_steps):
            with torch.no_grad(), self.autocast():
                fake = self._fake(self.sample_latent(len(x)))
            r1_weight = 0.0
            if self.config.r1 > 0:
                if self._r1_step is None:  # first step since building or loading the model
                    self._r1_step = int(self.r1_updates)
                r1_weight = float(every) if self._r1_step % every == 0 else 0.0
                self._r1_step += 1
                self.r1_updates.fill_(self._r1_step)
            with self.autocast():
                terms, real_scores, fake_scores, real_features = self._discriminator_loss(
                    x, fake, None, r1_weight
                )
            d_l1, d_l2 = self.penalties(self.discriminator)
            d_loss = terms.discriminator + d_l1 + d_l2
            self.optimizer_step(opt_d, d_loss, d_params)
        for p in d_params:  # the generator step needs no gradients for D's weights
            p.requires_grad_(False)
        try:
            with self.autocast():
                fake = self._fake(self.sample_latent(len(x)))
                if self.config.feature_matching:
                    # the real features of the last discriminator step: no extra forward pass
                    fake_features, scores = self._features_and_score(fake)
                    matching = feature_matching(fake_features.float(), real_features.float())
                else:
                    scores, matching = self.score(fake), torch.zeros((), device=x.device)
                _, g_adv = gan_losses(self.config.loss, real_scores, scores)
            g_l1, g_l2 = self.penalties(self.generator)
            g_loss = g_adv + self.config.feature_matching * matching + g_l1 + g_l2
            self.optimizer_step(opt_g, g_loss, g_params)
            self._update_ema()
        finally:
            for p in d_params:
                p.requires_grad_(True)
        with torch.no_grad():
            diversity = _pairwise_spread(fake.float()) / _pairwise_spread(x).clamp_min(1e-8)
        values = torch.stack(
            [
                d_loss.detach(),
                g_loss.detach(),
                self._mean_outputs(real_scores),
                self._mean_outputs(fake_scores),
                terms.gp.detach(),
                diversity,
                (d_l1 + g_l1).detach(),
                (d_l2 + g_l2).detach(),
                (d_loss + g_loss).detach(),
            ]
        ).float()
        keys = ("d_loss", "g_loss", "d_real", "d_fake", "gp", "diversity", "l1", "l2", "total")
        logged = dict(zip(keys, values, strict=True))
        if self.config.feature_matching:
            logged["matching"] = matching.detach().float()
        return logged

    @torch.no_grad()
    def validation_step(self, x: torch.Tensor) -> dict[str, float]:
        """The same losses on a held-out batch, without updating; codes (and the penalty's mixing
        weights) come from a fixed seed, so epochs are compared on the same draws."""
        seeded = torch.Generator().manual_seed(0)
        fake = self._fake(self.sample_latent(len(x), generator=seeded))
        terms, real_scores, fake_scores, _ = self._discriminator_loss(x, fake, seeded)
        _, g_loss = gan_losses(self.config.loss, real_scores, fake_scores)
        diversity = _pairwise_spread(fake) / _pairwise_spread(x).clamp_min(1e-8)
        values = torch.stack(
            [
                terms.discriminator,
                g_loss,
                self._mean_outputs(real_scores),
                self._mean_outputs(fake_scores),
                terms.gp,
                diversity,
                terms.discriminator + g_loss,
            ]
        ).tolist()
        keys = ("d_loss", "g_loss", "d_real", "d_fake", "gp", "diversity", "total")
        return dict(zip(keys, values, strict=True))

    def epoch_warnings(self, record: dict[str, Any]) -> list[str]:
        """The discriminator winning outright, or the generator collapsing, in plain words."""
        terms = record.get("train", {})
        warnings = []
        d_real, d_fake = terms.get("d_real"), terms.get("d_fake")
        if self.config.loss == "nonsaturating" and d_real is not None and d_fake is not None:
            if d_real > 0.99 and d_fake < 0.01:
                warnings.append(
                    f"the discriminator wins outright: mean D(x) = {d_real:.3f} on real images "
                    f"and D(G(z)) = {d_fake:.4f} on generated ones for the whole epoch, so the "
                    "generator gets almost no gradient; lower model.lr_d or raise model.lr_g"
                )
        if self.config.loss in WON_BELOW and "d_loss" in terms:
            limit, meaning = WON_BELOW[self.config.loss]
            if terms["d_loss"] < limit:
                warnings.append(
                    f"the discriminator wins outright: its {self.config.loss} loss is "
                    f"{terms['d_loss']:.4f} ({meaning}); lower model.lr_d or raise model.lr_g"
                )
        diversity = terms.get("diversity")
        if diversity is not None and diversity < 0.25:
            warnings.append(
                f"the generator may be collapsing: its samples differ from each other only "
                f"{diversity:.2f} times as much as real images do (1.0 = as varied as the data); "
                "check `latentspace quality` for the classes it covers"
            )
        return warnings

    # ---- use: inversion ------------------------------------------------------------------------
    def invert(
        self,
        x: torch.Tensor,
        *,
        steps: int | None = None,
        restarts: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """GAN inversion: the code whose decoding is closest to x. x: (B, C, H, W) ->
        (z (B, D), error (B,): mean squared pixel error of decode(z) against x).

        Adam on the codes for `steps` steps from `restarts` random starts per image (all in one
        batch), keeping the start that ends closest. Deterministic: starts come from `generator`,
        or a fixed seed."""
        steps = self.config.inversion_steps if steps is None else steps
        restarts = self.config.inversion_restarts if restarts is None else restarts
        generator = generator or torch.Generator().manual_seed(0)
        was_training = self.training
        self.eval()
        n = len(x)
        target = x.detach().repeat(restarts, 1, 1, 1)
        z = self.sample_latent(restarts * n, generator=generator).requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=self.config.inversion_lr)
        try:
            with torch.enable_grad():  # the CLI encodes under no_grad
                for _ in range(steps):
                    # summed over images: each code's gradient is its own image's alone
                    loss = (self.decode(z) - target).pow(2).flatten(1).mean(1).sum()
                    (z.grad,) = torch.autograd.grad(loss, z)
                    optimizer.step()
            with torch.no_grad():
                errors = (self.decode(z) - target).pow(2).flatten(1).mean(1)
                best = errors.view(restarts, n).argmin(0)
                index = best * n + torch.arange(n, device=best.device)
                codes, best_errors = z.detach()[index], errors[index]
        finally:
            self.train(was_training)
        self.last_inversion_error = best_errors
        return codes, best_errors

    def encode(
        self, x: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """GAN inversion (see `invert`); the error reached is kept in `last_inversion_error`.
        A GAN has no posterior, so `sample` changes nothing."""
        codes, _ = self.invert(x)
        return codes
