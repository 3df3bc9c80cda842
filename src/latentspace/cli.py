"""The `latentspace` command. `main(argv) -> int`, so tests call it in-process.

Each command group lives in `latentspace.commands.<module>` and registers its sub-commands;
errors a user can act on (`LatentspaceError`) print one line and exit 1, without a traceback
unless --debug.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from latentspace._version import __version__
from latentspace.errors import LatentspaceError

__all__ = ["main"]

# Command modules, in the order `latentspace --help` lists them; a module added to
# latentspace/commands/ and not listed here comes after these, in alphabetical order.
COMMAND_MODULES = (
    "latentspace.commands.train",
    "latentspace.commands.use",
    "latentspace.commands.data",
    "latentspace.commands.tune",
    "latentspace.commands.quality",
    "latentspace.commands.look",
    "latentspace.commands.diagnose",
)


def command_modules() -> list[str]:
    """COMMAND_MODULES, then every other public module of latentspace.commands."""
    from latentspace import commands

    found = sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if m.name[0] != "_")
    listed = {name.rpartition(".")[2] for name in COMMAND_MODULES}
    return [*COMMAND_MODULES, *(f"latentspace.commands.{n}" for n in found if n not in listed)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentspace",
        description="Train, explore and tune autoencoders, VAEs and GANs on image data.",
    )
    parser.add_argument("--version", action="version", version=f"latentspace {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_modules():
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except LatentspaceError as error:
        if args.debug:
            raise
        print(f"latentspace: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `latentspace info RUN | head`
        sys.stdout = open(os.devnull, "w")
        return 0
    except KeyboardInterrupt:
        print("latentspace: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
