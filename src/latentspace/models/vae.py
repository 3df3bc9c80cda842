"""Variational autoencoder (Kingma & Welling 2014): Gaussian posterior, standard normal prior."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch

from latentspace.errors import ConfigError
from latentspace.models.base import GenerativeModel
from latentspace.models.layers import NetworkConfig, build_decoder, build_encoder
from latentspace.models.likelihood import check_likelihood, mean_image, reconstruction_nll

__all__ = ["VAE", "VAEConfig", "VAELoss", "gaussian_kl"]


@dataclasses.dataclass(frozen=True)
class VAEConfig(NetworkConfig):
    name: str = "vae"
    likelihood: str = "bernoulli"  # bernoulli (BCE, data in [0, 1]) | gaussian (MSE)
    gaussian_std: float = 0.1  # gaussian: the fixed pixel standard deviation
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


class VAE(GenerativeModel):
    name = "vae"
    config_class = VAEConfig
    config: VAEConfig

    def __init__(self, config: VAEConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__(config, image_shape)
        self.encoder = build_encoder(config, image_shape, 2 * config.latent_dim)
        self.decoder = build_decoder(config, image_shape)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W) -> mu, logvar: (B, D) each."""
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
        reconstruction = reconstruction_nll(
            self.decoder(z), x, self.config.likelihood, self.config.gaussian_std
        ).mean()
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
        return mean_image(self.decoder(z))
