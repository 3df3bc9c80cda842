"""`latentspace train`: a config file, common flags and `--set section.key=value` overrides."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from latentspace import settings, train
from latentspace.commands._common import add_override_argument
from latentspace.config import Config, apply_overrides, load_config
from latentspace.dashboards import LOGGERS
from latentspace.distributed import is_main
from latentspace.errors import ConfigError
from latentspace.models import DEFAULT_MODEL, MODELS
from latentspace.models.layers import ACTIVATIONS
from latentspace.runs import committed_epoch
from latentspace.settings import CHOICES, DataConfig, TrainConfig

__all__ = ["FLAGS", "add_config_flags", "config_from_args", "register"]

# The shorthand flags, declared once: flag -> (config key, help). Each is `--set KEY=VALUE`:
# its value is parsed and checked by the config field's own type, its choices are the field's
# (settings.CHOICES, or the registered families) and its default is the dataclass's.
FLAGS: dict[str, tuple[str, str]] = {
    "model": ("model.name", "model family"),
    "dataset": (
        "data.dataset",
        "dataset name (`latentspace data list`), image folder, or .npy/.npz",
    ),
    "epochs": ("train.epochs", "passes over the training images"),
    "max_minutes": (
        "train.max_minutes",
        "stop after the last epoch that fits in this many minutes (0: no limit); --resume goes on",
    ),
    "batch_size": ("train.batch_size", "images per optimisation step"),
    "lr": ("train.lr", "learning rate"),
    "latent_dim": ("model.latent_dim", "dimensions of the code"),
    "hidden": ("model.hidden_sizes", "neurons per hidden layer, e.g. 512,256"),
    "activation": ("model.activation", "the hidden layers' activation function"),
    "l1": ("train.l1", "L1 penalty coefficient on the weights"),
    "l2": ("train.l2", "L2 penalty coefficient on the weights"),
    "optimizer": ("train.optimizer", "optimizer"),
    "seed": ("train.seed", "seed of weights, batches and sampling"),
    "threads": ("train.threads", "torch threads (0: latentspace's measured default)"),
    "device": ("train.device", "where to train"),
    "precision": (
        "train.precision",
        "bf16: mixed precision (matrix products in bfloat16, weights and losses in float32); "
        "faster on GPUs and CPUs with bf16 units",
    ),
    "size": ("data.size", "image folders: resize to SIZE x SIZE"),
    "crop": (
        "data.crop",
        "train on random CROP x CROP windows, validation and test on centred ones (photos of "
        "any size; add --set data.flip=true for mirrored halves)",
    ),
}


def _choices(key: str) -> tuple[str, ...] | None:
    families = {"model.name": tuple(MODELS), "model.activation": tuple(ACTIVATIONS)}
    return families.get(key, CHOICES.get(key))


def _default(key: str) -> object:
    section, _, field = key.partition(".")
    owner = {
        "data": DataConfig(),
        "train": TrainConfig(),
        "model": MODELS[DEFAULT_MODEL].config_class(),
    }
    value = getattr(owner[section], field)
    return ",".join(map(str, value)) if isinstance(value, tuple) else value


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One argparse flag per FLAGS entry (`--batch-size` for batch_size)."""
    for flag, (key, help) in FLAGS.items():
        choices = _choices(key)
        parser.add_argument(
            f"--{flag.replace('_', '-')}",
            dest=flag,
            choices=choices,
            metavar=None if choices else flag.upper(),
            help=f"{help} ({key}; default {_default(key)})",
        )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model into a run directory",
        description=f"Train a model ({', '.join(MODELS)}). Settings come from the defaults, then "
        "--config, then the flags below, then --set, each overriding the one before.",
    )
    parser.add_argument("--out", type=Path, help="run directory to create")
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML file with [data], [model], [train], or the name of a shipped config such as "
        "demo (`latentspace configs` lists them)",
    )
    add_override_argument(parser, "override any setting (repeatable)")
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="RUN",
        help="continue an interrupted run (only --epochs may change)",
    )
    parser.add_argument(
        "--init",
        type=Path,
        metavar="RUN",
        help="start a new run from RUN's weights (fine-tuning: same family and networks; "
        "data, loss and training settings may differ)",
    )
    add_config_flags(parser)
    parser.add_argument(
        "--strict", action="store_true", help="image folders: unreadable files are an error"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar, epoch lines or report progress"
    )
    parser.add_argument("--no-report", action="store_true", help="do not write report.html")
    parser.add_argument(
        "--log",
        action="append",
        choices=LOGGERS,
        default=[],
        help="also log live to TensorBoard (RUN/tensorboard) or a local MLflow store "
        "(RUN/mlflow.db); repeatable; see docs/dashboards.md",
    )
    parser.add_argument(
        "--no-diagnostics",
        action="store_true",
        help="do not measure gradients and activations (diagnostics.jsonl, warnings)",
    )
    parser.set_defaults(handler=run_train)


def config_from_args(args: argparse.Namespace) -> Config:
    from latentspace import default_config

    config = load_config(args.config) if args.config else default_config(DEFAULT_MODEL)
    overrides = [
        f"{key}={getattr(args, flag)}"
        for flag, (key, _) in FLAGS.items()
        if getattr(args, flag, None) is not None
    ]
    if getattr(args, "strict", False):
        overrides.append("data.strict=true")
    return apply_overrides(config, [*overrides, *args.overrides])


def run_train(args: argparse.Namespace) -> int:
    try:
        return _run_train(args)
    except KeyboardInterrupt:
        if is_main():  # under torchrun every process is interrupted: one says what was kept
            print(
                f"latentspace: interrupted; {_what_was_kept(args.resume or args.out)}",
                file=sys.stderr,
            )
        return 130


def _what_was_kept(where: Path | None) -> str:
    """What an interrupted `train` leaves, read from the folder (its last commit), not assumed."""
    epoch = None if where is None else committed_epoch(where)
    if epoch is None:
        return "nothing was saved (no checkpoint was reached): start it again with the same command"
    kept = f"its epoch {epoch}" if epoch else "its start (no epoch completed yet)"
    return f"{where} keeps {kept}: continue with `latentspace train --resume {where}`"


def _train_logged(args: argparse.Namespace, config: Config, out: Path, **options: Any) -> None:
    """`train` with the live loggers --log asks for (imported only then), closed afterwards so
    MLflow also gets the report and an interrupted run is marked as such."""
    if not args.log or not is_main():  # under torchrun, rank 0 alone logs
        train(config, out, **options)
        return
    from latentspace.dashboards import close_loggers, make_loggers

    loggers = make_loggers(args.log, out)
    try:
        train(config, out, callbacks=loggers, **options)
    finally:
        close_loggers(loggers, out)


def _run_train(args: argparse.Namespace) -> int:
    report = not args.no_report
    if args.resume is not None:
        if args.out is not None and args.out != args.resume:
            raise ConfigError("--resume continues a run in place: leave out --out")
        kept = settings.RESUMABLE_TRAIN_SETTINGS
        changed = [f for f in FLAGS if f not in kept and getattr(args, f, None) is not None]
        if args.init is not None:
            raise ConfigError("--init starts a new run; --resume continues one: give one of them")
        if changed or args.overrides or args.config:
            allowed = " and ".join(f"--{f.replace('_', '-')}" for f in kept)
            raise ConfigError(
                f"--resume keeps the run's settings; only {allowed} may change "
                f"(got --{(changed or ['set'])[0].replace('_', '-')})"
            )
        from latentspace.runs import read_run_config

        saved, _, _ = read_run_config(args.resume)
        # train(resume=True) keeps only the resumable settings of what it is given
        given = [f"{FLAGS[f][0]}={getattr(args, f)}" for f in kept if getattr(args, f) is not None]
        config = apply_overrides(saved, given)
        _train_logged(
            args,
            config,
            args.resume,
            resume=True,
            quiet=args.quiet,
            diagnostics=not args.no_diagnostics,
            report=report,
        )
    else:
        if args.out is None:
            raise ConfigError("say where the run goes: --out runs/NAME")
        config = config_from_args(args)
        _train_logged(
            args,
            config,
            args.out,
            init=args.init,
            quiet=args.quiet,
            diagnostics=not args.no_diagnostics,
            report=report,
        )
    return 0
