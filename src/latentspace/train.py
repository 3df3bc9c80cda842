"""`train()`: one run from a config, into a run directory, new or resumed.

It claims the run folder (one writer, through its lock), reads the data, builds the model (your own
networks too) or reads back a resumed run's config and state, and hands them to the generic
`Trainer` (`latentspace.trainer`), which loops, checkpoints and calls the callbacks. A run
directory is written at the start and after every epoch, atomically, with one commit point
(trainer_state.pt, written last), so a run killed at any instant can be resumed to the same
weights an uninterrupted one would reach.

Under torchrun the same run trains on every process (`distributed`): rank 0 alone creates, locks
and writes the run folder and reads the data first; every decision (a stop, a failure to write)
is rank 0's, told to all.

`Trainer`, `Callback`, `StopTraining` and `average_terms` are defined in `latentspace.trainer`
and re-exported here: `from latentspace.train import Trainer, StopTraining` is the import to use.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentspace import distributed, runs, settings
from latentspace.config import Config
from latentspace.data import prepare_data
from latentspace.errors import ConfigError, RunError, StorageError
from latentspace.models import build_model, check_rebuilds, for_data
from latentspace.models.networks import name_networks
from latentspace.trainer import Callback, StopTraining, Trainer, average_terms

__all__ = ["Callback", "StopTraining", "Trainer", "average_terms", "train"]


def train(
    config: Config,
    out: str | Path,
    *,
    encoder: nn.Module | None = None,
    decoder: nn.Module | None = None,
    resume: bool = False,
    init: str | Path | None = None,
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
    with `config.train.epochs` as the new target and `config.train.max_minutes` as its time limit;
    its networks are built from that config).
    init: a run whose weights a new run starts from (fine-tuning: other data, another loss, new
    training settings; the same family and networks, see `runs.initialise_from`); config.json
    records it under `initialised_from`.
    diagnostics=True adds the sampled gradient and activation measurements of
    `latentspace.diagnostics` (diagnostics.jsonl, plain warnings)."""
    networks = {k: v for k, v in (("encoder", encoder), ("decoder", decoder)) if v is not None}
    run_dir = Path(out)
    if init is not None and (resume or networks):
        raise ConfigError(
            "init starts a new run from another run's weights: not with resume (a resumed run "
            "continues its own), nor with encoder= / decoder= (networks with their own weights)"
        )
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
            trainer = _prepare(config, run_dir, networks, resume, callbacks, quiet, log, init)
            trainer.fit()
        except BaseException:
            if created:  # stopped before writing anything: leave no folder behind
                with contextlib.suppress(OSError):
                    if [p.name for p in run_dir.iterdir()] == [runs.LOCK]:
                        (run_dir / runs.LOCK).unlink()
                        run_dir.rmdir()
            raise
    return runs.open_run(run_dir)


def _with_vocabulary_of(init: str | Path, config: Config) -> Config:
    """A text run started from `init` reads its token ids with init's tokenizer (its embedding
    rows are those ids), unless the config names one of its own."""
    saved, _, _ = runs.read_run_config(init)
    vocabulary = getattr(saved.model, "tokenizer", "")
    if vocabulary and hasattr(config.model, "tokenizer") and not config.model.tokenizer:
        config = dataclasses.replace(
            config, model=dataclasses.replace(config.model, tokenizer=vocabulary)
        )
    return config


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
    init: str | Path | None = None,
) -> Trainer:
    """The trainer of a new run (config.json written; from `init`'s weights when given), or of a
    resumed one at its last commit."""
    if resume:
        saved, image_shape, _ = runs.read_run_config(run_dir)
        config = dataclasses.replace(saved, train=settings.resumed_train(saved.train, config.train))
    if init is not None:
        config = _with_vocabulary_of(init, config)
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
    if init is not None:
        extra["initialised_from"] = runs.initialise_from(init, model)
    trainer = Trainer(
        model, train_set, val_set, config, run_dir, callbacks=callbacks, quiet=quiet, log=log
    )
    if init is not None and not trainer.quiet:
        start = extra["initialised_from"]
        trainer.log(f"starting from the weights of {init} (its epoch {start['epoch']})")
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
