"""`latentspace tune` (an Optuna study over runs) and `latentspace tune-report DIR`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from latentspace.commands._common import add_override_argument
from latentspace.config import apply_overrides, load_config
from latentspace.dashboards import LOGGERS
from latentspace.errors import ConfigError
from latentspace.models import DEFAULT_MODEL, MODELS
from latentspace.runs import atomic_write

__all__ = ["register"]

OPTIONS_FILE = "tune.json"  # the options of the last `tune` in DIR, for `tune-report`


def register(subparsers: argparse._SubParsersAction) -> None:
    from latentspace.tune.study import (
        DEFAULT_PRUNER,
        DEFAULT_SAMPLER,
        OBJECTIVES,
        PRUNERS,
        SAMPLERS,
    )

    parser = subparsers.add_parser(
        "tune",
        help="tune hyperparameters with an Optuna study (every trial is a run)",
        description="Search hyperparameters: each trial trains a run into DIR/trials/NNNN, "
        "reports its validation loss every epoch and may be pruned. Running the same command "
        "again resumes the study up to --trials. Results: DIR/best.toml, trials.csv, best-run/, "
        "tune-report.html. See docs/tuning.md.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help=f"base config: a TOML file or a shipped name such as tune-base (default: the "
        f"{DEFAULT_MODEL} defaults)",
    )
    parser.add_argument(
        "--space",
        type=Path,
        help="space TOML overriding the default space (a file, or the shipped tune-space, which "
        "documents the format)",
    )
    parser.add_argument("--study", help="study name (default: the name of --out)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the study's results")
    parser.add_argument("--trials", type=int, default=50, help="trials in total (default 50)")
    parser.add_argument(
        "--timeout", type=float, metavar="MIN", help="stop starting trials after MIN minutes"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="shared database, e.g. postgresql://user:pw@host/db (default: a journal file in --out)",
    )
    parser.add_argument(
        "--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER, help=f"default {DEFAULT_SAMPLER}"
    )
    parser.add_argument(
        "--pruner", choices=PRUNERS, default=DEFAULT_PRUNER, help=f"default {DEFAULT_PRUNER}"
    )
    parser.add_argument(
        "--objective",
        choices=OBJECTIVES,
        help="what trials minimise (default val_loss; fid for a family that minimises no "
        "validation loss)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="sampler seed: worker i of a new study uses SEED+i; a resumed or extended study "
        "mixes in its trial count, so it never repeats earlier trials",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per worker (default 1)"
    )
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=30,
        metavar="S",
        help="database storages: heartbeat seconds",
    )
    parser.add_argument(
        "--model",
        choices=tuple(MODELS),
        help="the base config's model family (as --set model.name)",
    )
    parser.add_argument(
        "--dataset",
        help="the base config's dataset (as --set data.dataset): a name, folder or file",
    )
    add_override_argument(parser, "override a base config setting (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no per-trial lines")
    parser.add_argument(
        "--log",
        action="append",
        choices=LOGGERS,
        default=[],
        help="log every trial live: TensorBoard in its folder, MLflow in DIR/mlflow.db "
        "(one MLflow run a trial); repeatable; see docs/dashboards.md",
    )
    parser.set_defaults(handler=run_tune)

    report = subparsers.add_parser(
        "tune-report",
        help="rewrite DIR/tune-report.html, best.toml and trials.csv of a study",
        description="Regenerate a study's results at any time, also while it runs.",
    )
    report.add_argument("dir", type=Path, help="the --out directory of `latentspace tune`")
    report.add_argument(
        "--storage", metavar="URL", help="the study's database (if not the journal)"
    )
    report.set_defaults(handler=run_tune_report)


def _fix_overridden(space_raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`--set section.key=value` fixes that setting: a key the default space would sample (and
    the space file does not name) is excluded from the search, so the override is what trains."""
    from latentspace.tune import DEFAULT_SPACE

    named = {
        f"{section}.{key}"
        for section, table in space_raw.items()
        if isinstance(table, dict)
        for key in table
    }
    fixed = [
        key
        for key in (item.partition("=")[0].strip() for item in overrides)
        if key in DEFAULT_SPACE and key not in named
    ]
    if not fixed:
        return space_raw
    exclude = list(space_raw.get("exclude", []))
    return {**space_raw, "exclude": exclude + [k for k in fixed if k not in exclude]}


def run_tune(args: argparse.Namespace) -> int:
    from latentspace import default_config
    from latentspace.tune.report import write_report
    from latentspace.tune.study import (
        _quiet_optuna_warnings,
        _safe_url,
        default_objective,
        options_for,
    )
    from latentspace.tune.workers import run_study

    base = load_config(args.config) if args.config else default_config(DEFAULT_MODEL)
    shorthand = [
        f"{key}={value}"
        for key, value in (("model.name", args.model), ("data.dataset", args.dataset))
        if value is not None
    ]
    base = apply_overrides(base, [*shorthand, *args.overrides])
    space_raw: dict[str, Any] = {}
    space_source = "default space"
    if args.space is not None:
        import tomllib

        from latentspace.config import config_path

        args.space = config_path(args.space, "search space")
        try:
            space_raw = tomllib.loads(args.space.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"space file {args.space} not found") from None
        except IsADirectoryError:
            raise ConfigError(
                f"space file {args.space} is a directory: give a .toml file (e.g. a copy of the "
                "shipped one: `latentspace configs copy tune-space space.toml`)"
            ) from None
        except OSError as error:
            raise ConfigError(
                f"cannot read space file {args.space}: {error.strerror or error}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(
                f"space file {args.space} is not valid TOML (not UTF-8 text)"
            ) from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"space file {args.space} is not valid TOML: {error}") from None
        space_source = str(args.space)
    space_raw = _fix_overridden(space_raw, args.overrides)
    options = options_for(
        base,
        space_raw,
        space_source,
        out=str(args.out),
        study=args.study or args.out.resolve().name,
        trials=args.trials,
        timeout_s=None if args.timeout is None else args.timeout * 60,
        workers=args.workers,
        storage=args.storage,
        sampler=args.sampler,
        pruner=args.pruner,
        objective=args.objective or default_objective(base),
        seed=args.seed,
        threads=args.threads,
        heartbeat_s=args.heartbeat,
        quiet=args.quiet,
        log=tuple(args.log),
    )
    previous = args.out / OPTIONS_FILE
    if previous.exists():
        earlier = json.loads(previous.read_text()).get("study")
        if earlier != options.study:
            raise ConfigError(
                f"{args.out} holds study {earlier!r}, not {options.study!r}: use another --out "
                f"(trials/NNNN would mix the two studies' runs) or --study {earlier}"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    saved = dataclasses.asdict(options)
    saved["storage"] = None if options.storage is None else _safe_url(options.storage)
    text = json.dumps(saved, indent=2)
    atomic_write(args.out / OPTIONS_FILE, lambda tmp: tmp.write_text(text))
    interrupted = False
    try:
        study = run_study(options)
    except KeyboardInterrupt:
        interrupted = True
        from latentspace.tune.study import open_study

        study = open_study(options)
    with _quiet_optuna_warnings():
        path = write_report(study, options, options.base_config(), options.load_space())
    _print_summary(study, args.out, path)
    if interrupted:
        print("interrupted: run the same command again to resume the study", file=sys.stderr)
        return 130
    return 0


def _print_summary(study: Any, out: Path, report: Path) -> None:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    print("trials: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    try:
        best = study.best_trial
        print(f"best: trial {best.number}, {best.value:.6g}; config in {out / 'best.toml'}")
    except ValueError:
        print("no trial completed yet")
    print(f"report: {report}")


def run_tune_report(args: argparse.Namespace) -> int:
    from latentspace.tune.report import write_report
    from latentspace.tune.study import TuneOptions, _quiet_optuna_warnings, open_study

    path = args.dir / OPTIONS_FILE
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{path} not found: is {args.dir} the --out of `latentspace tune`?"
        ) from None
    saved["out"] = str(args.dir)
    if args.storage is not None:
        saved["storage"] = args.storage
    elif saved.get("storage") and "***" in saved["storage"]:
        raise ConfigError(
            "the study's database URL has a password: pass it again with --storage URL"
        )
    options = TuneOptions(**saved)
    with _quiet_optuna_warnings():
        study = open_study(options)
        report = write_report(study, options, options.base_config(), options.load_space())
    _print_summary(study, args.dir, report)
    return 0
