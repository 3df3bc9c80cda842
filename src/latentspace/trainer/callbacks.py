"""The trainer's hooks: what a callback may implement, and the one way it stops training.

Callbacks are how everything that is not the loop itself joins a run (the diagnostics, the
dashboards, a tuning trial's pruning) without the trainer knowing them: each hook is optional, and
every hook runs on rank 0 alone under torchrun (callbacks write into the run).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from latentspace.trainer.loop import Trainer

__all__ = ["Callback", "StopTraining", "call_hooks"]


class StopTraining(Exception):
    """Raised by a callback to end training cleanly after the current epoch (state is saved)."""


class Callback(Protocol):
    """Hooks into training. Any may be absent. on_checkpoint runs before an epoch is saved: it
    may add to the epoch's record and write the callback's own files into the run, which then
    belong to that checkpoint. on_epoch_end runs after the epoch is saved and may raise
    StopTraining (or a tuning library's pruning exception, which propagates)."""

    def on_train_start(self, trainer: Trainer) -> None: ...
    def on_batch_end(
        self, trainer: Trainer, x: torch.Tensor, terms: dict[str, torch.Tensor]
    ) -> None: ...
    def on_checkpoint(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...


def call_hooks(callbacks: Sequence[object], hook: str, *args: Any) -> None:
    """Call `hook` on every callback that has it, in order (a callback may implement any part)."""
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            method(*args)
