"""Variational autoencoder (Kingma & Welling 2014): Gaussian posterior, standard normal prior."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from latentspace.errors import ConfigError
from latentspace.models.base import GenerativeModel, LikelihoodBound
from latentspace.models.layers import NetworkConfig
from latentspace.models.likelihood import PixelLikelihood, check_likelihood, mean_image
from latentspace.models.networks import make_decoder, make_encoder
from latentspace.settings import TrainConfig

__all__ = ["VAE", "VAEConfig", "VAELoss", "gaussian_kl", "iwae_bound"]

LogLikelihood = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class VAEConfig(NetworkConfig):
    name: str = "vae"
    # auto (bernoulli for grey, logistic for colour) | bernoulli | gaussian | gaussian_learned |
    # logistic (discretised, learned scale): see models/likelihood.py
    likelihood: str = "auto"
    gaussian_std: float = 0.1  # gaussian: the fixed pixel standard deviation (learned: its start)
    beta: float = 1.0  # weight of the KL term (beta-VAE, Higgins et al. 2017)
    kl_warmup_epochs: int = 0  # ramp the KL weight linearly from beta/N to beta over N epochs

    def validate(self) -> None:
        super().validate()
        check_likelihood(self.likelihood, self.gaussian_std)
        if self.beta < 0:
            raise ConfigError(f"model.beta = {self.beta} must be 0 or more")
        if self.kl_warmup_epochs < 0:
            raise ConfigError(f"model.kl_warmup_epochs = {self.kl_warmup_epochs} must be 0 or more")


class VAELoss(NamedTuple):
    """Summed over pixels and latent dimensions, averaged over the batch (nats per image)."""

    reconstruction: torch.Tensor
    kl: torch.Tensor
    total: torch.Tensor  # reconstruction + kl_weight * kl


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per latent dimension: (B, D) -> (B, D).
    Kingma & Welling 2014, Appendix B."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def iwae_bound(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    log_likelihood: Callable[[torch.Tensor], torch.Tensor],
    samples: int,
    *,
    chunk_rows: int = 4096,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The importance-weighted bound (Burda et al. 2016) on log p(x), and the ELBO, per image.

    mu, logvar: (B, D) the Gaussian posterior q(z|x); the prior is N(0, I). log_likelihood maps
    z: (S, B, D) -> log p(x_b | z_sb): (S, B). The K=`samples` draws are taken S at a time, with
    S * B <= chunk_rows, so memory stays bounded for any K. Returns (log-likelihood bound, ELBO),
    each (B,) in nats; the ELBO uses the analytic KL and the mean log-likelihood of the same draws.
    """
    if samples < 1:
        raise ValueError(f"samples = {samples} must be at least 1")
    batch, dim = mu.shape
    std = (0.5 * logvar).exp()
    per_chunk = max(1, min(samples, chunk_rows // max(batch, 1)))
    log_weights, expected = [], torch.zeros(batch, dtype=torch.float64, device=mu.device)
    for start in range(0, samples, per_chunk):
        s = min(per_chunk, samples - start)
        eps = torch.randn(s, batch, dim, generator=generator).to(mu.device)
        z = mu + eps * std
        log_px_z = log_likelihood(z)
        # log p(z) - log q(z|x); the 2*pi terms cancel
        log_prior_ratio = -0.5 * (z.pow(2) - eps.pow(2) - logvar).sum(-1)
        log_weights.append(log_px_z + log_prior_ratio)
        expected += log_px_z.double().sum(0)
    stacked = torch.cat(log_weights).double()
    bound = torch.logsumexp(stacked, dim=0) - math.log(samples)
    elbo = expected / samples - gaussian_kl(mu, logvar).double().sum(-1)
    return bound, elbo


class VAE(GenerativeModel):
    name = "vae"
    config_class = VAEConfig
    config: VAEConfig

    def __init__(
        self,
        config: VAEConfig,
        image_shape: tuple[int, int, int],
        train: TrainConfig | None = None,
        *,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ) -> None:
        """encoder, decoder: your own networks (see models/networks.py); default: the config's."""
        super().__init__(config, image_shape, train)
        self.encoder = make_encoder(config, image_shape, 2 * config.latent_dim, encoder)
        self.decoder = make_decoder(config, image_shape, decoder)
        self.pixel_likelihood = PixelLikelihood(
            config.likelihood, image_shape[0], config.gaussian_std
        )

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W) -> mu, logvar: (B, D) each."""
        self.check_images(x)
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)  # clamp keeps exp() finite

    @property
    def kl_weight(self) -> float:
        warmup = self.config.kl_warmup_epochs
        if warmup == 0 or not self.training:
            return self.config.beta
        return self.config.beta * min(1.0, (self.epoch + 1) / warmup)

    def loss(self, x: torch.Tensor) -> VAELoss:
        mu, logvar = self.posterior(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation trick
        reconstruction = self.pixel_likelihood(self.decoder(z), x).mean()
        kl = gaussian_kl(mu, logvar).sum(1).mean()
        return VAELoss(reconstruction, kl, reconstruction + self.kl_weight * kl)

    def training_step(
        self, x: torch.Tensor, optimizers: list[torch.optim.Optimizer]
    ) -> dict[str, torch.Tensor]:
        with self.autocast():
            terms = self.loss(x)
        l1, l2 = self.penalties()
        total = terms.total + l1 + l2
        self.optimizer_step(optimizers[0], total)
        values = torch.stack([terms.reconstruction, terms.kl, l1, l2, total]).detach().float()
        return dict(zip(("reconstruction", "kl", "l1", "l2", "total"), values, strict=True))

    @torch.no_grad()
    def validation_step(self, x: torch.Tensor) -> dict[str, float]:
        terms = self.loss(x)
        values = torch.stack([terms.reconstruction, terms.kl, terms.total]).tolist()
        return dict(zip(("reconstruction", "kl", "total"), values, strict=True))

    def encode(
        self, x: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The posterior mean, or a draw from the posterior when sample=True."""
        mu, logvar = self.posterior(x)
        if not sample:
            return mu
        eps = torch.randn(mu.shape, generator=generator).to(mu.device)
        return mu + eps * (0.5 * logvar).exp()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.check_codes(z)
        return mean_image(self.decoder(z))

    @torch.no_grad()
    def likelihood_bound(
        self,
        x: torch.Tensor,
        samples: int,
        *,
        generator: torch.Generator | None = None,
        chunk_rows: int = 4096,
        precision: str = "fp32",
    ) -> LikelihoodBound:
        """The importance-weighted bound with K=`samples` posterior draws, and the ELBO (analytic
        KL). precision "bf16" runs the decoder on the K draws under bfloat16 autocast."""
        mu, logvar = self.posterior(x)
        log_likelihood = _log_likelihood(self, x, bf16=precision == "bf16")
        bound, elbo = iwae_bound(
            mu, logvar, log_likelihood, samples, chunk_rows=chunk_rows, generator=generator
        )
        return LikelihoodBound(-bound, -elbo, gaussian_kl(mu, logvar), mu)


def _log_likelihood(model: VAE, x: torch.Tensor, bf16: bool = False) -> LogLikelihood:
    """log p(x|z) for the VAE's decoder, vectorised over samples: z (S, B, D) -> (S, B).
    bf16: the decoder runs under bfloat16 autocast; its logits are summed in float32."""
    flat = x.flatten(1)

    def decoder(z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=bf16):
            return model.decoder(z).float()

    def bernoulli(z: torch.Tensor) -> torch.Tensor:
        s, b, d = z.shape
        logits = decoder(z.reshape(s * b, d)).reshape(s, b, -1)
        # -BCE(logits, x) = x * logits - softplus(logits), in two passes instead of five
        return (logits * flat).sum(-1) - F.softplus(logits).sum(-1)

    def other(z: torch.Tensor) -> torch.Tensor:
        s, b, d = z.shape
        logits = decoder(z.reshape(s * b, d))
        target = x.unsqueeze(0).expand(s, *x.shape).reshape(s * b, *x.shape[1:])
        return -model.pixel_likelihood(logits, target).reshape(s, b)

    return bernoulli if model.pixel_likelihood.likelihood == "bernoulli" else other
