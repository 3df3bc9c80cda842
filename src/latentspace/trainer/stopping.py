"""When the trainer stops: early stopping on the validation loss (keeping the best epoch's
weights) and the time budget train.max_minutes.

`Stopping` is a part of `Trainer` (a base class, as `Checkpointing` is) kept in its own file: it
reads and sets the trainer's attributes declared below and nothing else.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from latentspace import runs
from latentspace.models import GenerativeModel
from latentspace.progress import format_duration
from latentspace.settings import TrainConfig
from latentspace.trainer.progress import seconds_left

__all__ = ["Stopping"]


class Stopping:
    """Early stopping, the best epoch's weights, and the time budget."""

    model: GenerativeModel
    run_dir: Path
    train_config: TrainConfig
    epoch: int  # epochs completed
    best_val: float
    best_epoch: int
    bad_epochs: int
    stop_reason: str
    fit_started: float  # time.perf_counter() when this process's fit began
    epoch_walls: list[float]  # seconds each epoch of this process took

    def _early_stopping(self, val_total: float) -> None:
        if val_total < self.best_val - self.train_config.min_delta:
            self.best_val, self.best_epoch, self.bad_epochs = val_total, self.epoch, 0
            return
        self.bad_epochs += 1
        if self._patience_spent():
            self.stop_reason = (
                f"early stopping: validation loss has not improved for "
                f"{self.train_config.patience} epochs (best {self.best_val:.4g} at epoch "
                f"{self.best_epoch})"
            )

    def _patience_spent(self) -> bool:
        patience = self.train_config.patience
        return bool(patience) and self.bad_epochs >= patience

    def _keep_best(self, record: dict[str, Any]) -> None:
        """With early stopping, the best epoch's weights are kept as best.safetensors, and the
        epoch that stops training puts them back (as Keras' restore_best_weights), so the run
        ends with the weights it stopped for, not those of `patience` worse epochs. Written
        before the commit: a kill between the two re-runs the epoch, which saves them again."""
        if not self.train_config.patience or self.model.monitor is None:
            return
        if self.best_epoch == self.epoch:
            runs.save_model(self.run_dir, self.model, self.epoch, name=runs.BEST)
        elif self._patience_spent():
            if runs.load_best(self.run_dir, self.model, self.best_epoch):
                record["restored_epoch"] = self.best_epoch
                self.stop_reason += f"; the run keeps epoch {self.best_epoch}'s weights"
            else:
                self.stop_reason += (
                    f"; epoch {self.best_epoch}'s weights were not found in {runs.BEST}: the run "
                    "keeps the last epoch's"
                )

    def _time_is_up(self) -> str:
        """train.max_minutes: why no further epoch starts, or "" when the next one fits (at the
        pace of the slowest epoch so far in this process). Not a stop_reason: that is saved
        with the run and ends a resumed one, while --resume must go on after a time limit."""
        limit = self.train_config.max_minutes * 60
        spent = time.perf_counter() - self.fit_started
        if not limit or self.epoch >= self.train_config.epochs:
            return ""
        if spent + max(self.epoch_walls, default=0.0) <= limit:
            return ""
        return (
            f"time limit: {spent / 60:.1f} of {limit / 60:g} minutes spent, and an epoch takes "
            f"{format_duration(max(self.epoch_walls, default=0.0))}; stopped after epoch "
            f"{self.epoch} of {self.train_config.epochs} (--resume {self.run_dir} goes on)"
        )

    def run_seconds_left(self, in_epoch: float = 0.0, fraction: float = 0.0) -> float:
        """Seconds until train.epochs, at the pace of this process's epochs: `in_epoch` seconds
        spent on the `fraction` of the epoch under way (early stopping may end it sooner), and
        never past train.max_minutes."""
        left = seconds_left(
            self.epoch_walls, self.epoch, self.train_config.epochs, in_epoch, fraction
        )
        if self.train_config.max_minutes:
            limit = self.train_config.max_minutes * 60
            left = min(left, max(limit - (time.perf_counter() - self.fit_started), 0.0))
        return left
