"""Experiments: every verdict is computed from recorded numbers, and can come out either way."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from latentspace.cli import main
from latentspace.experiments import (
    EXPERIMENTS,
    Check,
    activation,
    batch_size,
    bias,
    capacity,
    epochs,
    learning_rate,
    regularization,
    verdict_of,
)


def test_registry_has_the_seven_image_experiments_and_the_text_one() -> None:
    assert list(EXPERIMENTS) == [
        "learning-rate",
        "batch-size",
        "epochs",
        "regularization",
        "capacity",
        "activation",
        "bias",
        "posterior-collapse",
    ]


def test_verdict_needs_every_check() -> None:
    yes, no = Check("a", True, "1"), Check("b", False, "2")
    assert verdict_of([yes, yes])
    assert not verdict_of([yes, no])
    assert not verdict_of([])


def test_learning_rate_verdict() -> None:
    firsts = {1e-4: 300.0, 1e-3: 200.0, 1e-2: 190.0, 1e-1: 400.0}
    good = {1e-4: 250.0, 1e-3: 150.0, 1e-2: 160.0, 1e-1: math.inf}
    assert verdict_of(learning_rate.checks_for(good, firsts))
    # the lowest rate is best: the sweep never reached "too low"
    flat = {1e-4: 140.0, 1e-3: 150.0, 1e-2: 160.0, 1e-1: 170.0}
    checks = learning_rate.checks_for(flat, firsts)
    assert not verdict_of(checks) and not checks[0].passed


def test_batch_size_verdict() -> None:
    noise = {16: 4.0, 64: 1.0, 256: 0.25}
    memory = {16: 1.0, 64: 4.0, 256: 16.0}
    assert verdict_of(batch_size.checks_for(noise, memory, {16: 100.0, 64: 110.0, 256: 120.0}))
    noisy = {16: 4.0, 64: 5.0, 256: 0.25}
    assert not verdict_of(batch_size.checks_for(noisy, memory, {16: 100.0, 64: 110.0, 256: 120.0}))
    assert not verdict_of(batch_size.checks_for(noise, memory, {16: 130.0, 64: 110.0, 256: 120.0}))


def test_epochs_verdict_and_early_stopping_rule() -> None:
    val = [10.0, 8.0, 7.0, 7.5, 7.6, 7.7, 7.8, 7.9, 8.0]
    train = [10.0, 8.0, 6.0, 5.0, 4.0, 3.5, 3.0, 2.8, 2.5]
    assert epochs.early_stop_epoch(val, 5) == 8
    assert verdict_of(epochs.checks_for(train, val, 8))
    assert not verdict_of(epochs.checks_for(train, val, None))  # early stopping never fired
    assert not verdict_of(epochs.checks_for(train, val, 6))  # not where the rule says
    late = [10.0, 8.0, 7.0, 7.5, 7.6, 7.7, 7.8, 7.9, 7.2]  # stopping cost more than it saved
    assert [c.passed for c in epochs.checks_for(train, late, 8)] == [True, False]
    falling = [10.0, 9.0, 8.0, 7.0, 6.0, 5.5, 5.0, 4.8, 4.7]
    assert epochs.early_stop_epoch(falling, 5) is None
    assert not verdict_of(epochs.checks_for(train, falling, None))


def _reg(strength: float, norm: float, sparsity: float, gap: float) -> dict[str, float]:
    return {"strength": strength, "norm": norm, "sparsity": sparsity, "gap": gap}


def test_regularization_verdict() -> None:
    rows = {
        "none": _reg(0, 30, 0.02, 20),
        "l2=0.01": _reg(0.01, 20, 0.02, 15),
        "l2=0.1": _reg(0.1, 10, 0.03, 8),
        "l1=0.001": _reg(0.001, 25, 0.3, 14),
        "l1=0.01": _reg(0.01, 15, 0.7, 9),
    }
    assert verdict_of(regularization.checks_for(rows))
    rows["l1=0.01"] = _reg(0.01, 15, 0.7, 25)  # strongest L1 widened the gap
    checks = regularization.checks_for(rows)
    assert [c.passed for c in checks] == [True, True, False]


def test_capacity_verdict() -> None:
    grows = {
        h: {"train": 200.0 - i * 10, "gap": 1.0 + i}
        for i, h in enumerate(dict.fromkeys(capacity.WIDTHS + capacity.DEPTHS))
    }
    assert verdict_of(capacity.checks_for(grows))
    grows[capacity.DEPTHS[-1]] = {"train": 300.0, "gap": 0.5}
    assert [c.passed for c in capacity.checks_for(grows)] == [True, True, False, False]


def _act(ratio: float, val: list[float], dead: float | None = None) -> dict[str, object]:
    return {"ratio": ratio, "val": val, "dead": dead, "saturated": None, "first_grad": 1.0}


def test_activation_verdict() -> None:
    stats = {
        "relu": _act(0.5, [150.0, 120.0], dead=0.3),
        "leaky_relu": _act(0.5, [150.0, 120.0]),
        "sigmoid": _act(1e-5, [200.0, 180.0]),
        "tanh": _act(0.01, [160.0, 125.0]),
    }
    assert verdict_of(activation.checks_for(stats))
    stats["relu"] = _act(0.5, [150.0, 120.0], dead=0.0)  # no dead units this time
    assert not verdict_of(activation.checks_for(stats))


def test_bias_verdict() -> None:
    on = {"active": 0.6, "error": 0.05}
    off = {"active": 0.0, "error": 0.5}
    assert verdict_of(bias.checks_for({True: on, False: off}))
    assert not verdict_of(bias.checks_for({True: on, False: {"active": 0.0, "error": 0.06}}))


def test_experiment_refuses_other_datasets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["experiment", "bias", "--dataset", "cifar", "--out", str(tmp_path)]) == 1
    assert "--dataset mnist or fashion-mnist" in capsys.readouterr().err


@pytest.mark.slow
def test_bias_experiment_on_mnist_writes_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The one real-data test: the smallest budget gives 2 epochs on 3000 images per trial."""
    assert main(["experiment", "bias", "--budget", "0.05", "--out", str(tmp_path)]) == 0
    line = capsys.readouterr().out
    assert line.startswith("bias: ")
    page = (tmp_path / "bias" / "index.html").read_text()
    assert "Verdict: " in page and "units active on a black image" in page
    assert (tmp_path / "bias" / "trials" / "with-bias" / "diagnostics.jsonl").exists()
