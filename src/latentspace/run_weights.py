"""A run's weights file (model.safetensors): reading it with its epoch, loading tensors into a
model with every name, shape and value checked, and the SHA-256 that albums and exports name.
Reading executes no code from the file (safetensors holds tensors only)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from latentspace.errors import RunError
from latentspace.models import GenerativeModel
from latentspace.run_files import CONFIG, WEIGHTS

__all__ = ["file_sha256", "load_tensors", "read_weights", "weights_epoch", "weights_sha256"]


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(run_dir: str | Path) -> str:
    """Which weights a run holds: the SHA-256 of its model.safetensors. Codes files, ONNX
    manifests and the explorer's code cache record it, so they are never used with others."""
    return file_sha256(Path(run_dir) / WEIGHTS)


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], int]:
    """The tensors of model.safetensors and the epoch in its metadata."""
    if not path.exists():
        raise RunError(f"{path} is missing: the run has no weights (was it never trained?)")
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = safetensors.torch.load_file(str(path))
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        raise RunError(f"{path} cannot be read ({error}); it may be truncated") from None
    epoch = metadata.get("epoch", "0")
    if not epoch.isdigit():
        raise RunError(f"{path}: its metadata says epoch {epoch!r}, not a whole number")
    return tensors, int(epoch)


def load_tensors(
    path: Path,
    run_dir: Path,
    model: GenerativeModel,
    tensors: dict[str, torch.Tensor],
    against: str = "",
) -> None:
    """Load `tensors` (read from `path`) into `model`, checking names, shapes and values;
    `against`: what the model was built from, as a mismatch names it (the run's config.json)."""
    if not isinstance(tensors, dict) or not all(
        isinstance(v, torch.Tensor) for v in tensors.values()
    ):
        raise RunError(f"{path}: the weights are not a table of tensors")
    tensors = dict(tensors)
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
        raise RunError(f"{path} does not match {against or run_dir / CONFIG}: {detail}")
    # NaN weights make every output NaN (metrics appended, pictures written): refuse them here,
    # where every command that uses a run loads it, rather than warn in a stream of results
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise RunError(
                f"{path}: {key} holds NaN or infinite values; the weights are unusable "
                "(the run diverged or the file was damaged): train it again"
            )
    model.load_state_dict(tensors)


def weights_epoch(run_dir: Path) -> int | None:
    """The epoch model.safetensors belongs to; None when it is missing or cannot be read."""
    try:
        return read_weights(run_dir / WEIGHTS)[1]
    except RunError:
        return None
