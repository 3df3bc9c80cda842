"""`latentspace classifier` (the cached feature network behind FID/KID) and `latentspace quality
RUN` (FID/KID and mode coverage of a run's samples, for any model family)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from latentspace.analysis.classifier import cache_paths, feature_network
from latentspace.commands._common import add_device_arguments, open_run_for_use
from latentspace.errors import DataError
from latentspace.runs import append_metrics

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "classifier",
        help="train (once, cached) or show the feature network behind FID/KID",
        description="A small CNN classifier per labelled dataset (its 128 penultimate features "
        "feed FID/KID; its predictions give mode coverage), or for unlabelled images the encoder "
        "of a small autoencoder trained on them. Cached in the data home.",
    )
    p.add_argument("dataset", help="dataset name (mnist, fashion-mnist), image folder or .npy/.npz")
    p.add_argument("--retrain", action="store_true", help="train again even if cached")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.set_defaults(handler=run_classifier)

    p = subparsers.add_parser(
        "quality",
        help="FID/KID (latentspace classifier features) and mode coverage of a run's samples",
        description="Generate N images from RUN and compare them with the real held-out images "
        "(the test split of a named dataset, else the run's validation images) in the features "
        "of latentspace's own per-dataset network. Not comparable with Inception-FID.",
    )
    p.add_argument("run", type=Path)
    p.add_argument("-n", type=int, default=10000, help="images to generate (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-save", action="store_true", help="do not append to metrics.jsonl")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_device_arguments(p)
    p.set_defaults(handler=run_quality)


def run_classifier(args: argparse.Namespace) -> int:
    from latentspace._device import configure_threads

    if args.epochs < 1:
        raise DataError(f"--epochs {args.epochs}: train for at least one epoch")
    configure_threads(args.threads)
    log = (lambda line: None) if args.json else print
    network, info = feature_network(args.dataset, retrain=args.retrain, epochs=args.epochs, log=log)
    weights, _ = cache_paths(info.key)
    if args.json:
        print(json.dumps({**dataclasses.asdict(info), "path": str(weights), "label": info.label}))
        return 0
    quality = (
        f"test accuracy {info.test_accuracy:.4f}"
        if info.test_accuracy is not None
        else f"held-out reconstruction error (MSE) {info.test_mse:.5f}"
    )
    print(
        f"{info.kind} for {info.dataset}: {quality} on {info.test_images} held-out images "
        f"(trained on {info.train_images}, {info.epochs} epochs, {info.seconds:.0f} s)"
    )
    print(f"{network.num_features} features; scores are named '{info.label}'; cached in {weights}")
    return 0


def run_quality(args: argparse.Namespace) -> int:
    from latentspace.analysis.quality import evaluate_quality

    if args.n < 2:
        raise DataError(f"-n {args.n}: FID/KID need at least 2 generated images")
    run = open_run_for_use(args)
    log = (lambda line: None) if args.json else print
    report = evaluate_quality(run, n=args.n, seed=args.seed, log=log, quiet=args.quiet)
    if not args.no_save:
        append_metrics(
            run.path, {"kind": "quality", "seed": args.seed, **dataclasses.asdict(report)}
        )
    if args.json:
        print(json.dumps({"run": str(run.path), **dataclasses.asdict(report)}))
        return 0
    print(f"run {run.path} ({run.model.name} on {run.config.data.dataset}):")
    for line in report.lines():
        print(line)
    return 0
