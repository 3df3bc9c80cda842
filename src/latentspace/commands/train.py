"""`latentspace train`: a config file, common flags and `--set section.key=value` overrides."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from latentspace.commands._common import add_override_argument
from latentspace.config import Config, apply_overrides, load_config
from latentspace.errors import ConfigError
from latentspace.models import MODELS
from latentspace.train import train

__all__ = ["config_from_args", "register"]

# flag -> config key; each is shorthand for --set KEY=VALUE
FLAGS = {
    "model": "model.name",
    "dataset": "data.dataset",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "latent_dim": "model.latent_dim",
    "hidden": "model.hidden_sizes",
    "activation": "model.activation",
    "l1": "train.l1",
    "l2": "train.l2",
    "optimizer": "train.optimizer",
    "seed": "train.seed",
    "threads": "train.threads",
    "device": "train.device",
    "precision": "train.precision",
    "size": "data.size",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model into a run directory",
        description="Train an AE or VAE. Settings come from the defaults, then --config, then the "
        "flags below, then --set, each overriding the one before.",
    )
    parser.add_argument("--model", choices=list(MODELS), help="model family (default: vae)")
    parser.add_argument(
        "--dataset", help="dataset name (mnist, fashion-mnist), image folder, or .npy/.npz"
    )
    parser.add_argument("--out", type=Path, help="run directory to create")
    parser.add_argument("--config", type=Path, help="TOML file with [data], [model], [train]")
    add_override_argument(parser, "override any setting (repeatable)")
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="RUN",
        help="continue an interrupted run (only --epochs may change)",
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="learning rate")
    parser.add_argument("--latent-dim", type=int)
    parser.add_argument("--hidden", metavar="512,256", help="neurons per hidden layer")
    parser.add_argument("--activation", help="relu, sigmoid, tanh, leaky_relu, gelu, silu")
    parser.add_argument("--l1", type=float, help="L1 penalty coefficient on the weights")
    parser.add_argument("--l2", type=float, help="L2 penalty coefficient on the weights")
    parser.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--threads", type=int, help="torch threads (default: 1 on CPU, measured)")
    parser.add_argument("--device", help="auto | cpu | cuda | mps")
    parser.add_argument(
        "--precision",
        help="fp32 | bf16: bf16 mixed precision (matrix products in bfloat16, weights and losses "
        "in float32); faster on GPUs and CPUs with bf16 units",
    )
    parser.add_argument("--size", type=int, help="image folders: resize to SIZE x SIZE")
    parser.add_argument(
        "--strict", action="store_true", help="image folders: unreadable files are an error"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    parser.add_argument("--no-report", action="store_true", help="do not write report.html")
    parser.add_argument(
        "--no-diagnostics",
        action="store_true",
        help="do not measure gradients and activations (diagnostics.jsonl, warnings)",
    )
    parser.set_defaults(handler=run_train)


def config_from_args(args: argparse.Namespace) -> Config:
    from latentspace import default_config

    config = load_config(args.config) if args.config else default_config("vae")
    overrides = [
        f"{key}={_text(getattr(args, flag))}"
        for flag, key in FLAGS.items()
        if getattr(args, flag, None) is not None
    ]
    if getattr(args, "strict", False):
        overrides.append("data.strict=true")
    return apply_overrides(config, [*overrides, *args.overrides])


def _text(value: object) -> str:
    return str(value)


def run_train(args: argparse.Namespace) -> int:
    try:
        return _run_train(args)
    except KeyboardInterrupt:
        where = args.resume or args.out
        print(
            f"latentspace: interrupted; {where} keeps its last completed epoch: continue with "
            f"`latentspace train --resume {where}`",
            file=sys.stderr,
        )
        return 130


def _run_train(args: argparse.Namespace) -> int:
    if args.resume is not None:
        if args.out is not None and args.out != args.resume:
            raise ConfigError("--resume continues a run in place: leave out --out")
        changed = [f for f in FLAGS if f != "epochs" and getattr(args, f, None) is not None]
        if changed or args.overrides or args.config:
            raise ConfigError(
                f"--resume keeps the run's settings; only --epochs may change "
                f"(got --{(changed or ['set'])[0].replace('_', '-')})"
            )
        from latentspace.runs import read_run_config

        saved, _, _ = read_run_config(args.resume)
        epochs = args.epochs if args.epochs is not None else saved.train.epochs
        config = apply_overrides(saved, [f"train.epochs={epochs}"])
        run = train(
            config,
            args.resume,
            resume=True,
            quiet=args.quiet,
            diagnostics=not args.no_diagnostics,
        )
    else:
        if args.out is None:
            raise ConfigError("say where the run goes: --out runs/NAME")
        config = config_from_args(args)
        run = train(config, args.out, quiet=args.quiet, diagnostics=not args.no_diagnostics)
    if not args.quiet:
        print(f"run saved in {run.path}")
    if not args.no_report:
        _write_report(run.path, args.quiet)
    return 0


def _write_report(run_dir: Path, quiet: bool) -> None:
    """The report never fails a finished training run: a problem becomes one warning line."""
    from latentspace.report import write_report

    try:
        path = write_report(run_dir)
    except Exception as error:
        print(f"warning: report not written ({type(error).__name__}: {error})".splitlines()[0])
        return
    if not quiet:
        print(f"report: {path}")
