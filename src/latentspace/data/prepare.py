"""From a run's data settings to the images it trains, validates and is judged on.

Three facts every reader of a run needs, each decided here once: how a dataset string names a
registered dataset and a split (`named_dataset`, `split_reference`), which images a run trains
and validates on (`prepare_data`), and which images it never saw (`held_out`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol, overload

import torch

from latentspace.data.batches import binarize_static, to_float
from latentspace.data.datasets import DATASETS
from latentspace.data.imageset import ImageSet
from latentspace.data.store import Images, TensorRecords, check_crop
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


def _photo_collection(spec: str) -> str | None:
    """The named photo collection (`photos`, `photos:train`) that `spec` names, or None."""
    from latentspace.data.photos import PHOTO_SETS

    name = spec.partition(":")[0]
    return name if name in PHOTO_SETS else None


def split_reference(spec: str) -> tuple[str, int] | None:
    """`SOURCE:INDEX` (`mnist:test:3`, `photos:0`) -> (SOURCE, INDEX); None when `spec` does not
    end in an index (a plain image file)."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail.lstrip("-").isdigit():
        return head, int(tail)
    return None


def _splits(config: _RunSettings) -> tuple[ImageSet, ImageSet | None, ImageSet | None]:
    """(training, validation, test images) of a run. A folder's files are placed by a hash of
    their names (test by a fixed salt, validation by one seeded by train.seed), so a file added
    later moves no other file between splits; other sets get the seeded random validation split
    and no test split (a named dataset has its own)."""
    from latentspace.data import resolve

    data, seed = config.data, config.train.seed
    images = resolve(
        data.dataset, size=data.size, channels=data.channels, strict=data.strict, crop=data.crop
    )
    test = None
    by_name = images.names is not None and data.split_by_name
    if by_name and _photo_collection(data.dataset) is None:  # a collection has its own test
        images, test = images.split_by_name(data.test_fraction, "test", least=3)
    if data.limit is not None:
        images = images.head(data.limit)
    if data.binarize == "static":
        images = dataclasses.replace(images, images=binarize_static(images.images, seed))
    if by_name:
        train, val = images.split_by_name(data.val_fraction, f"validation {seed}")
    else:
        train, val = images.split(data.val_fraction, seed)
    return _augmented(train, data, training=True), _augmented(val, data), _augmented(test, data)


@overload
def _augmented(images: ImageSet, data: DataConfig, training: bool = False) -> ImageSet: ...
@overload
def _augmented(images: None, data: DataConfig, training: bool = False) -> None: ...
def _augmented(
    images: ImageSet | None, data: DataConfig, training: bool = False
) -> ImageSet | None:
    """`images` as data.crop and data.flip show them: training images cut and mirrored at random
    by their batches, the others centre-cropped. In-memory images without either stay a tensor."""
    if images is None or (data.crop is None and not (training and data.flip)):
        return images
    pixels = images.images
    if data.crop is not None:
        check_crop(pixels, data.crop, images.names)
    if not isinstance(pixels, Images):
        pixels = Images(TensorRecords(pixels), pixels.shape[1], crop=data.crop)
    pixels = Images(
        pixels.records,
        pixels.channels,
        rows=pixels.rows,
        crop=data.crop,
        flip=data.flip,
        augments=training,
    )
    return dataclasses.replace(images, images=pixels)


def prepare_data(config: _RunSettings) -> tuple[ImageSet, ImageSet | None]:
    """Resolve the dataset, hold out a folder's test images, apply limit and static
    binarization, and hold out validation images (seeded by train.seed): (training images,
    validation images or None). See `_splits`."""
    train, val, _ = _splits(config)
    return train, val


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Images a run never trained on, and the images it trained on, as they are (grey).

    `images` is a registered dataset's test split, else a folder's test split (data.test_fraction
    of its files, by a hash of each name), else the run's validation images, else None. `train`
    is the whole training split of a registered dataset, else the run's own training images."""

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
    train, val, test = _splits(config)
    photos = _photo_collection(config.data.dataset)
    if photos is not None:  # its held-out whole photos, shown as the run's validation ones are
        data = config.data
        whole = resolve(
            f"{photos}:test",
            size=data.size,
            channels=data.channels,
            strict=data.strict,
            crop=data.crop,
        )
        return HeldOut(_augmented(whole, data), train, f"{photos}:test", "test")
    if test is not None:
        return HeldOut(test, train, f"{config.data.dataset} (the run's test images)", "test")
    return HeldOut(val, train, f"{config.data.dataset} (the run's held-out images)", "val")


@torch.no_grad()
def batched(
    function: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor | Images,
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
