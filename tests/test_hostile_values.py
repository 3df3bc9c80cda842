"""Hostile values (issue 24): settings and arguments that were silently accepted, or crashed with
a traceback, are one-line errors that name the key, the value or the file; seeded studies never
repeat a trial; best.toml survives any dataset path; decode refuses another run's codes."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

import latentspace as ls
from latentspace.cli import main
from latentspace.commands import use
from latentspace.config import Config, apply_overrides, config_from_dict, load_config
from latentspace.errors import ConfigError
from latentspace.models.vae import VAEConfig
from latentspace.settings import DataConfig, TrainConfig, validate_settings


def _one_line_error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    """Run the CLI, expect exit 1 and one line on stderr; return that line."""
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("latentspace: error: ") and err.count("\n") == 1, err
    return err


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--dataset", str(data), "--out", str(out), "--epochs", "1", "--batch-size",
        "16", "--latent-dim", "2", "--hidden", "16", "--quiet", "--no-report", *extra,
    ]  # fmt: skip


# ---- 1. non-finite floats ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("family", "override"),
    [
        ("vae", "train.lr=inf"),
        ("vae", "train.momentum=nan"),
        ("vae", "train.weight_decay=inf"),
        ("vae", "train.l1=inf"),
        ("vae", "train.l2=inf"),
        ("vae", "train.grad_clip=inf"),
        ("vae", "train.min_lr=nan"),
        ("vae", "train.gamma=inf"),
        ("vae", "train.min_delta=nan"),
        ("vae", "train.betas=0.9,nan"),
        ("vae", "model.beta=inf"),
        ("vae", "model.gaussian_std=inf"),
        ("gan", "model.gp_weight=inf"),
        ("gan", "model.lr_d=inf"),
        ("gan", "model.feature_matching=nan"),
    ],
)
def test_non_finite_floats_are_refused(family: str, override: str) -> None:
    key, _, value = override.partition("=")
    with pytest.raises(ConfigError, match=rf"{key}: cannot use '.*{value}'.*finite") as error:
        apply_overrides(ls.default_config(family), [override])
    assert "\n" not in str(error.value)


def test_non_finite_floats_from_toml_python_and_the_cli_are_refused(
    tmp_path: Path, tiny_npz: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "inf.toml"
    toml.write_text("[train]\nlr = inf\n")  # TOML has inf and nan literals
    with pytest.raises(ConfigError, match=r"train\.lr: cannot use inf"):
        load_config(toml)
    with pytest.raises(ConfigError, match=r"train\.lr = inf: give a finite number"):
        validate_settings(DataConfig(), TrainConfig(lr=math.inf))
    with pytest.raises(ConfigError, match=r"model\.beta = nan: give a finite number"):
        VAEConfig(beta=math.nan).validate()
    err = _one_line_error(capsys, _train_args(tiny_npz, tmp_path / "run", "--lr", "inf"))
    assert "train.lr: cannot use 'inf' (expected a finite number)" in err
    assert not (tmp_path / "run").exists()


# ---- 2. an empty --hidden ---------------------------------------------------------------------
def test_an_mlp_without_hidden_layers_is_an_error(
    tmp_path: Path, tiny_npz: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _one_line_error(capsys, [*_train_args(tiny_npz, tmp_path / "run"), "--hidden", ""])
    assert "model.hidden_sizes is empty" in err and "512,256" in err
    assert not (tmp_path / "run").exists()
    # the meanings of empty that stay: a conv model ignores hidden_sizes, and a GAN's empty
    # d_hidden_sizes means "the generator's"
    conv = apply_overrides(ls.default_config("vae"), ["model.architecture=conv"])
    assert apply_overrides(conv, ["model.hidden_sizes="]).model.hidden_sizes == ()
    assert ls.default_config("gan").model.d_hidden_sizes == ()
    # a run saved before the check (a linear model) still opens: the check is on written settings
    from latentspace import runs
    from latentspace.models import build_model

    linear = dataclasses.replace(ls.default_config("vae").model, hidden_sizes=(), latent_dim=2)
    model = build_model(linear, (1, 12, 12))
    config = dataclasses.replace(ls.default_config("vae", dataset=str(tiny_npz)), model=linear)
    runs.save_config(tmp_path / "old", config, (1, 12, 12))
    runs.save_model(tmp_path / "old", model, 0)
    assert ls.open_run(tmp_path / "old").model.config.hidden_sizes == ()


# ---- 3. --size / channels on a named dataset --------------------------------------------------
def test_size_and_channels_on_a_named_dataset_are_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LATENTSPACE_DATA", str(tmp_path / "empty-data-home"))  # never train
    err = _one_line_error(capsys, ["train", "--size", "16", "--out", str(tmp_path / "r")])
    assert "data.size = 16 applies to image folders only" in err and "'mnist'" in err
    with pytest.raises(ConfigError, match=r"data\.channels = 3 applies to image folders only"):
        apply_overrides(ls.default_config("vae"), ["data.dataset=fashion-mnist", "data.channels=3"])
    toml = tmp_path / "c.toml"
    toml.write_text('[data]\ndataset = "mnist"\nsize = 32\n')
    with pytest.raises(ConfigError, match=rf"^{toml}: data\.size = 32 applies to image folders"):
        load_config(toml)
    # an image folder takes them; a run saved with them before this check still reads
    folder = apply_overrides(ls.default_config("vae"), ["data.dataset=photos", "data.size=32"])
    assert apply_overrides(folder, ["data.channels=3"]).data.channels == 3
    assert config_from_dict({"data": {"dataset": "mnist", "size": 16}}).data.size == 16


# ---- 4. evaluate --limit 0 --------------------------------------------------------------------
def test_evaluate_limit_below_one_is_an_error(
    tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentspace.analysis.evaluate import evaluate

    for limit in ("0", "-3"):
        args = ["evaluate", str(tiny_run), "--split", "val", "--limit", limit]
        assert f"--limit {limit}: give at least 1" in _one_line_error(capsys, args)
    with pytest.raises(ConfigError, match="limit = 0: evaluate at least one image"):
        evaluate(ls.open_run(tiny_run), "val", limit=0, nll_samples=1)
    assert ls.open_run(tiny_run).metrics[-1].get("kind") != "evaluation"  # nothing appended


def test_other_counts_below_one_are_errors(
    tmp_path: Path, tiny_run: Path, tiny_npz: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, data, png = str(tiny_run), str(tiny_npz), str(tmp_path / "x.png")
    for args, message in [
        (["encode", run, data, "--out", str(tmp_path / "c.npz"), "--limit", "0"], "--limit 0"),
        (["map", run, "--dataset", data, "--limit", "0", "--out", png], "--limit 0"),
        (["neighbours", run, f"{data}:0", "--limit", "0", "--out", png], "--limit 0"),
        (["reconstruct", run, data, "-n", "0", "--out", png], "-n 0"),
    ]:
        assert message in _one_line_error(capsys, args)
    assert not Path(png).exists()


# ---- generate -n ------------------------------------------------------------------------------
def test_generate_n_has_limits(
    tmp_path: Path,
    tiny_run: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = str(tmp_path / "g.png")
    err = _one_line_error(capsys, ["generate", str(tiny_run), "-n", "10000000000", "--out", out])
    assert "at most 100,000 images" in err
    assert "at most 100,000" in _one_line_error(
        capsys, ["generate", str(tiny_run), "-n", "100001", "--out", out]
    )
    assert "at least one" in _one_line_error(
        capsys, ["generate", str(tiny_run), "-n", "0", "--out", out]
    )
    # the limit in pixels: a run of larger images gets fewer (here 10 of 1x12x12)
    monkeypatch.setattr(use, "MAX_GENERATE_VALUES", 10 * 144)
    err = _one_line_error(capsys, ["generate", str(tiny_run), "-n", "11", "--out", out])
    assert "at most 10 images of 1x12x12" in err
    assert not Path(out).exists()
    assert main(["generate", str(tiny_run), "-n", "10", "--out", out]) == 0


# ---- 5. decode refuses another run's codes ----------------------------------------------------
def test_decode_refuses_codes_of_another_run(
    tmp_path: Path, tiny_config: Config, tiny_npz: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one, other = tmp_path / "one", tmp_path / "other"
    ls.train(apply_overrides(tiny_config, ["train.epochs=1"]), one, quiet=True, report=False)
    ls.train(
        apply_overrides(tiny_config, ["train.epochs=1", "train.seed=1"]),
        other,
        quiet=True,
        report=False,
    )
    codes = tmp_path / "codes.npz"
    assert main(["encode", str(one), str(tiny_npz), "--out", str(codes), "--limit", "4"]) == 0
    decoded = tmp_path / "decoded.png"

    err = _one_line_error(capsys, ["decode", str(other), str(codes), "--out", str(decoded)])
    assert f"made by {one} (weights sha256" in err and f"not by {other}" in err
    assert "--force" in err and not decoded.exists()
    assert main(["decode", str(other), str(codes), "--out", str(decoded), "--force"]) == 0
    assert main(["decode", str(one), str(codes), "--out", str(decoded)]) == 0

    # the same run, trained further: its weights no longer match the codes
    assert main(["train", "--resume", str(one), "--epochs", "2", "--quiet", "--no-report"]) == 0
    err = _one_line_error(capsys, ["decode", str(one), str(codes), "--out", str(decoded)])
    assert f"made by {one} before its weights changed" in err

    # a codes file from before the check (no weights hash) still decodes, with a note
    old = tmp_path / "old.npz"
    with np.load(codes) as saved:
        np.savez(old, codes=saved["codes"], run=saved["run"])
    capsys.readouterr()
    assert main(["decode", str(one), str(old), "--out", str(decoded)]) == 0
    assert "does not record which weights made it" in capsys.readouterr().err


# ---- 6. a seeded study never repeats a trial --------------------------------------------------
SPACE = """
[train]
epochs = 1
lr = { low = 1e-3, high = 3e-2, log = true }
[model]
latent_dim = { low = 2, high = 8 }
"""


def _params(out: Path) -> list[tuple[float, int]]:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from latentspace.tune.study import JOURNAL

    storage = JournalStorage(JournalFileBackend(str(out / JOURNAL)))
    study = optuna.load_study(study_name=out.name, storage=storage)
    return [(t.params["train.lr"], t.params["model.latent_dim"]) for t in study.trials]


def test_a_seeded_study_extended_or_resumed_never_repeats_a_trial(
    tmp_path: Path, tiny_config: Config
) -> None:
    pytest.importorskip("optuna")
    from latentspace.tune import config_to_toml

    base, space = tmp_path / "base.toml", tmp_path / "space.toml"
    base.write_text(config_to_toml(tiny_config), encoding="utf-8")
    space.write_text(SPACE)

    def tune(out: Path, trials: int) -> None:
        args = ["tune", "--config", str(base), "--space", str(space), "--out", str(out)]
        args += ["--trials", str(trials), "--pruner", "none", "--seed", "0", "--quiet"]
        assert main(args) == 0

    tune(tmp_path / "a", 3)
    tune(tmp_path / "a", 6)  # extended (the same as resuming an interrupted study)
    extended = _params(tmp_path / "a")
    assert len(extended) == 6 and len(set(extended)) == 6, extended
    tune(tmp_path / "b", 3)  # the same seeded command from scratch: the same first trials
    assert _params(tmp_path / "b") == extended[:3]


# ---- 7. best.toml with any dataset path -------------------------------------------------------
def test_best_toml_round_trips_any_dataset_path(tmp_path: Path) -> None:
    from latentspace.tune import config_to_toml

    path = tmp_path / "best.toml"
    newline = ls.default_config("vae", dataset="photos/new\nline")
    path.write_text(config_to_toml(newline), encoding="utf-8")
    assert load_config(path) == newline
    weird = 'data/new\nline "quoted" back\\slash tab\t ünïcødé 猫 \x01\x7f\r end'
    config = ls.default_config("vae", dataset=weird, size=8)
    header = f"trial 3 (run {weird}/trials/0003)\nsecond line"
    path.write_text(config_to_toml(config, header), encoding="utf-8")
    tomllib.loads(path.read_text(encoding="utf-8"))  # valid TOML
    assert load_config(path) == config


# ---- 8. --config / --space that are directories -----------------------------------------------
def test_config_or_space_that_is_a_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _one_line_error(capsys, ["train", "--config", str(tmp_path), "--out", "x"])
    assert f"config file {tmp_path} is a directory" in err
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    pytest.importorskip("optuna")
    err = _one_line_error(
        capsys, ["tune", "--space", str(tmp_path), "--out", str(tmp_path / "s"), "--trials", "1"]
    )
    assert f"space file {tmp_path} is a directory" in err
