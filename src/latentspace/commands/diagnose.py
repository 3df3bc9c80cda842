"""`latentspace diagnose RUN` and `latentspace experiment NAME|all`."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentspace.dashboards import LOGGERS

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    diagnose = subparsers.add_parser(
        "diagnose",
        help="summarise a run's training diagnostics (gradients, dead units, overfitting)",
        description="Print the per-epoch diagnostics of a finished run, its layers at the last "
        "epoch and every warning raised while it trained (see docs/diagnostics.md).",
    )
    diagnose.add_argument("run", type=Path, help="run directory")
    diagnose.set_defaults(handler=run_diagnose)

    experiment = subparsers.add_parser(
        "experiment",
        help="run a small controlled experiment on one hyperparameter",
        description="Change one hyperparameter, hold the rest, train on a real-data subset and "
        "write an HTML report with curves, a table and a verdict computed from the numbers.",
    )
    from latentspace.experiments import EXPERIMENTS

    experiment.add_argument("name", choices=[*EXPERIMENTS, "all"], help="experiment, or all")
    experiment.add_argument(
        "--dataset",
        help="mnist or fashion-mnist (default: mnist); posterior-collapse: a text corpus or .txt "
        "file (default: fortunes)",
    )
    experiment.add_argument(
        "--budget",
        type=float,
        default=None,
        help="minutes in all (default: 3 per experiment); sizes scale with it",
    )
    experiment.add_argument(
        "--out", type=Path, default=Path("experiments"), help="output folder (default: experiments)"
    )
    experiment.add_argument("--seed", type=int, default=0)
    experiment.add_argument(
        "--log",
        action="append",
        choices=LOGGERS,
        default=[],
        help="log every trial live: TensorBoard in its folder, MLflow in OUT/mlflow.db; "
        "repeatable; see docs/dashboards.md",
    )
    experiment.add_argument(
        "--quiet", action="store_true", help="no progress lines (trial n of N, time left)"
    )
    experiment.set_defaults(handler=run_experiment)


def run_diagnose(args: argparse.Namespace) -> int:
    from latentspace.diagnostics import summarize

    print(summarize(args.run))
    return 0


def run_experiment(args: argparse.Namespace) -> int:
    import sys

    from latentspace.experiments import DEFAULT_MINUTES, EXPERIMENTS
    from latentspace.progress import command_plan, format_duration, silenced

    images = [e for e in EXPERIMENTS.values() if e.inputs == "images"]
    count = len(images) if args.name == "all" else 1
    minutes = args.budget if args.budget is not None else DEFAULT_MINUTES * count
    if not args.quiet:
        print(
            f"experiment {args.name}: {count} experiment{'s' if count > 1 else ''} in about "
            f"{format_duration(60 * minutes)} (--budget); "
            + (
                "measuring this machine's training speed first (a few seconds)"
                if args.name == "all" or EXPERIMENTS[args.name].inputs == "images"
                else "one calibration epoch first sizes the trials"
            ),
            file=sys.stderr,
            flush=True,
        )
    with silenced(args.quiet), command_plan(60 * minutes):
        return _run_experiment(args)


def _run_experiment(args: argparse.Namespace) -> int:
    from latentspace.experiments import run_all, run_experiment

    if args.name == "all":
        index = run_all(
            args.out,
            dataset=args.dataset,
            budget_minutes=args.budget,
            seed=args.seed,
            dashboards=args.log,
        )
        print(f"index: {index}")
    else:
        result = run_experiment(
            args.name,
            args.out,
            dataset=args.dataset,
            budget_minutes=args.budget,
            seed=args.seed,
            dashboards=args.log,
        )
        print(f"{result.name}: {result.verdict_text}  ({result.seconds:.0f} s)  {result.page}")
        for check in result.checks:  # the claim's parts and the numbers that decided them
            print(f"  {'yes' if check.passed else 'no '}  {check.claim}: {check.evidence}")
    return 0
