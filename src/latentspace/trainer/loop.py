"""The generic trainer's loop: epochs, validation, and when to checkpoint (when to stop is
stopping.py's).

Nothing here knows which model family it drives: the model configures its own optimizers and
takes its own steps (`GenerativeModel.training_step`), and the trainer only loops, measures and
saves. A run directory is written at the start and after every epoch (`checkpoint`), so a run
killed at any instant can be resumed to the same weights an uninterrupted one would reach.

Under torchrun the same run trains on every process (`distributed`): each takes its part of
every global batch, the models' steps average their gradients, and rank 0 alone writes the run,
logs and runs the callbacks; every decision (a stop, a failure to write) is rank 0's, told to all.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentspace import distributed, runs
from latentspace._device import configure_threads
from latentspace.config import Config, TrainConfig
from latentspace.data import Batches, Images, ImageSet
from latentspace.errors import ConfigError, RunError, TrainingDiverged
from latentspace.models import GenerativeModel
from latentspace.progress import format_duration, is_silenced
from latentspace.trainer.callbacks import StopTraining, call_hooks
from latentspace.trainer.checkpoint import Checkpointing, divergence_advice
from latentspace.trainer.progress import epoch_bar, epoch_line
from latentspace.trainer.stopping import Stopping

__all__ = ["Trainer", "average_terms"]

# Data larger than this stays in host memory and is copied to the GPU batch by batch.
_MAX_DEVICE_BYTES = 2 * 1024**3


def _make_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if train.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=train.epochs, eta_min=train.min_lr
        )
    if train.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=train.step_size, gamma=train.gamma
        )
    return None


@torch.no_grad()
def _sum_terms(
    model: GenerativeModel, batches: Iterable[torch.Tensor]
) -> tuple[dict[str, float], int]:
    """The model's validation terms summed over images, and the number of images."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    for x in batches:
        for key, value in model.validation_step(x).items():
            sums[key] = sums.get(key, 0.0) + value * len(x)
        count += len(x)
    model.train(was_training)
    return sums, count


def average_terms(model: GenerativeModel, batches: Iterable[torch.Tensor]) -> dict[str, float]:
    """The model's validation terms averaged over images (weighted by batch size)."""
    sums, count = _sum_terms(model, batches)
    return {key: value / max(count, 1) for key, value in sums.items()}


def _rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of torch's generator for one rank's epoch (its noise, a GAN's codes): different
    on every rank, and the same after a resume (NumPy's SeedSequence mixes the three)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


class Trainer(Checkpointing, Stopping):
    """Fits `model` on `train_set`, validating on `val_set`, checkpointing into `run_dir`."""

    def __init__(
        self,
        model: GenerativeModel,
        train_set: ImageSet,
        val_set: ImageSet | None,
        config: Config,
        run_dir: Path,
        *,
        callbacks: Sequence[object] = (),
        quiet: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if model.train_config != config.train:
            raise ConfigError(
                "the model was built with other training settings than the trainer was given: "
                "build it with build_model(config.model, image_shape, config.train)"
            )
        if config.train.patience and model.monitor is None:
            raise ConfigError(
                f"train.patience = {config.train.patience}: a {model.name} model has no "
                "validation loss to stop early on (its players' losses are not minimised "
                "together); set train.patience = 0 and judge samples with `latentspace quality`"
            )
        self.config = config
        self.train_config = config.train
        self.run_dir = run_dir
        # under torchrun: rank 0 alone logs and runs the callbacks (they write into the run)
        self.world = distributed.world_size()
        self.rank = distributed.rank() if self.world > 1 else 0
        self.callbacks = list(callbacks) if self.rank == 0 else []
        self.quiet = quiet or is_silenced() or self.rank != 0
        self.log = log or (lambda line: print(line, flush=True))
        self.device = distributed.device_for(config.train.device)
        # Reading a number back from a GPU waits for all queued work, so there the running loss
        # sums are read (and checked for divergence) every few steps; on a CPU reading is free,
        # unless the check is a collective of all ranks.
        self.check_every = 1 if self.device.type == "cpu" and self.world == 1 else 25
        self.threads = configure_threads(config.train.threads)
        self.model = model.to(self.device)
        self.trained_on = distributed.describe(self.device, config.train.precision)
        self.generator = torch.Generator().manual_seed(config.train.seed)
        self._make_batches(train_set, val_set)
        self.optimizers = model.configure_optimizers()
        self.schedulers = [_make_scheduler(o, config.train) for o in self.optimizers]
        self.epoch = 0  # epochs completed
        self.best_val = math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.records: list[dict[str, Any]] = []
        self.stop_reason = ""
        self.out_of_time = ""  # train.max_minutes: see _time_is_up
        self.fit_started = time.perf_counter()
        # wall seconds of each whole epoch (steps, validation, checkpoint, callbacks) trained by
        # this process: the time left of the whole run is extrapolated from them
        self.epoch_walls: list[float] = []

    def _make_batches(self, train_set: ImageSet, val_set: ImageSet | None) -> None:
        """The training batches (shuffled by self.generator) and the validation batches; under
        torchrun, this rank's part of each global batch."""
        config = self.config
        dynamic = config.data.binarize == "dynamic"
        # the data decides how it is batched: images by data.Batches, text by its own class
        batches = getattr(train_set, "batch_class", Batches)
        # under torchrun each rank takes its part of every global batch (data.Batches)
        shard: dict[str, Any] = {"rank": self.rank, "world": self.world} if self.world > 1 else {}
        self.train_batches = batches(
            self._place(train_set.images),
            config.train.batch_size,
            shuffle=True,
            dynamic=dynamic,
            generator=self.generator,
            device=self.device,
            **shard,
        )
        self.val_set = val_set
        # validation is shared out too, unless there are fewer images than ranks
        self.val_shared = val_set is not None and len(val_set) >= self.world > 1
        self.val_batches = (
            None
            if val_set is None
            else batches(
                self._place(val_set.images),
                config.train.batch_size,
                dynamic=dynamic,
                device=self.device,
                **(shard if self.val_shared else {}),
            )
        )

    def _place(self, images: torch.Tensor | Images) -> torch.Tensor | Images:
        """Move the whole uint8 dataset to the device once, when it fits comfortably (a folder's
        on-disk cache stays where it is: Batches reads and moves one batch at a time)."""
        if isinstance(images, Images):
            return images
        if self.device.type == "cpu" or images.numel() > _MAX_DEVICE_BYTES:
            return images
        return images.to(self.device)

    @property
    def _examples(self) -> str:
        """What the training data holds, in words: token ids are sentences, pixels images."""
        ids = getattr(self.train_batches.images, "dtype", None) == torch.long
        return "sentences" if ids else "images"

    # ---- the loop --------------------------------------------------------------------------
    def fit(self) -> list[dict[str, Any]]:
        """Train until train.epochs, early stopping, or a callback stops it. Returns the records."""
        if self.epoch == 0:  # a loadable, resumable run exists from the first second
            distributed.agree(self._save_start, "saved the run's start")
        distributed.agree(lambda: call_hooks(self.callbacks, "on_train_start", self), "began")
        self.model.train()
        epochs = self.train_config.epochs
        if self.epoch < epochs and not self.stop_reason and not self.quiet:
            self.log(
                f"training epochs {self.epoch + 1}-{epochs} of {epochs}, "
                f"{len(self.train_batches)} batches of {self.train_config.batch_size} "
                f"{self._examples} each, on "
                + (
                    f"{self.world} processes ({self.trained_on['devices']})"
                    if self.world > 1
                    else self.device.type
                )
            )
        self.fit_started = time.perf_counter()
        while self.epoch < epochs and not self.stop_reason and not self.out_of_time:
            started = time.perf_counter()
            record = self._run_epoch()
            warnings = self.model.epoch_warnings(record)
            if warnings:
                record["warnings"] = warnings
            self.records.append(record)
            distributed.agree(
                functools.partial(self._commit, record, started), f"saved epoch {self.epoch}"
            )
            self.out_of_time = self._time_is_up()
            # rank 0's decision (early stopping, a callback's StopTraining, the time limit) is
            # every rank's
            stop = distributed.broadcast_flag(
                2 if self.out_of_time else int(bool(self.stop_reason))
            )
            if self.rank != 0:
                self.out_of_time = "time limit (rank 0's)" if stop == 2 else ""
                self.stop_reason = (self.stop_reason or "stopped by rank 0") if stop == 1 else ""
            if stop == 1:  # every rank ends with the weights rank 0 kept (_keep_best)
                distributed.broadcast_state(self.model)
        self._finish()
        return self.records

    def _save_start(self) -> None:
        if not (self.run_dir / runs.STATE).exists():
            self.save()

    def _commit(self, record: dict[str, Any], started: float) -> None:
        """The epoch's checkpoint, its line and the callbacks (rank 0's part of an epoch)."""
        call_hooks(self.callbacks, "on_checkpoint", self, record)
        self._keep_best(record)
        self.save()
        self.epoch_walls.append(time.perf_counter() - started)
        self._report(record)
        try:
            call_hooks(self.callbacks, "on_epoch_end", self, record)
        except StopTraining as stop:
            self.stop_reason = str(stop) or "stopped by a callback"
            self.save()

    def _run_epoch(self) -> dict[str, Any]:
        """One epoch's steps, the scheduler's step and validation: the epoch's record."""
        model, epoch = self.model, self.epoch
        model.on_epoch_start(epoch, self.train_config.epochs)
        model.train()
        if self.world > 1:  # each rank its own noise, the same again after a resume
            torch.manual_seed(_rank_seed(self.train_config.seed, epoch, self.rank))
        start = time.perf_counter()
        names, sums, count = self._steps(start)
        sums = distributed.all_reduce_sum(torch.cat([sums, sums.new_tensor([count])]))
        totals, count = sums[:-1].tolist(), int(sums[-1])
        # batch-norm statistics and counters as rank 0 has them (DistributedDataParallel's
        # broadcast_buffers), so validation and the checkpoint are the same on every rank
        distributed.broadcast_state(model, buffers_only=True)
        seconds = time.perf_counter() - start
        lr = self.optimizers[0].param_groups[0]["lr"]
        for scheduler in self.schedulers:
            if scheduler is not None:
                scheduler.step()
        self.epoch += 1
        record: dict[str, Any] = {
            "kind": "epoch",
            "epoch": self.epoch,
            "train": {name: value / count for name, value in zip(names, totals, strict=True)},
            "lr": lr,
            "seconds": round(seconds, 4),
            "samples_per_s": round(count / seconds, 1),
            "trained_on": self.trained_on,
        }
        if self.val_batches is not None:
            record["val"] = self._validate(self.val_batches)
            if model.monitor is not None:
                self._early_stopping(record["val"][model.monitor])
        return record

    def _steps(self, start: float) -> tuple[list[str], torch.Tensor, int]:
        """The epoch's training steps: (the model's term names, their sums over this rank's
        images on the device, the number of images). The sums are read to the host and checked
        for divergence every `check_every` steps; a callback's error is raised at once on one
        process, under torchrun at the next check (all ranks stop together)."""
        names: list[str] = []
        sums = torch.zeros(0)
        count = 0
        failure: Exception | None = None
        check_every = self.check_every
        last = len(self.train_batches) - 1
        epochs = self.train_config.epochs
        bar = epoch_bar(len(self.train_batches), f"epoch {self.epoch + 1}/{epochs}", self.quiet)
        with bar:
            for step, x in enumerate(self.train_batches):
                if self.world > 1:
                    with distributed.gradient_weight(len(x), self.train_batches.global_size):
                        terms = self.model.training_step(x, self.optimizers)
                else:
                    terms = self.model.training_step(x, self.optimizers)
                if not names:
                    names = list(terms)
                    sums = torch.zeros(len(names), dtype=torch.float64, device=x.device)
                sums += torch.stack([terms[name] for name in names]) * len(x)
                count += len(x)
                try:
                    call_hooks(self.callbacks, "on_batch_end", self, x, terms)
                except Exception as error:  # on rank 0: the others learn at the next check
                    if self.world == 1:
                        raise
                    failure = failure or error
                if step % check_every == 0 or step == last:
                    total = self._checked_total(sums[names.index("total")], failure)
                    if not math.isfinite(total):
                        self._diverged(total, step)
                    if step % 20 == 0 or check_every > 1:
                        self._show_step(bar, terms["total"], step, start)
                bar.update()
        return names, sums, count

    def _show_step(self, bar: Any, loss: torch.Tensor, step: int, start: float) -> None:
        """The bar's loss and, on a terminal, the run's time left at this epoch's pace so far."""
        bar.set_postfix(loss=f"{float(loss):.4g}", refresh=False)
        if not bar.disable:
            done = (step + 1) / len(self.train_batches)
            left = self.run_seconds_left(time.perf_counter() - start, done)
            bar.set_description_str(
                f"epoch {self.epoch + 1}/{self.train_config.epochs}, run "
                f"{format_duration(left)} left",
                refresh=False,
            )

    def _checked_total(self, total: torch.Tensor, failure: Exception | None) -> float:
        """The running loss sum of all ranks (each rank checks the same number, so all stop
        together) and, with it, whether a callback on rank 0 raised since the last check (a
        divergence the diagnostics named): rank 0 raises that, the others a line naming it."""
        if self.world == 1:
            return float(total)
        raised = total.new_tensor(0.0 if failure is None else 1.0)
        summed, failed = distributed.all_reduce_sum(torch.stack([total, raised])).tolist()
        if failed:
            if failure is not None:
                raise failure
            raise RunError(f"rank 0 stopped training in epoch {self.epoch + 1}: see its error")
        return float(summed)

    def _validate(self, batches: Batches) -> dict[str, float]:
        """The validation terms averaged over the validation images (of all ranks)."""
        batches.generator.manual_seed(self.train_config.seed + 1)  # the same draw each epoch
        sums, count = _sum_terms(self.model, batches)
        if self.val_shared:
            keys = sorted(sums)
            local = torch.tensor([*(sums[k] for k in keys), count], dtype=torch.float64)
            *values, total = distributed.all_reduce_sum(local.to(self.device)).tolist()
            sums, count = dict(zip(keys, values, strict=True)), int(total)
        return {key: value / max(count, 1) for key, value in sums.items()}

    def _diverged(self, value: float, step: int) -> None:
        raise TrainingDiverged(
            f"loss became {value} in epoch {self.epoch + 1} by step {step + 1}: "
            f"{divergence_advice(self.train_config)}. {self.run_dir} keeps the last good state "
            f"(epoch {self.epoch})"
        )

    def _report(self, record: dict[str, Any]) -> None:
        if self.quiet:
            return
        self.log(epoch_line(record, self.train_config.epochs, self.run_seconds_left()))
        for warning in record.get("warnings", []):
            self.log(f"  warning: {warning}")

    def _finish(self) -> None:
        if (self.stop_reason or self.out_of_time) and not self.quiet:
            self.log(self.stop_reason or self.out_of_time)
        plain = type(self.train_batches)(
            self.train_batches.images, self.train_config.batch_size, device=self.device
        )
        self.model.on_train_end(plain)  # on every rank: each ends with the model rank 0 saves
        self.model.eval()
        distributed.agree(self._save_end, "saved the trained model")

    def _save_end(self) -> None:
        runs.save_model(self.run_dir, self.model, self.epoch)
        call_hooks(self.callbacks, "on_train_end", self)
