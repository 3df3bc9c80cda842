"""The plain-words findings: thresholds and the rules that turn an epoch record into warnings."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """When a measured number becomes a warning. docs/diagnostics.md gives the reasons."""

    dead_relu: float = 0.6  # fraction of a layer's ReLU units silent on every validation image
    saturated: float = 0.5  # fraction of a layer's sigmoid/tanh outputs with slope < 5% of peak
    vanishing: float = 1e-3  # first-layer / last-layer weight-gradient norm below this
    exploding: float = 1e3  # ... above this
    update_high: float = 0.25  # largest update-to-weight ratio of the epoch's sampled steps
    update_low: float = 5e-4  # ... of the epoch's last step below this in every layer
    loss_spike: float = 3.0  # epoch's mean training loss over its end-of-epoch loss above this
    loss_rise: float = 0.05  # training loss rose by more than this fraction over one epoch
    upturn: float = 0.01  # validation loss above its best by this fraction while training falls
    gap: float = 0.25  # (validation - training) / training loss above this


@dataclasses.dataclass(frozen=True)
class Finding:
    """key identifies the condition (e.g. "dead_relu:encoder layer 2"); text is what users read."""

    key: str
    text: str


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def _layer_warnings(
    entry: dict[str, Any], lr: float, t: Thresholds, base_lr: float | None = None
) -> list[Finding]:
    found = []
    layers: dict[str, dict[str, Any]] = entry.get("layers", {})
    images = entry.get("val_images", 0)
    for name, stats in layers.items():
        dead = stats.get("dead_fraction")
        if dead is not None and dead >= t.dead_relu:
            found.append(
                Finding(
                    f"dead_relu:{name}",
                    f"{_percent(dead)} of the ReLU units in {name} never fired on {images} "
                    f"validation images (dead ReLU): lower the learning rate (now {lr:g}) or "
                    "try --activation leaky_relu",
                )
            )
        saturated = stats.get("saturated_fraction")
        if saturated is not None and saturated >= t.saturated:
            found.append(
                Finding(
                    f"saturated:{name}",
                    f"{_percent(saturated)} of the {stats['activation']} outputs in {name} are "
                    f"saturated (slope under 5% of its peak) on {images} validation images, so "
                    "little gradient passes through them: try --activation relu",
                )
            )
    largest = {n: s["update_ratio_max"] for n, s in layers.items() if s.get("update_ratio_max")}
    if largest:
        worst = max(largest, key=lambda n: largest[n])
        if largest[worst] > t.update_high:
            found.append(
                Finding(
                    "update_high",
                    f"one step's update to {worst} was {largest[worst]:.2g} times the size of its "
                    f"weights (update-to-weight ratio; about 1e-3 is typical): the learning rate "
                    f"{lr:g} is probably too high, try --lr {lr / 10:g}",
                )
            )
    last = [s["update_ratio"] for s in layers.values() if s.get("update_ratio") is not None]
    # a schedule that has lowered the rate below its start makes small steps on purpose
    decayed = base_lr is not None and lr < base_lr
    if last and max(last) < t.update_low and not decayed:
        found.append(
            Finding(
                "update_low",
                f"the last step's updates were at most {max(last):.2g} times the size of the "
                f"weights in every layer (update-to-weight ratio; about 1e-3 is typical): "
                f"training crawls, "
                f"try a higher learning rate than {lr:g} (--lr {lr * 10:g})",
            )
        )
    return found


def _gradient_warnings(entry: dict[str, Any], t: Thresholds) -> list[Finding]:
    ratio = entry.get("grad_ratio")
    if ratio is None:
        return []
    first, last = entry["first_layer"], entry["last_layer"]
    what = f"the weight gradient of {first} is {ratio:.2g} times that of {last}"
    kinds = {s.get("activation") for s in entry.get("layers", {}).values()}
    if ratio < t.vanishing:
        hint = (
            "try --activation relu or leaky_relu"
            if kinds & {"sigmoid", "tanh"}
            else "try a shallower network"
        )
        return [Finding("vanishing", f"{what} (vanishing gradients): {hint}")]
    if ratio > t.exploding:
        return [
            Finding(
                "exploding",
                f"{what} (exploding gradients): clip gradients with --set train.grad_clip=10",
            )
        ]
    return []


def _loss_warnings(
    entry: dict[str, Any], history: Sequence[dict[str, Any]], lr: float, t: Thresholds
) -> list[Finding]:
    found: list[Finding] = []
    if not entry.get("likelihood", True):
        return found
    train_loss = entry.get("train_loss")
    end = entry.get("val_loss", entry.get("end_loss"))
    if train_loss is not None and end is not None and end > 0 and train_loss > t.loss_spike * end:
        found.append(
            Finding(
                "loss_spike",
                f"training loss averaged {train_loss:.4g} in epoch {entry['epoch']}, "
                f"{train_loss / end:.3g} times its value at the end of the epoch ({end:.4g}): "
                f"the loss blew up during the epoch; the learning rate {lr:g} is too high, "
                f"try --lr {lr / 10:g}",
            )
        )
    if history and train_loss is not None:
        before = history[-1].get("train_loss")
        if (
            before is not None
            and math.isfinite(before)
            and train_loss > before + t.loss_rise * abs(before)
        ):
            found.append(
                Finding(
                    "loss_rise",
                    f"training loss rose from {before:.4g} to {train_loss:.4g} "
                    f"({(train_loss - before) / abs(before):+.0%}) in epoch {entry['epoch']}: the "
                    f"learning rate {lr:g} may be too high, try --lr {lr / 10:g}",
                )
            )
    if entry.get("val_upturn"):
        found.append(
            Finding(
                "overfitting",
                f"validation loss rose to {entry['val_loss']:.4g}, "
                f"{entry['val_loss'] / entry['val_best'] - 1:.1%} above its best "
                f"({entry['val_best']:.4g} at epoch {entry['val_best_epoch']}), while training "
                f"loss fell to {train_loss:.4g} (overfitting): stop early with "
                "--set train.patience=3",
            )
        )
    gap = entry.get("gap_relative")
    unstable = any(f.key in ("loss_spike", "loss_rise") for f in found)
    if gap is not None and gap > t.gap and not unstable:  # a gap from instability is not memory
        found.append(
            Finding(
                "gap",
                f"validation loss {entry['val_loss']:.4g} is {gap:.0%} above training loss "
                f"{train_loss:.4g} (train/validation gap): the model memorises its training "
                "images; train on more images (--set data.limit=...) or a smaller model",
            )
        )
    return found


def detect(
    entry: dict[str, Any],
    history: Sequence[dict[str, Any]],
    lr: float,
    thresholds: Thresholds | None = None,
    base_lr: float | None = None,
) -> list[Finding]:
    """Every condition true for the diagnostics record `entry`, given the earlier records.
    `base_lr` is the configured learning rate; `lr` the one the epoch used (after a schedule)."""
    t = thresholds or Thresholds()
    return [
        *_layer_warnings(entry, lr, t, base_lr),
        *_gradient_warnings(entry, t),
        *_loss_warnings(entry, history, lr, t),
    ]


def _loss_entry(
    record: dict[str, Any], history: Sequence[dict[str, Any]], t: Thresholds
) -> dict[str, Any]:
    """Train/validation numbers of an epoch record, with the gap and the upturn flag. The
    training loss excludes the L1/L2 penalties (validation has none). Only for models whose loss
    is a likelihood bound (it has a "reconstruction" term): a GAN's two losses pull against each
    other, so their sum rising or a gap says nothing about overfitting."""
    train = record["train"]
    out: dict[str, Any] = {
        "train_loss": train["total"] - train.get("l1", 0.0) - train.get("l2", 0.0),
        "likelihood": "reconstruction" in train,
    }
    if "val" not in record or not out["likelihood"]:
        return out
    val, train_loss = record["val"]["total"], out["train_loss"]
    out["val_loss"] = val
    out["gap"] = val - train_loss
    out["gap_relative"] = (val - train_loss) / abs(train_loss) if train_loss else None
    earlier = [h for h in history if h.get("val_loss") is not None]
    if earlier:
        best = min(earlier, key=lambda h: h["val_loss"])
        out["val_best"], out["val_best_epoch"] = best["val_loss"], best["epoch"]
        out["val_upturn"] = bool(
            val > best["val_loss"] + t.upturn * abs(best["val_loss"])
            and train_loss < best["train_loss"]
        )
    return out
