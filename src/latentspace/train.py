"""The generic trainer: epochs, validation, early stopping, checkpoints, progress and callbacks.

Nothing here knows which model family it drives: the model configures its own optimizers and
takes its own steps (`GenerativeModel.training_step`), and the trainer only loops, measures and
saves. A run directory is written at the start and after every epoch, atomically, with one commit
point (trainer_state.pt, written last), so a run killed at any instant can be resumed to the same
weights an uninterrupted one would reach. The run's lock keeps a second writer out.

Under torchrun the same run trains on every process (`distributed`): each takes its part of
every global batch, the models' steps average their gradients, and rank 0 alone writes the run,
logs and runs the callbacks; every decision (a stop, a failure to write) is rank 0's, told to all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from latentspace import distributed, runs
from latentspace._device import configure_threads
from latentspace.config import Config, TrainConfig
from latentspace.data import Batches, Images, ImageSet, prepare_data
from latentspace.errors import ConfigError, RunError, StorageError, TrainingDiverged
from latentspace.models import GenerativeModel, build_model, check_rebuilds, for_data
from latentspace.models.base import diverging_lr
from latentspace.models.networks import name_networks
from latentspace.progress import format_duration, is_silenced, on_terminal

__all__ = ["Callback", "StopTraining", "Trainer", "average_terms", "train"]

# Data larger than this stays in host memory and is copied to the GPU batch by batch.
_MAX_DEVICE_BYTES = 2 * 1024**3


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


def _call(callbacks: Sequence[object], hook: str, *args: Any) -> None:
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            method(*args)


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


def _divergence_advice(train: TrainConfig) -> str:
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


class Trainer:
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
        dynamic = config.data.binarize == "dynamic"
        self.generator = torch.Generator().manual_seed(config.train.seed)
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
        self.optimizers = model.configure_optimizers()
        self.schedulers = [_make_scheduler(o, config.train) for o in self.optimizers]
        self.epoch = 0  # epochs completed
        self.best_val = math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.records: list[dict[str, Any]] = []
        self.stop_reason = ""
        # wall seconds of each whole epoch (steps, validation, checkpoint, callbacks) trained by
        # this process: the time left of the whole run is extrapolated from them
        self.epoch_walls: list[float] = []

    def _place(self, images: torch.Tensor | Images) -> torch.Tensor | Images:
        """Move the whole uint8 dataset to the device once, when it fits comfortably (a folder's
        on-disk cache stays where it is: Batches reads and moves one batch at a time)."""
        if isinstance(images, Images):
            return images
        if self.device.type == "cpu" or images.numel() > _MAX_DEVICE_BYTES:
            return images
        return images.to(self.device)

    # ---- state -----------------------------------------------------------------------------
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
                f"{_divergence_advice(self.train_config)}. {self.run_dir} keeps the last good "
                f"state (epoch {self.epoch - 1})"
            )

    # ---- the loop --------------------------------------------------------------------------
    def fit(self) -> list[dict[str, Any]]:
        """Train until train.epochs, early stopping, or a callback stops it. Returns the records."""
        if self.epoch == 0:  # a loadable, resumable run exists from the first second
            distributed.agree(self._save_start, "saved the run's start")
        distributed.agree(lambda: _call(self.callbacks, "on_train_start", self), "began")
        self.model.train()
        epochs = self.train_config.epochs
        if self.epoch < epochs and not self.stop_reason and not self.quiet:
            self.log(
                f"training epochs {self.epoch + 1}-{epochs} of {epochs}, "
                f"{len(self.train_batches)} batches of {self.train_config.batch_size} images "
                f"each, on "
                + (
                    f"{self.world} processes ({self.trained_on['devices']})"
                    if self.world > 1
                    else self.device.type
                )
            )
        while self.epoch < epochs and not self.stop_reason:
            started = time.perf_counter()
            record = self._run_epoch()
            warnings = self.model.epoch_warnings(record)
            if warnings:
                record["warnings"] = warnings
            self.records.append(record)
            distributed.agree(
                functools.partial(self._commit, record, started), f"saved epoch {self.epoch}"
            )
            # rank 0's decision (early stopping, a callback's StopTraining) is every rank's
            stop = distributed.broadcast_flag(1 if self.stop_reason else 0)
            if self.rank != 0:
                self.stop_reason = (self.stop_reason or "stopped by rank 0") if stop else ""
        self._finish()
        return self.records

    def _save_start(self) -> None:
        if not (self.run_dir / runs.STATE).exists():
            self.save()

    def _commit(self, record: dict[str, Any], started: float) -> None:
        """The epoch's checkpoint, its line and the callbacks (rank 0's part of an epoch)."""
        _call(self.callbacks, "on_checkpoint", self, record)
        self.save()
        self.epoch_walls.append(time.perf_counter() - started)
        self._report(record)
        try:
            _call(self.callbacks, "on_epoch_end", self, record)
        except StopTraining as stop:
            self.stop_reason = str(stop) or "stopped by a callback"
            self.save()

    def _run_epoch(self) -> dict[str, Any]:
        model, epoch = self.model, self.epoch
        model.on_epoch_start(epoch, self.train_config.epochs)
        model.train()
        if self.world > 1:  # each rank its own noise, the same again after a resume
            torch.manual_seed(_rank_seed(self.train_config.seed, epoch, self.rank))
        names: list[str] = []
        sums = torch.zeros(0)
        count = 0
        failure: Exception | None = None
        check_every = self.check_every
        last = len(self.train_batches) - 1
        start = time.perf_counter()
        bar = tqdm(
            total=len(self.train_batches),
            desc=f"epoch {epoch + 1}/{self.train_config.epochs}",
            disable=self.quiet or not on_terminal(sys.stderr),
            leave=False,
            unit="batch",
            dynamic_ncols=True,
        )
        with bar:
            for step, x in enumerate(self.train_batches):
                if self.world > 1:
                    with distributed.gradient_weight(len(x), self.train_batches.global_size):
                        terms = model.training_step(x, self.optimizers)
                else:
                    terms = model.training_step(x, self.optimizers)
                if not names:
                    names = list(terms)
                    sums = torch.zeros(len(names), dtype=torch.float64, device=x.device)
                sums += torch.stack([terms[name] for name in names]) * len(x)
                count += len(x)
                try:
                    _call(self.callbacks, "on_batch_end", self, x, terms)
                except Exception as error:  # on rank 0: the others learn at the next check
                    if self.world == 1:
                        raise
                    failure = failure or error
                if step % check_every == 0 or step == last:
                    total = self._checked_total(sums[names.index("total")], failure)
                    if not math.isfinite(total):
                        self._diverged(total, step)
                    if step % 20 == 0 or check_every > 1:
                        bar.set_postfix(loss=f"{float(terms['total']):.4g}", refresh=False)
                        if not bar.disable:
                            done = (step + 1) / len(self.train_batches)
                            left = self.run_seconds_left(time.perf_counter() - start, done)
                            bar.set_description_str(
                                f"epoch {epoch + 1}/{self.train_config.epochs}, run "
                                f"{format_duration(left)} left",
                                refresh=False,
                            )
                bar.update()
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

    def _early_stopping(self, val_total: float) -> None:
        if val_total < self.best_val - self.train_config.min_delta:
            self.best_val, self.best_epoch, self.bad_epochs = val_total, self.epoch, 0
            return
        self.bad_epochs += 1
        patience = self.train_config.patience
        if patience and self.bad_epochs >= patience:
            self.stop_reason = (
                f"early stopping: validation loss has not improved for {patience} "
                f"epochs (best {self.best_val:.4g} at epoch {self.best_epoch})"
            )

    def _diverged(self, value: float, step: int) -> None:
        raise TrainingDiverged(
            f"loss became {value} in epoch {self.epoch + 1} by step {step + 1}: "
            f"{_divergence_advice(self.train_config)}. {self.run_dir} keeps the last good state "
            f"(epoch {self.epoch})"
        )

    def run_seconds_left(self, in_epoch: float = 0.0, fraction: float = 0.0) -> float:
        """Seconds until train.epochs, at the pace of this process's epochs: `in_epoch` seconds
        spent on the `fraction` of the epoch under way (early stopping may end it sooner)."""
        if self.epoch_walls:
            per_epoch = sum(self.epoch_walls) / len(self.epoch_walls)
        elif fraction > 0:
            per_epoch = in_epoch / fraction  # the first epoch: its steps so far
        else:
            return math.nan
        after = max(0, self.train_config.epochs - self.epoch - (1 if fraction > 0 else 0))
        return per_epoch * (after + (1.0 - fraction if fraction > 0 else 0.0))

    def _report(self, record: dict[str, Any]) -> None:
        if self.quiet:
            return
        line = (
            f"epoch {record['epoch']}/{self.train_config.epochs}  "
            f"train {record['train']['total']:.4f}"
        )
        if "val" in record:
            line += f"  val {record['val']['total']:.4f}"
        line += f"  {record['samples_per_s']:.0f} samples/s  {record['seconds']:.1f}s"
        if record["epoch"] < self.train_config.epochs:
            line += f"  about {format_duration(self.run_seconds_left())} left"
        self.log(line)
        for warning in record.get("warnings", []):
            self.log(f"  warning: {warning}")

    def _finish(self) -> None:
        if self.stop_reason and not self.quiet:
            self.log(self.stop_reason)
        plain = type(self.train_batches)(
            self.train_batches.images, self.train_config.batch_size, device=self.device
        )
        self.model.on_train_end(plain)  # on every rank: each ends with the model rank 0 saves
        self.model.eval()
        distributed.agree(self._save_end, "saved the trained model")

    def _save_end(self) -> None:
        runs.save_model(self.run_dir, self.model, self.epoch)
        _call(self.callbacks, "on_train_end", self)


def train(
    config: Config,
    out: str | Path,
    *,
    encoder: nn.Module | None = None,
    decoder: nn.Module | None = None,
    resume: bool = False,
    callbacks: Sequence[object] = (),
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
    diagnostics: bool = True,
) -> runs.Run:
    """Train a model as `config` says, into the run directory `out`; returns the opened run.

    encoder, decoder: your own networks (see `latentspace.register_network`), trained in place
    from their current weights. Their classes (or the functions that built them) must be
    registered in an importable module: config.json records the import path in model.encoder /
    model.decoder, and a run is loaded again by building them from it, never from pickled code.
    resume=True continues the run in `out` from its last completed epoch (its own config is used,
    with `config.train.epochs` as the new target; its networks are built from that config).
    diagnostics=True adds the sampled gradient and activation measurements of
    `latentspace.diagnostics` (diagnostics.jsonl, plain warnings)."""
    networks = {k: v for k, v in (("encoder", encoder), ("decoder", decoder)) if v is not None}
    run_dir = Path(out)
    if resume and networks:
        raise ConfigError(
            f"resume=True builds the networks from {run_dir / runs.CONFIG} and loads their "
            "weights: do not pass encoder= or decoder="
        )
    config = dataclasses.replace(config, model=name_networks(config.model, networks))
    if diagnostics:
        from latentspace.diagnostics import Diagnostics

        callbacks = [Diagnostics(), *callbacks]
    restarted = distributed.launch().restarts > 0
    with distributed.process_group(config.train.device), contextlib.ExitStack() as held:
        if restarted and not resume and not networks:
            # torchrun --max-restarts started the job again: continue its last commit, as rank 0
            # finds the folder (every rank must take the same path)
            resume = bool(distributed.broadcast_flag(int((run_dir / runs.CONFIG).exists())))
        if resume:
            runs.read_run_config(run_dir)  # a folder that is not a run: say so before locking it
        # rank 0 alone creates and locks the folder, and tells the others whether it could
        created = distributed.agree(
            lambda: _claim(run_dir, config.data.dataset, resume, held), f"claimed {run_dir}"
        )
        try:
            trainer = _prepare(config, run_dir, networks, resume, callbacks, quiet, log)
            trainer.fit()
        except BaseException:
            if created:  # stopped before writing anything: leave no folder behind
                with contextlib.suppress(OSError):
                    if [p.name for p in run_dir.iterdir()] == [runs.LOCK]:
                        (run_dir / runs.LOCK).unlink()
                        run_dir.rmdir()
            raise
    return runs.open_run(run_dir)


def _claim(run_dir: Path, dataset: str, resume: bool, held: contextlib.ExitStack) -> bool:
    """Check out (a new run) or find (a resumed one) the run folder and take its lock, held until
    `held` closes; whether the folder was created here."""
    created = False
    if not resume:
        runs.check_out(run_dir, dataset)  # before anything is written
        created = not run_dir.exists()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot create {run_dir}: {error.strerror or error}") from None
    held.enter_context(runs.lock_run(run_dir, "train --resume" if resume else "train"))
    runs.clean_temporary(run_dir)
    if not resume:
        runs.check_out(run_dir, dataset)  # again: another may have been first
    return created


def _prepare(
    config: Config,
    run_dir: Path,
    networks: dict[str, nn.Module],
    resume: bool,
    callbacks: Sequence[object],
    quiet: bool,
    log: Callable[[str], None] | None,
) -> Trainer:
    """The trainer of a new run (config.json written), or of a resumed one at its last commit."""
    if resume:
        saved, image_shape, _ = runs.read_run_config(run_dir)
        config = dataclasses.replace(
            saved, train=dataclasses.replace(saved.train, epochs=config.train.epochs)
        )
    torch.manual_seed(config.train.seed)
    # rank 0 reads the dataset first (a folder's cache is then built once), then the others
    data = distributed.agree(lambda: prepare_data(config), "read the dataset")
    train_set, val_set = data if data is not None else prepare_data(config)
    if resume and train_set.image_shape != image_shape:
        raise RunError(
            f"{run_dir} was trained on {image_shape} images but {config.data.dataset} "
            f"now gives {train_set.image_shape}"
        )
    # the family must read this data, and is built with what the data hands it (a tokenizer)
    config = dataclasses.replace(config, model=for_data(config.model, train_set))
    model = build_model(config.model, train_set.image_shape, config.train, **networks)
    if networks:  # the run must load again from config.json alone: check that before training
        check_rebuilds(model, config.model, train_set.image_shape, config.train)
    extra: dict[str, Any] = {
        "classes": train_set.classes,
        "train_images": len(train_set),
        "val_images": len(val_set) if val_set is not None else 0,
    }
    trainer = Trainer(
        model, train_set, val_set, config, run_dir, callbacks=callbacks, quiet=quiet, log=log
    )
    state = runs.read_trainer_state(run_dir, trainer.model) if resume else None
    if state is not None:  # None: killed before its first commit, so it starts from epoch 0
        trainer.load_state_dict(state)
        trainer.model.to(trainer.device)
    # every rank starts from rank 0's weights, as DistributedDataParallel does
    distributed.broadcast_state(trainer.model)
    extra["trained_on"] = trainer.trained_on

    def write() -> None:
        if state is not None:
            trainer.reconcile()
        runs.save_config(run_dir, config, train_set.image_shape, extra)

    distributed.agree(write, f"wrote {run_dir / runs.CONFIG}")
    return trainer
