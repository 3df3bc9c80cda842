"""`latentspace configs`: the TOML files shipped with the package, usable from any folder.

latentspace configs                          # names and what each is for
latentspace configs show demo                # the file itself
latentspace configs copy demo my-demo.toml   # an editable copy
latentspace train --config demo --out runs/demo
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from latentspace.config import config_path, describe_shipped, is_search_space, shipped_configs
from latentspace.errors import ConfigError, StorageError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "configs",
        help="list, show or copy the configs shipped with latentspace",
        description="The TOML configs (and the tune search space) shipped with the package. "
        "Use one by name from any folder (`latentspace train --config demo`), or copy it to edit.",
    )
    parser.set_defaults(handler=run_list)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    show = actions.add_parser("show", help="print a shipped file")
    show.add_argument("name", help="a name from `latentspace configs`")
    show.set_defaults(handler=run_show)
    copy = actions.add_parser("copy", help="write an editable copy of a shipped file")
    copy.add_argument("name", help="a name from `latentspace configs`")
    copy.add_argument("path", type=Path, help="the file to write (or a folder: NAME.toml in it)")
    copy.set_defaults(handler=run_copy)


def _kind(path: Path) -> str:
    """How a shipped file is used: a config (--config) or a search space (tune --space)."""
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    return "--space" if is_search_space(raw) else "--config"


def run_list(args: argparse.Namespace) -> int:
    shipped = shipped_configs()
    width = max(map(len, shipped), default=0)
    for name, path in shipped.items():
        print(f"{name:<{width}}  {_kind(path):<8}  {describe_shipped(path)}")
    print(
        "use one by name from any folder (`latentspace train --config NAME`, `latentspace tune "
        "--space NAME`); `latentspace configs show NAME` prints it, `latentspace configs copy "
        "NAME PATH` writes a copy to edit"
    )
    return 0


def _shipped(name: str) -> Path:
    if name not in shipped_configs():
        config_path(name)  # the one-line error that lists the shipped names
        raise ConfigError(f"{name!r} is not a shipped config: `latentspace configs` lists them")
    return shipped_configs()[name]


def run_show(args: argparse.Namespace) -> int:
    print(_shipped(args.name).read_text(encoding="utf-8"), end="")
    return 0


def run_copy(args: argparse.Namespace) -> int:
    source = _shipped(args.name)
    target: Path = args.path / source.name if args.path.is_dir() else args.path
    try:
        with target.open("x", encoding="utf-8") as handle:  # "x": never overwrite
            handle.write(source.read_text(encoding="utf-8"))
    except FileExistsError:
        raise ConfigError(
            f"{target} already exists: give another path, or remove it first"
        ) from None
    except FileNotFoundError:
        raise StorageError(
            f"cannot write {target}: its folder {target.parent} does not exist"
        ) from None
    except OSError as error:
        raise StorageError(f"cannot write {target}: {error.strerror or error}") from None
    flag = "--space" if _kind(source) == "--space" else "--config"
    command = "tune" if flag == "--space" else "train"
    print(f"wrote {target}: edit it, then `latentspace {command} {flag} {target} ...`")
    return 0
