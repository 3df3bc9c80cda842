"""Model families. `MODELS` is the registry: tests parametrize over it, so a family is tested the
moment it is registered."""

from __future__ import annotations

from latentspace.models.autoencoder import AEConfig, AutoEncoder
from latentspace.models.base import GenerativeModel
from latentspace.models.gan import GAN, GANConfig
from latentspace.models.layers import NetworkConfig
from latentspace.models.vae import VAE, VAEConfig

__all__ = [
    "GAN",
    "MODELS",
    "VAE",
    "AEConfig",
    "AutoEncoder",
    "GANConfig",
    "GenerativeModel",
    "NetworkConfig",
    "VAEConfig",
    "build_model",
]

MODELS: dict[str, type[GenerativeModel]] = {
    "ae": AutoEncoder,
    "vae": VAE,
    "gan": GAN,
}


def build_model(config: object, image_shape: tuple[int, int, int]) -> GenerativeModel:
    name = str(getattr(config, "name", ""))
    return MODELS[name](config, image_shape)
