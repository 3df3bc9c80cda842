"""Datasets: named sets (MNIST, Fashion-MNIST), image folders and arrays, all as `ImageSet`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from latentspace.data.batches import Batches, binarize_static, to_float
from latentspace.data.cache import cache_root, open_folder
from latentspace.data.datasets import DATASETS, data_home, dataset_status, fetch, load_named
from latentspace.data.files import load_array, load_folder, load_image
from latentspace.data.imageset import ImageSet
from latentspace.data.photos import photo_folder
from latentspace.data.prepare import (
    BATCH,
    HeldOut,
    batched,
    named_dataset,
    split_reference,
)
from latentspace.data.prepare import held_out as _held_out_images
from latentspace.data.prepare import prepare_data as _prepare_images
from latentspace.data.store import Images
from latentspace.data.text import is_text, prepare_text, text_held_out
from latentspace.errors import DataError

if TYPE_CHECKING:
    from latentspace.data.prepare import _RunSettings

__all__ = [
    "BATCH",
    "DATASETS",
    "Batches",
    "HeldOut",
    "ImageSet",
    "Images",
    "batched",
    "binarize_static",
    "cache_root",
    "data_home",
    "dataset_status",
    "fetch",
    "held_out",
    "load_array",
    "load_folder",
    "load_image",
    "load_named",
    "named_dataset",
    "open_folder",
    "prepare_data",
    "resolve",
    "split_reference",
    "to_float",
]


def resolve(
    spec: str,
    *,
    default_split: str = "train",
    size: int | None = None,
    channels: int | None = None,
    strict: bool = False,
    crop: int | None = None,
) -> ImageSet:
    """The one function that turns what a user wrote into images.

    spec: `NAME` or `NAME:split` for a named dataset (`mnist:test`), a folder of images, or a
    `.npy` / `.npz` file. A folder is decoded once into its on-disk cache (data.cache) and
    read from there; `crop` lets its images differ in size (they are then centre-cropped).
    """
    name, _, split = spec.partition(":")
    if name in DATASETS:
        return load_named(name, split or default_split)
    photos = photo_folder(spec if split else f"{name}:{default_split}")
    if photos is not None:  # a named photo collection is a folder of files of any size
        return open_folder(photos, size=size, channels=channels, strict=strict, crop=crop)
    path = Path(spec).expanduser()
    if path.is_dir():
        return open_folder(path, size=size, channels=channels, strict=strict, crop=crop)
    if path.suffix in (".npy", ".npz"):
        return load_array(path)
    if path.exists():
        raise DataError(
            f"cannot use {spec} as a dataset: give a folder of images, a .npy or .npz "
            "file, or a dataset name"
        )
    raise DataError(
        f"dataset {spec!r} not found: not a known name ({', '.join(DATASETS)}), "
        "nor an existing folder or .npy/.npz file"
    )


def prepare_data(config: _RunSettings) -> tuple[ImageSet, ImageSet | None]:
    """The training and validation data of a run's config (see `prepare.prepare_data`); text
    (a named corpus, a .txt file or a folder of them) gives `TextSet`s, which the trainer reads
    as it reads images (len, image_shape, images: the token ids, batch_class)."""
    if is_text(config.data.dataset):
        return prepare_text(config)  # type: ignore[return-value]
    return _prepare_images(config)


def held_out(config: _RunSettings) -> HeldOut:
    """The data a run did not train on (see `prepare.held_out`); for text, sentences."""
    if is_text(config.data.dataset):
        return HeldOut(*text_held_out(config))  # type: ignore[arg-type]
    return _held_out_images(config)
