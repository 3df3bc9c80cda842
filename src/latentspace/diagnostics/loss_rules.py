"""The rules that read the loss curves: a loss that blew up within an epoch, rose over one,
or diverged above the untrained model's, and a model that overfits or memorises its examples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from latentspace.diagnostics.thresholds import Finding, Thresholds
from latentspace.diagnostics.thresholds import finite as _finite
from latentspace.diagnostics.thresholds import first_step as _first_step

__all__ = ["loss_warnings"]


def _epoch_start_loss(entry: dict[str, Any], history: Sequence[dict[str, Any]]) -> float | None:
    """The training loss where the epoch began: the previous epoch's last step, or the untrained
    model's at the run's first step."""
    if history:
        before = history[-1].get("end_loss")
        return before if _finite(before) else None
    start = _first_step(entry, history)
    return start["loss"] if start and _finite(start.get("loss")) else None


def _diverged(
    entry: dict[str, Any], history: Sequence[dict[str, Any]], t: Thresholds
) -> tuple[float, float] | None:
    """(the loss now, the untrained model's) when the loss is not finite or clearly above what
    the model scored before its first step (on one batch: hence the margin `t.diverged`):
    whatever it learned is lost. None otherwise.

    A family that anneals its KL weight declares it (signals["kl_weight"]): its first step
    weighed the KL by about 0 and validation weighs it by 1, and a KL that grows while its
    weight is low raises the validation loss above the untrained one with nothing lost. Then
    the validation loss less its KL (the reconstruction, weighed 1 at every step) is compared:
    the untrained reconstruction is at most the first step's loss (a KL term is never below 0),
    so one clearly above that loss is still a model that lost what it learned."""
    start = _first_step(entry, history)
    now = entry.get("val_loss", entry.get("train_loss"))
    if start is None or now is None or not _finite(start.get("loss")):
        return None
    annealing = "kl_weight" in (entry.get("signals") or {})
    if annealing and _finite(now) and _finite(entry.get("val_kl")) and "val_loss" in entry:
        now -= entry["val_kl"]
    above = now > start["loss"] + t.diverged * abs(start["loss"])
    return (now, start["loss"]) if not _finite(now) or above else None


def _spike(
    entry: dict[str, Any], history: Sequence[dict[str, Any]], t: Thresholds
) -> tuple[float, float, float, float] | None:
    """(the epoch's mean training loss, its end-of-epoch loss, the untrained model's, how far the
    mean lay above that end in units of the distance between the two) when that is above
    `t.loss_spike`: for an end below the untrained loss, the share of the run's progress the
    epoch gave back. Measured against the run's own progress, not as a ratio of losses, since a
    density's loss can be near 0 or below it. A loss that only fell can average far above its
    end (a Gaussian decoder's first steps): it blew up only if the epoch's mean is also above
    where the epoch began. None otherwise, or when the records do not reach back to step 1."""
    mean, end = entry.get("train_loss"), entry.get("val_loss", entry.get("end_loss"))
    first = _first_step(entry, history)
    begun = _epoch_start_loss(entry, history)
    if first is None or not (_finite(mean) and _finite(end) and _finite(first.get("loss"))):
        return None
    untrained = first["loss"]
    if (begun is not None and mean <= begun) or mean - end <= t.loss_spike * abs(untrained - end):
        return None
    distance = abs(untrained - end)
    return mean, end, untrained, (mean - end) / distance if distance else math.inf


def loss_warnings(
    entry: dict[str, Any], history: Sequence[dict[str, Any]], lr: float, t: Thresholds
) -> list[Finding]:
    found: list[Finding] = []
    if not entry.get("likelihood", True):
        return found
    train_loss = entry.get("train_loss")
    spike = _spike(entry, history, t)
    if spike is not None:
        mean, end, untrained, given_back = spike
        scale = "all it had fallen from" if end < untrained else "as far as it ended above"
        found.append(
            Finding(
                "loss_spike",
                f"training loss averaged {mean:.4g} in epoch {entry['epoch']}, {mean - end:.4g} "
                f"above its value at the end of the epoch ({end:.4g}), {given_back:.3g} times "
                f"{scale} the untrained model's {untrained:.4g}: the loss blew up during the "
                f"epoch; the learning rate {lr:g} is too high, try --lr {lr / 10:g}",
            )
        )
    if history and train_loss is not None:
        before = history[-1].get("train_loss")
        if _finite(before) and train_loss > before + t.loss_rise * abs(before):
            found.append(
                Finding(
                    "loss_rise",
                    f"training loss rose from {before:.4g} to {train_loss:.4g} "
                    f"({(train_loss - before) / abs(before):+.0%}) in epoch {entry['epoch']}: the "
                    f"learning rate {lr:g} may be too high, try --lr {lr / 10:g}",
                )
            )
    diverged = _diverged(entry, history, t)
    if diverged is not None:
        now, start = diverged
        found.append(
            Finding(
                "diverged",
                f"the loss is {now:.4g}, above the untrained model's {start:.4g} at the first "
                f"step: training diverged and what it learned is lost; the learning rate {lr:g} "
                f"is too high, try --lr {lr / 10:g}",
            )
        )
        return found  # a model that lost what it learned neither memorises nor overfits
    if entry.get("val_upturn"):
        found.append(_overfitting(entry, history, t))
    gap = entry.get("gap_relative")
    unstable = any(f.key in ("loss_spike", "loss_rise") for f in found)
    if _finite(gap) and gap > t.gap and not unstable:  # a gap from instability is not memory
        examples = entry.get("val_unit", "images")
        found.append(
            Finding(
                "gap",
                f"validation loss {entry['val_loss']:.4g} is {gap:.0%} above training loss "
                f"{train_loss:.4g} (train/validation gap): the model memorises its training "
                f"{examples}; train on more {examples} (--set data.limit=...) or a smaller model",
            )
        )
    return found


def _longest_wait(values: Sequence[float]) -> int:
    """The most epochs a validation curve waited for a new best that then came."""
    best, waited, longest = math.inf, 0, 0
    for value in values:
        if value < best:
            best, longest, waited = value, max(longest, waited), 0
        else:
            waited += 1
    return longest


def _overfitting(
    entry: dict[str, Any], history: Sequence[dict[str, Any]], t: Thresholds
) -> Finding:
    """The advice's patience is longer than any wait this run's validation loss has already come
    back from: a shorter one would have stopped it before a later best."""
    curve = [h["val_loss"] for h in history if _finite(h.get("val_loss"))]
    patience = max(t.upturn_epochs, _longest_wait(curve) + 1)
    since = entry["epoch"] - entry["val_best_epoch"]
    return Finding(
        "overfitting",
        f"validation loss has stayed above its best ({entry['val_best']:.4g} at epoch "
        f"{entry['val_best_epoch']}) for {since} epochs and is now {entry['val_loss']:.4g}, "
        f"{entry['val_loss'] / entry['val_best'] - 1:.1%} above it, while training loss fell to "
        f"{entry['train_loss']:.4g} (overfitting): stop early with --set train.patience="
        f"{patience}, or train on more {entry.get('val_unit', 'images')}",
    )
