"""From the trainer's epoch records to the entries the rules judge: the loss numbers of an epoch
(`loss_entry`, which the `Diagnostics` callback adds to its measurements) and the findings of a
finished run replayed under other thresholds (`replay`, what bench/diagnostics_accuracy.py
scores with)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from latentspace.diagnostics.rules import Finding, Thresholds, _finite, detect

__all__ = ["LOSS_KEYS", "loss_entry", "replay"]


def loss_entry(
    record: dict[str, Any], history: Sequence[dict[str, Any]], t: Thresholds
) -> dict[str, Any]:
    """Train/validation numbers of an epoch record, with the gap and the upturn flag. The
    training loss excludes the L1/L2 penalties (validation has none). Only for models whose loss
    is a likelihood bound (it has a "reconstruction" term): a GAN's two losses pull against each
    other, so their sum rising or a gap says nothing about overfitting.

    The upturn: validation loss above its best by more than `t.upturn` in each of the last
    `t.upturn_epochs` epochs (so the best is older than them), while training loss is below its
    value at the best epoch. One epoch above the best is noise on a small validation set."""
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
    earlier = [h for h in history if _finite(h.get("val_loss"))]
    if earlier:
        best = min(earlier, key=lambda h: h["val_loss"])
        out["val_best"], out["val_best_epoch"] = best["val_loss"], best["epoch"]
        recent = [h["val_loss"] for h in earlier[len(earlier) - (t.upturn_epochs - 1) :]]
        out["val_upturn"] = bool(
            len(earlier) >= t.upturn_epochs
            and min([*recent, val]) > best["val_loss"] + t.upturn * abs(best["val_loss"])
            and train_loss < best["train_loss"]
        )
    return out


LOSS_KEYS = (
    "train_loss",
    "likelihood",
    "val_loss",
    "gap",
    "gap_relative",
    "val_best",
    "val_best_epoch",
    "val_upturn",
)


def replay(
    metrics: Sequence[dict[str, Any]],
    diagnostics: Sequence[dict[str, Any]],
    base_lr: float,
    thresholds: Thresholds | None = None,
) -> list[list[Finding]]:
    """The findings of every epoch of a finished run under `thresholds`, from its records
    (metrics.jsonl's epoch records and diagnostics.jsonl), as the `Diagnostics` callback would
    have found them while it trained: what `bench/diagnostics_accuracy.py` scores thresholds with,
    without training again."""
    t = thresholds or Thresholds()
    by_epoch = {m["epoch"]: m for m in metrics if m.get("kind", "epoch") == "epoch"}
    history: list[dict[str, Any]] = []
    found_per_epoch = []
    for record in diagnostics:
        entry = {k: v for k, v in record.items() if k not in LOSS_KEYS}
        entry.update(loss_entry(by_epoch[record["epoch"]], history, t))
        found = detect(entry, history, float(by_epoch[record["epoch"]]["lr"]), t, base_lr)
        entry["active"] = sorted(f.key for f in found)
        history.append(entry)
        found_per_epoch.append(found)
    return found_per_epoch
