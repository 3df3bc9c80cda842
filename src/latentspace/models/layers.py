"""Shared building blocks: the network config every family starts from, activations, and MLP or
convolutional encoders and decoders that adapt to any image shape."""

from __future__ import annotations

import dataclasses
import itertools
import math

import torch
from torch import nn

from latentspace.errors import ConfigError
from latentspace.settings import check_finite

__all__ = [
    "ACTIVATIONS",
    "NetworkConfig",
    "build_decoder",
    "build_encoder",
    "make_activation",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """The hyperparameters every model family shares. Families subclass it and add their own."""

    name: str = ""
    latent_dim: int = 16
    architecture: str = "mlp"  # mlp | conv
    hidden_sizes: tuple[int, ...] = (512, 256)  # mlp: neurons per hidden layer, input side first
    channels: tuple[int, ...] = (32, 64)  # conv: channels per stride-2 layer, input side first
    activation: str = "relu"  # relu | sigmoid | tanh | leaky_relu | gelu | silu
    bias: bool = True
    dropout: float = 0.0
    # your own networks: a registered network's import path (package.module:Name, see
    # models/networks.py); empty: the built-in network of `architecture`
    encoder: str = ""
    decoder: str = ""

    def check_written(self) -> None:
        """Checks of settings as a user writes them (a TOML file, flags, overrides), which a run
        saved before them must not fail when it is opened: an MLP without hidden layers is a
        linear map, almost always an empty --hidden by mistake."""
        built_in = not (self.encoder and self.decoder)
        if self.architecture == "mlp" and built_in and not self.hidden_sizes:
            raise ConfigError(
                "model.hidden_sizes is empty: an MLP needs at least one hidden layer; give "
                "its widths, e.g. --hidden 512,256 (model.hidden_sizes = [512, 256])"
            )

    def validate(self) -> None:
        if self.latent_dim < 1:
            raise ConfigError(f"model.latent_dim = {self.latent_dim} must be at least 1")
        if self.architecture not in ("mlp", "conv"):
            raise ConfigError(
                f"model.architecture = {self.architecture!r} is not one of: mlp, conv"
            )
        check_finite(self, "model")
        if any(h < 1 for h in self.hidden_sizes):
            raise ConfigError(
                f"model.hidden_sizes = {self.hidden_sizes}: every layer needs >= 1 unit"
            )
        if self.architecture == "conv" and (not self.channels or any(c < 1 for c in self.channels)):
            raise ConfigError(f"model.channels = {self.channels}: give at least one positive count")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout = {self.dropout} must be in [0, 1)")
        make_activation(self.activation)


def _mlp(sizes: list[int], config: NetworkConfig) -> list[nn.Module]:
    """Linear layers between consecutive sizes, activation (and dropout) after all but the last."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out, bias=config.bias))
        if i < len(sizes) - 2:
            layers.append(make_activation(config.activation))
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
    return layers


def _conv_sizes(image_shape: tuple[int, int, int], config: NetworkConfig) -> list[tuple[int, int]]:
    """Spatial sizes after each stride-2 layer; raise before training if the image is too small."""
    _, h, w = image_shape
    sizes = [(h, w)]
    for _ in config.channels:
        h, w = h // 2, w // 2
        sizes.append((h, w))
    if h < 1 or w < 1:
        fits = int(math.log2(min(image_shape[1:])))
        raise ConfigError(
            f"a {image_shape[1]}x{image_shape[2]} image is too small for {len(config.channels)} "
            f"stride-2 conv layers (model.channels = {config.channels}): use at most {fits} "
            "layers, larger images (--size) or architecture = mlp"
        )
    return sizes


def build_encoder(
    config: NetworkConfig, image_shape: tuple[int, int, int], out_features: int
) -> nn.Module:
    """(B, C, H, W) -> (B, out_features)."""
    c, h, w = image_shape
    if config.architecture == "mlp":
        return nn.Sequential(
            nn.Flatten(), *_mlp([c * h * w, *config.hidden_sizes, out_features], config)
        )
    sizes = _conv_sizes(image_shape, config)
    layers: list[nn.Module] = []
    for n_in, n_out in zip((c, *config.channels[:-1]), config.channels, strict=True):
        layers += [
            nn.Conv2d(n_in, n_out, 4, stride=2, padding=1, bias=config.bias),
            make_activation(config.activation),
        ]
    last_h, last_w = sizes[-1]
    layers += [
        nn.Flatten(),
        nn.Linear(config.channels[-1] * last_h * last_w, out_features, bias=config.bias),
    ]
    return nn.Sequential(*layers)


def build_decoder(config: NetworkConfig, image_shape: tuple[int, int, int]) -> nn.Module:
    """(B, latent_dim) -> (B, C, H, W) pre-activation outputs (logits or means)."""
    c, h, w = image_shape
    if config.architecture == "mlp":
        widths = [config.latent_dim, *reversed(config.hidden_sizes), c * h * w]
        return nn.Sequential(*_mlp(widths, config), nn.Unflatten(1, (c, h, w)))
    sizes = _conv_sizes(image_shape, config)
    channels = list(reversed(config.channels))
    last_h, last_w = sizes[-1]
    layers: list[nn.Module] = [
        nn.Linear(config.latent_dim, channels[0] * last_h * last_w, bias=config.bias),
        make_activation(config.activation),
        nn.Unflatten(1, (channels[0], last_h, last_w)),
    ]
    targets = list(reversed(sizes[:-1]))
    for i, (n_in, n_out) in enumerate(zip(channels, [*channels[1:], c], strict=True)):
        (th, tw), (sh, sw) = targets[i], sizes[len(sizes) - 1 - i]
        # stride-2, kernel-4, padding-1 doubles; output_padding restores an odd size exactly
        layers.append(
            nn.ConvTranspose2d(
                n_in,
                n_out,
                4,
                stride=2,
                padding=1,
                bias=config.bias,
                output_padding=(th - 2 * sh, tw - 2 * sw),
            )
        )
        if i < len(channels) - 1:
            layers.append(make_activation(config.activation))
    return nn.Sequential(*layers)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def weight_penalties(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum |w|, sum w^2) over weight matrices and kernels; biases and norms are not penalised."""
    weights = [p for p in module.parameters() if p.dim() > 1]
    if not weights:
        zero = torch.zeros(())
        return zero, zero
    l1 = torch.stack([w.abs().sum() for w in weights]).sum()
    l2 = torch.stack([w.pow(2).sum() for w in weights]).sum()
    return l1, l2
