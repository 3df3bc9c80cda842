"""Run directories: the one saved artefact. Every write is atomic (temp file, then rename), and
loading executes no code from the files (JSON, safetensors, and `torch.load(weights_only=True)`).
A run of your own networks names them in config.json by import path (`package.module:Name`); loading
imports that installed module and builds them again, so nothing is unpickled.

    runs/NAME/
      config.json        format version, package version, image shape, the full resolved config
      model.safetensors  weights and buffers only (metadata: the epoch they belong to)
      trainer_state.pt   optimizers, schedulers, epoch, RNG states, early-stopping state
      metrics.jsonl      one JSON object per epoch (and evaluation records)
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from latentspace._version import __version__
from latentspace.config import Config, config_from_dict, config_to_dict
from latentspace.errors import LatentspaceError, RunError
from latentspace.models import GenerativeModel, build_model

__all__ = [
    "FORMAT_VERSION",
    "Run",
    "append_metrics",
    "atomic_write",
    "load_model",
    "open_run",
    "read_jsonl",
    "read_metrics",
    "read_trainer_state",
    "save_config",
    "save_model",
    "save_trainer_state",
    "write_metrics",
]

FORMAT_VERSION = 1
CONFIG, WEIGHTS, STATE, METRICS = (
    "config.json",
    "model.safetensors",
    "trainer_state.pt",
    "metrics.jsonl",
)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp) on a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 less umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_config(
    run_dir: Path,
    config: Config,
    image_shape: tuple[int, int, int],
    extra: dict[str, Any] | None = None,
) -> None:
    document = {
        "format_version": FORMAT_VERSION,
        "latentspace_version": __version__,
        "image_shape": list(image_shape),
        **(extra or {}),
        "config": config_to_dict(config),
    }
    text = json.dumps(document, indent=2) + "\n"
    atomic_write(run_dir / CONFIG, lambda tmp: tmp.write_text(text))


def save_model(run_dir: Path, model: GenerativeModel, epoch: int) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"epoch": str(epoch), "model": model.name}
    atomic_write(
        run_dir / WEIGHTS,
        lambda tmp: safetensors.torch.save_file(tensors, str(tmp), metadata=metadata),
    )


def save_trainer_state(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_write(run_dir / STATE, lambda tmp: torch.save(state, tmp))


def write_metrics(run_dir: Path, records: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(run_dir / METRICS, lambda tmp: tmp.write_text(text))


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Add one record (e.g. an evaluation) to metrics.jsonl, atomically."""
    write_metrics(run_dir, [*read_metrics(run_dir), record])


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(run_dir / METRICS)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file, one per line ([] when the file does not exist)."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise RunError(f"{path} line {number} is not valid JSON") from None
    return records


@dataclasses.dataclass
class Run:
    """A run directory opened for use."""

    path: Path
    config: Config
    image_shape: tuple[int, int, int]
    model: GenerativeModel
    info: dict[str, Any]  # config.json's other entries (versions, classes, ...)

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)


def _read_config(run_dir: Path) -> tuple[Config, tuple[int, int, int], dict[str, Any]]:
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} not found")
    path = run_dir / CONFIG
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path} is missing: {run_dir} is not a latentspace run") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunError(f"{path} is not valid JSON (truncated or edited?)") from None
    if not isinstance(document, dict) or "config" not in document or "image_shape" not in document:
        raise RunError(f"{path} lacks 'config' or 'image_shape': not a latentspace run config")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise RunError(
            f"{path} has format version {version}; this latentspace reads {FORMAT_VERSION}"
        )
    try:
        config = config_from_dict(document["config"], source=str(path))
    except LatentspaceError as error:
        raise RunError(f"{path}: {error}") from None
    c, h, w = (int(v) for v in document["image_shape"])
    info = {k: v for k, v in document.items() if k not in ("config", "image_shape")}
    return config, (c, h, w), info


def _load_weights(run_dir: Path, model: GenerativeModel) -> int:
    """Load model.safetensors into `model`; returns the epoch stored in its metadata."""
    path = run_dir / WEIGHTS
    if not path.exists():
        raise RunError(f"{path} is missing: the run has no weights (was it never trained?)")
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = safetensors.torch.load_file(str(path))
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        raise RunError(f"{path} cannot be read ({error}); it may be truncated") from None
    expected = model.state_dict()
    for key in model.optional_state & (set(expected) - set(tensors)):
        tensors[key] = expected[key]
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = (
            f"missing {missing[0]}"
            if missing
            else f"unexpected {unexpected[0]}"
            if unexpected
            else f"{wrong[0]} has shape {tuple(tensors[wrong[0]].shape)}, "
            f"config says {tuple(expected[wrong[0]].shape)}"
        )
        raise RunError(f"{path} does not match {run_dir / CONFIG}: {detail}")
    model.load_state_dict(tensors)
    return int(metadata.get("epoch", "0"))


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> GenerativeModel:
    """The trained model of a run, in eval mode: `model.encode(x)`, `model.decode(z)`, ..."""
    return open_run(run_dir, device).model


def open_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    run_dir = Path(run_dir)
    config, image_shape, info = _read_config(run_dir)
    try:
        # networks named by import path (model.encoder / model.decoder) are imported here:
        # installed code, never code from the run directory
        model = build_model(config.model, image_shape, config.train)
    except LatentspaceError as error:
        raise RunError(f"{run_dir / CONFIG}: {error}") from None
    _load_weights(run_dir, model)
    model.to(device).eval()
    return Run(path=run_dir, config=config, image_shape=image_shape, model=model, info=info)


def read_trainer_state(run_dir: Path, model: GenerativeModel) -> dict[str, Any]:
    """For --resume: load the weights into `model` and return the trainer state, checking that
    both belong to the same epoch."""
    path = run_dir / STATE
    if not path.exists():
        raise RunError(f"{path} is missing: cannot resume {run_dir}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types for a damaged file
        raise RunError(
            f"{path} cannot be read ({type(error).__name__}); it may be truncated"
        ) from None
    epoch = _load_weights(run_dir, model)
    if not isinstance(state, dict) or state.get("epoch") != epoch:
        raise RunError(
            f"{path} (epoch {state.get('epoch') if isinstance(state, dict) else '?'}) "
            f"and {run_dir / WEIGHTS} (epoch {epoch}) disagree: the run was killed "
            "while saving; start it again"
        )
    return state


def read_run_config(run_dir: str | Path) -> tuple[Config, tuple[int, int, int], dict[str, Any]]:
    """config.json alone, without building the model."""
    return _read_config(Path(run_dir))
