"""`latentspace data list | fetch NAME | cache FOLDER`."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentspace.data import DATASETS, cache_root, data_home, dataset_status, fetch
from latentspace.data.cache import cache_folder

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="list and fetch the named datasets")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="every known dataset, whether present, and where").set_defaults(
        handler=run_list
    )
    p = actions.add_parser("fetch", help="fetch a named dataset into the data home")
    from latentspace.data.photos import PHOTO_SETS
    from latentspace.data.text_corpus import CORPORA

    names = [*DATASETS, *PHOTO_SETS, *CORPORA, "all"]
    p.add_argument("names", nargs="+", choices=names, metavar="NAME")
    p.set_defaults(handler=run_fetch)
    p = actions.add_parser(
        "cache",
        help="decode an image folder into its on-disk cache now (the first use would do it)",
    )
    p.add_argument("folder", type=Path)
    p.add_argument("--size", type=int, help="resize to SIZE x SIZE, as data.size")
    p.add_argument("--channels", type=int, choices=[1, 3], help="as data.channels")
    p.set_defaults(handler=run_cache)


def _list_corpora() -> None:
    from latentspace.data.text_corpus import CORPORA, corpus_status

    for name, corpus in CORPORA.items():
        present, directory = corpus_status(name)
        how = f"run `latentspace data fetch {name}`"
        print(f"  {name:<14} {f'present  {directory}' if present else f'missing  ({how})'}")
        print(f"  {'':<14} {corpus.description}")


def _list_photos() -> None:
    from latentspace.data.photos import PHOTO_SETS, photo_status

    for name, collection in PHOTO_SETS.items():
        present, directory = photo_status(name)
        state = f"present  {directory}" if present else f"missing  ({collection.how_to_get})"
        print(f"  {name:<14} {state}\n  {'':<14} {collection.description}")
        print(f"  {'':<14} a folder of photos of different sizes: {name}:train, {name}:test")


def run_list(args: argparse.Namespace) -> int:
    print(f"data home: {data_home()}  (set LATENTSPACE_DATA to move it)")
    for name, spec in DATASETS.items():
        present, directory = dataset_status(name)
        state = f"present  {directory}" if present else f"missing  ({spec.how_to_get})"
        print(f"  {name:<14} {state}\n  {'':<14} {spec.description}")
    _list_photos()
    _list_corpora()
    print("Any folder of images or .npy/.npz file also works as --dataset PATH.")
    print("So does a UTF-8 .txt file (one sentence per line) or a folder of them, for text models.")
    print(f"image folders are decoded once into {cache_root()}  (set LATENTSPACE_CACHE to move it)")
    return 0


def run_cache(args: argparse.Namespace) -> int:
    print(cache_folder(args.folder, args.size, args.channels))
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from latentspace.data.photos import PHOTO_SETS, fetch_photos, photo_status
    from latentspace.data.text_corpus import CORPORA, corpus_status, fetch_corpus

    names = [*DATASETS, *PHOTO_SETS, *CORPORA] if "all" in args.names else args.names
    for name in names:
        if name in PHOTO_SETS:
            present, directory = photo_status(name)
            if present:
                print(f"{name}: already present in {directory}")
            else:
                fetch_photos(name)
            continue
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
