"""Deterministic autoencoder. It generates from a Gaussian fitted to its training codes, which is
stored in the run as buffers (`prior_mean`, `prior_scale_tril`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import nn

from latentspace.models.base import GenerativeModel
from latentspace.models.layers import NetworkConfig
from latentspace.models.likelihood import PixelLikelihood, check_likelihood, mean_image
from latentspace.models.networks import make_decoder, make_encoder
from latentspace.settings import TrainConfig

__all__ = ["AEConfig", "AELoss", "AutoEncoder"]


@dataclasses.dataclass(frozen=True)
class AEConfig(NetworkConfig):
    name: str = "ae"
    # auto (bernoulli for grey, logistic for colour) | bernoulli | gaussian | gaussian_learned |
    # logistic (discretised, learned scale): see models/likelihood.py
    likelihood: str = "auto"
    gaussian_std: float = 0.1  # gaussian: the fixed pixel standard deviation (learned: its start)

    def validate(self) -> None:
        super().validate()
        check_likelihood(self.likelihood, self.gaussian_std)


class AELoss(NamedTuple):
    """Summed over pixels, averaged over the batch (nats per image)."""

    reconstruction: torch.Tensor
    total: torch.Tensor


class AutoEncoder(GenerativeModel):
    name = "ae"
    config_class = AEConfig
    config: AEConfig
    prior_mean: torch.Tensor
    prior_scale_tril: torch.Tensor

    def __init__(
        self,
        config: AEConfig,
        image_shape: tuple[int, int, int],
        train: TrainConfig | None = None,
        *,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ) -> None:
        """encoder, decoder: your own networks (see models/networks.py); default: the config's."""
        super().__init__(config, image_shape, train)
        self.encoder = make_encoder(config, image_shape, config.latent_dim, encoder)
        self.decoder = make_decoder(config, image_shape, decoder)
        self.pixel_likelihood = PixelLikelihood(
            config.likelihood, image_shape[0], config.gaussian_std
        )
        self.register_buffer("prior_mean", torch.zeros(config.latent_dim))
        self.register_buffer("prior_scale_tril", torch.eye(config.latent_dim))

    def loss(self, x: torch.Tensor) -> AELoss:
        logits = self.decoder(self.encoder(x))
        reconstruction = self.pixel_likelihood(logits, x).mean()
        return AELoss(reconstruction, reconstruction)

    def training_step(
        self, x: torch.Tensor, optimizers: list[torch.optim.Optimizer]
    ) -> dict[str, torch.Tensor]:
        with self.autocast():
            terms = self.loss(x)
        l1, l2 = self.penalties()
        total = terms.total + l1 + l2
        self.optimizer_step(optimizers[0], total)
        values = torch.stack([terms.reconstruction, l1, l2, total]).detach().float()
        return dict(zip(("reconstruction", "l1", "l2", "total"), values, strict=True))

    @torch.no_grad()
    def validation_step(self, x: torch.Tensor) -> dict[str, float]:
        terms = self.loss(x)
        return {"reconstruction": float(terms.reconstruction), "total": float(terms.total)}

    @torch.no_grad()
    def on_train_end(self, batches: Iterable[torch.Tensor]) -> None:
        """Fit N(mean, cov) to the training codes so that `generate` has a prior to draw from."""
        was_training = self.training
        self.eval()
        codes = torch.cat([self.encoder(x) for x in batches]).double()
        self.train(was_training)
        mean = codes.mean(0)
        centred = codes - mean
        cov = centred.T @ centred / max(1, len(codes) - 1)
        cov += 1e-5 * torch.eye(len(mean), dtype=cov.dtype, device=cov.device)  # keeps it positive
        self.prior_mean.copy_(mean.float())
        self.prior_scale_tril.copy_(torch.linalg.cholesky(cov).float())

    def sample_latent(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(n, self.latent_dim, generator=generator).to(self.device)
        return self.prior_mean + eps @ self.prior_scale_tril.T

    def encode(
        self, x: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The code; an autoencoder is deterministic, so `sample` changes nothing."""
        self.check_images(x)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.check_codes(z)
        return mean_image(self.decoder(z))

    @torch.no_grad()
    def prior_metrics(self, codes: torch.Tensor) -> dict[str, float]:
        """How well the Gaussian fitted to the training codes covers the codes of other images,
        codes (N, D): their mean log-density under it (nats per image; higher is better, compare
        with 0.5 * D * (1 + log 2pi) below the entropy), and the fraction outside the ellipsoid
        that holds 99% of the prior's mass (1% if the prior fits; more means decoded prior samples
        come from regions no image encodes to)."""
        from scipy.stats import chi2

        mean = self.prior_mean.detach().double().cpu()
        tril = self.prior_scale_tril.detach().double().cpu()
        centred = (codes.double().cpu() - mean).T
        whitened = torch.linalg.solve_triangular(tril, centred, upper=False)  # (D, N)
        mahalanobis = whitened.pow(2).sum(0)
        dim = codes.shape[1]
        log_det = tril.diagonal().log().sum()
        log_density = -0.5 * (mahalanobis + dim * math.log(2 * math.pi)) - log_det
        outside = float((mahalanobis > chi2.ppf(0.99, dim)).double().mean())
        return {"prior_code_log_density": float(log_density.mean()), "prior_outside_99": outside}
