"""Every --sampler the CLI offers runs a study out of the box (its package is a dependency)."""

from __future__ import annotations

from pathlib import Path

import pytest

from latentspace.cli import main
from latentspace.config import Config
from latentspace.runs import open_run
from latentspace.tune import config_to_toml
from latentspace.tune.study import JOURNAL, SAMPLERS

optuna = pytest.importorskip("optuna")

SPACE = """
[train]
epochs = 2
lr = { low = 1e-3, high = 3e-2, log = true }
batch_size = { choices = [16, 32] }
[model]
latent_dim = { low = 2, high = 4 }
"""


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_completes_a_small_study(
    sampler: str, tmp_path: Path, tiny_config: Config
) -> None:
    base, space = tmp_path / "base.toml", tmp_path / "space.toml"
    base.write_text(config_to_toml(tiny_config))
    space.write_text(SPACE)
    out = tmp_path / "study"
    args = ["tune", "--config", str(base), "--space", str(space), "--out", str(out)]
    args += ["--trials", "3", "--sampler", sampler, "--pruner", "none", "--seed", "0", "--quiet"]
    assert main(args) == 0
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / JOURNAL))
    )
    study = optuna.load_study(study_name="study", storage=storage)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 3, states
    assert (out / "best.toml").exists()


def test_set_fixes_a_setting_the_default_space_would_tune(
    tmp_path: Path, tiny_config: Config
) -> None:
    base = tmp_path / "base.toml"
    base.write_text(config_to_toml(tiny_config))
    out = tmp_path / "fixed"
    args = ["tune", "--config", str(base), "--out", str(out), "--trials", "2", "--quiet"]
    args += ["--set", "train.epochs=1", "--set", "train.optimizer=sgd", "--pruner", "none"]
    assert main(args) == 0
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / JOURNAL))
    )
    trials = optuna.load_study(study_name="fixed", storage=storage).trials
    assert len(trials) == 2 and all("train.optimizer" not in t.params for t in trials)
    assert all("train.lr" in t.params for t in trials), "the rest of the space is still searched"
    for trial in trials:
        config = open_run(trial.user_attrs["run_dir"]).config
        assert (config.train.epochs, config.train.optimizer) == (1, "sgd")
