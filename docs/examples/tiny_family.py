"""A model family of your own, walked through in docs/adding-a-model.md: a denoising autoencoder
(Vincent et al. 2008) that learns to reconstruct each image from a noisy copy of it.

Added to `latentspace.models.MODELS` it is trained, saved, loaded and tested like the built-in
families: tests/test_conformance.py runs its whole suite on it with nothing else written.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import nn

from latentspace.errors import ConfigError
from latentspace.models.base import GenerativeModel
from latentspace.models.layers import NetworkConfig
from latentspace.models.likelihood import mean_image, reconstruction_nll
from latentspace.models.networks import make_decoder, make_encoder
from latentspace.settings import TrainConfig

__all__ = ["DenoisingAutoEncoder", "DenoisingConfig", "DenoisingLoss"]


@dataclasses.dataclass(frozen=True)
class DenoisingConfig(NetworkConfig):
    """The shared network settings, and the family's own."""

    name: str = "denoising"
    noise: float = 0.2  # standard deviation of the Gaussian noise added to training images

    def validate(self) -> None:
        super().validate()
        if self.noise < 0:
            raise ConfigError(f"model.noise = {self.noise} must be 0 or more")


class DenoisingLoss(NamedTuple):
    """Summed over pixels, averaged over the batch (nats per image)."""

    reconstruction: torch.Tensor
    total: torch.Tensor


class DenoisingAutoEncoder(GenerativeModel):
    """Images (B, C, H, W) in [0, 1]; codes (B, D). It generates by decoding N(0, I) codes (the
    base class's prior), which is only a shape-correct stand-in: no prior is fitted."""

    name = "denoising"
    config_class = DenoisingConfig
    config: DenoisingConfig
    # declared capabilities: "total" is the validation term to stop early on (the default);
    # it defines `loss` but no `likelihood_bound`

    def __init__(
        self,
        config: DenoisingConfig,
        image_shape: tuple[int, int, int],
        train: TrainConfig | None = None,
        *,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ) -> None:
        super().__init__(config, image_shape, train)
        # your own networks when given (or named by model.encoder / model.decoder), else the
        # built-in ones of model.architecture
        self.encoder = make_encoder(config, image_shape, config.latent_dim, encoder)
        self.decoder = make_decoder(config, image_shape, decoder)

    def loss(self, x: torch.Tensor) -> DenoisingLoss:
        # noise only while training: validation measures the plain reconstruction
        noisy = x + self.config.noise * torch.randn_like(x) if self.training else x
        logits = self.decoder(self.encoder(noisy))
        reconstruction = reconstruction_nll(logits, x, "bernoulli", 1.0).mean()
        return DenoisingLoss(reconstruction, reconstruction)

    def training_step(
        self, x: torch.Tensor, optimizers: list[torch.optim.Optimizer]
    ) -> dict[str, torch.Tensor]:
        with self.autocast():  # bf16 when train.precision says so
            terms = self.loss(x)
        l1, l2 = self.penalties()
        total = terms.total + l1 + l2
        self.optimizer_step(optimizers[0], total)
        # one stack, no host reads: the trainer reads the terms only every few steps
        values = torch.stack([terms.reconstruction, l1, l2, total]).detach().float()
        return dict(zip(("reconstruction", "l1", "l2", "total"), values, strict=True))

    @torch.no_grad()
    def validation_step(self, x: torch.Tensor) -> dict[str, float]:
        terms = self.loss(x)
        return {"reconstruction": float(terms.reconstruction), "total": float(terms.total)}

    def encode(
        self, x: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x: (B, C, H, W) -> z: (B, D); deterministic, so `sample` changes nothing."""
        self.check_images(x)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, D) -> images (B, C, H, W) in [0, 1]."""
        self.check_codes(z)
        return mean_image(self.decoder(z))
