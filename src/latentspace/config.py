"""Configuration: frozen dataclasses of primitives, TOML files and `section.key=value` overrides.

A `Config` has three sections. `data` and `train` are the same for every model (they live in
`latentspace.settings`, which the models import); `model` is the model family's own dataclass,
chosen by `model.name` through the registry in `latentspace.models`. Defaults are written once, on the dataclasses; TOML files, CLI
flags and tuning trials are all overrides applied with `dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from latentspace.data import named_dataset
from latentspace.errors import ConfigError
from latentspace.models import DEFAULT_MODEL, MODELS
from latentspace.settings import (
    DataConfig,
    TrainConfig,
    parse_value,
    replace_fields,
    validate_settings,
)

__all__ = [
    "DEFAULT_MODEL",
    "SHIPPED",
    "Config",
    "DataConfig",
    "TrainConfig",
    "apply_overrides",
    "check_dataset_settings",
    "config_from_dict",
    "config_path",
    "config_to_dict",
    "default_config",
    "describe_shipped",
    "is_search_space",
    "load_config",
    "parse_value",
    "replace_fields",
    "shipped_configs",
]

# The TOML files that ship with the package (package data): `--config NAME` finds one from any
# folder, `latentspace configs` lists them.
SHIPPED = Path(__file__).parent / "configs"


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run: data, model and training. `model` is a model family's config dataclass."""

    model: Any
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    @property
    def model_name(self) -> str:
        return str(self.model.name)


def _model_config_class(name: str) -> type:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name].config_class


def config_from_dict(raw: Mapping[str, Any], source: str = "config") -> Config:
    """Build a Config from nested dicts (a parsed TOML or config.json), checking every key."""
    unknown = sorted(set(raw) - {"data", "model", "train", "format_version", "latentspace_version"})
    if unknown:
        raise ConfigError(f"{source}: unknown section {unknown[0]!r}; valid: data, model, train")
    model_raw = dict(raw.get("model", {}))
    name = str(model_raw.pop("name", DEFAULT_MODEL))
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


def shipped_configs() -> dict[str, Path]:
    """The shipped TOML files by name (the file name without .toml), sorted."""
    return {path.stem: path for path in sorted(SHIPPED.glob("*.toml"))}


def describe_shipped(path: Path) -> str:
    """The first comment line of a shipped file: what it is for."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and line.strip("# "):
            return line.lstrip("#").strip()
    return ""


def is_search_space(raw: Mapping[str, Any]) -> bool:
    """Whether a parsed TOML is a `latentspace tune --space` file (entries are tables such as
    {low, high} or {choices}) rather than a config of plain values."""
    return any(
        isinstance(value, dict)
        for section in raw.values()
        if isinstance(section, dict)
        for value in section.values()
    )


def _is_name(spec: str) -> bool:
    """A bare name (`demo`): no folder, no .toml; anything else is a path."""
    return bool(spec) and "/" not in spec and "\\" not in spec and not spec.endswith(".toml")


def config_path(spec: str | Path, what: str = "config") -> Path:
    """The file `spec` names: a shipped file by its bare name (`demo`), else a path as given."""
    text = str(spec)
    if not _is_name(text) or Path(text).is_file():
        return Path(spec)
    shipped = shipped_configs()
    if text not in shipped:
        raise ConfigError(
            f"no shipped {what} named {text!r}; shipped: {', '.join(shipped)} "
            "(`latentspace configs`), or give the path of a .toml file"
        )
    return shipped[text]


def load_config(path: str | Path) -> Config:
    """A TOML config file, or a shipped one by name (`load_config("demo")`)."""
    path = config_path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))  # TOML files are UTF-8
    except FileNotFoundError:
        hint = (
            f" (a shipped config is named without .toml: --config {path.stem})"
            if path.stem in shipped_configs() and not path.is_absolute()
            else ""
        )
        raise ConfigError(f"config file {path} not found{hint}") from None
    except IsADirectoryError:
        raise ConfigError(
            f"config file {path} is a directory: give a .toml file, or the name of a shipped "
            "config (`latentspace configs`)"
        ) from None
    except OSError as error:  # permissions, a device, ...
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    if is_search_space(raw):
        raise ConfigError(
            f"{path} is a search space for `latentspace tune --space`, not a config: give it "
            "with --space"
        )
    config = config_from_dict(raw, source=str(path))
    check_dataset_settings(config.data, str(path))
    _check_written_model(config.model, str(path))
    return config


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
    model_written = bool(grouped["model"])
    if "name" in grouped["model"]:
        name = grouped["model"].pop("name")
        if name != model.name:
            # switching family keeps the shared fields that were set (differ from the old
            # family's defaults); the rest take the new family's own defaults (a sentence VAE's
            # latent_dim is 32, not the image VAE's 16)
            cls = _model_config_class(name)
            shared = {f.name for f in dataclasses.fields(cls)} - {"name"}
            defaults = dataclasses.asdict(type(model)())
            kept = {
                k: v
                for k, v in dataclasses.asdict(model).items()
                if k in shared and v != defaults.get(k)
            }
            model = replace_fields(cls(), kept, "model")
    config = Config(
        model=replace_fields(model, grouped["model"], "model"),
        data=replace_fields(config.data, grouped["data"], "data"),
        train=replace_fields(config.train, grouped["train"], "train"),
    )
    validate_config(config)
    if grouped["data"]:
        check_dataset_settings(config.data)
    if model_written:
        _check_written_model(config.model)
    return config


def check_dataset_settings(data: DataConfig, source: str = "") -> None:
    """data.size and data.channels resize and convert an image folder; a named dataset has one
    shape and would ignore them while config.json recorded them. Checked where a user writes the
    data section (a TOML file, overrides, flags), not when a saved run is read: runs saved before
    this check still open and resume."""
    name = named_dataset(data.dataset)
    if name is None:
        return
    for key in ("size", "channels"):
        value = getattr(data, key)
        if value is not None:
            raise ConfigError(
                f"{source + ': ' if source else ''}data.{key} = {value} applies to image folders "
                f"only; {name!r} is a named dataset of one image shape: leave data.{key} out"
            )


def _check_written_model(model: Any, source: str = "") -> None:
    """The model section's checks of written settings (see NetworkConfig.check_written)."""
    check = getattr(model, "check_written", None)
    if callable(check):
        try:
            check()
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}" if source else str(error)) from None


def validate_config(config: Config) -> None:
    """Check values that are of the right type but impossible, before anything is trained (the
    model section checks itself when it is built from its values)."""
    validate_settings(config.data, config.train)


def default_config(model: str = DEFAULT_MODEL, **overrides: object) -> Config:
    """A Config with every default, for the model family `model`; keyword overrides name a field
    of any section (`dataset="fashion-mnist"`, `lr=3e-4`, `latent_dim=2`)."""
    config = apply_overrides(Config(model=MODELS[model].config_class()), [])
    items = []
    sections = {"data": config.data, "train": config.train, "model": config.model}
    for key, value in overrides.items():
        owners = [s for s, obj in sections.items() if hasattr(obj, key) and key != "name"]
        if len(owners) != 1:
            problem = "is ambiguous (data.channels or model.channels?)" if owners else "is unknown"
            raise ConfigError(
                f"default_config: setting {key!r} {problem}; use "
                "apply_overrides(config, ['section.key=value'])"
            )
        text = ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)
        items.append(f"{owners[0]}.{key}={text}")
    return apply_overrides(config, items)
