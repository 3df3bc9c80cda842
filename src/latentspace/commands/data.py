"""`latentspace data list | fetch NAME`."""

from __future__ import annotations

import argparse

from latentspace.data import DATASETS, data_home, dataset_status, fetch

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="list and fetch the named datasets")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="every known dataset, whether present, and where").set_defaults(
        handler=run_list
    )
    p = actions.add_parser("fetch", help="fetch a named dataset into the data home")
    p.add_argument("names", nargs="+", choices=[*DATASETS, "all"], metavar="NAME")
    p.set_defaults(handler=run_fetch)


def run_list(args: argparse.Namespace) -> int:
    print(f"data home: {data_home()}  (set LATENTSPACE_DATA to move it)")
    for name, spec in DATASETS.items():
        present, directory = dataset_status(name)
        state = f"present  {directory}" if present else f"missing  ({spec.how_to_get})"
        print(f"  {name:<14} {state}\n  {'':<14} {spec.description}")
    print("Any folder of images or .npy/.npz file also works as --dataset PATH.")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    names = list(DATASETS) if "all" in args.names else args.names
    for name in names:
        present, directory = dataset_status(name)
        if present:
            print(f"{name}: already present in {directory}")
        else:
            fetch(name)
    return 0
