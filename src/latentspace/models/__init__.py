"""Model families. `MODELS` is the registry: tests parametrize over it, so a family is tested the
moment it is registered."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from latentspace.errors import ConfigError
from latentspace.models.autoencoder import AEConfig, AutoEncoder
from latentspace.models.base import GenerativeModel
from latentspace.models.fsq import FSQ
from latentspace.models.gan import GAN, GANConfig
from latentspace.models.language_model import LanguageModel
from latentspace.models.layers import NetworkConfig
from latentspace.models.networks import NETWORKS, register_network
from latentspace.models.sentence_vae import SentenceVAE
from latentspace.models.vae import VAE, VAEConfig
from latentspace.models.vqvae import VQVAE
from latentspace.settings import TrainConfig

__all__ = [
    "DEFAULT_MODEL",
    "GAN",
    "MODELS",
    "NETWORKS",
    "VAE",
    "AEConfig",
    "AutoEncoder",
    "GANConfig",
    "GenerativeModel",
    "NetworkConfig",
    "VAEConfig",
    "build_model",
    "check_rebuilds",
    "for_data",
    "register_network",
]

MODELS: dict[str, type[GenerativeModel]] = {
    "ae": AutoEncoder,
    "vae": VAE,
    "gan": GAN,
    "sentence_vae": SentenceVAE,
    "lm": LanguageModel,
    "vqvae": VQVAE,
    "fsq": FSQ,
}
DEFAULT_MODEL = "vae"  # the family a config without model.name trains


def for_data(config: Any, data: object) -> Any:
    """The model config `config` fitted to its training data: a one-line error when the family
    cannot read that data (declared by `inputs`), and the settings the data hands its model
    (`data.model_settings()`: text gives its tokenizer)."""
    kind = str(getattr(data, "inputs", "images"))
    family = MODELS.get(str(getattr(config, "name", "")))
    if family is not None and family.inputs != kind:
        fitting = [name for name, cls in MODELS.items() if cls.inputs == kind]
        raise ConfigError(
            f"a {family.name} model reads {family.inputs} but {getattr(data, 'source', 'the data')}"
            f" is {kind}: train one of {', '.join(fitting)} (--model NAME)"
        )
    settings = getattr(data, "model_settings", None)
    return dataclasses.replace(config, **settings()) if callable(settings) else config


def build_model(
    config: object,
    image_shape: tuple[int, int, int],
    train: TrainConfig | None = None,
    *,
    encoder: nn.Module | None = None,
    decoder: nn.Module | None = None,
) -> GenerativeModel:
    """A new model of the family `config.name`, for (C, H, W) images, that trains as `train`
    says (default `TrainConfig()`). Convolutional models keep their weights
    channels-last (NHWC): oneDNN's convolutions then run in that layout, whatever the input's.
    On the CPU, training steps ran 1.04-1.30x as fast for the MNIST DCGAN and 1.14-1.35x for a
    conv VAE (bench/memory_format.py, four runs on 1 and 2 threads). Only the layout changes:
    outputs match to float rounding, and runs save the usual contiguous tensors."""
    name = str(getattr(config, "name", ""))
    # families take their own networks as keyword arguments (see models/networks.py)
    networks = {k: v for k, v in (("encoder", encoder), ("decoder", decoder)) if v is not None}
    model = MODELS[name](config, image_shape, train, **networks)
    if getattr(config, "architecture", None) == "conv":
        # Module.to(memory_format=...) is documented, but not in torch's type stubs
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def check_rebuilds(
    model: GenerativeModel,
    config: object,
    image_shape: tuple[int, int, int],
    train: TrainConfig | None = None,
) -> None:
    """A one-line ConfigError unless a model built from `config` alone (its networks by the
    import paths in model.encoder / model.decoder) has the weights of `model`, which was built
    from networks given as modules, by name and shape: that is how a saved run is loaded again.
    Drawing the rebuilt weights leaves torch's random state as it was, so training that follows
    is the same with or without this check."""
    with torch.random.fork_rng(devices=[]):
        rebuilt = build_model(config, image_shape, train).state_dict()
    given = model.state_dict()
    for key in sorted(set(given) | set(rebuilt)):
        ours, theirs = given.get(key), rebuilt.get(key)
        if ours is None or theirs is None or ours.shape != theirs.shape:
            shapes = [tuple(t.shape) if t is not None else "absent" for t in (ours, theirs)]
            raise ConfigError(
                f"the given networks cannot be rebuilt from their registered factories: {key} is "
                f"{shapes[0]} in the model but {shapes[1]} when built as factory(image_shape, "
                "features); build each network by calling its registered factory that way"
            )
