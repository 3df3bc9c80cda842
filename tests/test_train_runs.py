from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

import latentspace as ls
from conftest import InterruptAfter
from latentspace import runs
from latentspace.config import Config, apply_overrides
from latentspace.data import prepare_data
from latentspace.errors import RunError, TrainingDiverged
from latentspace.models import MODELS, build_model
from latentspace.train import StopTraining, Trainer


def test_run_directory_contents(tiny_run: Path) -> None:
    names = {p.name for p in tiny_run.iterdir()}
    assert {"config.json", "model.safetensors", "trainer_state.pt", "metrics.jsonl"} <= names
    assert not [n for n in names if n.endswith(".tmp")], "no temporary files left behind"
    document = json.loads((tiny_run / "config.json").read_text())
    assert document["format_version"] == 1 and document["latentspace_version"]
    assert document["config"]["model"]["name"] == "vae"
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("train", "val", "lr", "seconds", "samples_per_s"):
        assert key in records[-1]
    assert {"reconstruction", "kl", "total"} <= set(records[-1]["val"])


def test_save_load_round_trip_is_exact(tiny_run: Path, tiny_npz: Path) -> None:
    run = ls.open_run(tiny_run)
    again = ls.load(tiny_run)
    for (name, a), (_, b) in zip(
        run.model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    x = ls.resolve(str(tiny_npz)).images[:4].float() / 255
    assert torch.equal(run.model.encode(x), again.encode(x))
    g1 = run.model.generate(3, generator=torch.Generator().manual_seed(0))
    g2 = again.generate(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(g1, g2)


@pytest.mark.parametrize(
    "model",
    [n for n, cls in MODELS.items() if cls.monitor is not None and cls.inputs == "images"],
)
def test_resume_equals_uninterrupted(tmp_path: Path, tiny_config: Config, model: str) -> None:
    config = apply_overrides(
        tiny_config,
        [
            f"model.name={model}",
            "train.epochs=4",
            "train.schedule=cosine",
            "model.dropout=0.1",
            "data.binarize=dynamic",
        ],
    )
    ls.train(config, tmp_path / "straight", quiet=True, report=False)
    with pytest.raises(KeyboardInterrupt):
        ls.train(
            config, tmp_path / "resumed", quiet=True, callbacks=[InterruptAfter(2)], report=False
        )
    assert ls.open_run(tmp_path / "resumed").metrics[-1]["epoch"] == 2
    ls.train(config, tmp_path / "resumed", resume=True, quiet=True, report=False)
    straight = safetensors.torch.load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = safetensors.torch.load_file(str(tmp_path / "resumed" / "model.safetensors"))
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    epochs = [r["epoch"] for r in ls.open_run(tmp_path / "resumed").metrics]
    assert epochs == [1, 2, 3, 4]


def test_existing_run_is_not_overwritten(tiny_run: Path, tiny_config: Config) -> None:
    with pytest.raises(RunError, match="already holds a run: pass --resume"):
        ls.train(tiny_config, tiny_run, quiet=True, report=False)


def test_divergence_names_the_learning_rate_and_keeps_last_good_state(
    tmp_path: Path, tiny_config: Config
) -> None:
    config = apply_overrides(
        tiny_config, ["train.optimizer=sgd", "train.lr=1e6", "train.momentum=0"]
    )
    with pytest.raises(TrainingDiverged, match=r"learning rate 1e\+06 is probably too high"):
        ls.train(config, tmp_path / "boom", quiet=True, report=False)
    model = ls.load(tmp_path / "boom")  # the initial or last completed epoch is still loadable
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_reading_losses_every_few_steps_gives_the_same_epoch(
    tmp_path: Path, tiny_config: Config
) -> None:
    """A GPU reads the running loss sums every 25 steps; the epoch's record and the divergence
    check must not depend on it (here on the CPU with the GPU's spacing forced)."""
    records = []
    for every in (1, 3):
        train_set, val_set = prepare_data(tiny_config)
        torch.manual_seed(0)
        model = build_model(tiny_config.model, train_set.image_shape, tiny_config.train)
        trainer = Trainer(
            model, train_set, val_set, tiny_config, tmp_path / f"e{every}", quiet=True
        )
        trainer.check_every = every
        records.append(trainer.fit()[-1]["train"])
    assert records[0] == pytest.approx(records[1], rel=1e-9)
    config = apply_overrides(
        tiny_config, ["train.optimizer=sgd", "train.lr=1e6", "train.momentum=0"]
    )
    train_set, val_set = prepare_data(config)
    trainer = Trainer(
        build_model(config.model, train_set.image_shape, config.train), train_set, val_set, config,
        tmp_path / "boom", quiet=True,
    )  # fmt: skip
    trainer.check_every = 3
    with pytest.raises(TrainingDiverged, match="probably too high"):
        trainer.fit()


def test_early_stopping_counts_patience(tmp_path: Path, tiny_config: Config) -> None:
    config = apply_overrides(tiny_config, ["train.patience=2", "train.min_delta=0.5"])
    train_set, val_set = prepare_data(config)
    model = build_model(config.model, train_set.image_shape, config.train)
    trainer = Trainer(model, train_set, val_set, config, tmp_path / "es", quiet=True)
    for epoch, value in enumerate([10.0, 9.0, 8.8, 9.5], start=1):
        trainer.epoch = epoch
        trainer._early_stopping(value)
    assert trainer.best_epoch == 2 and trainer.best_val == 9.0
    assert "not improved for 2 epochs (best 9 at epoch 2)" in trainer.stop_reason


def test_early_stopping_ends_a_real_run(tmp_path: Path, tiny_config: Config) -> None:
    # min_delta larger than any possible improvement: the first epoch is the best one
    config = apply_overrides(
        tiny_config, ["train.epochs=10", "train.patience=3", "train.min_delta=1e9"]
    )
    run = ls.train(config, tmp_path / "es", quiet=True, report=False)
    assert [r["epoch"] for r in run.metrics] == [1, 2, 3, 4]  # best at 1, then 3 without gain


def test_early_stopping_ends_with_the_best_epochs_weights(
    tmp_path: Path, tiny_config: Config
) -> None:
    """Epoch 1 is the best (min_delta huge): the run stops after epoch 3 and keeps epoch 1's
    weights, the weights a run of 1 epoch ends with, not those of its third epoch."""
    stopping = ["train.epochs=10", "train.patience=2", "train.min_delta=1e9"]
    run = ls.train(
        apply_overrides(tiny_config, stopping), tmp_path / "es", quiet=True, report=False
    )
    epochs = [r for r in run.metrics if r.get("kind") == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3] and epochs[-1]["restored_epoch"] == 1
    one = ls.train(
        apply_overrides(tiny_config, ["train.epochs=1"]), tmp_path / "one", quiet=True, report=False
    )
    three = ls.train(
        apply_overrides(tiny_config, ["train.epochs=3"]),
        tmp_path / "three",
        quiet=True,
        report=False,
    )
    kept = run.model.state_dict()
    for name, value in one.model.state_dict().items():
        torch.testing.assert_close(kept[name], value, rtol=0, atol=0)
    assert any(not torch.equal(kept[n], v) for n, v in three.model.state_dict().items())
    reloaded = ls.load(tmp_path / "es").state_dict()  # the files hold them too
    assert all(torch.equal(reloaded[n], v) for n, v in kept.items())


def test_stop_training_from_a_callback(tmp_path: Path, tiny_config: Config) -> None:
    class Stop:
        def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
            raise StopTraining("enough")

    config = apply_overrides(tiny_config, ["train.epochs=5"])
    run = ls.train(config, tmp_path / "s", quiet=True, callbacks=[Stop()], report=False)
    assert [r["epoch"] for r in run.metrics] == [1]


def test_time_limit_skips_an_epoch_that_would_not_fit(tmp_path: Path, tiny_config: Config) -> None:
    config = apply_overrides(tiny_config, ["train.epochs=5", "train.max_minutes=1"])
    train_set, val_set = prepare_data(config)
    model = build_model(config.model, train_set.image_shape, config.train)
    trainer = Trainer(model, train_set, val_set, config, tmp_path / "t", quiet=True)
    trainer.epoch, trainer.epoch_walls = 2, [20.0, 25.0]
    trainer.fit_started -= 30  # 30 s spent: the slowest epoch (25 s) still ends within 60 s
    assert trainer._time_is_up() == ""
    assert 29 < trainer.run_seconds_left() <= 30  # the limit's, not 3 more epochs' (~67 s)
    trainer.fit_started -= 10  # 40 s spent: it would end at 65 s
    assert "time limit: 0.7 of 1 minutes spent" in trainer._time_is_up()
    trainer.epoch = 5  # nothing left to skip
    assert trainer._time_is_up() == ""


def test_time_limit_stops_a_run_that_resume_continues(
    tmp_path: Path, tiny_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentspace.cli import main

    config = apply_overrides(tiny_config, ["train.epochs=3", "train.max_minutes=1e-9"])
    run = ls.train(config, tmp_path / "t", report=False, diagnostics=False)
    assert [r["epoch"] for r in run.metrics if r.get("kind") == "epoch"] == [1]
    assert "time limit" in capsys.readouterr().out
    argv = ["train", "--resume", str(tmp_path / "t"), "--max-minutes", "0", "--quiet"]
    assert main([*argv, "--no-report", "--no-diagnostics"]) == 0
    epochs = [r["epoch"] for r in ls.open_run(tmp_path / "t").metrics if r.get("kind") == "epoch"]
    assert epochs == [1, 2, 3]


def test_resumable_settings_are_one_rule_for_the_cli_and_train(
    tmp_path: Path, tiny_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`train --resume` and `train(resume=True)` both read settings.RESUMABLE_TRAIN_SETTINGS: a
    setting added there is taken by both; one not there (batch_size) by neither."""
    from latentspace import settings
    from latentspace.cli import main

    config = apply_overrides(tiny_config, ["train.epochs=1"])
    run = tmp_path / "r"
    ls.train(config, run, quiet=True, report=False, diagnostics=False)
    resumable = (*settings.RESUMABLE_TRAIN_SETTINGS, "lr")
    monkeypatch.setattr(settings, "RESUMABLE_TRAIN_SETTINGS", resumable)
    argv = ["train", "--resume", str(run), "--epochs", "2", "--lr", "0.5", "--quiet"]
    assert main([*argv, "--no-report", "--no-diagnostics"]) == 0
    assert runs.read_run_config(run)[0].train.lr == 0.5
    changed = apply_overrides(config, ["train.epochs=3", "train.lr=0.25", "train.batch_size=8"])
    ls.train(changed, run, resume=True, quiet=True, report=False, diagnostics=False)
    resumed = runs.read_run_config(run)[0].train
    assert (resumed.epochs, resumed.lr, resumed.batch_size) == (3, 0.25, 16)


def test_ae_generates_from_its_fitted_prior(tmp_path: Path, tiny_config: Config) -> None:
    config = apply_overrides(tiny_config, ["model.name=ae"])
    run = ls.train(config, tmp_path / "ae", quiet=True, report=False)
    model = run.model
    assert not torch.equal(model.prior_scale_tril, torch.eye(2)), "the prior was fitted"
    assert model.generate(5).shape == (5, 1, 12, 12)


def test_loading_damaged_runs_gives_one_line_errors(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not found"):
        ls.load(tmp_path / "nothing")
    weights = tiny_run / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match=r"model\.safetensors cannot be read .* truncated"):
        ls.load(tiny_run)
    weights.write_bytes(data)
    config_path = tiny_run / "config.json"
    document = json.loads(config_path.read_text())
    document["config"]["model"]["latent_dim"] = 5
    config_path.write_text(json.dumps(document))
    with pytest.raises(RunError, match="does not match .*config.json"):
        ls.load(tiny_run)
    config_path.write_text("{ truncated")
    with pytest.raises(RunError, match="config.json is not valid JSON"):
        ls.load(tiny_run)
    config_path.unlink()
    with pytest.raises(RunError, match="config.json is missing"):
        ls.load(tiny_run)


def test_loading_never_unpickles(tiny_run: Path) -> None:
    """trainer_state.pt is read with weights_only=True: a pickled object is refused."""

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (print, ("pwned",))

    torch.save({"epoch": 2, "evil": Evil()}, tiny_run / "trainer_state.pt")
    run = ls.open_run(tiny_run)
    with pytest.raises(RunError, match="cannot be read"):
        runs.read_trainer_state(
            tiny_run, build_model(run.config.model, run.image_shape, run.config.train)
        )


def test_run_files_get_the_usual_permissions(tiny_run: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "model.safetensors", "metrics.jsonl"):
        assert (tiny_run / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
