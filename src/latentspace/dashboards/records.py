"""What both dashboards read of a run: the trainer's parts they use, the config as flat params,
an epoch record's numbers as scalars, the epochs committed so far; and the one-line error, before
training starts, when a logger's optional package is missing.

Both loggers log once per epoch from the epoch's record (numbers the trainer already read to the
host), so a dashboard never makes a GPU wait for a number.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Protocol

import torch

from latentspace.config import Config, config_to_dict
from latentspace.data import ImageSet
from latentspace.errors import ConfigError

__all__ = ["TrainerView", "committed_epochs", "epoch_scalars", "flat_config", "require"]

_EXTRA = "pip install 'latentspace[dashboards]'"


class TrainerView(Protocol):
    """What the loggers read of `latentspace.train.Trainer`."""

    model: Any  # GenerativeModel
    run_dir: Path
    epoch: int
    config: Config
    val_set: ImageSet | None
    train_batches: Any  # Batches
    device: torch.device
    records: list[dict[str, Any]]
    quiet: bool

    def log(self, line: str) -> None: ...


def flat_config(config: Config) -> dict[str, bool | int | float | str]:
    """The config as one level of `section.key` -> a primitive (lists and None as JSON text)."""
    flat: dict[str, bool | int | float | str] = {}
    for section, values in config_to_dict(config).items():
        for key, value in values.items():
            plain = isinstance(value, bool | int | float | str)
            flat[f"{section}.{key}"] = value if plain else json.dumps(value)
    return flat


def epoch_scalars(record: dict[str, Any]) -> dict[str, float]:
    """An epoch record's numbers by dashboard name: `train/TERM`, `val/TERM`, lr, samples/s."""
    scalars = {f"train/{k}": float(v) for k, v in record["train"].items()}
    scalars |= {f"val/{k}": float(v) for k, v in record.get("val", {}).items()}
    scalars["lr"] = float(record["lr"])
    scalars["samples_per_s"] = float(record["samples_per_s"])
    scalars["epoch_seconds"] = float(record["seconds"])
    return scalars


def committed_epochs(trainer: TrainerView) -> list[dict[str, Any]]:
    """The committed epoch records (up to trainer.epoch)."""
    return [
        r
        for r in trainer.records
        if r.get("kind", "epoch") == "epoch" and r["epoch"] <= trainer.epoch
    ]


def require(module: str, what: str) -> None:
    """A one-line error, before training starts, when an optional package is missing."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what} needs the {module} package: {_EXTRA}")
