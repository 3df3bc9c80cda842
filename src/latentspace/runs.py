"""Run directories: the one saved artefact. Every write is atomic (temp file, then rename), and
loading executes no code from the files (JSON, safetensors, and `torch.load(weights_only=True)`).
A run of your own networks names them in config.json by import path (`package.module:Name`); loading
imports that installed module and builds them again, so nothing is unpickled.

    runs/NAME/
      config.json        format version, package version, image shape, the full resolved config
      model.safetensors  weights and buffers only (metadata: the epoch they belong to)
      trainer_state.pt   the commit point: epoch, weights, optimizers, schedulers, RNG states,
                         early-stopping state; written last at each checkpoint
      metrics.jsonl      one JSON object per epoch (and evaluation records)
      .lock              held (flock) by the process writing into the run

A checkpoint writes model.safetensors, metrics.jsonl (and diagnostics.jsonl) first and
trainer_state.pt last, so a kill at any instant leaves either the previous commit (whose epoch
a resume puts the other files back to) or the new one; a folder killed before its first commit
holds no run and the same command starts it again.

What config.json says (its checks, and configs saved by older versions brought up to today's) is
`run_config`'s; this module finds and reads the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from latentspace._version import __version__
from latentspace.config import Config, config_to_dict
from latentspace.errors import ConfigError, LatentspaceError, RunError
from latentspace.models import GenerativeModel, build_model
from latentspace.run_config import FORMAT_VERSION, config_from_document, is_whole
from latentspace.run_files import (
    BEST,
    CONFIG,
    LOCK,
    METRICS,
    RUN_FILES,
    STATE,
    WEIGHTS,
    atomic_write,
    check_writable,
    clean_temporary,
    lock_run,
)
from latentspace.run_weights import (
    file_sha256,
    load_tensors,
    read_weights,
    weights_epoch,
    weights_sha256,
)

__all__ = [
    "BEST",
    "CONFIG",
    "FORMAT_VERSION",
    "LOCK",
    "METRICS",
    "RUN_FILES",
    "STATE",
    "WEIGHTS",
    "Run",
    "append_metrics",
    "atomic_write",
    "check_out",
    "check_writable",
    "clean_temporary",
    "committed_epoch",
    "file_sha256",
    "foreign_files",
    "initialise_from",
    "load_best",
    "load_model",
    "lock_run",
    "open_run",
    "read_jsonl",
    "read_metrics",
    "read_trainer_state",
    "save_config",
    "save_model",
    "save_trainer_state",
    "weights_epoch",
    "weights_sha256",
    "write_metrics",
]

_APPEND_WAIT_S = 5.0  # how long a short writer (evaluate appending a record) waits for the lock


# ---- where a new run may go -------------------------------------------------------------------
def check_out(run_dir: Path, dataset: str) -> None:
    """Refuse, in one line, an --out for a new run that is a dangling link or a file, that lies
    inside the (folder) dataset, that already holds a run, or that holds files which are not a
    run's. A folder holding only a run killed before its first commit passes: it starts again."""
    if run_dir.is_symlink() and not run_dir.exists():
        raise RunError(
            f"{run_dir} is a symbolic link to {os.readlink(run_dir)}, which does not exist: "
            "create its target or choose another --out"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file, not a folder: choose another --out")
    source = Path(dataset).expanduser()
    if source.is_dir() and run_dir.resolve().is_relative_to(source.resolve()):
        raise RunError(
            f"{run_dir} is inside the dataset folder {source}: a run there would be read as "
            "images; choose an --out outside it"
        )
    if not run_dir.is_dir():
        return
    if (run_dir / STATE).exists():
        raise RunError(
            f"{run_dir} already holds a run: pass --resume to continue it, or choose another --out"
        )
    foreign = foreign_files(run_dir)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise RunError(
            f"{run_dir} is not empty and is not a latentspace run (it holds {foreign[0]}{more}): "
            "nothing was written; choose a new or empty --out"
        )
    if (run_dir / CONFIG).exists():
        try:
            _read_config(run_dir)
        except RunError as error:
            raise RunError(
                f"{run_dir} is not a latentspace run ({error}): nothing was written; choose a "
                "new or empty --out"
            ) from None


def foreign_files(run_dir: Path) -> list[str]:
    """Names in `run_dir` that training does not write (sorted)."""
    return sorted(p.name for p in run_dir.iterdir() if not _run_file(p.name))


def _run_file(name: str) -> bool:
    """One of the files training writes, or the temp file of a write of one."""
    return name in RUN_FILES or (
        name.endswith(".tmp") and any(name.startswith(f".{n}.") for n in RUN_FILES)
    )


def committed_epoch(run_dir: Path) -> int | None:
    """The epoch of the run's last commit (trainer_state.pt), None when it has none."""
    path = run_dir / STATE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged state is reported when the run is resumed
        return None
    epoch = state.get("epoch") if isinstance(state, dict) else None
    return epoch if isinstance(epoch, int) else None


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


def save_model(run_dir: Path, model: GenerativeModel, epoch: int, name: str = WEIGHTS) -> None:
    """The weights as `name` (model.safetensors; BEST for early stopping's best epoch)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"epoch": str(epoch), "model": model.name}
    atomic_write(
        run_dir / name,
        lambda tmp: safetensors.torch.save_file(tensors, str(tmp), metadata=metadata),
    )


def load_best(run_dir: Path, model: GenerativeModel, epoch: int) -> bool:
    """Put the weights saved as BEST into `model` when they are epoch `epoch`'s; False (the
    model untouched) when the file is missing, unreadable or of another epoch."""
    try:
        tensors, saved_epoch = read_weights(run_dir / BEST)
        if saved_epoch != epoch:
            return False
        load_tensors(run_dir / BEST, run_dir, model, tensors)
    except RunError:
        return False
    return True


def save_trainer_state(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_write(run_dir / STATE, lambda tmp: torch.save(state, tmp))


def write_metrics(run_dir: Path, records: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(run_dir / METRICS, lambda tmp: tmp.write_text(text))


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Add one record (e.g. an evaluation) to metrics.jsonl, atomically, holding the run's lock
    (two evaluations finishing together both keep their record)."""
    check_writable(run_dir / METRICS)  # a read-only run: name the file, not the lock
    with lock_run(run_dir, "appending to metrics.jsonl", wait=_APPEND_WAIT_S):
        write_metrics(run_dir, [*read_metrics(run_dir), record])


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(run_dir / METRICS, _metrics_problem)


def _metrics_problem(record: dict[str, Any]) -> str | None:
    if record.get("kind", "epoch") == "epoch" and not is_whole(record.get("epoch")):
        return "is an epoch record without a whole-number 'epoch'"
    return None


def read_jsonl(
    path: Path, problem: Callable[[dict[str, Any]], str | None] | None = None
) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file, one per line ([] when the file does not exist).

    A last line that does not parse is what a killed writer leaves: it is dropped with a warning.
    Any other damaged line, a line that is not an object, or one `problem(record)` describes,
    is a one-line RunError naming the file and line."""
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return []
    except OSError as error:
        raise RunError(f"{path} cannot be read: {error.strerror or error}") from None
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    records = []
    for number, line in numbered:
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if number == numbered[-1][0]:
                warnings.warn(
                    f"{path} line {number} is incomplete (a write was cut short): ignored",
                    stacklevel=2,
                )
                break
            raise RunError(f"{path} line {number} is not valid JSON") from None
        if not isinstance(record, dict):
            kind = {list: "an array", str: "a string", type(None): "null"}.get(
                type(record), "a number"
            )
            raise RunError(f"{path} line {number} is {kind}, not a JSON object")
        said = problem(record) if problem is not None else None
        if said:
            raise RunError(f"{path} line {number} {said}")
        records.append(record)
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
    if run_dir.is_file() and (run_dir.parent / CONFIG).is_file():
        raise RunError(
            f"{run_dir} is a file inside the run {run_dir.parent}: pass the run directory, "
            f"{run_dir.parent}"
        )
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} not found")
    path = run_dir / CONFIG
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        if (run_dir / LOCK).exists() and not foreign_files(run_dir):
            raise RunError(
                f"{path} is missing: the run in {run_dir} was stopped before it saved anything; "
                "start it again with the same `latentspace train --out` command"
            ) from None
        raise RunError(f"{path} is missing: {run_dir} is not a latentspace run") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunError(f"{path} is not valid JSON (truncated or edited?)") from None
    except OSError as error:
        raise RunError(f"{path} cannot be read: {error.strerror or error}") from None
    return config_from_document(document, path)


def initialise_from(source: str | Path, model: GenerativeModel) -> dict[str, Any]:
    """Load the weights of the run `source` into `model`, a new run's model built from its own
    settings (fine-tuning: other data, another loss, a new learning rate). The family and every
    tensor's name and shape must match; the optimizer and the schedule start afresh. Returns
    what the new run's config.json records about where it started."""
    source = Path(source)
    saved, _, _ = read_run_config(source)
    if saved.model.name != model.name:
        raise ConfigError(
            f"--init {source} is a {saved.model.name!r} run and this run trains a {model.name!r} "
            "model: start from a run of the same family"
        )
    path = source / WEIGHTS
    tensors, epoch = read_weights(path)
    load_tensors(
        path, source, model, tensors, against="this run's settings (--init needs the same networks)"
    )
    return {"run": str(source.resolve()), "weights_sha256": file_sha256(path), "epoch": epoch}


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
    tensors, _ = read_weights(run_dir / WEIGHTS)
    load_tensors(run_dir / WEIGHTS, run_dir, model, tensors)
    model.to(device).eval()
    return Run(path=run_dir, config=config, image_shape=image_shape, model=model, info=info)


# What a resume reads from trainer_state.pt (with its type), besides the optional ones
_STATE_KEYS = {
    "epoch": int,
    "optimizers": list,
    "schedulers": list,
    "rng_torch": torch.Tensor,
    "rng_batches": torch.Tensor,
    "best_val": float,
    "best_epoch": int,
    "bad_epochs": int,
}


def read_trainer_state(run_dir: Path, model: GenerativeModel) -> dict[str, Any] | None:
    """For --resume: the last commit's trainer state, its weights loaded into `model`. None when
    the run never committed one (killed before its first checkpoint: it starts from epoch 0)."""
    path = run_dir / STATE
    if not path.exists():
        if (run_dir / WEIGHTS).exists() and read_weights(run_dir / WEIGHTS)[1] > 0:
            raise RunError(f"{path} is missing: cannot resume {run_dir}")
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types for a damaged file
        raise RunError(
            f"{path} cannot be read ({type(error).__name__}); it may be truncated"
        ) from None
    if not isinstance(state, dict):
        raise RunError(f"{path} is not a trainer state (it holds a {type(state).__name__})")
    for key, kind in _STATE_KEYS.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise RunError(f"{path} lacks {key!r} (or it is damaged): cannot resume {run_dir}")
    if "model" in state:  # the committed weights
        load_tensors(path, run_dir, model, state["model"])
        return state
    # a run saved before trainer_state.pt held the weights: model.safetensors must be its epoch
    tensors, epoch = read_weights(run_dir / WEIGHTS)
    load_tensors(run_dir / WEIGHTS, run_dir, model, tensors)
    if state["epoch"] != epoch:
        raise RunError(
            f"{path} (epoch {state['epoch']}) and {run_dir / WEIGHTS} (epoch {epoch}) disagree: "
            "the run, saved by an older latentspace, was killed while saving; train it again"
        )
    return state


def read_run_config(run_dir: str | Path) -> tuple[Config, tuple[int, int, int], dict[str, Any]]:
    """config.json alone, without building the model."""
    return _read_config(Path(run_dir))
