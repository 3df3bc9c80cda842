"""`ImageSet`: a whole dataset as one uint8 tensor in memory, with optional labels or file names."""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["ImageSet"]


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """images: (N, C, H, W) uint8; labels: (N,) int64 or None; names: N file names or None."""

    images: torch.Tensor
    source: str
    labels: torch.Tensor | None = None
    names: list[str] | None = None
    classes: list[str] | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, index: torch.Tensor) -> ImageSet:
        """The images at `index` (a 1-D index tensor), keeping labels and names aligned."""
        names = [self.names[i] for i in index.tolist()] if self.names is not None else None
        labels = self.labels[index] if self.labels is not None else None
        return dataclasses.replace(self, images=self.images[index], labels=labels, names=names)

    def split(self, fraction: float, seed: int) -> tuple[ImageSet, ImageSet | None]:
        """Hold out `fraction` of the images (at least one) as a validation set, seeded."""
        if fraction <= 0 or len(self) < 2:
            return self, None
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        n_val = min(len(self) - 1, max(1, round(len(self) * fraction)))
        return self.subset(order[n_val:].sort().values), self.subset(order[:n_val].sort().values)

    def head(self, n: int) -> ImageSet:
        return self if n >= len(self) else self.subset(torch.arange(n))
