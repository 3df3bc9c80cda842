"""Batches from one uint8 tensor in memory: a random permutation per epoch, float per batch.

No per-sample `__getitem__` and no worker processes: indexing a resident tensor is what keeps the
data side of an MNIST epoch under 0.1 s (torchvision's DataLoader alone costs ~1.2 s here).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from latentspace.data.store import Images

__all__ = ["Batches", "binarize_static", "to_float"]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 0..1, on the images' device."""
    return images.to(torch.float32).div_(255.0)


def binarize_static(images: torch.Tensor | Images, seed: int) -> torch.Tensor:
    """One fixed Bernoulli draw per pixel (the 'statically binarized MNIST' convention), as 0/255.
    Images read from a folder's cache are read whole: the draw is then kept in memory."""
    images = images[:] if isinstance(images, Images) else images
    generator = torch.Generator().manual_seed(seed)
    draw = torch.bernoulli(to_float(images.cpu()), generator=generator)
    return (draw * 255).to(torch.uint8).to(images.device)


class Batches:
    """Iterate over `images` ((N, C, H, W) uint8) in batches of float32 (B, C, H, W) in [0, 1].

    shuffle: a new permutation from `generator` each epoch. dynamic: each batch is a fresh
    Bernoulli draw with the pixel intensities as probabilities (Salakhutdinov & Murray 2008).
    """

    def __init__(
        self,
        images: torch.Tensor | Images,
        batch_size: int,
        *,
        shuffle: bool = False,
        dynamic: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.images = images
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.dynamic = dynamic
        self.generator = generator if generator is not None else torch.Generator()
        self.device = torch.device(device) if device is not None else images.device

    def __len__(self) -> int:
        return (len(self.images) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        n = len(self.images)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if isinstance(self.images, Images) and self.images.augments:  # data.crop, data.flip
                size = min(self.batch_size, n - start)
                where = torch.arange(start, start + size) if order is None else order[start:][:size]
                draws = torch.rand((size, 3), generator=self.generator)
                batch = self.images.augmented(where, draws)
            elif order is None:
                batch = self.images[start : start + self.batch_size]
            else:
                batch = self.images[order[start : start + self.batch_size].to(self.images.device)]
            x = to_float(batch.to(self.device, non_blocking=True))
            if self.dynamic:
                # draw on the CPU generator so a run is reproducible on any device
                noise = torch.rand(x.shape, generator=self.generator).to(x.device)
                x = (noise < x).to(x.dtype)
            yield x
