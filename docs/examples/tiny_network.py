"""A network of your own, walked through in docs/adding-a-model.md and run by the conformance
suite (tests/test_conformance.py) with every model family.

The contract (latentspace/models/networks.py): a registered class or function is built as
`factory(image_shape, features)`;

- an encoder maps images (B, C, H, W) in [0, 1] to (B, features), the features the family asks
  for (an AE's latent_dim, a VAE's 2 x latent_dim: mean and log-variance, a GAN
  discriminator's 1 score);
- a decoder maps codes (B, latent_dim) to logits (B, C, H, W); the family turns them into images.

Neither knows which family uses it. Registering puts the import path (`tiny_network:TinyEncoder`
when this folder is on the Python path) in config.json, so a saved run builds the network again
from this installed module and loads its weights: no code is pickled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import latentspace as ls

__all__ = ["TinyDecoder", "TinyEncoder", "tiny_mlp_encoder"]


@ls.register_network
class TinyEncoder(nn.Module):
    """images (B, C, H, W) -> (B, features): one stride-2 convolution, the mean over positions
    (so any image size works), and a linear layer."""

    def __init__(self, image_shape: tuple[int, int, int], features: int, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(image_shape[0], width, 3, stride=2, padding=1)
        self.head = nn.Linear(width, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.conv(x)).mean((2, 3)))


@ls.register_network
class TinyDecoder(nn.Module):
    """codes (B, latent_dim) -> logits (B, C, H, W): a linear layer onto a grid of half the
    image's size, nearest-neighbour upsampling to the exact size, and a 3x3 convolution."""

    def __init__(self, image_shape: tuple[int, int, int], features: int, width: int = 8) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        self.size = (height, width_px)
        self.grid = (width, (height + 1) // 2, (width_px + 1) // 2)
        self.project = nn.Linear(features, width * self.grid[1] * self.grid[2])
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.project(z)).unflatten(1, self.grid)
        return self.out(F.interpolate(h, size=self.size, mode="nearest"))


@ls.register_network
def tiny_mlp_encoder(image_shape: tuple[int, int, int], features: int) -> nn.Module:
    """A registered function works as a class does: images (B, C, H, W) -> (B, features)."""
    c, h, w = image_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 16), nn.ReLU(), nn.Linear(16, features))
