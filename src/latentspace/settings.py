"""Settings that every model family shares: where the images come from (`DataConfig`) and how
gradient descent runs (`TrainConfig`), the names each choice allows, and the coercion of a
value written in TOML, JSON or on the command line to a field's type.

The models read `TrainConfig` (it is given to them when they are built), so this module imports
nothing of latentspace's but its errors; `config.py` assembles a whole run's `Config` on top.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from latentspace.errors import ConfigError

__all__ = [
    "BINARIZE",
    "CHOICES",
    "DEVICES",
    "OPTIMIZERS",
    "PRECISIONS",
    "RESUMABLE_TRAIN_SETTINGS",
    "SCHEDULES",
    "DataConfig",
    "TrainConfig",
    "check_finite",
    "parse_value",
    "replace_fields",
    "resumed_train",
    "validate_settings",
]

# The names each setting allows, written once: validation, the CLI's choices, the tuning space
# and the optimizer table all read them from here.
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16")
BINARIZE = ("none", "static", "dynamic")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are prepared."""

    dataset: str = (
        "mnist"  # a dataset name (`latentspace data list`), an image folder or a .npy/.npz
    )
    val_fraction: float = 0.1  # held out from the training split, seeded by train.seed
    binarize: str = (
        "none"  # none | static (one fixed Bernoulli draw) | dynamic (a new draw per batch)
    )
    size: int | None = None  # image folders: resize to size x size pixels
    channels: int | None = None  # image folders: 1 (grayscale) or 3 (RGB); default: from the files
    strict: bool = False  # image folders: an unreadable file is an error instead of a warning
    limit: int | None = None  # use at most this many training images (quick experiments)
    # image folders: the share held out as the test split, each file by a hash of its name
    test_fraction: float = 0.1
    # image folders: place files in splits by a hash of their names (stable when files are
    # added); false: the seeded random validation split of runs made before test splits existed
    split_by_name: bool = True
    crop: int | None = None  # train on random crop x crop windows (validation and test: centred)
    flip: bool = False  # mirror a random half of the training images left to right


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Gradient descent and everything around it; the same for every model family."""

    optimizer: str = "adam"  # sgd | adam | adamw
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    betas: tuple[float, float] = (0.9, 0.999)  # adam / adamw
    weight_decay: float = 0.0  # decoupled weight decay (adamw); plain L2 on sgd/adam
    l1: float = 0.0  # adds l1 * sum(|w|) over weight matrices to the loss
    l2: float = 0.0  # adds l2 * sum(w^2) over weight matrices to the loss
    batch_size: int = 128
    epochs: int = 10
    schedule: str = "constant"  # constant | cosine | step
    step_size: int = 10  # step schedule: epochs between decays
    gamma: float = 0.1  # step schedule: factor per decay
    min_lr: float = 0.0  # cosine schedule: final learning rate
    grad_clip: float = 0.0  # clip the global gradient norm to this value; 0 = off
    patience: int = 0  # early stopping after this many epochs without improvement; 0 = off
    # stop at the end of the epoch after which the next one, at the pace of this process's
    # epochs, would end past this many minutes of training; 0 = off. Per process, not per run:
    # --resume continues a run stopped by it, for as long again
    max_minutes: float = 0.0
    min_delta: float = 0.0  # an improvement must beat the best validation loss by this much
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = latentspace's measured default
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "fp32"  # fp32 | bf16 (mixed: bf16 matrix products, fp32 weights and losses)


CHOICES = {
    "train.optimizer": OPTIMIZERS,
    "train.schedule": SCHEDULES,
    "train.device": DEVICES,
    "train.precision": PRECISIONS,
    "data.binarize": BINARIZE,
}


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _parse_tuple(tp: Any, value: Any, where: str) -> tuple[Any, ...]:
    """A tuple field from "512,256" or a list, or one line naming the field, the value and the
    form it takes (an item's own reason said once, not a nested error)."""
    args = typing.get_args(tp)
    kind = {int: "whole numbers", float: "numbers"}.get(args[0], "values")
    example = {int: "512,256", float: "0.9,0.999"}.get(args[0], "a,b")
    count = "" if args[-1] is Ellipsis else f"{len(args)} "
    expected = f"expected {count}{kind} separated by commas, e.g. {example}"
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ConfigError(f"{where}: cannot use {value!r}: {expected}")
    items = [i for i in items if not (isinstance(i, str) and i.strip() == "")]
    item_types = [args[0]] * len(items) if args[-1] is Ellipsis else list(args)
    if len(item_types) != len(items):
        raise ConfigError(f"{where}: cannot use {value!r}: {expected}")
    parsed = []
    for item_type, item in zip(item_types, items, strict=True):
        try:
            parsed.append(_parse_scalar(item_type, item))
        except (TypeError, ValueError) as error:
            single = len(items) == 1 and str(item).strip() == str(value).strip()
            said = str(error).replace("expected", "is not", 1)
            reason = "" if single else f"{str(item).strip()!r} {said}; "
            raise ConfigError(f"{where}: cannot use {value!r}: {reason}{expected}") from None
    return tuple(parsed)


def _parse_scalar(tp: Any, value: Any) -> Any:
    """`value` as a bool, int, float or str, or ValueError saying what was expected."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("expected a whole number")
        try:
            return int(value) if not isinstance(value, str) else int(value.strip())
        except (TypeError, ValueError):
            raise ValueError("expected a whole number") from None
    if tp is float:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError("expected a number") from None
        if not math.isfinite(number):  # inf and nan pass every `> 0` check, then diverge
            raise ValueError("expected a finite number")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ValueError("expected text")
        return value
    raise TypeError(f"unsupported field type {tp!r}")  # pragma: no cover


def parse_value(tp: Any, value: Any, where: str) -> Any:
    """Coerce `value` (from TOML, JSON or a CLI string) to the field type `tp`, or raise ConfigError."""
    optional, inner = _is_optional(tp)
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", ""))):
        return None
    if typing.get_origin(inner) is tuple:
        return _parse_tuple(inner, value, where)
    try:
        return _parse_scalar(inner, value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: cannot use {value!r} ({error})") from None


def replace_fields(obj: Any, values: Mapping[str, Any], section: str) -> Any:
    """`dataclasses.replace` with type coercion and an error listing the valid keys."""
    types_ = _field_types(type(obj))
    unknown = sorted(set(values) - set(types_))
    if unknown:
        valid = ", ".join(sorted(k for k in types_ if k != "name"))
        raise ConfigError(f"unknown key {section}.{unknown[0]}; valid keys: {valid}")
    parsed = {k: parse_value(types_[k], v, f"{section}.{k}") for k, v in values.items()}
    new = dataclasses.replace(obj, **parsed)
    validate = getattr(new, "validate", None)
    if callable(validate):
        validate()
    return new


def check_finite(obj: Any, section: str) -> None:
    """Every float field of the dataclass `obj` (tuples of floats too) is a finite number: a
    config built in Python skips `parse_value`, and inf or nan would pass every range check."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ConfigError(f"{section}.{field.name} = {value}: give a finite number")


def validate_settings(data: DataConfig, train: TrainConfig) -> None:
    """Check values that are of the right type but impossible, before anything is trained."""
    sections = {"data": data, "train": train}
    for section, obj in sections.items():
        check_finite(obj, section)
    for key, choices in CHOICES.items():
        section, field = key.split(".")
        value = getattr(sections[section], field)
        if value not in choices:
            raise ConfigError(f"{key} = {value!r} is not one of: {', '.join(choices)}")
    t, d = train, data
    positive = {"train.lr": t.lr, "train.batch_size": t.batch_size, "train.epochs": t.epochs}
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key} = {value} must be greater than 0")
    for key, value in {
        "train.l1": t.l1,
        "train.l2": t.l2,
        "train.weight_decay": t.weight_decay,
        "train.grad_clip": t.grad_clip,
        "train.patience": t.patience,
        "train.max_minutes": t.max_minutes,
        "train.threads": t.threads,
    }.items():
        if value < 0:
            raise ConfigError(f"{key} = {value} must be 0 or more")
    if not 0.0 <= d.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction = {d.val_fraction} must be in [0, 1)")
    if d.channels not in (None, 1, 3):
        raise ConfigError(f"data.channels = {d.channels} must be 1 or 3")
    # 4096 keeps one RGB image at 48 MiB as uint8 (192 MiB as float32) and is checked here, before
    # any image is resized or any layer sized by it is allocated; more ran machines out of memory
    if d.size is not None and not 4 <= d.size <= 4096:
        raise ConfigError(f"data.size = {d.size} must be between 4 and 4096 pixels")
    if d.limit is not None and d.limit < 2:
        raise ConfigError(f"data.limit = {d.limit} must be at least 2")
    if not 0.0 <= d.test_fraction < 1.0:
        raise ConfigError(f"data.test_fraction = {d.test_fraction} must be in [0, 1)")
    if d.crop is not None and not 4 <= d.crop <= 4096:
        raise ConfigError(f"data.crop = {d.crop} must be between 4 and 4096 pixels")
    if d.crop is not None and d.size is not None and d.crop > d.size:
        raise ConfigError(
            f"data.crop = {d.crop} is larger than data.size = {d.size}: crop at most the size"
        )


# The training settings a resumed run may change, written once: `latentspace train --resume`
# accepts only these flags and `train(resume=True)` takes only these from the config it is given;
# everything else is the saved run's, so the resumed run is the one that was started.
RESUMABLE_TRAIN_SETTINGS = ("epochs", "max_minutes")


def resumed_train(saved: TrainConfig, given: TrainConfig) -> TrainConfig:
    """The training settings of a resumed run: the saved ones, but with the
    `RESUMABLE_TRAIN_SETTINGS` taken from `given`."""
    return dataclasses.replace(
        saved, **{name: getattr(given, name) for name in RESUMABLE_TRAIN_SETTINGS}
    )
