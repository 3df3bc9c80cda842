"""Helpers shared by CLI commands: inputs resolved against a run."""

from __future__ import annotations

import argparse

from latentspace._device import configure_threads, select_device
from latentspace.data import ImageSet, resolve
from latentspace.errors import DataError
from latentspace.runs import Run, open_run

__all__ = [
    "add_device_arguments",
    "add_override_argument",
    "load_input",
    "open_run_for_use",
]


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda | mps (default: cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")


def add_override_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """`--set SECTION.KEY=VALUE`, repeatable, collected in `args.overrides`."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=help,
    )


def open_run_for_use(args: argparse.Namespace) -> Run:
    configure_threads(args.threads)
    return open_run(args.run, select_device(args.device))


def load_input(spec: str, run: Run, limit: int | None = None) -> ImageSet:
    """Images for a trained run: `NAME[:split]` (default split test), a folder (resized and
    converted to the run's image shape) or an array; a shape the run cannot take is an error."""
    c, h, w = run.image_shape
    images = resolve(spec, default_split="test", size=h if h == w else None, channels=c)
    if limit is not None:
        images = images.head(limit)
    if images.image_shape != run.image_shape:
        raise DataError(
            f"{spec} gives {images.image_shape} images but {run.path} was trained on "
            f"{run.image_shape}"
        )
    return images
