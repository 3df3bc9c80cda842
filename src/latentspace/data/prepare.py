"""From a run's data settings to the images it trains, validates and is judged on.

Three facts every reader of a run needs, each decided here once: how a dataset string names a
registered dataset and a split (`named_dataset`, `split_reference`), which images a run trains
and validates on (`prepare_data`), and which images it never saw (`held_out`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import torch

from latentspace.data.batches import binarize_static, to_float
from latentspace.data.datasets import DATASETS
from latentspace.data.imageset import ImageSet
from latentspace.settings import DataConfig, TrainConfig

__all__ = [
    "BATCH",
    "HeldOut",
    "batched",
    "held_out",
    "named_dataset",
    "prepare_data",
    "split_reference",
]

BATCH = 500  # images per batch when a finished model encodes, decodes or scores many images


class _RunSettings(Protocol):
    """What this module reads of a run's `Config`: its data settings and the seed."""

    @property
    def data(self) -> DataConfig: ...
    @property
    def train(self) -> TrainConfig: ...


def named_dataset(spec: str) -> str | None:
    """The registered dataset that `spec` (`NAME` or `NAME:split`) names, or None for a folder or
    an array file."""
    name = spec.partition(":")[0]
    return name if name in DATASETS else None


def split_reference(spec: str) -> tuple[str, int] | None:
    """`SOURCE:INDEX` (`mnist:test:3`, `photos:0`) -> (SOURCE, INDEX); None when `spec` does not
    end in an index (a plain image file)."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail.lstrip("-").isdigit():
        return head, int(tail)
    return None


def prepare_data(config: _RunSettings) -> tuple[ImageSet, ImageSet | None]:
    """Resolve the dataset, apply limit and static binarization, and hold out validation images
    (seeded by train.seed): (training images, validation images or None)."""
    from latentspace.data import resolve

    data = config.data
    images = resolve(data.dataset, size=data.size, channels=data.channels, strict=data.strict)
    if data.limit is not None:
        images = images.head(data.limit)
    if data.binarize == "static":
        images = dataclasses.replace(
            images, images=binarize_static(images.images, config.train.seed)
        )
    return images.split(data.val_fraction, config.train.seed)


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Images a run never trained on, and the images it trained on, as they are (grey).

    `images` is a registered dataset's test split, else the run's validation images, else None
    (a run with data.val_fraction = 0). `train` is the whole training split of a registered
    dataset, else the run's own training images."""

    images: ImageSet | None
    train: ImageSet
    name: str  # what `images` are, for a sentence: "mnist:test" or "DATASET (held-out images)"
    split: str  # "test" or "val"


def held_out(config: _RunSettings) -> HeldOut:
    """The images the run did not train on (see `HeldOut`); evaluate, report and quality all
    judge a run on these."""
    from latentspace.data import resolve

    name = named_dataset(config.data.dataset)
    if name is not None:
        return HeldOut(resolve(f"{name}:test"), resolve(f"{name}:train"), f"{name}:test", "test")
    train, val = prepare_data(config)
    return HeldOut(val, train, f"{config.data.dataset} (the run's held-out images)", "val")


@torch.no_grad()
def batched(
    function: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = BATCH,
) -> torch.Tensor:
    """Apply `function` to uint8 images in batches (as floats in [0, 1]); results on the CPU.
    Float inputs (codes) are passed as they are."""
    outputs = []
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size].to(device)
        outputs.append(function(to_float(batch) if batch.dtype == torch.uint8 else batch).cpu())
    return torch.cat(outputs)
