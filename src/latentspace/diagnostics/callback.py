"""The `Diagnostics` trainer callback: measures a run as it trains, writes diagnostics.jsonl."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from latentspace import runs
from latentspace.data import Batches, ImageSet, to_float
from latentspace.diagnostics.entries import loss_entry
from latentspace.diagnostics.measure import Layer, find_layers, measure_activations
from latentspace.diagnostics.reading import DIAGNOSTICS, read_diagnostics
from latentspace.diagnostics.rules import Growth, Thresholds, detect, exploded
from latentspace.errors import TrainingDiverged
from latentspace.models.base import diverging_lr
from latentspace.settings import TrainConfig


class Trainer(Protocol):
    """What the callback reads of `latentspace.train.Trainer` (named here, so that diagnostics
    does not import the trainer that imports it)."""

    model: nn.Module
    run_dir: Path
    epoch: int
    val_set: ImageSet | None
    train_batches: Batches
    device: torch.device
    train_config: Any
    check_every: int  # the trainer reads the loss (and stops on a NaN) every this many steps


def exploding_advice(growth: Growth, train: TrainConfig) -> str:
    """What to do after exploding gradients: a rate the optimizer's table calls too high is named
    first (as the trainer's own stop does), else clipping, or a lower rate."""
    if train.lr >= diverging_lr(train.optimizer):
        return (
            f"the learning rate {train.lr:g} is probably too high for {train.optimizer}; try "
            f"--lr {train.lr / 10:g}, or clip gradients with --set train.grad_clip={growth.clip}"
        )
    return (
        f"clip gradients with --set train.grad_clip={growth.clip} or lower the learning rate "
        f"(now {train.lr:g}, try --lr {train.lr / 10:g})"
    )


class Diagnostics:
    """The trainer callback. every: measure gradients and updates on one step in this many (and
    on the last step of each epoch); val_images: size of the fixed validation batch."""

    def __init__(
        self, every: int = 50, val_images: int = 512, thresholds: Thresholds | None = None
    ) -> None:
        if every < 1 or val_images < 1:
            raise ValueError("Diagnostics: every and val_images must be at least 1")
        self.every = every
        self.val_images = val_images
        self.thresholds = thresholds or Thresholds()
        self.records: list[dict[str, Any]] = []
        self.said: set[str] = set()  # conditions already warned about in this run
        self.layers: list[Layer] = []
        self.steps = 1
        self.step = 0
        self.epoch = 0
        self.samples: list[dict[str, Any]] = []
        self.snapshot: list[torch.Tensor] | None = None
        self.batch: torch.Tensor | None = None
        self.seconds = 0.0
        # (step, gradient norm) of every one of the run's first `every` steps: a rate or a
        # network that blows up often does so before the sparse samples see it
        self.early: list[tuple[int, float]] = []

    # ---- trainer hooks ----------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer) -> None:
        start = time.perf_counter()
        self.layers = find_layers(trainer.model)
        saved = read_diagnostics(trainer.run_dir)
        # a resume starts at the last commit: drop what a killed checkpoint wrote past it
        self.records = [r for r in saved if r["epoch"] <= trainer.epoch]
        if len(self.records) < len(saved):
            self._write(trainer.run_dir)
        self.said = {key for r in self.records for key in r.get("raised", [])}
        self.early = []
        source = (
            trainer.val_set.images if trainer.val_set is not None else trainer.train_batches.images
        )
        rows = source[: self.val_images]  # the first N: no randomness
        # images (uint8) as floats; other data (text's token ids) as the model takes it
        self.batch = (to_float(rows) if rows.dtype == torch.uint8 else rows).to(trainer.device)
        self.steps = max(1, len(trainer.train_batches))
        self.step, self.epoch = 0, trainer.epoch
        self._prepare(0)
        self.seconds = time.perf_counter() - start

    def on_batch_end(
        self, trainer: Trainer, x: torch.Tensor, terms: dict[str, torch.Tensor]
    ) -> None:
        if self.epoch == 0 and self.step + 1 < self.every:
            self._note_early_step()
        if self.step % trainer.check_every == 0 or self.step == self.steps - 1:
            self._check_loss(trainer, terms)  # where the trainer checks it: no extra wait
        if (
            self.snapshot is None
            and self.step + 1 < self.steps
            and not self._sampled(self.step + 1)
        ):
            self.step += 1  # the common case: nothing to do
            return
        start = time.perf_counter()
        if self.snapshot is not None:
            self._measure_step(trainer, terms)
        self.step += 1
        self._prepare(self.step if self.step < self.steps else 0)
        self.seconds += time.perf_counter() - start

    def on_checkpoint(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """Measure the epoch and write diagnostics.jsonl before the trainer commits the epoch (so
        a resume finds exactly the committed epochs); new warnings join the epoch's record, which
        the trainer saves and prints."""
        start = time.perf_counter()
        entry = self._epoch_entry(trainer, record)
        found = detect(
            entry,
            self.records,
            float(record["lr"]),
            self.thresholds,
            base_lr=trainer.train_config.lr,
        )
        raised = [w for w in found if w.key not in self.said]
        self.said.update(w.key for w in raised)
        new = [w.text for w in raised]
        entry["warnings"], entry["raised"] = new, [w.key for w in raised]
        entry["active"] = sorted(w.key for w in found)
        self.seconds += time.perf_counter() - start
        entry["seconds"] = round(self.seconds, 4)
        self.records.append(entry)
        self._write(trainer.run_dir)
        if new:
            record.setdefault("warnings", []).extend(new)
        self.samples, self.step, self.seconds = [], 0, 0.0
        self.epoch = trainer.epoch

    def _write(self, run_dir: Path) -> None:
        text = "".join(json.dumps(r) + "\n" for r in self.records)
        runs.atomic_write(run_dir / DIAGNOSTICS, lambda tmp: tmp.write_text(text))

    # ---- a loss that became NaN ---------------------------------------------------------------
    @torch.no_grad()
    def _note_early_step(self) -> None:
        start = time.perf_counter()
        grads = [layer.weight.grad for layer in self.layers if layer.weight.grad is not None]
        if grads:
            norm = float(torch.stack([g.norm() for g in grads]).norm())
            self.early.append((self.step + 1, norm))
        self.seconds += time.perf_counter() - start  # counted in the callback's own cost

    def _norms_seen(self) -> list[tuple[int, float]]:
        """(step, gradient norm) of every step measured in this run, the first step first."""
        sampled = [s for r in self.records for s in r.get("steps_sampled", [])]
        current = [
            {"step": s["step"], "grad_norm": math.sqrt(sum(g * g for g in s["grad_norm"]))}
            for s in self.samples
        ]
        seen = dict(self.early)
        seen.update((s["step"], s["grad_norm"]) for s in [*sampled, *current])
        return sorted(seen.items())

    def _check_loss(self, trainer: Trainer, terms: dict[str, torch.Tensor]) -> None:
        """A loss that became NaN or infinite after the gradient norm grew by more than
        `thresholds.exploding` stops the run here, as the trainer would a moment later, but
        with its cause named (exploding gradients) and the norms seen. Otherwise the trainer's
        own stop says what to do."""
        loss = float(terms["total"])
        if math.isfinite(loss):
            return
        growth = exploded(self._norms_seen(), self.thresholds)
        if growth is None:
            return
        raise TrainingDiverged(
            f"loss became {loss} in epoch {trainer.epoch + 1} by step {self.step + 1}, after "
            f"{growth} (exploding gradients): {exploding_advice(growth, trainer.train_config)}. "
            f"{trainer.run_dir} keeps the last good state (epoch {trainer.epoch})"
        )

    # ---- measuring --------------------------------------------------------------------------
    def _sampled(self, step: int) -> bool:
        """Every `every`-th step and the last of each epoch; in the run's first epoch also steps
        1, 2, 4, 8, ... (a learning rate that is too high shows in the first steps)."""
        n = step + 1
        early = self.epoch == 0 and n < self.every and n & (n - 1) == 0
        return early or n % self.every == 0 or step == self.steps - 1

    def _prepare(self, next_step: int) -> None:
        """Copy the weights when the next step is a sampled one (its update is measured)."""
        if self._sampled(next_step):
            self.snapshot = [layer.weight.detach().clone() for layer in self.layers]
        else:
            self.snapshot = None

    @torch.no_grad()
    def _measure_step(self, trainer: Trainer, terms: dict[str, torch.Tensor]) -> None:
        assert self.snapshot is not None
        grads, updates = [], []
        for layer, before in zip(self.layers, self.snapshot, strict=True):
            grad = layer.weight.grad
            grads.append(grad.norm() if grad is not None else torch.zeros((), device=before.device))
            updates.append((layer.weight - before).norm() / before.norm().clamp_min(1e-12))
        values = torch.stack(grads + updates).tolist() if grads else []
        n = len(self.layers)
        self.samples.append(
            {
                "step": trainer.epoch * self.steps + self.step + 1,
                "loss": float(terms["total"]),
                "grad_norm": values[:n],
                "update_ratio": values[n:],
            }
        )

    def _epoch_entry(self, trainer: Trainer, record: dict[str, Any]) -> dict[str, Any]:
        assert self.batch is not None
        activations = measure_activations(trainer.model, self.layers, self.batch)
        last = self.samples[-1] if self.samples else None
        layers: dict[str, dict[str, Any]] = {}
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                stats: dict[str, Any] = {
                    "weight_norm": layer.weight.norm().item(),
                    "bias_norm": layer.bias.norm().item() if layer.bias is not None else None,
                    "grad_norm": last["grad_norm"][i] if last else None,
                    "grad_norm_mean": (
                        sum(s["grad_norm"][i] for s in self.samples) / len(self.samples)
                        if self.samples
                        else None
                    ),
                    "update_ratio": last["update_ratio"][i] if last else None,
                    "update_ratio_max": (
                        max(s["update_ratio"][i] for s in self.samples) if self.samples else None
                    ),
                }
                stats.update(activations.get(layer.name, {}))
                layers[layer.name] = stats
        entry: dict[str, Any] = {
            "epoch": record["epoch"],
            "step": last["step"] if last else None,
            "val_images": len(self.batch),
            "layers": layers,
            "steps_sampled": [
                {
                    "step": s["step"],
                    "loss": s["loss"],
                    "grad_norm": math.sqrt(sum(g * g for g in s["grad_norm"])),
                }
                for s in self.samples
            ],
        }
        if last:
            entry["end_loss"] = last["loss"]
        if last and len(self.layers) >= 2:
            first_grad, last_grad = last["grad_norm"][0], last["grad_norm"][-1]
            entry["first_layer"], entry["last_layer"] = self.layers[0].name, self.layers[-1].name
            entry["grad_ratio"] = first_grad / last_grad if last_grad > 0 else None
        entry.update(loss_entry(record, self.records, self.thresholds))
        # what to try against posterior collapse, where the family declares it, and the KL
        advice = getattr(trainer.model, "collapse_advice", "")
        if advice:
            entry["collapse_advice"] = advice
        kl = record.get("val", record["train"]).get("kl")
        if isinstance(kl, float):
            entry["val_kl"] = kl
        if not self.batch.is_floating_point():  # token ids: the examples are sentences
            entry["val_unit"] = "sentences"
        signals = getattr(trainer.model, "training_signals", None)  # declared by the family
        if callable(signals):
            entry["signals"] = signals(record["train"])
        return entry
