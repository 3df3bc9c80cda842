"""`latentspace explore RUN`: the interactive latent-space explorer, a page on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentspace.commands._common import add_device_arguments, open_run_for_use
from latentspace.explorer.session import MAX_POINTS, METHODS

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explore",
        help="point at a run's latent space in the browser: map, decode, sliders, interpolation",
        description=(
            "Serve a local page with a 2-D map of the run's held-out images' codes: hover a "
            "point to see its image, click anywhere to decode that point, move one slider per "
            "latent dimension, interpolate between two picks, and compute A - B + C. Listens "
            "on 127.0.0.1 only unless --host says otherwise; see docs/explorer.md."
        ),
    )
    p.add_argument("run", type=Path)
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free one)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens the "
        "explorer to every machine that can reach this one)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=MAX_POINTS,
        help=f"held-out images on the map (default and most: {MAX_POINTS})",
    )
    p.add_argument("--method", choices=METHODS, default=METHODS[0], help="map: pca, tsne or umap")
    p.add_argument("--seed", type=int, default=0, help="t-SNE / UMAP seed")
    p.add_argument(
        "--browser",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="open the page in a browser (default: no, the URL is printed)",
    )
    add_device_arguments(p)
    p.set_defaults(handler=run_explore)


def run_explore(args: argparse.Namespace) -> int:
    from latentspace.explorer import bind, open_explorer, require_server, serve

    require_server()  # before minutes of encoding, not after
    sock = bind(args.host, args.port)  # a port in use is said now too; requests wait for the map
    try:
        run = open_run_for_use(args)
        explorer = open_explorer(run, limit=args.limit, method=args.method, seed=args.seed)
    except BaseException:
        sock.close()
        raise
    serve(explorer, sock, open_browser=args.browser)
    return 0
