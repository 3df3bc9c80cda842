"""`latentspace tune`: the space, a small study with pruning, parallel workers, resume after kill."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from latentspace.cli import main  # noqa: E402
from latentspace.config import SHIPPED, Config, config_to_dict, load_config  # noqa: E402
from latentspace.errors import ConfigError  # noqa: E402
from latentspace.runs import open_run  # noqa: E402
from latentspace.tune import (  # noqa: E402
    DEFAULT_SPACE,
    config_to_toml,
    load_space,
    parse_space,
)
from latentspace.tune.study import JOURNAL, LOST  # noqa: E402

SPACE = """
[train]
epochs = 3
lr = { low = 1e-3, high = 3e-2, log = true }
batch_size = { choices = [16, 32] }
optimizer = "adam"
[model]
hidden_sizes = { layers = [1, 2], units = [8, 32], log = true }
latent_dim = { low = 2, high = 4 }
"""


def _write(tmp_path: Path, config: Config, space: str = SPACE) -> tuple[Path, Path]:
    base = tmp_path / "base.toml"
    base.write_text(config_to_toml(config))
    space_path = tmp_path / "space.toml"
    space_path.write_text(space)
    return base, space_path


def _load(out: Path) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(out / JOURNAL)))
    return optuna.load_study(study_name=out.name, storage=storage)


def _states(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


# ---- the space -------------------------------------------------------------------------------
def test_default_space_file_matches_the_code(tiny_config: Config) -> None:
    documented = tomllib.loads((SHIPPED / "tune-space.toml").read_text())
    assert (
        parse_space(documented, tiny_config).describe() == load_space(None, tiny_config).describe()
    )
    assert set(load_space(None, tiny_config).describe()) == set(DEFAULT_SPACE)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"train": {"learning_rate": {"low": 1, "high": 2}}}, "unknown key 'train.learning_rate'"),
        ({"train": {"lr": {"low": 0.1, "high": 0.01}}}, "impossible range"),
        ({"train": {"lr": {"low": 0.0, "high": 0.01, "log": True}}}, "log range needs low > 0"),
        ({"model": {"activation": {"choices": ["relu", "swish"]}}}, "unknown activation 'swish'"),
        ({"train": {"batch_size": {"low": 0, "high": 64}}}, "train.batch_size"),
        ({"exclude": ["train.nope"]}, "unknown key 'train.nope'"),
    ],
)
def test_bad_space_is_one_clear_error(tiny_config: Config, raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        parse_space(raw, tiny_config, "space.toml")
    assert "\n" not in str(error.value) and str(error.value).startswith("space.toml")


def test_space_suggests_conditional_hidden_layers_and_off(tiny_config: Config) -> None:
    space = parse_space({}, tiny_config)
    params = {
        "model.hidden_sizes.layers": 2,
        "model.hidden_sizes.1": 300,
        "model.hidden_sizes.2": 40,
        "train.l1.on": False,
        "train.l2.on": True,
        "train.l2": 1e-4,
        "train.lr": 0.003,
        "train.batch_size": 64,
        "train.optimizer": "sgd",
        "model.activation": "tanh",
        "model.latent_dim": 7,
    }
    config = space.apply(tiny_config, optuna.trial.FixedTrial(params))
    assert config.model.hidden_sizes == (300, 40)
    assert (config.train.l1, config.train.l2, config.train.optimizer) == (0.0, 1e-4, "sgd")
    assert (config.model.activation, config.model.latent_dim, config.train.epochs) == (
        "tanh",
        7,
        20,
    )


def test_best_toml_round_trips(tiny_config: Config, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(config_to_toml(tiny_config, "header"))
    assert config_to_dict(load_config(path)) == config_to_dict(tiny_config)


# ---- a study ---------------------------------------------------------------------------------
def test_study_with_pruning_has_every_state_and_a_trainable_best(
    tmp_path: Path, tiny_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    # conv with five stride-2 layers cannot fit a 12x12 image: those trials fail
    space = SPACE + 'architecture = { choices = ["mlp", "conv"] }\nchannels = [4, 4, 4, 4, 4]\n'
    base, space_path = _write(tmp_path, tiny_config, space)
    out = tmp_path / "study"
    args = ["tune", "--config", str(base), "--space", str(space_path), "--out", str(out)]
    args += ["--trials", "12", "--sampler", "random", "--pruner", "sha", "--seed", "0"]
    assert main(args) == 0
    study = _load(out)
    states = _states(study)
    assert states.get("COMPLETE", 0) >= 1 and states.get("PRUNED", 0) >= 1, states
    assert states.get("FAIL", 0) >= 1 and sum(states.values()) == 12, states
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert all("too small" in t.user_attrs["error"] for t in failed)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert all(t.user_attrs["epochs"] < 3 for t in pruned)
    # every trial that trained is a normal, loadable run
    for t in study.trials:
        if t.state.name != "FAIL":
            assert open_run(t.user_attrs["run_dir"]).config.train.epochs == 3
    with open(out / "trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["number"]) for r in rows] == list(range(12))
    html = (out / "tune-report.html").read_text()
    for heading in ("Optimisation history", "Parameter importances", "Parallel coordinates"):
        assert heading in html
    assert html.count("data:image/png;base64") >= 4
    assert (out / "best-run" / "TRIAL").read_text().strip() == str(study.best_trial.number)

    # best.toml trains as it is, with the best trial's settings
    assert (
        main(
            [
                "train",
                "--config",
                str(out / "best.toml"),
                "--out",
                str(tmp_path / "again"),
                "--quiet",
            ]
        )
        == 0
    )
    again = open_run(tmp_path / "again").config
    best = study.best_trial.params
    assert again.train.lr == pytest.approx(best["train.lr"])
    assert len(again.model.hidden_sizes) == best["model.hidden_sizes.layers"]

    # tune-report rebuilds the report from the storage alone
    (out / "tune-report.html").unlink()
    capsys.readouterr()
    assert main(["tune-report", str(out)]) == 0
    assert (out / "tune-report.html").exists() and "best: trial" in capsys.readouterr().out

    # the same command again: the study is complete, nothing more runs
    assert main(args) == 0
    assert len(_load(out).trials) == 12


def test_resumed_study_must_keep_its_config(tmp_path: Path, tiny_config: Config) -> None:
    base, space_path = _write(tmp_path, tiny_config)
    out = tmp_path / "s"
    args = ["tune", "--config", str(base), "--space", str(space_path), "--out", str(out), "--quiet"]
    assert main([*args, "--trials", "1", "--pruner", "none"]) == 0
    assert main([*args, "--trials", "2", "--set", "train.seed=5"]) == 1
    assert main([*args, "--trials", "2", "--study", "another"]) == 1  # its runs would mix


def _tune_command(base: Path, space: Path, out: Path, trials: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "latentspace.cli", "tune", "--config", str(base), "--space",
        str(space), "--out", str(out), "--trials", str(trials), "--sampler", "random",
        "--pruner", "none", *extra,
    ]  # fmt: skip


def _slow_config(tiny_config: Config, tmp_path: Path) -> Config:
    """A tiny config whose trials take about a second, so that a kill lands mid-trial."""
    import numpy as np

    from conftest import make_images
    from latentspace.config import apply_overrides

    path = tmp_path / "more.npz"
    np.savez(path, images=make_images(512), labels=np.zeros(512, dtype=np.int64))
    return apply_overrides(tiny_config, [f"data.dataset={path}"])


def test_two_workers_record_every_trial_exactly_once(tmp_path: Path, tiny_config: Config) -> None:
    base, space_path = _write(tmp_path, _slow_config(tiny_config, tmp_path))
    out = tmp_path / "par"
    result = subprocess.run(
        _tune_command(base, space_path, out, 6, "--workers", "2", "--quiet"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    trials = _load(out).trials
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both workers ran trials
    dirs = sorted(p.name for p in (out / "trials").iterdir())
    assert dirs == [f"{n:04d}" for n in range(6)]
    assert len({t.user_attrs["run_dir"] for t in trials}) == 6


def _running_trial(process: subprocess.Popen[str], study: Any) -> int:
    """The number of a trial that `tune` is training (it has reported at least one epoch)."""
    assert process.stdout is not None
    for line in process.stdout:  # one trial finished: the process is up
        if line.startswith("trial"):
            break
    deadline = time.time() + 60
    while time.time() < deadline and process.poll() is None:
        for t in study().trials:
            if t.state.name == "RUNNING" and len(t.intermediate_values) >= 1:
                return int(t.number)
        time.sleep(0.05)
    raise AssertionError("tune never trained a second trial")


def stop_during_a_trial(command: list[str], study: Any, sig: int) -> tuple[int, str]:
    """Start `tune` and send `sig` while it trains a trial; returns (that trial, the output).
    A signal that lands after the trial finished is tried again: the check needs a trial."""
    for _ in range(3):
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # a terminal's Ctrl-C: a job started in the background by a script (`make test &`)
            # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        number = _running_trial(process, study)
        os.kill(process.pid, sig)
        output = process.communicate(timeout=60)[0]
        trial = next(t for t in study().trials if t.number == number)
        if trial.state.name == "RUNNING" or trial.user_attrs.get(LOST):
            assert sig != signal.SIGINT or process.returncode == 130, output
            return number, output
    raise AssertionError("three signals in a row landed between trials")


def test_interrupted_or_killed_study_resumes_to_the_requested_count(
    tmp_path: Path, tiny_config: Config
) -> None:
    base, space_path = _write(tmp_path, _slow_config(tiny_config, tmp_path))
    out = tmp_path / "resume"
    command = _tune_command(base, space_path, out, 8)

    # Ctrl-C: the running trial is marked, best.toml and the report are written, exit 130
    number, _ = stop_during_a_trial(command, lambda: _load(out), signal.SIGINT)
    trials = _load(out).trials
    assert not [t for t in trials if t.state.name == "RUNNING"]
    assert trials[number].user_attrs[LOST] == "interrupted (Ctrl-C)"
    assert (out / "best.toml").exists() and (out / "tune-report.html").exists()

    # kill -9: the running trial stays RUNNING in the journal...
    number, _ = stop_during_a_trial(command, lambda: _load(out), signal.SIGKILL)
    assert [t.number for t in _load(out).trials if t.state.name == "RUNNING"] == [number]

    # ...until the next start fails it; the study then runs to the requested count
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"marked trials [{number}]" in result.stdout
    trials = _load(out).trials
    lost = [t for t in trials if t.user_attrs.get(LOST)]
    assert len(lost) == 2 and all(t.state.name == "FAIL" for t in lost)
    assert "died" in trials[number].user_attrs[LOST]
    counted = [t for t in trials if not t.user_attrs.get(LOST)]
    assert len(counted) == 8 and all(t.state.name == "COMPLETE" for t in counted)


def test_nll_objective_is_the_runs_importance_weighted_nll(
    tmp_path: Path, tiny_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentspace.analysis.evaluate import evaluate
    from latentspace.tune.study import NLL_SAMPLES

    base, space_path = _write(tmp_path, tiny_config)
    out = tmp_path / "nll"
    args = ["tune", "--config", str(base), "--space", str(space_path), "--out", str(out)]
    assert main([*args, "--trials", "1", "--objective", "nll", "--quiet"]) == 0
    trial = _load(out).trials[0]
    run = open_run(trial.user_attrs["run_dir"])
    expected = evaluate(run, split="val", nll_samples=NLL_SAMPLES)["nll"]
    assert trial.value == pytest.approx(expected, rel=1e-6)
    ae = ["--set", "model.name=ae"]
    assert main([*args[:-1], str(tmp_path / "ae"), "--trials", "1", "--objective", "nll", *ae]) == 1
    assert "--objective nll needs a family with a likelihood" in capsys.readouterr().err


def test_a_family_without_a_validation_loss_is_tuned_on_the_fid_of_its_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A GAN's d_loss + g_loss is minimised by neither player: its study minimises FID by
    default, prunes on the FID of a few samples after every epoch, and refuses val_loss."""
    import numpy as np

    from conftest import make_images
    from latentspace.config import default_config
    from latentspace.models import MODELS

    names = [name for name, cls in MODELS.items() if cls.monitor is None]
    if not names:
        pytest.skip("every registered family monitors a validation term")
    monkeypatch.setenv("LATENTSPACE_DATA", str(tmp_path / "home"))  # the feature network's cache
    blobs = tmp_path / "blobs.npz"
    np.savez(blobs, images=make_images(240, seed=1), labels=np.arange(240) % 3)
    config = default_config(
        names[0], dataset=str(blobs), batch_size=32, latent_dim=2, hidden_sizes=(16,), device="cpu"
    )
    space = "[train]\nepochs = 2\nlr = { low = 1e-4, high = 1e-3, log = true }\n"
    base, space_path = _write(tmp_path, config, space)
    out = tmp_path / "study"
    args = ["tune", "--config", str(base), "--space", str(space_path), "--out", str(out)]
    assert main([*args, "--trials", "1", "--quiet"]) == 0
    trial = _load(out).trials[0]
    assert trial.state.name == "COMPLETE"
    assert sorted(trial.intermediate_values) == [1, 2]
    assert all(0 < value < float("inf") for value in trial.intermediate_values.values())
    assert trial.value == pytest.approx(trial.user_attrs["fid"])
    assert json_objective(out) == "fid"
    capsys.readouterr()
    assert main([*args[:-1], str(tmp_path / "v"), "--trials", "1", "--objective", "val_loss"]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "no validation loss" in error and "--objective fid" in error


def json_objective(out: Path) -> str:
    """The objective a study records in its options file."""
    import json

    from latentspace.commands.tune import OPTIONS_FILE

    return str(json.loads((out / OPTIONS_FILE).read_text())["objective"])


# ---- feedback: n of N trials and the time left for the whole study ---------------------------
def test_time_left_counts_rounds_of_parallel_work_and_keeps_within_the_deadline() -> None:
    from latentspace.progress import parallel_seconds_left

    assert parallel_seconds_left([], 5) is None  # nothing finished: no estimate yet
    assert parallel_seconds_left([10.0, 20.0], 3) == 45.0  # 3 more at 15 s each
    assert parallel_seconds_left([10.0, 20.0], 3, workers=2) == 30.0  # two rounds
    assert parallel_seconds_left([10.0], 4, workers=2, deadline_left=12.0) == 12.0
    assert parallel_seconds_left([], 4, deadline_left=-3.0) == 0.0


def test_each_trial_line_says_n_of_n_and_the_studys_time_left(
    tmp_path: Path, tiny_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    base, space_path = _write(tmp_path, tiny_config, SPACE.replace("epochs = 3", "epochs = 1"))
    args = ["tune", "--config", str(base), "--space", str(space_path)]
    args += ["--sampler", "random", "--pruner", "none"]
    assert main([*args, "--trials", "2", "--out", str(tmp_path / "s")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trial ")]
    assert len(lines) == 2
    assert "  1/2 trials (about " in lines[0] and lines[0].endswith(" left)")
    assert lines[1].endswith("  2/2 trials")  # done: no estimate
    # the same study's workers under --quiet (run directly: the HTML report is not the point)
    import dataclasses
    import json

    from latentspace.tune.study import TuneOptions
    from latentspace.tune.workers import run_study

    saved = json.loads((tmp_path / "s" / "tune.json").read_text())
    options = TuneOptions(**{**saved, "trials": 3, "quiet": True})
    assert len(run_study(dataclasses.replace(options, quiet=False)).trials) == 3
    assert "3/3 trials" in capsys.readouterr().out
    run_study(dataclasses.replace(options, trials=4))
    assert len(_load(tmp_path / "s").trials) == 4 and capsys.readouterr().out == ""
