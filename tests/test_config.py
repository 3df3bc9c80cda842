from __future__ import annotations

from pathlib import Path

import pytest

import latentspace as ls
from latentspace.config import apply_overrides, config_from_dict, config_to_dict, load_config
from latentspace.errors import ConfigError


def test_overrides_are_typed() -> None:
    config = apply_overrides(
        ls.default_config("vae"),
        [
            "train.lr=3e-4",
            "model.hidden_sizes=400,200",
            "data.dataset=photos",  # data.size applies to image folders only
            "data.size=32",
            "model.bias=false",
        ],
    )
    assert config.train.lr == 3e-4
    assert config.model.hidden_sizes == (400, 200)
    assert config.data.size == 32
    assert config.model.bias is False


def test_switching_family_keeps_shared_fields() -> None:
    config = apply_overrides(ls.default_config("vae", latent_dim=7), ["model.name=ae"])
    assert config.model.name == "ae" and config.model.latent_dim == 7


def test_round_trip_through_dict() -> None:
    config = ls.default_config("ae", lr=0.01, hidden_sizes=(10, 5))
    assert config_from_dict(config_to_dict(config)) == config


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[model]\nname = "vae"\nlatent_dim = 4\n[train]\nepochs = 3\n')
    config = load_config(path)
    assert config.model.latent_dim == 4 and config.train.epochs == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lrr=1"], r"unknown key train\.lrr; valid keys: .*\blr\b"),
        (["train.lr=fast"], r"train\.lr: cannot use 'fast'"),
        (["train.lr=-1"], r"train\.lr = -1.0 must be greater than 0"),
        (["train.optimizer=rmsprop"], "not one of: sgd, adam, adamw"),
        (["model.name=diffusion"], "unknown model 'diffusion'"),
        (["lr=1"], "write section.key=value"),
        (["data.val_fraction=1.5"], r"data\.val_fraction"),
        (["model.hidden_sizes=10,x"], r"model\.hidden_sizes"),
    ],
)
def test_bad_overrides_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(ls.default_config("vae"), overrides)


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[train\nlr = ")
    with pytest.raises(ConfigError, match="broken.toml is not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    path.write_text("[optim]\nlr = 1\n")
    with pytest.raises(ConfigError, match="unknown section 'optim'"):
        load_config(path)
