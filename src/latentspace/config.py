"""Configuration: frozen dataclasses of primitives, TOML files and `section.key=value` overrides.

A `Config` has three sections. `data` and `train` are the same for every model; `model` is the
model family's own dataclass (`VAEConfig`, `AEConfig`, ...), chosen by `model.name` through the
registry in `latentspace.models`. Defaults are written once, on the dataclasses; TOML files, CLI
flags and tuning trials are all overrides applied with `dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Union

from latentspace.errors import ConfigError

__all__ = [
    "Config",
    "DataConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "parse_value",
    "replace_fields",
]


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
    min_delta: float = 0.0  # an improvement must beat the best validation loss by this much
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = latentspace's measured default
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "fp32"  # fp32 | bf16 (mixed: bf16 matrix products, fp32 weights and losses)


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run: data, model and training. `model` is a model family's config dataclass."""

    model: Any
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    @property
    def model_name(self) -> str:
        return str(self.model.name)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def parse_value(tp: Any, value: Any, where: str) -> Any:
    """Coerce `value` (from TOML, JSON or a CLI string) to the field type `tp`, or raise ConfigError."""
    optional, inner = _is_optional(tp)
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", ""))):
        return None
    tp = inner
    origin = typing.get_origin(tp)
    try:
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            items = [i for i in items if not (isinstance(i, str) and i.strip() == "")]
            args = typing.get_args(tp)
            item_types = [args[0]] * len(items) if args[-1] is Ellipsis else list(args)
            if len(item_types) != len(items):
                raise ValueError(f"expected {len(item_types)} values")
            return tuple(parse_value(t, i, where) for t, i in zip(item_types, items, strict=True))
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
            return int(value) if not isinstance(value, str) else int(value.strip())
        if tp is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise ValueError("expected text")
            return value
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: cannot use {value!r} ({error})") from None
    raise ConfigError(f"{where}: unsupported field type {tp!r}")  # pragma: no cover


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


def _model_config_class(name: str) -> type:
    from latentspace.models import MODELS

    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name].config_class


def config_from_dict(raw: Mapping[str, Any], source: str = "config") -> Config:
    """Build a Config from nested dicts (a parsed TOML or config.json), checking every key."""
    unknown = sorted(set(raw) - {"data", "model", "train", "format_version", "latentspace_version"})
    if unknown:
        raise ConfigError(f"{source}: unknown section {unknown[0]!r}; valid: data, model, train")
    model_raw = dict(raw.get("model", {}))
    name = str(model_raw.pop("name", "vae"))
    model = replace_fields(_model_config_class(name)(), model_raw, "model")
    data = replace_fields(DataConfig(), dict(raw.get("data", {})), "data")
    train = replace_fields(TrainConfig(), dict(raw.get("train", {})), "train")
    config = Config(model=model, data=data, train=train)
    validate_config(config)
    return config


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain nested dicts of primitives (tuples become lists), ready for JSON or TOML."""
    result = {
        "model": dataclasses.asdict(config.model),
        "data": dataclasses.asdict(config.data),
        "train": dataclasses.asdict(config.train),
    }
    return json.loads(json.dumps(result))


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    return config_from_dict(raw, source=str(path))


def apply_overrides(config: Config, overrides: Iterable[str]) -> Config:
    """Apply `section.key=value` strings, e.g. `train.lr=3e-4` or `model.hidden_sizes=512,256`."""
    grouped: dict[str, dict[str, str]] = {"data": {}, "model": {}, "train": {}}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, field = key.strip().partition(".")
        if not sep or not dot or section not in grouped:
            raise ConfigError(
                f"cannot read override {item!r}: write section.key=value "
                "with section one of data, model, train"
            )
        grouped[section][field] = value
    model = config.model
    if "name" in grouped["model"]:
        name = grouped["model"].pop("name")
        if name != model.name:
            # switching family keeps the fields the two families share
            cls = _model_config_class(name)
            shared = {f.name for f in dataclasses.fields(cls)} - {"name"}
            kept = {k: v for k, v in dataclasses.asdict(model).items() if k in shared}
            model = replace_fields(cls(), kept, "model")
    config = Config(
        model=replace_fields(model, grouped["model"], "model"),
        data=replace_fields(config.data, grouped["data"], "data"),
        train=replace_fields(config.train, grouped["train"], "train"),
    )
    validate_config(config)
    return config


_CHOICES = {
    "train.optimizer": ("sgd", "adam", "adamw"),
    "train.schedule": ("constant", "cosine", "step"),
    "train.device": ("auto", "cpu", "cuda", "mps"),
    "train.precision": ("fp32", "bf16"),
    "data.binarize": ("none", "static", "dynamic"),
}


def validate_config(config: Config) -> None:
    """Check values that are of the right type but impossible, before anything is trained."""
    for key, choices in _CHOICES.items():
        section, field = key.split(".")
        value = getattr(getattr(config, section), field)
        if value not in choices:
            raise ConfigError(f"{key} = {value!r} is not one of: {', '.join(choices)}")
    t, d = config.train, config.data
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
        "train.threads": t.threads,
    }.items():
        if value < 0:
            raise ConfigError(f"{key} = {value} must be 0 or more")
    if not 0.0 <= d.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction = {d.val_fraction} must be in [0, 1)")
    if d.channels not in (None, 1, 3):
        raise ConfigError(f"data.channels = {d.channels} must be 1 or 3")
    if d.size is not None and d.size < 4:
        raise ConfigError(f"data.size = {d.size} must be at least 4 pixels")
    if d.limit is not None and d.limit < 2:
        raise ConfigError(f"data.limit = {d.limit} must be at least 2")
