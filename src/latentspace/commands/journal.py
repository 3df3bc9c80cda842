"""`latentspace compress` and `latentspace decompress`: albums of images coded by a learned
codec (see docs/journal.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentspace._device import configure_threads
from latentspace.commands._common import add_device_arguments

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compress", help="images -> an album of a few bytes per image")
    p.add_argument("run", type=Path, help="a run whose model has an entropy model")
    p.add_argument("inputs", nargs="+", type=Path, help="image files and folders of them")
    p.add_argument("--out", type=Path, required=True, help="the album to write (.lsj)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--quality", type=int, help="1 (fewest bytes) .. the model's levels")
    rate.add_argument(
        "--bytes",
        type=float,
        help="the highest quality whose album takes at most this many bytes per image",
    )
    p.add_argument(
        "--group-bytes",
        type=int,
        default=0,
        metavar="B",
        help="let images share entropy-coded streams of about B bytes: each image then costs "
        "about 6 bytes less, but a damaged byte loses every image of its stream (default 0: "
        "each image its own stream)",
    )
    add_device_arguments(p)
    p.set_defaults(handler=run_compress)

    p = subparsers.add_parser("decompress", help="an album -> PNG images with their names")
    p.add_argument("album", type=Path, help="an album written by `latentspace compress`")
    p.add_argument("--out", type=Path, required=True, help="the folder to write the images to")
    p.add_argument("--run", type=Path, help="the run that made it (default: the one it names)")
    add_device_arguments(p)
    p.set_defaults(handler=run_decompress)


def run_compress(args: argparse.Namespace) -> int:
    from latentspace.journal import compress

    configure_threads(args.threads)
    done = compress(
        args.run,
        args.inputs,
        args.out,
        quality=args.quality,
        bytes_per_image=args.bytes,
        group_bytes=args.group_bytes,
        device=args.device,
    )
    print(
        f"compressed {done.images} images into {done.path}: {done.bytes} bytes, "
        f"{done.bytes / done.images:.1f} per image ({done.payload_bytes / done.images:.1f} of "
        f"code), quality {done.quality}"
    )
    return 0


def run_decompress(args: argparse.Namespace) -> int:
    from latentspace.journal import decompress

    configure_threads(args.threads)
    written = decompress(args.album, args.out, run_dir=args.run, device=args.device)
    print(f"decompressed {len(written)} images into {args.out}")
    return 0
