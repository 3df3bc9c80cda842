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
    from latentspace.data.text_corpus import CORPORA

    p.add_argument("names", nargs="+", choices=[*DATASETS, *CORPORA, "all"], metavar="NAME")
    p.set_defaults(handler=run_fetch)


def _list_corpora() -> None:
    from latentspace.data.text_corpus import CORPORA, corpus_status

    for name, corpus in CORPORA.items():
        present, directory = corpus_status(name)
        how = f"run `latentspace data fetch {name}`"
        print(f"  {name:<14} {f'present  {directory}' if present else f'missing  ({how})'}")
        print(f"  {'':<14} {corpus.description}")


def run_list(args: argparse.Namespace) -> int:
    print(f"data home: {data_home()}  (set LATENTSPACE_DATA to move it)")
    for name, spec in DATASETS.items():
        present, directory = dataset_status(name)
        state = f"present  {directory}" if present else f"missing  ({spec.how_to_get})"
        print(f"  {name:<14} {state}\n  {'':<14} {spec.description}")
    _list_corpora()
    print("Any folder of images or .npy/.npz file also works as --dataset PATH.")
    print("So does a UTF-8 .txt file (one sentence per line) or a folder of them, for text models.")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from latentspace.data.text_corpus import CORPORA, corpus_status, fetch_corpus

    names = [*DATASETS, *CORPORA] if "all" in args.names else args.names
    for name in names:
        if name in CORPORA:
            present, directory = corpus_status(name)
            if present:
                print(f"{name}: already present in {directory}")
            else:
                fetch_corpus(name)
            continue
        present, directory = dataset_status(name)
        if present:
            print(f"{name}: already present in {directory}")
        else:
            fetch(name)
    return 0
