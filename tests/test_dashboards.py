"""Live dashboards: what TensorBoard and MLflow hold after a run, read back with their own
readers; a resumed run continues its dashboards with each epoch once; every family logs and
trains to the same weights with or without the loggers; optuna-dashboard serves a study's
journal file."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

import latentspace as ls
from conftest import InterruptAfter
from latentspace.config import Config, apply_overrides
from latentspace.dashboards import (
    RUN_ID_FILE,
    MLflowLogger,
    TensorBoardLogger,
    close_loggers,
    epoch_scalars,
    flat_config,
    make_loggers,
    prepare_mlflow_store,
)
from latentspace.errors import ConfigError
from latentspace.models import MODELS

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


def _events(log_dir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow store for several runs, as a study would share, made before the runs start (a
    new store migrates its schema: seconds on a slow disk, so the tests make two in all)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    prepare_mlflow_store(uri, "prepared")
    assert _client(uri).get_experiment_by_name("prepared") is not None
    return uri


def _epochs(run: Path) -> list[dict[str, Any]]:
    return [r for r in ls.open_run(run).metrics if r.get("kind") == "epoch"]


def test_tensorboard_logs_each_term_per_epoch_pictures_and_the_projector(
    tmp_path: Path, tiny_config: Config
) -> None:
    out = tmp_path / "run"
    ls.train(tiny_config, out, quiet=True, report=False, callbacks=[TensorBoardLogger()])
    epochs = _epochs(out)
    events = _events(out / "tensorboard")
    tags = events.Tags()
    names = set(epoch_scalars(epochs[0]))
    assert {"train/total", "val/total", "val/kl", "lr", "samples_per_s"} <= names
    for name in names:
        logged = events.Scalars(name)
        assert [e.step for e in logged] == [1, 2], name
        expected = [epoch_scalars(r)[name] for r in epochs]
        assert [e.value for e in logged] == pytest.approx(expected, rel=1e-5), name
    assert {"samples", "reconstructions"} <= set(tags["images"])
    assert [e.step for e in events.Images("samples")] == [1, 2]
    assert [e.step for e in events.Images("reconstructions")] == [1, 2]
    # the projector: the codes of the held-out images, their labels and thumbnails
    projector = out / "tensorboard" / "projector_config.pbtxt"
    assert "held_out_codes" in projector.read_text()
    codes = out / "tensorboard" / "00002" / "held_out_codes"
    rows = (codes / "tensors.tsv").read_text().splitlines()
    n_val = ls.open_run(out).info["val_images"]
    assert len(rows) == n_val and len(rows[0].split("\t")) == tiny_config.model.latent_dim
    labels = (codes / "metadata.tsv").read_text().split()
    assert len(labels) == n_val and set(labels) <= {"0", "1", "2", "3"}
    assert (codes / "sprite.png").stat().st_size > 0
    assert list((out / "tensorboard" / "hparams").glob("events.out.tfevents.*"))


class InterruptAtCheckpoint:
    """Ctrl-C while epoch `epoch` is being checkpointed: after the loggers wrote it, before the
    commit (the epoch is trained again on resume)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_checkpoint(self, trainer: object, record: dict[str, object]) -> None:
        if record["epoch"] == self.epoch:
            raise KeyboardInterrupt


# where the first process stops: after the loggers saw epoch 1; after epoch 1's commit but
# before the loggers' on_epoch_end; during epoch 2's checkpoint, after the loggers wrote it
STOPS: dict[str, Callable[[MLflowLogger], list[object]]] = {
    "after-loggers": lambda mlflow: [mlflow, TensorBoardLogger(), InterruptAfter(1)],
    "before-loggers": lambda mlflow: [InterruptAfter(1), mlflow, TensorBoardLogger()],
    "uncommitted": lambda mlflow: [mlflow, TensorBoardLogger(), InterruptAtCheckpoint(2)],
}


@pytest.mark.parametrize("stop", list(STOPS))
def test_mlflow_logs_params_metrics_artifacts_and_a_resume_continues_the_same_run(
    tmp_path: Path, tiny_config: Config, shared_store: str, stop: str
) -> None:
    config = apply_overrides(tiny_config, ["train.epochs=3"])
    out = tmp_path / "run"
    # the default store (RUN/mlflow.db) once; the others in a store shared by several runs
    store = None if stop == "after-loggers" else shared_store
    uri = store or f"sqlite:///{(out / 'mlflow.db').resolve()}"
    artifact_root = (out if store is None else Path(shared_store[10:]).parent) / "mlartifacts"
    first = STOPS[stop](MLflowLogger(store, experiment=stop))
    with pytest.raises(KeyboardInterrupt):
        ls.train(config, out, quiet=True, report=False, callbacks=first, diagnostics=False)
    run_id = (out / RUN_ID_FILE).read_text().strip()
    close_loggers(first, out)  # what the CLI does in its `finally`
    assert _client(uri).get_run(run_id).info.status == "KILLED"
    mlflow_logger = MLflowLogger(store, experiment=stop)
    callbacks = [mlflow_logger, TensorBoardLogger()]
    ls.train(
        config, out, resume=True, quiet=True, report=False, callbacks=callbacks, diagnostics=False
    )
    assert (out / RUN_ID_FILE).read_text().strip() == run_id
    client = _client(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert run.data.params == {k: str(v) for k, v in flat_config(config).items()}
    epochs = _epochs(out)
    for name in epoch_scalars(epochs[0]):
        history = client.get_metric_history(run_id, name)
        assert sorted(m.step for m in history) == [1, 2, 3], name
    totals = {m.step: m.value for m in client.get_metric_history(run_id, "val/total")}
    assert totals == pytest.approx({r["epoch"]: r["val"]["total"] for r in epochs})
    # TensorBoard continued the same folder, each epoch once, with the committed values
    events = _events(out / "tensorboard")
    logged = events.Scalars("train/total")
    assert [e.step for e in logged] == [1, 2, 3]
    assert [e.value for e in logged] == pytest.approx([r["train"]["total"] for r in epochs])
    assert [e.step for e in events.Images("samples")] == [1, 2, 3]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.json", "metrics.jsonl"} <= artifacts
    assert (artifact_root / run_id / "artifacts" / "config.json").is_file()
    # a report is written after training (as `latentspace train` does): its files go up then
    (out / "report.html").write_text("<html></html>")
    (out / "losses.png").write_bytes(b"png")
    close_loggers(callbacks, out)  # uploads them; the finished run stays FINISHED
    assert client.get_run(run_id).info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.html", "losses.png"} <= artifacts


def test_a_slow_encoder_gets_no_reconstructions_and_a_smaller_embedding(
    tmp_path: Path, tiny_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timed at 2 images a second (an encoder that is an optimisation): reconstructing the 6
    held-out images each epoch would cost 3 s, so there are none (said in one line); the
    embedding gets what its budget (2 s here) affords."""
    from latentspace.dashboards import pictures

    monkeypatch.setattr(pictures, "affordable_encodes", lambda model, x, budget_s: 2)
    monkeypatch.setattr(pictures, "EMBEDDING_BUDGET_S", 2.0)
    lines: list[str] = []
    out = tmp_path / "run"
    callbacks = [TensorBoardLogger()]
    ls.train(tiny_config, out, log=lines.append, report=False, callbacks=callbacks)
    said = [line for line in lines if "no reconstructions" in line]
    assert len(said) == 1 and "6 images would take about 3.0 s each epoch" in said[0]
    events = _events(out / "tensorboard")
    assert "samples" in events.Tags()["images"]
    assert "reconstructions" not in events.Tags()["images"]
    rows = (out / "tensorboard" / "00002" / "held_out_codes" / "tensors.tsv").read_text()
    assert len(rows.splitlines()) == 4  # 2 a second for 2 s


@pytest.mark.parametrize("family", [n for n, cls in MODELS.items() if cls.inputs == "images"])
def test_every_family_logs_and_trains_the_same_weights(
    tmp_path: Path, tiny_config: Config, shared_store: str, family: str
) -> None:
    config = apply_overrides(tiny_config, [f"model.name={family}"])
    ls.train(config, tmp_path / "plain", quiet=True, report=False, diagnostics=False)
    out = tmp_path / "logged"
    loggers = make_loggers(
        ["tensorboard", "mlflow"], out, tracking_uri=shared_store, experiment=family
    )
    ls.train(config, out, quiet=True, report=False, callbacks=loggers, diagnostics=False)
    plain = safetensors.torch.load_file(str(tmp_path / "plain" / "model.safetensors"))
    logged = safetensors.torch.load_file(str(out / "model.safetensors"))
    assert plain.keys() == logged.keys()
    for key in plain:  # the pictures touch neither the weights nor the random state
        assert torch.equal(plain[key], logged[key]), key
    events = _events(out / "tensorboard")
    assert [e.step for e in events.Scalars("train/total")] == [1, 2]
    assert [e.step for e in events.Images("samples")] == [1, 2]
    run_id = (out / RUN_ID_FILE).read_text().strip()
    history = _client(shared_store).get_metric_history(run_id, "train/total")
    assert sorted(m.step for m in history) == [1, 2]


def test_an_unknown_logger_or_a_missing_package_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_loggers(["tensorboard", "wandb"], tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "'wandb'" in message and "tensorboard, mlflow" in message
    assert make_loggers([], tmp_path) == []
    assert len(make_loggers(["tensorboard", "tensorboard"], tmp_path)) == 1

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'latentspace\[dashboards\]'") as caught:
        make_loggers(["mlflow"], tmp_path)
    assert "\n" not in str(caught.value)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_optuna_dashboard_serves_a_study_journal(tmp_path: Path) -> None:
    """docs/tuning.md and docs/dashboards.md: `optuna-dashboard DIR/study.journal`."""
    command = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    command = command or shutil.which("optuna-dashboard")
    if command is None:
        pytest.skip("the optuna-dashboard command is not installed (latentspace[dashboards])")
    optuna = pytest.importorskip("optuna")
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "study.journal"
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.create_study(study_name="tiny-study", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", -1, 1) ** 2, n_trials=3)
    port = _free_port()
    server = subprocess.Popen(
        [command, str(journal), "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        listed: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                url = f"http://127.0.0.1:{port}/api/studies"
                with urllib.request.urlopen(url, timeout=5) as response:
                    listed = json.load(response)["study_summaries"]
                break
            except OSError:  # not listening yet
                time.sleep(0.2)
        assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
        assert [s["study_name"] for s in listed] == ["tiny-study"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        if server.stderr is not None:
            server.stderr.close()


def test_train_log_flag_writes_the_dashboards(tmp_path: Path, tiny_npz: Path) -> None:
    """`latentspace train --log tensorboard --log mlflow` attaches both loggers."""
    from latentspace.cli import main

    out = tmp_path / "run"
    args = ["train", "--dataset", str(tiny_npz), "--out", str(out), "--epochs", "1"]
    args += ["--hidden", "16", "--latent-dim", "2", "--no-report", "--quiet"]
    assert main([*args, "--log", "tensorboard", "--log", "mlflow"]) == 0
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "mlflow.db").exists() and (out / "mlflow-run-id").read_text().strip()


def test_tune_log_flag_gives_every_trial_its_dashboards(
    tmp_path: Path, tiny_config: Config
) -> None:
    """`latentspace tune --log tensorboard --log mlflow`: each trial's folder has its TensorBoard
    events, and the study's one MLflow store holds one run a trial under the study's name."""
    pytest.importorskip("optuna")
    from mlflow.tracking import MlflowClient

    from latentspace.cli import main
    from latentspace.tune import config_to_toml

    base = tmp_path / "base.toml"
    base.write_text(config_to_toml(tiny_config))
    space = tmp_path / "space.toml"
    space.write_text("[train]\nepochs = 1\nlr = { low = 1e-3, high = 1e-2, log = true }\n")
    out = tmp_path / "study"
    args = ["tune", "--config", str(base), "--space", str(space), "--out", str(out)]
    assert main([*args, "--trials", "2", "--quiet", "--log", "tensorboard", "--log", "mlflow"]) == 0
    for number in (0, 1):
        assert list((out / "trials" / f"{number:04d}" / "tensorboard").glob("events.*"))
    client = MlflowClient(tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("study")
    assert experiment is not None
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_experiment_trials_log_to_the_dashboards_asked_for(
    tmp_path: Path, tiny_config: Config
) -> None:
    """`latentspace experiment ... --log tensorboard`: every trial's run gets its events."""
    from latentspace.experiments._common import Context, Speed, run_trial

    ctx = Context(tmp_path, tiny_config.data.dataset, 60.0, 0, Speed(0.0, 0.0, 0.0, 0.0))
    ctx = dataclasses.replace(ctx, dashboards=("tensorboard",))
    trial = run_trial(ctx, "probe", "t1", tiny_config)
    assert list((trial.path / "tensorboard").glob("events.*"))
    plain = run_trial(dataclasses.replace(ctx, dashboards=()), "probe", "t2", tiny_config)
    assert not (plain.path / "tensorboard").exists()
