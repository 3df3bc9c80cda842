"""`train --init RUN`: a new run that starts from another run's weights (fine-tuning)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import latentspace as ls
from latentspace.cli import main
from latentspace.config import Config
from latentspace.errors import ConfigError, RunError
from latentspace.runs import weights_sha256


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return ls.load(run).state_dict()


def test_a_new_run_starts_from_the_weights_of_the_run_it_names(
    tmp_path: Path, tiny_run: Path, tiny_config: Config
) -> None:
    # other training settings and another regulariser: a step at lr 1e-12 moves no weight by
    # more than ~1e-12, so the new run's weights are the old run's
    config = ls.apply_overrides(tiny_config, ["train.lr=1e-12", "train.epochs=1", "train.l2=0.1"])
    said: list[str] = []
    fine = ls.train(config, tmp_path / "fine", init=tiny_run, log=said.append, report=False)
    assert said[0] == f"starting from the weights of {tiny_run} (its epoch 2)"
    before, after = _weights(tiny_run), _weights(fine.path)
    assert before.keys() == after.keys()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=1e-9, msg=key)
    started = json.loads((fine.path / "config.json").read_text())["initialised_from"]
    assert started["weights_sha256"] == weights_sha256(tiny_run) and started["epoch"] == 2
    # a fresh start at the same settings is somewhere else entirely
    fresh = ls.train(config, tmp_path / "fresh", quiet=True, report=False)
    assert any(not torch.equal(_weights(fresh.path)[k], v) for k, v in before.items())


def test_init_refuses_other_networks_another_family_and_resume(
    tmp_path: Path, tiny_run: Path, tiny_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    wider = ls.apply_overrides(tiny_config, ["model.hidden_sizes=48"])
    with pytest.raises(RunError, match=r"does not match this run's settings \(--init needs the"):
        ls.train(wider, tmp_path / "wider", init=tiny_run, quiet=True, report=False)
    assert not (tmp_path / "wider").exists(), "a refused start leaves no folder behind"
    ae = ls.default_config("ae", dataset=tiny_config.data.dataset, epochs=1, device="cpu")
    with pytest.raises(ConfigError, match="is a 'vae' run and this run trains a 'ae' model"):
        ls.train(ae, tmp_path / "ae", init=tiny_run, quiet=True, report=False)
    with pytest.raises(ConfigError, match="not with resume"):
        ls.train(tiny_config, tiny_run, init=tiny_run, resume=True, quiet=True, report=False)
    assert main(["train", "--resume", str(tiny_run), "--init", str(tiny_run)]) == 1
    assert "--init starts a new run; --resume continues one" in capsys.readouterr().err
    out = str(tmp_path / "nowhere")
    assert main(["train", "--init", str(tmp_path / "missing"), "--out", out, "--quiet"]) == 1
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "missing" in said[0]
