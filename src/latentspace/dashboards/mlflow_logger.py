"""The MLflow logger: a run's params, per-epoch metrics and files in a local MLflow store (SQLite,
no server, nothing sent anywhere), continued by a resume (its run id is kept in
RUN/mlflow-run-id). mlflow is imported only when a logger starts.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from latentspace import runs
from latentspace.dashboards.records import (
    TrainerView,
    committed_epochs,
    epoch_scalars,
    flat_config,
    require,
)

__all__ = ["RUN_ID_FILE", "MLflowLogger", "prepare_mlflow_store"]

RUN_ID_FILE = "mlflow-run-id"  # in the run directory: the MLflow run a resume continues
_MARKER = "train/total"  # every family's epoch record has it: its history says what is logged


@contextlib.contextmanager
def _quiet_store() -> Iterator[None]:
    """MLflow 3.17's SQL store sets up its mappers on import (its first use) with a loader option
    SQLAlchemy 2.1 deprecates (SADeprecationWarning "The ``noload`` loader strategy is
    deprecated"), and a new store logs its schema migrations at INFO: neither concerns a user."""
    names = ("mlflow.store.db.utils", "alembic.runtime.migration")
    levels = {name: logging.getLogger(name).level for name in names}
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="The ``noload`` loader strategy", category=DeprecationWarning
        )
        try:
            for name in names:
                logging.getLogger(name).setLevel(logging.WARNING)
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path.resolve().as_posix()}"


def _open_store(uri: str, experiment: str, artifacts: Path | None = None) -> tuple[Any, str]:
    """(MlflowClient on `uri`, the id of `experiment`, created if need be). A new experiment
    keeps its artifacts in `artifacts`, else beside a SQLite store (DIR/mlartifacts, not in the
    working directory), else where the store says."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with _quiet_store():
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
    if found is not None:
        return client, str(found.experiment_id)
    if artifacts is None and uri.startswith("sqlite:///"):
        artifacts = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    location = artifacts.resolve().as_uri() if artifacts is not None else None
    try:
        return client, str(client.create_experiment(experiment, artifact_location=location))
    except MlflowException:  # another worker created it first
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return client, str(found.experiment_id)


def prepare_mlflow_store(tracking_uri: str, experiment: str = "latentspace") -> None:
    """Create the store's tables and the experiment now, in one process: a new store migrates
    its schema on first use (seconds), which workers starting together should not race to do."""
    require("mlflow", "MLflow logging")
    _open_store(tracking_uri, experiment)


class MLflowLogger:
    """Trainer callback logging to a local MLflow store: no server, nothing sent anywhere.

    tracking_uri: default `sqlite:///RUN/mlflow.db` (artifacts in RUN/mlartifacts); several runs
    may share one store (`sqlite:///DIR/mlflow.db`, artifacts in DIR/mlartifacts). The run's
    params are the flattened config; each committed epoch's terms, lr and samples/s are metrics
    at step = epoch; at the end config.json, metrics.jsonl, report.html and its PNGs (those
    present: call `log_run_files` again after writing a report) are artifacts. A resumed run
    continues the same MLflow run (RUN/mlflow-run-id), each epoch logged once."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = "latentspace") -> None:
        require("mlflow", "MLflow logging")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.client: Any = None
        self.run_id: str | None = None
        self.logged: set[int] = set()

    def on_train_start(self, trainer: TrainerView) -> None:
        run_dir = trainer.run_dir
        uri = self.tracking_uri or _sqlite_uri(run_dir / "mlflow.db")
        artifacts = (run_dir / "mlartifacts") if self.tracking_uri is None else None
        self.client, experiment_id = _open_store(uri, self.experiment, artifacts)
        self.run_id = self._resumed_run(run_dir) or self._new_run(trainer, experiment_id)
        history = self.client.get_metric_history(self.run_id, _MARKER)
        self.logged = {int(m.step) for m in history}
        self._log_params(trainer)
        self._log_epochs(trainer)  # committed epochs a killed process did not log

    def _resumed_run(self, run_dir: Path) -> str | None:
        """The MLflow run RUN/mlflow-run-id names, reopened; None when there is none in this
        store (a new run, or a resume pointed at another store)."""
        from mlflow.exceptions import MlflowException

        path = run_dir / RUN_ID_FILE
        if not path.is_file():
            return None
        run_id = path.read_text().strip()
        try:
            self.client.get_run(run_id)
        except MlflowException:
            return None
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def _new_run(self, trainer: TrainerView, experiment_id: str) -> str:
        run_dir = trainer.run_dir
        tags = {
            "latentspace.run_dir": str(run_dir.resolve()),
            "latentspace.model": trainer.model.name,
        }
        run = self.client.create_run(experiment_id, run_name=run_dir.name, tags=tags)
        run_id = str(run.info.run_id)
        runs.atomic_write(run_dir / RUN_ID_FILE, lambda tmp: tmp.write_text(run_id + "\n"))
        return run_id

    def _log_params(self, trainer: TrainerView) -> None:
        """The flattened config; a resume that changes a value (train.epochs, the new target)
        keeps the first as the param (MLflow's params cannot change) and tags the new one."""
        from mlflow.entities import Param, RunTag

        before = self.client.get_run(self.run_id).data.params
        params = {k: str(v)[:6000] for k, v in flat_config(trainer.config).items()}
        new = [Param(k, v) for k, v in params.items() if k not in before]
        changed = [RunTag(f"resumed/{k}", v) for k, v in params.items() if before.get(k, v) != v]
        for i in range(0, len(new), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=new[i : i + 100])
        if changed:
            self.client.log_batch(self.run_id, tags=changed)

    def _log_epochs(self, trainer: TrainerView) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(name, value, now, int(record["epoch"]))
            for record in committed_epochs(trainer)
            if int(record["epoch"]) not in self.logged
            for name, value in epoch_scalars(record).items()
        ]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a call
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])
        self.logged |= {int(m.step) for m in metrics}

    def on_epoch_end(self, trainer: TrainerView, record: dict[str, Any]) -> None:
        """After the commit: only committed epochs reach the store, each once."""
        if self.client is not None:
            self._log_epochs(trainer)

    def on_train_end(self, trainer: TrainerView) -> None:
        if self.client is None:
            return
        self._log_epochs(trainer)  # an epoch whose on_epoch_end another callback cut short
        self.log_run_files(trainer.run_dir)
        self.client.set_terminated(self.run_id, status="FINISHED")
        self.client = None

    def log_run_files(self, run_dir: str | Path) -> None:
        """Upload the run's config.json, metrics.jsonl, report.html and its PNGs (those present)."""
        if self.run_id is None:
            return
        client = self.client
        if client is None:  # after on_train_end: the report is written after training
            from mlflow.tracking import MlflowClient

            uri = self.tracking_uri or _sqlite_uri(Path(run_dir) / "mlflow.db")
            with _quiet_store():
                client = MlflowClient(tracking_uri=uri)
        folder = Path(run_dir)
        names = [runs.CONFIG, runs.METRICS, "diagnostics.jsonl", "report.html"]
        files = [folder / n for n in names] + sorted(folder.glob("*.png"))
        for path in files:
            if path.is_file():
                client.log_artifact(self.run_id, str(path))

    def close(self, status: str = "KILLED") -> None:
        """After an interruption (no on_train_end): end the MLflow run with `status` (KILLED,
        FAILED or FINISHED); a resume sets it running again. Nothing after a finished run."""
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)
            self.client = None
