"""Fully convolutional networks with spatial latents: an image (B, C, H, W) becomes a code map
(B, code_channels, H / factor, W / factor) and back, so images of any size (divisible by the
factor, or padded to it with `pad_to_multiple`) go through without resizing.

The layout follows the learned-compression encoders (Balle et al. 2018; Cheng et al. 2020): one
stride-2 convolution per halving, each followed by a residual block, and the mirror image with
stride-2 transposed convolutions in the decoder.

Activation: LeakyReLU (slope 0.2), as in Cheng et al. 2020's residual blocks. GDN (Balle et al.
2016), the usual choice in learned codecs, is not in torch; it would be written by hand with its
own reparameterisation of beta and gamma to stay positive. LeakyReLU is cheap on the CPU, keeps a
gradient for negative inputs (no dead units), and with no normalisation layer anywhere every
image's output depends on that image alone, never on the rest of its batch: a compressed image
decodes to the same pixels whatever batch it is decoded in.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentspace.errors import ConfigError, DataError

__all__ = [
    "FACTORS",
    "UPSAMPLES",
    "ResidualBlock",
    "SpatialDecoder",
    "SpatialEncoder",
    "check_factor",
    "code_networks",
    "code_size",
    "crop_to",
    "pad_to_multiple",
]

FACTORS = (4, 8, 16)  # how much smaller each side of the code map is than the image's
UPSAMPLES = ("transposed", "subpixel")  # how the decoder makes its last doubling
_SLOPE = 0.2  # LeakyReLU's negative slope (Cheng et al. 2020)


def check_factor(factor: int) -> None:
    """A one-line ConfigError unless `factor` is one of FACTORS."""
    if factor not in FACTORS:
        raise ConfigError(
            f"downsampling factor {factor} is not one of: {', '.join(map(str, FACTORS))}"
        )


def code_size(height: int, width: int, factor: int) -> tuple[int, int]:
    """The code map's (height, width) for an image of that size, padded up to the factor."""
    return math.ceil(height / factor), math.ceil(width / factor)


def pad_to_multiple(x: torch.Tensor, factor: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """x: (B, C, H, W) -> (x padded on the bottom and right to multiples of `factor`, (H, W)).
    Replicated edge pixels rather than zeros: a zero border is a sharp edge the codes would
    spend bits on. Crop the decoded image back with `crop_to(y, size)`."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % factor, -width % factor
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x, (int(height), int(width))


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """x: (B, C, H', W') -> (B, C, H, W): the top-left `size`, undoing `pad_to_multiple`."""
    return x[..., : size[0], : size[1]]


class ResidualBlock(nn.Module):
    """x + conv3x3(act(conv3x3(act(x)))): (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LeakyReLU(_SLOPE),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(_SLOPE),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _check_sizes(channels: int, code_channels: int, width: int, blocks: int) -> None:
    for name, value in (("channels", channels), ("code_channels", code_channels), ("width", width)):
        if value < 1:
            raise ConfigError(f"{name} = {value} must be at least 1")
    if blocks < 0:
        raise ConfigError(f"blocks = {blocks} must be 0 or more")


class SpatialEncoder(nn.Module):
    """(B, in_channels, H, W) -> (B, code_channels, H / factor, W / factor), H and W divisible by
    `factor` (4, 8 or 16). `width` channels inside; `blocks` residual blocks after each halving.
    The code map is linear (no activation on the last layer)."""

    def __init__(
        self, in_channels: int, code_channels: int, factor: int, width: int, *, blocks: int = 1
    ) -> None:
        super().__init__()
        check_factor(factor)
        _check_sizes(in_channels, code_channels, width, blocks)
        self.factor = factor
        layers: list[nn.Module] = []
        n_in = in_channels
        for stage in range(int(math.log2(factor))):
            if stage > 0:
                layers.append(nn.LeakyReLU(_SLOPE))
            # kernel 4, stride 2, padding 1 halves an even side exactly
            layers.append(nn.Conv2d(n_in, width, 4, stride=2, padding=1))
            layers += [ResidualBlock(width) for _ in range(blocks)]
            n_in = width
        layers += [nn.LeakyReLU(_SLOPE), nn.Conv2d(width, code_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if x.dim() != 4 or height % self.factor or width % self.factor:
            raise DataError(
                f"the spatial encoder takes (B, C, H, W) images with H and W divisible by "
                f"{self.factor}, got {tuple(x.shape)}; pad them with pad_to_multiple"
            )
        return self.layers(x)


class SpatialDecoder(nn.Module):
    """(B, code_channels, h, w) -> (B, out_channels, h * factor, w * factor) pre-activation
    outputs (logits or means, as the family's likelihood reads them). upsample: "transposed"
    doubles with a transposed convolution each time, then a 3x3 convolution at full size;
    "subpixel" makes the last doubling a sub-pixel convolution (much cheaper, see below)."""

    def __init__(
        self,
        code_channels: int,
        out_channels: int,
        factor: int,
        width: int,
        *,
        blocks: int = 1,
        upsample: str = "transposed",
    ) -> None:
        super().__init__()
        check_factor(factor)
        _check_sizes(out_channels, code_channels, width, blocks)
        if upsample not in UPSAMPLES:
            raise ConfigError(f"upsample = {upsample!r} is not one of: {', '.join(UPSAMPLES)}")
        self.factor = factor
        layers: list[nn.Module] = [nn.Conv2d(code_channels, width, 3, padding=1)]
        halvings = int(math.log2(factor))
        for stage in range(halvings):
            layers += [ResidualBlock(width) for _ in range(blocks)]
            if upsample == "subpixel" and stage == halvings - 1:
                break
            layers += [
                nn.LeakyReLU(_SLOPE),
                # kernel 4, stride 2, padding 1 doubles exactly, mirroring the encoder
                nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
            ]
        if upsample == "subpixel":
            # the last doubling as a sub-pixel convolution (Shi et al. 2016): each half-size
            # position predicts its 2x2 output pixels, so no width-channel map is ever made at
            # full size (those layers were ~40% of a training step: docs/journal.md)
            layers += [
                nn.LeakyReLU(_SLOPE),
                nn.Conv2d(width, out_channels * 4, 3, padding=1),
                nn.PixelShuffle(2),
            ]
        else:
            layers += [nn.LeakyReLU(_SLOPE), nn.Conv2d(width, out_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 4:
            raise DataError(
                f"the spatial decoder takes (B, C, h, w) code maps, got {tuple(z.shape)}"
            )
        return self.layers(z)


def code_networks(
    config: Any,
    image_shape: tuple[int, int, int],
    encoder: nn.Module | None,
    decoder: nn.Module | None,
) -> tuple[nn.Module, nn.Module, bool]:
    """(encoder, decoder, spatial) of a family coding into a map (the fsq and vqvae configs:
    architecture, latent_dim code channels, factor, width, blocks, and upsample where the
    config has it): spatial networks unless
    your own are given, else yours or the built-in flat ones (conv for a spatial config)."""
    from latentspace.models.networks import make_decoder, make_encoder

    given = encoder is not None or decoder is not None or config.encoder or config.decoder
    if config.architecture == "spatial" and not given:
        channels, blocks = image_shape[0], config.blocks
        return (
            SpatialEncoder(channels, config.latent_dim, config.factor, config.width, blocks=blocks),
            SpatialDecoder(
                config.latent_dim,
                channels,
                config.factor,
                config.width,
                blocks=blocks,
                upsample=getattr(config, "upsample", "transposed"),  # families without it
            ),
            True,
        )
    flat = config
    if config.architecture == "spatial":
        flat = dataclasses.replace(config, architecture="conv")
    built = make_encoder(flat, image_shape, config.latent_dim, encoder)
    return built, make_decoder(flat, image_shape, decoder), False
