"""`ImageSet`: a whole dataset as uint8 (N, C, H, W) images, with optional labels or file names.

The images are a tensor in memory (named datasets, arrays) or an `Images` view of a folder's
on-disk cache that reads only the images asked for; both index alike.
"""

from __future__ import annotations

import dataclasses
import hashlib

import torch

from latentspace.data.store import Images

__all__ = ["ImageSet", "name_draw"]


def name_draw(name: str, salt: str) -> float:
    """A number in [0, 1) fixed by a file's name and `salt`: which split a file falls in depends
    on its own name only, so adding or removing another file moves no image between splits."""
    digest = hashlib.sha256(f"{salt}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """images: (N, C, H, W) uint8; labels: (N,) int64 or None; names: N file names or None."""

    images: torch.Tensor | Images
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
        images = self.images.select(index) if isinstance(self.images, Images) else None
        return dataclasses.replace(
            self,
            images=self.images[index] if images is None else images,
            labels=labels,
            names=names,
        )

    def split(self, fraction: float, seed: int) -> tuple[ImageSet, ImageSet | None]:
        """Hold out `fraction` of the images (at least one) as a validation set, seeded."""
        if fraction <= 0 or len(self) < 2:
            return self, None
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        n_val = min(len(self) - 1, max(1, round(len(self) * fraction)))
        return self.subset(order[n_val:].sort().values), self.subset(order[:n_val].sort().values)

    def split_by_name(
        self, fraction: float, salt: str, *, least: int = 2
    ) -> tuple[ImageSet, ImageSet | None]:
        """(the rest, about `fraction` of the images), each file placed by `name_draw(name,
        salt)` alone. A set of `least` images or more holds out at least its one lowest draw
        (only there can another file's arrival change the split); none when fraction is 0."""
        if self.names is None:
            raise ValueError("split_by_name needs file names")  # callers check first
        if fraction <= 0 or len(self) < 2:
            return self, None
        draws = torch.tensor([name_draw(n, salt) for n in self.names], dtype=torch.float64)
        held = draws < fraction
        if not held.any() and len(self) >= least:
            held[draws.argmin()] = True
        if held.all():  # keep one image to train on
            held[draws.argmax()] = False
        if not held.any():
            return self, None
        index = torch.arange(len(self))
        return self.subset(index[~held]), self.subset(index[held])

    def head(self, n: int) -> ImageSet:
        return self if n >= len(self) else self.subset(torch.arange(n))
