"""Diagnostics: each detector fires on a constructed case and stays silent on a healthy run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch

import latentspace as ls
from latentspace.cli import main
from latentspace.config import Config, apply_overrides
from latentspace.diagnostics import (
    DIAGNOSTICS,
    Diagnostics,
    Thresholds,
    detect,
    diagnostics_figures,
    find_layers,
    read_diagnostics,
    summarize,
)
from latentspace.models import build_model


class _Tamper:
    """A callback that changes the weights once, before the first step (a constructed case)."""

    def __init__(self, change: Any) -> None:
        self.change = change

    def on_train_start(self, trainer: Any) -> None:
        with torch.no_grad():
            self.change(trainer.model)


def _keys(run: Path) -> set[str]:
    return {key for r in read_diagnostics(run) for key in r["active"]}


def _warnings(run: Path) -> list[str]:
    return [w for r in read_diagnostics(run) for w in r["warnings"]]


def test_healthy_run_is_silent_and_records_every_epoch(tmp_path: Path, tiny_config: Config) -> None:
    run = tmp_path / "run"
    ls.train(tiny_config, run, quiet=True, report=False)
    records = read_diagnostics(run)
    assert [r["epoch"] for r in records] == [1, 2]
    layers = records[-1]["layers"]
    assert list(layers) == [
        "encoder layer 1",
        "encoder layer 2",
        "decoder layer 1",
        "decoder layer 2",
    ]
    first = layers["encoder layer 1"]
    assert first["grad_norm"] > 0 and first["weight_norm"] > 0 and first["bias_norm"] > 0
    assert 0 < first["update_ratio"] < 0.25
    assert 0 <= first["dead_fraction"] < 0.6
    assert records[-1]["grad_ratio"] > 0 and "gap_relative" in records[-1]
    assert _warnings(run) == []
    metrics = ls.open_run(run).metrics
    assert all("warnings" not in m for m in metrics)


def test_all_dead_relus_fire(tmp_path: Path, tiny_config: Config) -> None:
    def kill(model: torch.nn.Module) -> None:
        model.encoder[1].bias.fill_(-1e3)  # type: ignore[index]

    config = apply_overrides(tiny_config, ["train.lr=1e-6"])
    run = tmp_path / "run"
    ls.train(config, run, quiet=True, callbacks=[_Tamper(kill)], report=False)
    assert read_diagnostics(run)[0]["layers"]["encoder layer 1"]["dead_fraction"] == 1.0
    assert "dead_relu:encoder layer 1" in _keys(run)
    text = _warnings(run)[0]
    assert text.startswith("100% of the ReLU units in encoder layer 1 never fired")
    assert "leaky_relu" in text
    # the warning is also in the epoch record, and said once (when it became true)
    metrics = ls.open_run(run).metrics
    assert (
        sum(w.startswith("100% of the ReLU") for m in metrics for w in m.get("warnings", [])) == 1
    )


def test_saturated_sigmoid_stack_fires_saturation_and_vanishing(
    tmp_path: Path, tiny_config: Config
) -> None:
    def saturate(model: torch.nn.Module) -> None:
        for layer in find_layers(model):
            if layer.activations and layer.bias is not None:
                layer.bias.fill_(8.0)  # every sigmoid near 1, where its slope is ~3e-4

    config = apply_overrides(
        tiny_config,
        ["model.activation=sigmoid", "model.hidden_sizes=32,32,32,32", "train.lr=1e-6"],
    )
    run = tmp_path / "run"
    ls.train(config, run, quiet=True, callbacks=[_Tamper(saturate)], report=False)
    keys = _keys(run)
    assert any(k.startswith("saturated:") for k in keys)
    assert "vanishing" in keys
    record = read_diagnostics(run)[0]
    assert record["grad_ratio"] < Thresholds().vanishing
    assert (
        max(s["saturated_fraction"] for s in record["layers"].values() if "activation" in s) > 0.5
    )


def test_healthy_sigmoid_stack_is_not_saturated(tmp_path: Path, tiny_config: Config) -> None:
    config = apply_overrides(tiny_config, ["model.activation=sigmoid", "model.hidden_sizes=32"])
    run = tmp_path / "run"
    ls.train(config, run, quiet=True, report=False)
    assert not any(k.startswith("saturated:") for k in _keys(run))


def test_divergent_learning_rate_fires(tmp_path: Path, tiny_config: Config) -> None:
    config = apply_overrides(tiny_config, ["train.lr=0.1"])
    run = tmp_path / "run"
    ls.train(config, run, quiet=True, report=False)
    first = read_diagnostics(run)[0]
    assert "update_high" in first["active"]
    assert any("learning rate 0.1 is probably too high" in w for w in first["warnings"])


@pytest.fixture
def noise_npz(tmp_path: Path) -> Path:
    """128 images of pure noise: nothing to generalise, so a big model can only memorise."""
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.npz"
    np.savez(path, images=rng.integers(0, 256, (128, 8, 8), dtype=np.uint8))
    return path


def test_overfit_on_64_samples_fires_and_early_epochs_are_silent(
    tmp_path: Path, noise_npz: Path
) -> None:
    # a VAE would just learn the mean noise image (its KL term forbids memorising); an
    # autoencoder memorises its 64 training images
    config = ls.default_config(
        "ae",
        dataset=str(noise_npz),
        val_fraction=0.5,  # 64 training images
        epochs=40,
        batch_size=16,
        hidden_sizes=(256,),
        latent_dim=16,
        lr=3e-3,
        device="cpu",
    )
    run = tmp_path / "run"
    ls.train(config, run, quiet=True, report=False)
    records = read_diagnostics(run)
    fired = [r["epoch"] for r in records if "overfitting" in r["active"]]
    assert fired, "validation loss never turned upward"
    assert "overfitting" not in records[0]["active"]
    record = records[fired[0] - 1]
    assert record["val_loss"] > record["val_best"] and record["val_upturn"]


def test_detect_on_recorded_numbers() -> None:
    first_step = {"step": 1, "loss": 540.0, "grad_norm": 10.0}
    healthy = {
        "epoch": 3,
        "train_loss": 100.0,
        "val_loss": 105.0,
        "gap_relative": 0.05,
        "val_best": 104.0,
        "val_best_epoch": 2,
        "val_upturn": False,
        "grad_ratio": 0.5,
        "first_layer": "encoder layer 1",
        "last_layer": "decoder layer 2",
        "layers": {"encoder layer 1": {"update_ratio": 2e-3, "update_ratio_max": 5e-3}},
    }
    # epoch 1 reaches back to step 1: the untrained model scored 540
    first = {"epoch": 1, "train_loss": 160.0, "val_loss": 110.0, "steps_sampled": [first_step]}
    history: list[dict[str, Any]] = [first, {"epoch": 2, "train_loss": 101.0, "val_loss": 104.0}]
    assert detect(healthy, history, 1e-3) == []
    # averaged 4960 above its end of 40: ten times the 500 it had fallen from the untrained 540
    sick = dict(healthy, train_loss=5000.0, val_loss=40.0, grad_ratio=1e-4)
    keys = {f.key for f in detect(sick, history, 1e-3)}
    assert keys == {"loss_spike", "loss_rise", "vanishing"}
    gap = dict(healthy, val_loss=140.0, gap_relative=0.4)
    (said,) = detect(gap, history, 1e-3)
    assert said.key == "gap" and "its training images; train on more images" in said.text
    (said,) = detect(dict(gap, val_unit="sentences"), history, 1e-3)
    assert "its training sentences; train on more sentences" in said.text
    saturated = {"decoder_rnn": {"saturated_fraction": 0.9, "activation": "tanh"}}
    words = dict(healthy, val_unit="sentences", val_images=64, layers=saturated)
    (said,) = detect(words, history, 1e-3)
    assert said.key == "saturated:decoder_rnn" and "on 64 validation sentences" in said.text
    # a gap while the loss is rising is instability, not memorisation: only the rise is said
    rising = dict(healthy, train_loss=150.0, val_loss=200.0, gap_relative=0.33)
    assert [f.key for f in detect(rising, history, 1e-3)] == ["loss_rise"]
    crawl = dict(healthy, layers={"encoder layer 1": {"update_ratio": 1e-6}})
    assert [f.key for f in detect(crawl, history, 1e-5)] == ["update_low"]
    # the same small steps at the end of a cosine schedule that started at 1e-3 are intended
    assert detect(crawl, history, 1e-5, base_lr=1e-3) == []


def test_diagnostics_change_no_result_and_resume_equals_uninterrupted(
    tmp_path: Path, tiny_config: Config
) -> None:
    config = apply_overrides(tiny_config, ["train.epochs=3"])
    plain = tmp_path / "plain"
    ls.train(config, plain, quiet=True, diagnostics=False, report=False)
    assert not (plain / DIAGNOSTICS).exists()
    full = tmp_path / "full"
    ls.train(config, full, quiet=True, report=False)
    part = tmp_path / "part"
    ls.train(
        dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=1)),
        part,
        quiet=True,
        report=False,
    )
    ls.train(config, part, resume=True, quiet=True, report=False)
    weights = [
        safetensors.torch.load_file(str(p / "model.safetensors")) for p in (plain, full, part)
    ]
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
        assert torch.equal(weights[1][key], weights[2][key]), key
    assert [r["epoch"] for r in read_diagnostics(part)] == [1, 2, 3]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in read_diagnostics(full)]
    again = [{k: v for k, v in r.items() if k != "seconds"} for r in read_diagnostics(part)]
    assert json.dumps(strip[2]["layers"]) == json.dumps(again[2]["layers"])


def test_find_layers_names_and_activations(tiny_config: Config) -> None:
    model = build_model(tiny_config.model, (1, 12, 12))
    layers = find_layers(model)
    assert [layer.name for layer in layers][:2] == ["encoder layer 1", "encoder layer 2"]
    assert [type(a).__name__ for a in layers[0].activations] == ["ReLU"]
    assert layers[1].activations == []  # the encoder's output layer has none
    with pytest.raises(ValueError):
        Diagnostics(every=0)


def test_summary_figures_and_cli(
    tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = summarize(tiny_run)
    assert "encoder layer 1" in text and "warnings: none" in text
    assert main(["diagnose", str(tiny_run)]) == 0
    assert "layers at epoch 2" in capsys.readouterr().out
    figures = diagnostics_figures(tiny_run, tmp_path / "figs")
    assert figures and all(p.exists() and p.stat().st_size > 0 for _, p in figures)
    (tiny_run / DIAGNOSTICS).unlink()
    assert main(["diagnose", str(tiny_run)]) == 1
    assert "--no-diagnostics" in capsys.readouterr().err


def test_train_no_diagnostics_flag(tmp_path: Path, tiny_npz: Path) -> None:
    out = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        str(tiny_npz),
        "--epochs",
        "1",
        "--hidden",
        "16",
        "--latent-dim",
        "2",
    ]
    assert main([*args, "--out", str(out), "--quiet", "--no-diagnostics", "--no-report"]) == 0
    assert not (out / DIAGNOSTICS).exists()


def test_run_report_shows_diagnostics(tiny_run: Path) -> None:
    from latentspace.analysis.report import write_report

    page = write_report(tiny_run).read_text()
    assert "<h2>Training diagnostics</h2>" in page
    assert "diagnostics_grad.png" in page or "gradient norm per layer" in page
    assert "This figure could not be made" not in page.split("Training diagnostics")[1][:2000]


@pytest.mark.parametrize(
    "name", sorted(n for n, cls in ls.MODELS.items() if cls.inputs == "images")
)
def test_every_model_family_is_measured(name: str, tmp_path: Path, tiny_npz: Path) -> None:
    config = ls.default_config(
        name, dataset=str(tiny_npz), epochs=1, batch_size=16, latent_dim=2, device="cpu"
    )
    config = apply_overrides(config, ["model.hidden_sizes=32"])
    run = tmp_path / "run"
    ls.train(config, run, quiet=True, report=False)
    (record,) = read_diagnostics(run)
    assert len(record["layers"]) >= 2
    assert all(s["grad_norm"] is not None for s in record["layers"].values())
    # gap and overfitting are judged only where the loss is a likelihood bound
    assert record["likelihood"] == (name != "gan")
    assert ("gap" in record) == (name != "gan")


def test_diverged_compares_like_with_like_on_a_kl_annealed_vae() -> None:
    """The first step of a KL-annealed VAE weighed its KL by about 0; validation weighs it by 1.
    A KL grown while its weight was low is not a lost model; a reconstruction above the
    untrained model's whole loss is."""
    from latentspace.diagnostics.loss_rules import _diverged

    def entry(val_loss: float, val_kl: float) -> dict[str, Any]:
        return {
            "epoch": 1,
            "steps_sampled": [{"step": 1, "loss": 100.0, "grad_norm": 1.0}],
            "val_loss": val_loss,
            "val_kl": val_kl,
            "signals": {"kl_weight": 0.3},
        }

    assert _diverged(entry(130.0, 40.0), [], Thresholds()) is None  # reconstruction 90
    assert _diverged(entry(250.0, 40.0), [], Thresholds()) is not None  # reconstruction 210
    unannealed = {k: v for k, v in entry(130.0, 40.0).items() if k != "signals"}
    assert _diverged(unannealed, [], Thresholds()) is not None  # weighed alike: compared whole
