"""The trainer's checkpoint: what a resume needs, written with one commit point, and read back.

A checkpoint writes model.safetensors and metrics.jsonl first and trainer_state.pt (which holds
the weights too) last: that last atomic rename is the commit. A run killed at any instant keeps
its previous commit, to which a resume puts the other files back (`reconcile`), so it reaches the
same weights an uninterrupted run would. Weights that became NaN are never committed.

`Checkpointing` is a part of `Trainer` (its base class) kept in its own file: it reads the
trainer's attributes declared below and nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from latentspace import runs
from latentspace.errors import RunError, StorageError, TrainingDiverged
from latentspace.models import GenerativeModel
from latentspace.models.base import diverging_lr
from latentspace.settings import TrainConfig

__all__ = ["Checkpointing", "divergence_advice"]


def divergence_advice(train: TrainConfig) -> str:
    """What to change when the loss or the weights stop being finite, for the error's line."""
    if train.lr >= diverging_lr(train.optimizer):
        return (
            f"learning rate {train.lr:g} is probably too high for {train.optimizer}; "
            f"try --lr {train.lr / 10:g}"
        )
    if train.grad_clip == 0:
        return (
            f"try a lower learning rate (now {train.lr:g}) or clip gradients "
            "(--set train.grad_clip=10)"
        )
    return f"try a lower learning rate (now {train.lr:g})"


class Checkpointing:
    """The trainer's state: saved each epoch with one commit point, loaded on resume."""

    model: GenerativeModel
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[torch.optim.lr_scheduler.LRScheduler | None]
    generator: torch.Generator  # the batches' shuffling
    run_dir: Path
    train_config: TrainConfig
    epoch: int  # epochs completed
    best_val: float
    best_epoch: int
    bad_epochs: int
    stop_reason: str
    records: list[dict[str, Any]]

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, the weights included: trainer_state.pt is the commit."""
        state: dict[str, Any] = {
            "epoch": self.epoch,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() if s is not None else {} for s in self.schedulers],
            "rng_torch": torch.get_rng_state(),
            "rng_batches": self.generator.get_state(),
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "stop_reason": self.stop_reason,
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The state `runs.read_trainer_state` read (the model's weights are already loaded)."""
        try:
            self.epoch = int(state["epoch"])
            for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
                optimizer.load_state_dict(saved)
            for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
                if scheduler is not None:
                    scheduler.load_state_dict(saved)
            torch.set_rng_state(state["rng_torch"])
            self.generator.set_state(state["rng_batches"])
            if "rng_cuda" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["rng_cuda"])
        except (KeyError, ValueError, TypeError, RuntimeError) as error:
            raise RunError(
                f"{self.run_dir / runs.STATE} does not fit this run "
                f"({str(error).splitlines()[0] or type(error).__name__}): cannot resume it"
            ) from None
        self.best_val = float(state["best_val"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.stop_reason = str(state.get("stop_reason", ""))
        self.records = [
            r
            for r in runs.read_metrics(self.run_dir)
            if r.get("kind", "epoch") != "epoch" or r["epoch"] <= self.epoch
        ]

    def reconcile(self) -> None:
        """After load_state_dict: put model.safetensors and metrics.jsonl back to the committed
        epoch (a kill between a checkpoint's first write and its commit leaves them ahead)."""
        if runs.weights_epoch(self.run_dir) != self.epoch:
            runs.save_model(self.run_dir, self.model, self.epoch)
        if runs.read_metrics(self.run_dir) != self.records:
            runs.write_metrics(self.run_dir, self.records)

    def save(self) -> None:
        """One checkpoint: model.safetensors and metrics.jsonl first, trainer_state.pt (which
        holds the weights too) last. That last rename is the commit: a kill before it leaves the
        previous commit, to which a resume puts the other files back (`reconcile`)."""
        self._check_finite()
        try:
            runs.save_model(self.run_dir, self.model, self.epoch)
            runs.write_metrics(self.run_dir, self.records)
            runs.save_trainer_state(self.run_dir, self.state_dict())
        except StorageError as error:  # a full disk: say what the run still holds
            kept = runs.committed_epoch(self.run_dir)
            raise StorageError(
                f"{error}; nothing was kept: make room and run the same command again"
                if kept is None
                else f"{error}; {self.run_dir} keeps epoch {kept}: make room, then "
                f"`latentspace train --resume {self.run_dir}`"
            ) from None

    def _check_finite(self) -> None:
        """The update of an epoch's last step comes after its loss was checked: weights it made
        NaN must not be committed, so that the run keeps its last good state."""
        values = [v for v in self.model.state_dict().values() if v.is_floating_point()]
        if values and not bool(torch.stack([torch.isfinite(v).all() for v in values]).all()):
            raise TrainingDiverged(
                f"the weights became NaN or infinite in epoch {self.epoch}: "
                f"{divergence_advice(self.train_config)}. {self.run_dir} keeps the last good "
                f"state (epoch {self.epoch - 1})"
            )
