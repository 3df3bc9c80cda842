"""`latentspace tune` on a text run: the default space keeps only the settings the sentence VAE
has, and each trial's value is the text model's validation loss. Tiny generated corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latentspace.cli import main
from test_text import sentences

optuna = pytest.importorskip("optuna")


def _validation_totals(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["val"]["total"] for r in map(json.loads, lines) if r.get("kind") == "epoch"]


def test_tune_a_sentence_vae_minimises_its_validation_loss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences(60)) + "\n", encoding="utf-8")
    out = tmp_path / "study"
    argv = ["tune", "--out", str(out), "--trials", "2", "--seed", "0", "--quiet"]
    argv += ["--model", "sentence_vae", "--dataset", str(corpus)]
    for setting in ("train.epochs=1", "model.hidden_size=8", "model.embedding_dim=4"):
        argv += ["--set", setting]
    assert main(argv) == 0
    assert "2 complete" in capsys.readouterr().out
    from latentspace.tune.study import JOURNAL

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / JOURNAL))
    )
    study = optuna.load_study(study_name="study", storage=storage)
    for trial in study.trials:
        assert "model.hidden_sizes" not in trial.params  # an image network's setting
        assert {"train.lr", "model.latent_dim"} <= set(trial.params)
        run = out / "trials" / f"{trial.number:04d}"
        assert trial.value == pytest.approx(min(_validation_totals(run)))
        config = json.loads((run / "config.json").read_text())
        assert config["config"]["model"]["name"] == "sentence_vae"
    assert 'name = "sentence_vae"' in (out / "best.toml").read_text()


def test_a_space_naming_an_image_setting_for_a_text_model_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = tmp_path / "space.toml"
    space.write_text('[model]\nactivation = { choices = ["relu", "gelu"] }\n')
    argv = ["tune", "--out", str(tmp_path / "s"), "--trials", "1", "--model", "sentence_vae"]
    assert main([*argv, "--space", str(space)]) != 0
    error = capsys.readouterr().err.strip()
    assert "unknown key 'model.activation'" in error and "\n" not in error
