"""The GAN's discriminator network, and the freezing of one player's weights while the other
steps.

The discriminator is the shared encoder with one output (or your own network), with its own
widths and activation, judging `pack` images at once (PacGAN), and with minibatch_std the spread
of its inputs fed to its last layer. minibatch_std and feature matching split that last layer
(the score) off the rest (the features), so they need a network that can be split so: checked
here, when the model is built, rather than at the first step.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

from torch import nn

from latentspace.errors import ConfigError
from latentspace.models.gan_regularisers import MinibatchStd
from latentspace.models.networks import make_encoder

if TYPE_CHECKING:
    from latentspace.models.gan import GANConfig

__all__ = ["build_discriminator", "frozen"]


@contextlib.contextmanager
def frozen(network: nn.Module) -> Iterator[None]:
    """No gradients for the weights of `network` inside (the generator step needs none for D's);
    all of them trainable again afterwards, also after an error."""
    parameters = list(network.parameters())
    for p in parameters:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in parameters:
            p.requires_grad_(True)


def _check_splittable(network: nn.Module, config: GANConfig) -> None:
    """minibatch_std and feature_matching split the discriminator's last layer (its score) off the
    rest (its features): a one-line ConfigError when `network` cannot be split so."""
    if isinstance(network, nn.Sequential) and isinstance(network[-1], nn.Linear):
        return
    for key in ("minibatch_std", "feature_matching"):
        if getattr(config, key):
            raise ConfigError(
                f"model.{key} needs the built-in discriminator (an nn.Sequential ending in "
                f"nn.Linear, whose last layer it splits off); your network "
                f"{type(network).__name__} is not one: set model.{key} = 0"
            )


def build_discriminator(
    config: GANConfig, image_shape: tuple[int, int, int], encoder: nn.Module | None
) -> nn.Module:
    """D: the shared encoder with one output (or `encoder`), with its own widths and activation,
    judging `pack` images at once, and with minibatch_std the spread term in its last layer."""
    d_config = dataclasses.replace(
        config,
        activation=config.d_activation,
        channels=config.d_channels or config.channels,
        hidden_sizes=config.d_hidden_sizes or config.hidden_sizes,
    )
    c, h, w = image_shape  # PacGAN: `pack` images side by side in the channel axis
    network = make_encoder(d_config, (c * config.pack, h, w), 1, encoder)
    _check_splittable(network, config)
    if config.minibatch_std:
        layers = cast(nn.Sequential, network)
        layers[-1] = MinibatchStd(cast(nn.Linear, layers[-1]), config.minibatch_std)
    for layer in network.modules():
        if isinstance(layer, nn.LeakyReLU):
            layer.negative_slope = 0.2  # DCGAN's slope; torch's default 0.01 is nearly ReLU
    return network
