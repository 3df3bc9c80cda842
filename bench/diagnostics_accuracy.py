"""How often the training diagnostics are right: a labelled suite of short runs, some with a
known fault and some healthy, scored warning by warning.

Each case is an ordinary training run (`latentspace.train.train`, no report; tiny: a few
thousand MNIST or Fashion-MNIST images, or a small folder of colour images; one thread) whose
fault is known by construction: a learning rate far too high or too low, dead ReLUs, a deep
sigmoid stack, exploding gradients, a big model on a tiny subset, posterior collapse, a GAN
whose discriminator wins, a collapsing generator; or none (healthy: long runs, noisy validation,
schedules, small folders, colour and conv models, GANs). Each run is also checked for showing
its label by a plain measure no threshold under test decides (`label_check`). Every warning is
mapped to the cause it names. The suite is split in two halves by a seeded shuffle within each
label; `Thresholds` are chosen on the first half (a coordinate search that first avoids warnings
on healthy runs, then names the most faults right, then makes the fewest confusions; a shipped
value stays when it scores best, otherwise the middle of the best range is taken) and reported
on the other, next to the shipped defaults.

Runs are cached in OUT/runs/NAME (records only: metrics.jsonl, diagnostics.jsonl, config.json and
the bench's own bench.json; the weights are deleted), so a rerun re-scores without retraining;
`--rescore` never trains.

    .venv/bin/python bench/diagnostics_accuracy.py [--out runs/diagnostics-accuracy] [--rescore]
        [--only REGEX] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import latentspace as ls
from latentspace.config import Config, apply_overrides
from latentspace.diagnostics import (
    Diagnostics,
    Finding,
    Thresholds,
    find_layers,
    read_diagnostics,
)
from latentspace.diagnostics.entries import replay
from latentspace.errors import TrainingDiverged
from latentspace.runs import read_metrics
from latentspace.train import train

HEALTHY = "healthy"
# the cause each warning names (a warning key's part before ":"); a stop on a NaN loss is matched
# by its words
CAUSE_OF_KEY = {
    "update_high": "lr_high",
    "loss_spike": "lr_high",
    "loss_rise": "lr_high",
    "diverged": "lr_high",
    "update_low": "lr_low",
    "dead_relu": "dead_relu",
    "saturated": "vanishing",
    "vanishing": "vanishing",
    "exploding": "exploding",
    "overfitting": "overfitting",
    "gap": "overfitting",
    "posterior_collapse": "posterior_collapse",
    "d_wins": "d_wins",
    "mode_collapse": "mode_collapse",
    "nan_stop": "lr_high",  # every stop on a NaN loss says: a lower learning rate
    "nan_stop_exploding": "exploding",  # ... and names "exploding gradients" on their evidence
}
# warnings that are true consequences of a fault and whose advice does not mislead: a rate far
# too high kills ReLUs and makes gradients explode; exploding gradients are also cured by a lower
# rate. They are neither counted as the right cause nor as a confusion.
ALSO_TRUE = {
    "lr_high": {"dead_relu", "exploding", "vanishing"},
    "exploding": {"lr_high", "dead_relu"},
    "vanishing": {"dead_relu"},  # a deep plain ReLU stack on SGD loses units as well
}
GRIDS: dict[str, Sequence[float]] = {
    "dead_relu": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
    "dead_images": (0, 16, 32, 64, 100, 200, 400),
    "saturated": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    "vanishing": (1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    "exploding": (10, 30, 100, 300, 1e3, 3e3, 1e4, 1e5),
    "update_high": (0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
    "update_low": (1e-5, 3e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3),
    "loss_spike": (0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0),  # share of progress given back
    "loss_rise": (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
    "upturn": (0.0, 0.005, 0.01, 0.02, 0.05, 0.1),
    "upturn_epochs": (1, 2, 3, 4, 5, 6, 8, 10),
    "gap": (0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 2.0),
    "collapse": (0.0, 0.05, 0.1, 0.2, 0.3, 0.5),
    "collapse_steps": (0, 50, 100, 150, 200, 300, 400, 800),
    "diverged": (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
    "diversity": (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4),
    "diversity_epochs": (1, 2, 3, 4, 5),
}


# ---- the suite --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
    """One labelled run: `fault` is HEALTHY or the cause a right warning names."""

    name: str
    fault: str
    family: str
    overrides: tuple[str, ...]
    tamper: str = ""  # a named change to the initial weights (see TAMPERS)

    def fingerprint(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _c(name: str, fault: str, family: str, *overrides: str, tamper: str = "") -> Case:
    return Case(name, fault, family, overrides, tamper)


MNIST, FASHION, COLOUR = "data.dataset=mnist", "data.dataset=fashion-mnist", "data.dataset=@colour"
SMALL_MLP = "model.hidden_sizes=256,128"
CONV = ("model.architecture=conv", "model.channels=16,32")
GAN = ("model.hidden_sizes=256,256", "train.lr=2e-4")
SGD = ("train.optimizer=sgd", "train.momentum=0.9")


def _deep(width: int, depth: int) -> str:
    return "model.hidden_sizes=" + ",".join([str(width)] * depth)


def _size(images: int, epochs: int) -> tuple[str, str]:
    return f"data.limit={images}", f"train.epochs={epochs}"


TINY = ("data.val_fraction=0.5", "train.batch_size=16")  # 100 training images of 200

# fmt: off
CASES: tuple[Case, ...] = (
    # learning rate far too high
    _c("lr-high-0.05", "lr_high", "vae", MNIST, *_size(6000, 4), "train.lr=0.05"),
    _c("lr-high-0.1-fashion", "lr_high", "vae", FASHION, *_size(6000, 4), "train.lr=0.1"),
    _c("lr-high-1", "lr_high", "vae", MNIST, *_size(6000, 4), "train.lr=1"),  # issue 23
    _c("lr-high-conv", "lr_high", "vae", FASHION, *CONV, *_size(4000, 3), "train.lr=0.05"),
    _c("lr-high-sgd", "lr_high", "vae", MNIST, *_size(6000, 4), *SGD, "train.lr=0.5"),
    _c("lr-high-ae", "lr_high", "ae", FASHION, *_size(6000, 4), "train.lr=0.05"),
    # learning rate far too low
    _c("lr-low-1e-6", "lr_low", "vae", MNIST, *_size(6000, 6), "train.lr=1e-6"),
    _c("lr-low-3e-6-fashion", "lr_low", "vae", FASHION, *_size(6000, 6), "train.lr=3e-6"),
    _c("lr-low-conv", "lr_low", "vae", MNIST, *CONV, *_size(4000, 8), "train.lr=1e-6"),
    _c("lr-low-sgd", "lr_low", "vae", FASHION, *_size(6000, 6), "train.optimizer=sgd",
       "train.momentum=0", "train.lr=1e-4"),
    _c("lr-low-ae", "lr_low", "ae", MNIST, SMALL_MLP, *_size(6000, 6), "train.lr=1e-6"),
    # dead ReLUs from a bad initialisation: 97% of a layer's biases far below zero
    _c("dead-encoder", "dead_relu", "vae", MNIST, *_size(6000, 4),
       tamper="dead:encoder layer 1:0.97"),
    _c("dead-encoder-fashion", "dead_relu", "vae", FASHION, "model.hidden_sizes=256,256",
       *_size(6000, 4), tamper="dead:encoder layer 2:0.97"),
    _c("dead-decoder", "dead_relu", "vae", MNIST, SMALL_MLP, *_size(6000, 4),
       tamper="dead:decoder layer 1:0.97"),
    _c("dead-conv", "dead_relu", "vae", FASHION, *CONV, *_size(4000, 3),
       tamper="dead:encoder layer 1:0.97"),
    # vanishing gradients: deep sigmoid and tanh stacks, a deep plain ReLU stack on SGD
    _c("sigmoid-8", "vanishing", "vae", MNIST, "model.activation=sigmoid", _deep(128, 8),
       *_size(6000, 3)),
    _c("sigmoid-10-fashion", "vanishing", "vae", FASHION, "model.activation=sigmoid",
       _deep(64, 10), *_size(6000, 3)),
    _c("sigmoid-6-wide", "vanishing", "vae", MNIST, "model.activation=sigmoid", _deep(256, 6),
       *_size(6000, 3)),
    _c("tanh-12", "vanishing", "vae", FASHION, "model.activation=tanh", _deep(128, 12),
       *_size(6000, 3)),
    _c("relu-10-sgd", "vanishing", "vae", MNIST, _deep(256, 10), *_size(3000, 3),
       "train.optimizer=sgd", "train.lr=0.01", "train.momentum=0.95"),
    # exploding gradients: plain SGD (a usual rate for it) on deep ReLU stacks, no clipping;
    # configurations that blew up in a grid of depth x rate (the others killed their ReLUs)
    _c("explode-sgd", "exploding", "vae", MNIST, _deep(256, 6), *_size(3000, 3), *SGD,
       "train.lr=0.03"),
    _c("explode-sgd-fashion", "exploding", "vae", FASHION, _deep(256, 6), *_size(3000, 3), *SGD,
       "train.lr=0.03"),
    _c("explode-sgd-5", "exploding", "vae", MNIST, _deep(256, 5), *_size(3000, 3), *SGD,
       "train.lr=0.02"),
    _c("explode-sgd-ae", "exploding", "ae", MNIST, _deep(256, 5), *_size(3000, 3), *SGD,
       "train.lr=0.03"),
    _c("explode-sgd-ae-7", "exploding", "ae", MNIST, _deep(256, 7), *_size(3000, 3), *SGD,
       "train.lr=0.03"),
    # overfitting: a big model on 100 training images, many epochs
    _c("overfit-ae", "overfitting", "ae", MNIST, "model.hidden_sizes=512,512",
       "model.latent_dim=32", *_size(200, 100), *TINY),
    _c("overfit-ae-fashion", "overfitting", "ae", FASHION, "model.hidden_sizes=512,512",
       "model.latent_dim=32", *_size(200, 100), *TINY),
    _c("overfit-vae", "overfitting", "vae", MNIST, "model.hidden_sizes=1024,512",
       "model.latent_dim=32", *_size(200, 120), *TINY, "train.lr=2e-3"),
    _c("overfit-vae-fashion", "overfitting", "vae", FASHION, "model.hidden_sizes=1024,512",
       "model.latent_dim=32", *_size(200, 120), *TINY, "train.lr=2e-3"),
    # posterior collapse: a KL weight so large that the code carries nothing
    _c("collapse-beta-30", "posterior_collapse", "vae", MNIST, "model.beta=30", *_size(6000, 10)),
    _c("collapse-beta-100-fashion", "posterior_collapse", "vae", FASHION, "model.beta=100",
       *_size(6000, 10)),
    _c("collapse-conv", "posterior_collapse", "vae", MNIST, *CONV, "model.beta=50",
       *_size(4000, 14)),
    _c("collapse-latent-32", "posterior_collapse", "vae", MNIST, "model.latent_dim=32",
       "model.beta=100", *_size(6000, 10)),
    # a GAN whose discriminator wins: it learns 100-1000 times faster than its generator
    _c("gan-d-wins", "d_wins", "gan", MNIST, *GAN, "model.lr_d=2e-3", "model.lr_g=1e-6",
       "model.d_steps=2", *_size(3000, 4)),
    _c("gan-d-wins-fashion", "d_wins", "gan", FASHION, *GAN, "model.lr_d=2e-3",
       "model.lr_g=1e-5", "model.d_steps=3", *_size(3000, 4)),
    _c("gan-d-wins-hinge", "d_wins", "gan", FASHION, *GAN, "model.loss=hinge", "model.lr_d=2e-3",
       "model.lr_g=1e-6", "model.d_steps=2", *_size(3000, 4)),
    _c("gan-d-wins-lsgan", "d_wins", "gan", MNIST, *GAN, "model.loss=lsgan", "model.lr_d=5e-3",
       "model.lr_g=1e-6", "model.d_steps=2", *_size(3000, 4)),
    # mode collapse: a generator far faster than its discriminator
    _c("gan-collapse", "mode_collapse", "gan", MNIST, *GAN, "model.lr_g=3e-3", "model.lr_d=1e-5",
       *_size(3000, 4)),
    _c("gan-collapse-fashion", "mode_collapse", "gan", FASHION, *GAN, "model.lr_g=1e-2",
       "model.lr_d=1e-5", *_size(3000, 4)),
    _c("gan-collapse-no-bn", "mode_collapse", "gan", MNIST, *GAN, "model.batch_norm=false",
       "model.lr_g=2e-3", "model.lr_d=2e-5", *_size(3000, 4)),
    _c("gan-collapse-lsgan", "mode_collapse", "gan", MNIST, *GAN, "model.loss=lsgan",
       "model.lr_g=3e-3", "model.lr_d=1e-5", *_size(3000, 4)),
    # ---- healthy --------------------------------------------------------------------------
    _c("vae-mnist", HEALTHY, "vae", MNIST, *_size(10000, 5)),
    _c("vae-fashion", HEALTHY, "vae", FASHION, *_size(10000, 5)),
    _c("vae-long", HEALTHY, "vae", MNIST, SMALL_MLP, *_size(1500, 40)),
    _c("vae-long-fashion", HEALTHY, "vae", FASHION, SMALL_MLP, *_size(3000, 30)),
    _c("vae-cosine", HEALTHY, "vae", MNIST, *_size(6000, 8), "train.schedule=cosine"),
    _c("vae-cosine-fashion", HEALTHY, "vae", FASHION, SMALL_MLP, *_size(6000, 10),
       "train.schedule=cosine", "train.lr=3e-3"),
    _c("vae-step", HEALTHY, "vae", MNIST, SMALL_MLP, *_size(6000, 8), "train.schedule=step",
       "train.step_size=3", "train.gamma=0.3"),
    _c("vae-noisy-val", HEALTHY, "vae", MNIST, SMALL_MLP, *_size(2040, 20),
       "data.val_fraction=0.02"),
    _c("vae-noisy-val-fashion", HEALTHY, "vae", FASHION, SMALL_MLP, *_size(2040, 20),
       "data.val_fraction=0.02"),
    _c("vae-batch-16", HEALTHY, "vae", MNIST, SMALL_MLP, *_size(3000, 4), "train.batch_size=16"),
    _c("vae-batch-512", HEALTHY, "vae", FASHION, *_size(10000, 6), "train.batch_size=512",
       "train.lr=2e-3"),
    _c("vae-latent-64", HEALTHY, "vae", MNIST, "model.latent_dim=64", *_size(6000, 5)),
    _c("vae-latent-2", HEALTHY, "vae", FASHION, "model.latent_dim=2", *_size(6000, 5)),
    _c("vae-kl-warmup", HEALTHY, "vae", MNIST, "model.kl_warmup_epochs=3", *_size(6000, 6)),
    _c("vae-sigmoid-shallow", HEALTHY, "vae", MNIST, "model.activation=sigmoid",
       "model.hidden_sizes=256", *_size(6000, 5)),
    _c("vae-tanh", HEALTHY, "vae", FASHION, "model.activation=tanh", SMALL_MLP, *_size(6000, 5)),
    _c("vae-gelu", HEALTHY, "vae", MNIST, "model.activation=gelu", *_size(6000, 5)),
    _c("vae-dropout", HEALTHY, "vae", MNIST, "model.dropout=0.2", *_size(6000, 5)),
    _c("vae-dynamic-binary", HEALTHY, "vae", MNIST, SMALL_MLP, "data.binarize=dynamic",
       *_size(6000, 6)),
    _c("vae-sgd", HEALTHY, "vae", MNIST, SMALL_MLP, *SGD, "train.lr=0.01", *_size(6000, 6)),
    _c("vae-adamw", HEALTHY, "vae", FASHION, "train.optimizer=adamw", "train.weight_decay=0.01",
       *_size(6000, 5)),
    _c("ae-mnist", HEALTHY, "ae", MNIST, *_size(6000, 5)),
    _c("conv-ae-fashion", HEALTHY, "ae", FASHION, *CONV, *_size(4000, 4)),
    _c("conv-vae", HEALTHY, "vae", MNIST, *CONV, *_size(4000, 5)),
    # small folders of colour images, long runs (issue 23: a conv VAE on 240 photo crops)
    _c("conv-vae-colour", HEALTHY, "vae", COLOUR, *CONV, "data.size=32",
       "model.likelihood=gaussian", "train.epochs=100", "train.batch_size=32"),
    _c("conv-ae-colour", HEALTHY, "ae", COLOUR, *CONV, "data.size=32", "train.epochs=40",
       "train.batch_size=32"),
    _c("mlp-vae-colour", HEALTHY, "vae", COLOUR, SMALL_MLP, "data.size=32", "train.epochs=60",
       "train.batch_size=32"),
    # GANs long enough to leave the early phase in which every generator's samples look alike
    _c("gan-mnist", HEALTHY, "gan", MNIST, *GAN, *_size(10000, 10)),
    _c("gan-mnist-wide", HEALTHY, "gan", MNIST, "model.hidden_sizes=512,256", "train.lr=2e-4",
       *_size(10000, 10)),
    _c("gan-fashion-hinge", HEALTHY, "gan", FASHION, *GAN, "model.loss=hinge",
       *_size(10000, 10)),
    _c("gan-lsgan", HEALTHY, "gan", MNIST, *GAN, "model.loss=lsgan", *_size(10000, 10)),
)
# fmt: on


# ---- constructed faults in the initial weights ------------------------------------------------
def _dead(model: torch.nn.Module, layer_name: str, share: float) -> None:
    """`share` of the layer's units get a bias far below any input they can see: never fire."""
    layer = next(layer for layer in find_layers(model) if layer.name == layer_name)
    if layer.bias is None:
        raise ValueError(f"{layer_name} has no bias to kill its units with")
    layer.bias[: int(share * layer.bias.numel())] = -50.0


def _gain(model: torch.nn.Module, factor: float) -> None:
    """Every weight matrix multiplied by `factor`: each layer amplifies its input."""
    for layer in find_layers(model):
        layer.weight.mul_(factor)


class _Tamper:
    """A callback that changes the weights once, before the first step."""

    def __init__(self, change: Callable[[torch.nn.Module], None]) -> None:
        self.change = change

    def on_train_start(self, trainer: Any) -> None:
        with torch.no_grad():
            self.change(trainer.model)


def _tamper(spec: str) -> list[object]:
    if not spec:
        return []
    kind, _, arg = spec.partition(":")
    if kind == "dead":
        layer, _, share = arg.rpartition(":")
        return [_Tamper(lambda m: _dead(m, layer, float(share)))]
    if kind == "gain":
        return [_Tamper(lambda m: _gain(m, float(arg)))]
    raise ValueError(f"unknown tamper {spec!r}")


# ---- data: a small folder of colour images ----------------------------------------------------
def colour_folder(out: Path, n: int = 240) -> Path:
    """n Fashion-MNIST images, each tinted with a random colour on a random background, written
    as PNGs: a small folder of colour images (like a user's own photos)."""
    from PIL import Image

    from latentspace.data.datasets import load_named

    folder = out / "data" / f"colour-{n}"
    if folder.exists() and len(list(folder.glob("*.png"))) == n:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    images = np.asarray(load_named("fashion-mnist", "train").images[:n, 0], np.float32) / 255
    rng = np.random.default_rng(0)
    for i, alpha in enumerate(images):
        fg, bg = rng.uniform(0, 1, 3), rng.uniform(0, 0.6, 3)
        rgb = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
        Image.fromarray((rgb * 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return folder


# ---- running ----------------------------------------------------------------------------------
def config_of(case: Case, out: Path, seed: int) -> Config:
    overrides = list(case.overrides)
    if COLOUR in overrides:
        overrides[overrides.index(COLOUR)] = f"data.dataset={colour_folder(out)}"
    config = ls.default_config(case.family, device="cpu", threads=1, seed=seed)
    return apply_overrides(config, overrides)


def run_case(case: Case, out: Path, seed: int) -> dict[str, Any]:
    """Train the case into OUT/runs/NAME (unless its records are there), keep the records only."""
    path = out / "runs" / case.name
    marker = path / "bench.json"
    if marker.exists():
        saved = json.loads(marker.read_text())
        if saved.get("fingerprint") == case.fingerprint() and saved.get("seed") == seed:
            return saved
    if path.exists():
        shutil.rmtree(path)
    config = config_of(case, out, seed)
    wall, cpu = time.perf_counter(), time.process_time()
    stopped = ""
    try:
        # the tamper before the diagnostics' first snapshot, so it is not measured as an update
        callbacks = [*_tamper(case.tamper), Diagnostics()]
        train(config, path, quiet=True, callbacks=callbacks, diagnostics=False)  # no report
    except TrainingDiverged as error:
        stopped = str(error)
    info = {
        "fingerprint": case.fingerprint(),
        "seed": seed,
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
        "stopped": stopped,
    }
    for name in ("model.safetensors", "trainer_state.pt"):
        (path / name).unlink(missing_ok=True)
    marker.write_text(json.dumps(info))
    return info


@dataclasses.dataclass
class Records:
    case: Case
    metrics: list[dict[str, Any]]
    diagnostics: list[dict[str, Any]]
    base_lr: float
    stopped: str
    wall_s: float
    cpu_s: float


def load(case: Case, out: Path) -> Records | None:
    path = out / "runs" / case.name
    if not (path / "bench.json").exists():
        return None
    info = json.loads((path / "bench.json").read_text())
    config = json.loads((path / "config.json").read_text())
    return Records(
        case,
        read_metrics(path),
        read_diagnostics(path),
        float(config["config"]["train"]["lr"]),
        info["stopped"],
        info["wall_s"],
        info["cpu_s"],
    )


# ---- does each run show its label? ------------------------------------------------------------
def _last_code(records: Records) -> int | None:
    if not records.diagnostics:
        return None
    layers = records.diagnostics[-1]["layers"].values()
    return next((s["active_units"] for s in layers if "active_units" in s), None)


def label_check(records: Records) -> str:
    """Empty when the run shows its label by a plain measure that no threshold under test
    decides; otherwise what it shows instead. Printed, never used to score. Vanishing gradients
    have no such measure here: their label is the construction (a deep sigmoid stack)."""
    epochs = [m for m in records.metrics if m.get("kind", "epoch") == "epoch"]
    vals = [m["val"]["total"] for m in epochs if "val" in m]
    last = epochs[-1]["train"] if epochs else {}
    fault, stopped = records.case.fault, bool(records.stopped)
    norms = [s["grad_norm"] for d in records.diagnostics for s in d["steps_sampled"]]
    losses = [s["loss"] for d in records.diagnostics for s in d["steps_sampled"]]
    first_loss = records.diagnostics[0]["steps_sampled"][0]["loss"] if records.diagnostics else 0
    rose = vals[-1] / min(vals) - 1 if vals and "reconstruction" in last else 0.0
    code = _last_code(records)
    checks = {
        HEALTHY: (not stopped and rose <= 0.02, f"validation ended {rose:.1%} above its best"),
        "overfitting": (rose > 0.02, f"validation ended {rose:.1%} above its best"),
        "lr_high": (
            stopped or max(losses, default=0) > 2 * first_loss,
            "no sampled step's loss reached twice the untrained model's",
        ),
        "exploding": (
            stopped or (bool(norms) and max(norms) / norms[0] >= 100),
            "no NaN and the gradient norm grew less than 100 times",
        ),
        "lr_low": (bool(vals) and vals[-1] > 0.9 * first_loss, "the loss fell more than 10%"),
        "posterior_collapse": (code is not None and code <= 1, f"{code} units active at the end"),
        "d_wins": (
            bool(epochs) and epochs[-1]["val"].get("d_loss", 1) < 0.05,
            "the discriminator's validation loss ended at 0.05 or more",
        ),
        "mode_collapse": (last.get("diversity", 1) < 0.15, "diversity ended at 0.15 or more"),
        "dead_relu": (
            bool(records.diagnostics)
            and max(s.get("dead_fraction") or 0 for s in records.diagnostics[-1]["layers"].values())
            >= 0.9,
            "no layer ended with 90% of its ReLUs silent",
        ),
    }
    passed, why = checks.get(fault, (True, ""))
    return "" if passed else why


# ---- scoring ----------------------------------------------------------------------------------
def warnings_of(records: Records, thresholds: Thresholds) -> dict[str, str]:
    """{warning key: cause} of everything the run was told, under `thresholds`."""
    said: dict[str, str] = {}
    found: list[list[Finding]] = replay(
        records.metrics, records.diagnostics, records.base_lr, thresholds
    )
    for finding in (f for epoch in found for f in epoch):
        kind = finding.key.split(":")[0]
        said[kind] = CAUSE_OF_KEY[kind]
    texts = {w for d in records.diagnostics for w in d.get("warnings", [])}
    for record in records.metrics:
        if any(text not in texts for text in record.get("warnings", [])):
            said["other"] = "other"  # a family's own epoch_warnings: none is expected
    if records.stopped:  # the stop on a NaN loss: a lower rate, and the cause when it is known
        said["nan_stop"] = CAUSE_OF_KEY["nan_stop"]
        if "exploding gradients" in records.stopped:
            said["nan_stop_exploding"] = CAUSE_OF_KEY["nan_stop_exploding"]
    return said


@dataclasses.dataclass
class Score:
    """What a set of thresholds does on some runs."""

    false_alarms: dict[str, list[str]]  # healthy run -> warnings it was told
    named: list[str]  # faulty runs told their cause
    missed: dict[str, list[str]]  # faulty run -> what it was told instead (maybe nothing)
    confusions: dict[str, list[str]]  # faulty run -> warnings naming another cause
    told: dict[str, dict[str, str]]  # run -> {warning key: cause}

    @property
    def key(self) -> tuple[int, int, int]:
        """Lower is better: healthy runs warned, faulty runs not named, confusions."""
        return (len(self.false_alarms), len(self.missed), sum(map(len, self.confusions.values())))


def score(runs: Sequence[Records], thresholds: Thresholds) -> Score:
    result = Score({}, [], {}, {}, {})
    for records in runs:
        case = records.case
        said = warnings_of(records, thresholds)
        result.told[case.name] = said
        if case.fault == HEALTHY:
            if said:
                result.false_alarms[case.name] = sorted(said)
            continue
        wrong = sorted(
            k for k, c in said.items() if c != case.fault and c not in ALSO_TRUE.get(case.fault, ())
        )
        if wrong:
            result.confusions[case.name] = wrong
        if case.fault in said.values():
            result.named.append(case.name)
        else:
            result.missed[case.name] = sorted(said)
    return result


def _with(thresholds: Thresholds, field: str, value: float) -> Thresholds:
    """thresholds with one field changed (an int field stays an int)."""
    changes: dict[str, Any] = {field: type(getattr(thresholds, field))(value)}
    return dataclasses.replace(thresholds, **changes)


def best_range(runs: Sequence[Records], thresholds: Thresholds, field: str) -> list[float]:
    """The widest run of consecutive GRIDS values of `field` that score best on `runs` with the
    other thresholds held."""
    grid = GRIDS[field]
    scores = [score(runs, _with(thresholds, field, v)).key for v in grid]
    best = min(scores)
    ranges: list[list[float]] = []
    for i, value in enumerate(grid):
        if scores[i] == best:
            if ranges and i > 0 and scores[i - 1] == best:
                ranges[-1].append(value)
            else:
                ranges.append([value])
    return max(ranges, key=len)


def choose(runs: Sequence[Records], start: Thresholds, passes: int = 3) -> Thresholds:
    """Coordinate search over GRIDS from `start` (the shipped defaults): each threshold in turn,
    with the others held, keeps its value when that value lies in its best range, and otherwise
    takes the middle of that range (furthest from a value that scores worse); repeated until
    nothing changes. So a default changes only when the choosing half says it is worse."""
    current = start
    for _ in range(passes):
        changed = False
        for field in GRIDS:
            best = best_range(runs, current, field)
            if best[0] <= getattr(current, field) <= best[-1]:
                continue
            value = best[(len(best) - 1) // 2]
            if value != getattr(current, field):
                current = _with(current, field, value)
                changed = True
        if not changed:
            break
    return current


def split(cases: Sequence[Case], seed: int) -> tuple[list[Case], list[Case]]:
    """Half of each label's cases (seeded shuffle) to choose on, the rest to report on."""
    rng = random.Random(seed)
    choose_on: list[Case] = []
    report_on: list[Case] = []
    for fault in dict.fromkeys(c.fault for c in cases):
        group = [c for c in cases if c.fault == fault]
        rng.shuffle(group)
        half = (len(group) + 1) // 2
        choose_on += group[:half]
        report_on += group[half:]
    return choose_on, report_on


# ---- printing ---------------------------------------------------------------------------------
def source_of(key: str) -> str:
    """Which module words the warning."""
    if key == "other":
        return "a family's own epoch_warnings (models/)"
    if key.startswith("nan_stop"):
        return "the stop on a NaN loss (train.py, or diagnostics/callback.py naming the cause)"
    return "diagnostics (diagnostics/rules.py, loss_rules.py)"


def per_warning(runs: Sequence[Records], result: Score) -> list[str]:
    """Precision (of the runs it was said on, the share whose fault it names, or that it is
    also true of) and recall (of the runs with its cause, the share it was said on)."""
    faults = {r.case.name: r.case.fault for r in runs}
    keys = list(CAUSE_OF_KEY)
    keys += sorted({k for said in result.told.values() for k in said} - set(keys))
    lines = [
        f"  {'warning':<20}{'cause':<20}{'said on':>8}{'right':>7}{'precision':>10}{'recall':>8}"
    ]
    for key in keys:
        cause = CAUSE_OF_KEY.get(key, "?")
        said_on = [n for n, said in result.told.items() if key in said]
        right = [n for n in said_on if faults[n] == cause or cause in ALSO_TRUE.get(faults[n], ())]
        with_cause = [n for n, f in faults.items() if f == cause]
        recall = sum(key in result.told[n] for n in with_cause)
        precision = f"{len(right) / len(said_on):.0%}" if said_on else "-"
        recall_text = f"{recall}/{len(with_cause)}" if with_cause else "-"
        lines.append(
            f"  {key:<20}{cause:<20}{len(said_on):>8}{len(right):>7}{precision:>10}{recall_text:>8}"
        )
    return lines


def per_cause(runs: Sequence[Records], result: Score) -> list[str]:
    lines = []
    for fault in dict.fromkeys(r.case.fault for r in runs):
        group = [r.case.name for r in runs if r.case.fault == fault]
        if fault == HEALTHY:
            quiet = sum(n not in result.false_alarms for n in group)
            lines.append(f"  {fault:<20} {quiet}/{len(group)} silent")
        else:
            named = sum(n in result.named for n in group)
            lines.append(f"  {fault:<20} {named}/{len(group)} named")
    return lines


def report(title: str, runs: Sequence[Records], thresholds: Thresholds) -> Score:
    result = score(runs, thresholds)
    healthy = [r for r in runs if r.case.fault == HEALTHY]
    faulty = [r for r in runs if r.case.fault != HEALTHY]
    print(f"\n== {title}: {len(faulty)} faulty, {len(healthy)} healthy runs ==")
    print(
        f"false warnings on healthy runs: {len(result.false_alarms)} of {len(healthy)} runs "
        f"(target 0)"
    )
    print(
        f"faulty runs named with the right cause: {len(result.named)} of {len(faulty)} "
        f"({len(result.named) / max(1, len(faulty)):.0%}; target >= 90%)"
    )
    print("by label:")
    print("\n".join(per_cause(runs, result)))
    print("per warning:")
    print("\n".join(per_warning(runs, result)))
    sources = {source_of(k) for keys in result.false_alarms.values() for k in keys}
    for source in sorted(sources):
        runs_warned = [
            n for n, keys in result.false_alarms.items() if source in map(source_of, keys)
        ]
        print(f"  false warnings from {source}: {len(runs_warned)} healthy runs")
    for name, keys in sorted(result.false_alarms.items()):
        print(f"  false alarm: {name} (healthy) was told {', '.join(keys)}")
    faults = {r.case.name: r.case.fault for r in runs}
    for name, keys in sorted(result.missed.items()):
        told = ", ".join(keys) if keys else "nothing"
        print(f"  missed: {name} ({faults[name]}) was told {told}")
    for name, keys in sorted(result.confusions.items()):
        print(f"  confusion: {name} ({faults[name]}) was also told {', '.join(keys)}")
    for name, said in sorted(result.told.items()):
        true = sorted(k for k, c in said.items() if c in ALSO_TRUE.get(faults[name], ()))
        if true:
            print(f"  also true: {name} ({faults[name]}) was also told {', '.join(true)}")
    return result


def describe(thresholds: Thresholds) -> str:
    default = Thresholds()
    parts = []
    for field in dataclasses.fields(Thresholds):
        value, was = getattr(thresholds, field.name), getattr(default, field.name)
        parts.append(f"{field.name}={value:g}" + ("" if value == was else f" (default {was:g})"))
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/diagnostics-accuracy"))
    parser.add_argument("--rescore", action="store_true", help="never train; score saved records")
    parser.add_argument("--only", default="", help="run only the cases whose name matches")
    parser.add_argument("--seed", type=int, default=0, help="the training seed and the split's")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cases = [c for c in CASES if re.search(args.only, c.name)]
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    trained = 0
    for i, case in enumerate(cases, 1):
        if args.rescore:
            continue
        info = run_case(case, args.out, args.seed)
        trained += 1
        print(
            f"[{i}/{len(cases)}] {case.name} ({case.fault}): {info['wall_s']:.1f} s"
            + (f"; stopped: {info['stopped'][:60]}" if info["stopped"] else ""),
            flush=True,
        )
    loaded = [load(c, args.out) for c in cases]
    missing = [c.name for c, r in zip(cases, loaded, strict=True) if r is None]
    if missing:
        print(f"no records for {', '.join(missing)}: run without --rescore", file=sys.stderr)
        return 1
    runs = [r for r in loaded if r is not None]
    wall = sum(r.wall_s for r in runs)
    cpu = sum(r.cpu_s for r in runs)
    print(
        f"\nsuite: {len(runs)} runs; training cost {wall:.0f} s wall, {cpu:.0f} s CPU "
        f"(one thread each; {wall / max(1, len(runs)):.1f} s a run); this invocation "
        f"{time.perf_counter() - start_wall:.0f} s wall, {time.process_time() - start_cpu:.0f} s "
        "CPU"
    )
    unlike = [(r.case, label_check(r)) for r in runs if label_check(r)]
    print(f"label checks: {len(runs) - len(unlike)} of {len(runs)} runs show their label")
    for case, why in unlike:
        print(f"  {case.name} ({case.fault}): {why}")
    choose_names, report_names = (set(map(lambda c: c.name, h)) for h in split(cases, args.seed))
    choose_on = [r for r in runs if r.case.name in choose_names]
    report_on = [r for r in runs if r.case.name in report_names]
    print(f"choosing on: {', '.join(sorted(choose_names))}")
    print(f"reporting on: {', '.join(sorted(report_names))}")
    chosen = choose(choose_on, Thresholds())
    print(f"\nchosen thresholds: {describe(chosen)}")
    print("best range of each on the choosing half, the others as chosen:")
    for field in GRIDS:
        best = best_range(choose_on, chosen, field)
        print(f"  {field:<15} {best[0]:g} .. {best[-1]:g}")
    report("choosing half, chosen thresholds", choose_on, chosen)
    report("held-out half, chosen thresholds", report_on, chosen)
    report("held-out half, shipped defaults", report_on, Thresholds())
    report("whole suite, shipped defaults", runs, Thresholds())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
