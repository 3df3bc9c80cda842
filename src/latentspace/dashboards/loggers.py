"""Loggers chosen by name (`--log tensorboard`, `--log mlflow`), and closed after a run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from latentspace.dashboards.mlflow_logger import MLflowLogger
from latentspace.dashboards.tensorboard_logger import TensorBoardLogger
from latentspace.errors import ConfigError

__all__ = ["LOGGERS", "close_loggers", "make_loggers"]

LOGGERS = ("tensorboard", "mlflow")


def close_loggers(loggers: Sequence[object], run_dir: str | Path, status: str = "KILLED") -> None:
    """Call after `train` returned or raised (in a `finally`): uploads the run's files, the report
    written after training included, to MLflow, and closes every logger that on_train_end did not
    (an interrupted or pruned run's MLflow run ends with `status`; its TensorBoard events are
    flushed)."""
    for logger in loggers:
        if isinstance(logger, MLflowLogger):
            logger.log_run_files(run_dir)
            logger.close(status)
        elif isinstance(logger, TensorBoardLogger):
            logger.close()


def make_loggers(
    names: Sequence[str],
    run_dir: str | Path,
    *,
    tracking_uri: str | None = None,
    experiment: str = "latentspace",
) -> list[object]:
    """The callbacks that `--log NAME` (repeatable) asks for, for the run in `run_dir`:
    "tensorboard" writes RUN/tensorboard, "mlflow" the MLflow store `tracking_uri` (default
    sqlite:///RUN/mlflow.db) under `experiment`. An unknown name, or a missing package, is a
    one-line ConfigError."""
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"--log {name!r} is not a logger: choose from {', '.join(LOGGERS)}")
    folder = Path(run_dir)
    loggers: list[object] = []
    for name in dict.fromkeys(names):  # --log twice logs once
        if name == "tensorboard":
            loggers.append(TensorBoardLogger(folder / "tensorboard"))
        else:
            loggers.append(MLflowLogger(tracking_uri, experiment))
    return loggers
