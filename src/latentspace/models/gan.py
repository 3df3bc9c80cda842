"""Generative adversarial network (Goodfellow et al. 2014) with DCGAN-style conv networks (Radford
et al. 2016) or MLPs: the config, the two players and their step. The losses (non-saturating,
hinge, least squares, WGAN-GP) are in `gan_losses`; the regularisers (gradient penalty, R1,
spectral norm, PacGAN packing, minibatch standard deviation) in `gan_regularisers`; the moving
average of the generator in `moving_average`; the discriminator's network in `gan_networks`; the
terms a step reports and the signals the diagnostics judge in `gan_terms`; inversion (`encode`)
in `gan_inversion`.

The generator is the shared decoder (`build_decoder`, sigmoid output in [0, 1]); the
discriminator is the shared encoder with one output (`build_encoder(..., out_features=1)`), a raw
score (a logit for the non-saturating loss). Either can be your own network (models/networks.py).
The model owns its step: `configure_optimizers` returns [discriminator optimizer, generator
optimizer] and `training_step` takes `d_steps` discriminator steps, then one generator step, so
the generic trainer never learns the word "gan".

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
from collections.abc import Iterable, Mapping
from typing import cast

import torch
from torch import nn

from latentspace.errors import ConfigError
from latentspace.models.base import GenerativeModel, make_optimizer
from latentspace.models.gan_inversion import invert
from latentspace.models.gan_losses import LOSSES, feature_matching, gan_losses
from latentspace.models.gan_networks import build_discriminator, frozen
from latentspace.models.gan_regularisers import (
    dcgan_init,
    gradient_penalty,
    pack_images,
    r1_penalty,
    spectral_normalise,
    with_batch_norm,
)
from latentspace.models.gan_terms import (
    DiscriminatorResult,
    DiscriminatorTerms,
    GeneratorResult,
    logged_terms,
    training_signals,
    validation_terms,
)
from latentspace.models.layers import NetworkConfig, make_activation
from latentspace.models.moving_average import standing_statistics, update_moving_average
from latentspace.models.networks import make_decoder
from latentspace.settings import TrainConfig

__all__ = ["GAN", "GANConfig"]


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


class GAN(GenerativeModel):
    """Images are (B, C, H, W) floats in [0, 1]; codes (B, D) drawn from N(0, I)."""

    name = "gan"
    config_class = GANConfig
    config: GANConfig
    monitor = None  # d_loss + g_loss is minimised by neither player: nothing to stop early on
    encode_is_network = False  # encode is GAN inversion: gradient descent in latent space
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
        # built in this order, so that a seed gives the same initial weights as in saved runs
        generator = make_decoder(config, image_shape, decoder)
        if config.batch_norm and isinstance(generator, nn.Sequential):
            generator = with_batch_norm(generator)
        self.generator = generator
        self.discriminator = build_discriminator(config, image_shape, encoder)
        if config.architecture == "conv":  # DCGAN's init for the built-in networks, not yours
            if decoder is None and not config.decoder:
                dcgan_init(self.generator)
            if encoder is None and not config.encoder:
                dcgan_init(self.discriminator)
        if config.spectral_norm:
            spectral_normalise(self.discriminator)
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
        return self.discriminator(pack_images(x, self.config.pack)).squeeze(1)

    def _features_and_score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the discriminator's last hidden layer, its score), one row per score."""
        layers = cast(nn.Sequential, self.discriminator)  # checked when the model was built
        features = layers[:-1](pack_images(x, self.config.pack))
        return features, layers[-1](features).squeeze(1)

    def _decoding_generator(self) -> nn.Module:
        """The generator that decodes: the moving average with `ema` > 0, else the trained one."""
        return self.generator if self.generator_ema is None else self.generator_ema

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The generator: z (B, D) -> images (B, C, H, W) in [0, 1]. With `ema` > 0, the moving
        average of its weights."""
        self.check_codes(z)
        return torch.sigmoid(self._decoding_generator()(z))

    def _fake(self, z: torch.Tensor) -> torch.Tensor:
        """The generator being trained (never the moving average): z -> images in [0, 1]."""
        return torch.sigmoid(self.generator(z))

    def _update_ema(self) -> None:
        if self.generator_ema is not None:
            update_moving_average(
                self.generator_ema, self.generator, self.ema_updates, self.config.ema
            )
            self.ema_updates.add_(1)

    def standing_statistics(
        self, batches: int = 1000, batch_size: int = 64, network: nn.Module | None = None
    ) -> None:
        """Recompute the batch-norm statistics of `network`, by default the generator that
        decodes (the moving average with `ema`), as the mean over `batches` seeded batches of
        `batch_size` codes (see `moving_average.standing_statistics`). 1000 batches by default
        (64000 codes): with 100, the largest class-share deviation from uniform of one MNIST
        generator's 10000 samples ranged over 14.8-23.1% between three seeds of the statistics."""
        network = self._decoding_generator() if network is None else network
        standing_statistics(
            network, lambda n, seeded: self.sample_latent(n, generator=seeded), batches, batch_size
        )

    def on_train_end(self, batches: Iterable[torch.Tensor]) -> None:
        """Standing batch-norm statistics for sampling, at the training batch size."""
        self.standing_statistics(batch_size=self.train_config.batch_size)

    # ---- training ------------------------------------------------------------------------------
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
    ) -> DiscriminatorTerms:
        """The discriminator's loss on real x and generated `fake`, with its gradient penalty:
        WGAN-GP's (mixing weights from `generator`), or R1 scaled by `r1_weight` (lazy R1 passes
        r1_every on the steps that compute it and 0 on the others)."""
        real_features: torch.Tensor | None = None
        if self.config.feature_matching:  # only then split: your discriminator may not split
            real_features, real_scores = self._features_and_score(x)
            real_features = real_features.detach()
        else:
            real_scores = self.score(x)
        fake_scores = self.score(fake)
        d_loss, _ = gan_losses(self.config.loss, real_scores, fake_scores)
        gp = torch.zeros((), device=x.device)
        if self.config.loss == "wgan-gp":
            gp = gradient_penalty(self.score, x, fake, generator=generator)
            d_loss = d_loss + self.config.gp_weight * gp
        elif self.config.r1 and r1_weight:
            gp = r1_weight * r1_penalty(self.score, x)
            d_loss = d_loss + 0.5 * self.config.r1 * gp  # gamma / 2 (Mescheder et al. 2018, eq. 9)
        return DiscriminatorTerms(
            d_loss, gp, real_scores.detach(), fake_scores.detach(), real_features
        )

    def _next_r1_weight(self) -> float:
        """The weight of R1 in the next discriminator step, and one step counted. Lazy R1
        (Karras et al. 2020, section 3.1): computed every r1_every steps only, weighted by
        r1_every, so its average over steps is unchanged; 0 on the other steps and with r1 off."""
        if self.config.r1 <= 0:
            return 0.0
        if self._r1_step is None:  # first step since building or loading the model
            self._r1_step = int(self.r1_updates)
        every = self.config.r1_every
        weight = float(every) if self._r1_step % every == 0 else 0.0
        self._r1_step += 1
        self.r1_updates.fill_(self._r1_step)
        return weight

    def _discriminator_step(
        self, x: torch.Tensor, opt_d: torch.optim.Optimizer
    ) -> DiscriminatorResult:
        """One discriminator step: real batch x against as many new generated images."""
        with torch.no_grad(), self.autocast():
            fake = self._fake(self.sample_latent(len(x)))
        r1_weight = self._next_r1_weight()
        with self.autocast():
            terms = self._discriminator_loss(x, fake, None, r1_weight)
        l1, l2 = self.penalties(self.discriminator)
        loss = terms.loss + l1 + l2
        self.optimizer_step(opt_d, loss, self.discriminator.parameters())
        return DiscriminatorResult(terms, loss, l1, l2)

    def _generator_step(
        self, x: torch.Tensor, opt_g: torch.optim.Optimizer, d: DiscriminatorTerms
    ) -> GeneratorResult:
        """One generator step against the discriminator as the last step `d` left it, then one
        update of the moving average. Feature matching compares with d's real features."""
        with frozen(self.discriminator):
            with self.autocast():
                fake = self._fake(self.sample_latent(len(x)))
                if d.real_features is not None:  # feature matching is on
                    # the real features of the last discriminator step: no extra forward pass
                    fake_features, scores = self._features_and_score(fake)
                    matching = feature_matching(fake_features.float(), d.real_features.float())
                else:
                    scores, matching = self.score(fake), torch.zeros((), device=x.device)
                _, adversarial = gan_losses(self.config.loss, d.real_scores, scores)
            l1, l2 = self.penalties(self.generator)
            loss = adversarial + self.config.feature_matching * matching + l1 + l2
            self.optimizer_step(opt_g, loss, self.generator.parameters())
            self._update_ema()
        return GeneratorResult(loss, l1, l2, matching, fake)

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
        for _ in range(self.config.d_steps):  # at least one (GANConfig.validate)
            d = self._discriminator_step(x, opt_d)
        g = self._generator_step(x, opt_g, d.terms)
        return logged_terms(x, d, g, self.config.loss, bool(self.config.feature_matching))

    @torch.no_grad()
    def validation_step(self, x: torch.Tensor) -> dict[str, float]:
        """The same losses on a held-out batch, without updating; codes (and the penalty's mixing
        weights) come from a fixed seed, so epochs are compared on the same draws."""
        seeded = torch.Generator().manual_seed(0)
        fake = self._fake(self.sample_latent(len(x), generator=seeded))
        terms = self._discriminator_loss(x, fake, seeded)
        _, g_loss = gan_losses(self.config.loss, terms.real_scores, terms.fake_scores)
        return validation_terms(x, fake, terms, g_loss, self.config.loss)

    def training_signals(self, terms: Mapping[str, float]) -> dict[str, float]:
        """What `latentspace.diagnostics` judges of an epoch, from its mean training terms: the
        generated images' spread over the real ones' and the discriminator's loss against the
        loss under which it has won outright (see `gan_terms.training_signals`)."""
        return training_signals(terms, self.config.loss)

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
        self.check_images(x)
        codes, errors = invert(
            self,
            x,
            steps=self.config.inversion_steps if steps is None else steps,
            restarts=self.config.inversion_restarts if restarts is None else restarts,
            lr=self.config.inversion_lr,
            generator=generator,
        )
        self.last_inversion_error = errors
        return codes, errors

    def encode(
        self, x: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """GAN inversion (see `invert`), its random starts drawn from `generator` (default: a
        fixed seed, so the same x gives the same codes); the error reached is kept in
        `last_inversion_error`. A GAN has no posterior, so `sample` changes nothing."""
        codes, _ = self.invert(x, generator=generator)
        return codes
