"""What the diagnostics rules share: when a measured number becomes a warning (`Thresholds`),
what a warning is (`Finding`), and the readings of a diagnostics record every rule makes."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, TypeGuard

__all__ = [
    "TOO_HIGH",
    "UPSTREAM_OF_COLLAPSE",
    "Finding",
    "Thresholds",
    "finite",
    "first_step",
]


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """When a measured number becomes a warning. docs/diagnostics.md gives the reasons, and
    bench/diagnostics_accuracy.py the suite of labelled runs they were chosen on."""

    dead_relu: float = 0.9  # fraction of a layer's ReLU units silent on every validation image
    dead_images: int = 100  # ... judged only on at least this many images (on 24, chance)
    saturated: float = 0.5  # fraction of a layer's sigmoid/tanh outputs with slope < 5% of peak
    vanishing: float = 1e-3  # first-layer / last-layer weight-gradient norm below this
    exploding: float = 1e3  # a sampled step's gradient norm over the run's first step's above this
    update_high: float = 1.0  # largest update-to-weight ratio of the epoch's sampled steps
    update_low: float = 5e-4  # ... of the epoch's last step below this in every layer
    # epoch's mean training loss above its end-of-epoch loss by more than this many times the
    # distance from that end to the untrained model's (scale-free: a density's loss can be < 0)
    loss_spike: float = 1.0
    loss_rise: float = 0.05  # training loss rose by more than this fraction over one epoch
    upturn: float = 0.01  # validation loss above its best by this fraction while training falls
    upturn_epochs: int = 5  # ... in each of this many epochs in a row
    gap: float = 0.25  # (validation - training) / training loss above this
    collapse: float = 0.1  # share of active latent units at or below this: posterior collapse
    collapse_steps: int = 200  # ... after this many optimizer steps (units wake up in the first)
    diverged: float = 0.1  # loss above the untrained model's by more than this fraction
    diversity: float = 0.15  # generated images' spread over the real images' below this ...
    diversity_epochs: int = 2  # ... in each of this many epochs in a row: mode collapse


# conditions that say the learning rate is too high: a run that met one is never told to raise it
TOO_HIGH = ("update_high", "loss_spike", "loss_rise", "diverged")
UPSTREAM_OF_COLLAPSE = (*TOO_HIGH, "update_low", "vanishing", "exploding")


@dataclasses.dataclass(frozen=True)
class Finding:
    """key identifies the condition (e.g. "dead_relu:encoder layer 2"); text is what users read."""

    key: str
    text: str


def finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and math.isfinite(value)


def first_step(entry: dict[str, Any], history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The run's first sampled step (step 1: the loss of the untrained model and its gradient
    norm), or None when the records do not reach back to it."""
    first = history[0] if history else entry
    steps = first.get("steps_sampled") or []
    if first.get("epoch") == 1 and steps and steps[0].get("step") == 1:
        return dict(steps[0])
    return None
