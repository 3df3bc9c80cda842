"""What the trainer tells a person while it runs: a bar per epoch on a terminal (the loss and the
time left of the whole run), one line per finished epoch, and the estimate of the time left.

The estimate extrapolates from the wall time of this process's whole epochs (steps, validation,
checkpoint, callbacks), and during the first epoch from its steps so far. The lines themselves
come from `latentspace.progress`, which owns how durations read.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from tqdm import tqdm

from latentspace.progress import format_duration, on_terminal

__all__ = ["epoch_bar", "epoch_line", "seconds_left"]


def epoch_bar(total: int, description: str, quiet: bool) -> tqdm:
    """A bar of `total` batches, shown only on a terminal and gone when the epoch ends (the
    epoch's line replaces it)."""
    return tqdm(
        total=total,
        desc=description,
        disable=quiet or not on_terminal(sys.stderr),
        leave=False,
        unit="batch",
        dynamic_ncols=True,
    )


def seconds_left(
    epoch_walls: list[float],
    epochs_done: int,
    epochs: int,
    in_epoch: float = 0.0,
    fraction: float = 0.0,
) -> float:
    """Seconds until `epochs`, at the pace of `epoch_walls` (the wall seconds of each epoch this
    process trained): `in_epoch` seconds spent on the `fraction` of the epoch under way, after
    `epochs_done`. NaN before there is anything to extrapolate from."""
    if epoch_walls:
        per_epoch = sum(epoch_walls) / len(epoch_walls)
    elif fraction > 0:
        per_epoch = in_epoch / fraction  # the first epoch: its steps so far
    else:
        return math.nan
    after = max(0, epochs - epochs_done - (1 if fraction > 0 else 0))
    return per_epoch * (after + (1.0 - fraction if fraction > 0 else 0.0))


def epoch_line(record: dict[str, Any], epochs: int, left: float) -> str:
    """An epoch's line: its mean training (and validation) loss, speed and time, and with
    epochs still to go, the run's time `left`."""
    line = f"epoch {record['epoch']}/{epochs}  train {record['train']['total']:.4f}"
    if "val" in record:
        line += f"  val {record['val']['total']:.4f}"
    line += f"  {record['samples_per_s']:.0f} samples/s  {record['seconds']:.1f}s"
    if record["epoch"] < epochs:
        line += f"  about {format_duration(left)} left"
    return line
