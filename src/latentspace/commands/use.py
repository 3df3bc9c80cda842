"""Using a trained run: encode, decode, generate, reconstruct, info."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentspace.commands import _text
from latentspace.commands._common import add_device_arguments, load_input, open_run_for_use
from latentspace.data import batched
from latentspace.errors import ConfigError, DataError
from latentspace.imaging import save_grid, save_images
from latentspace.runs import Run, atomic_write, weights_sha256

__all__ = ["MAX_GENERATE", "MAX_GENERATE_VALUES", "register", "weights_id"]

# generate makes all its images in one pass and holds them as float32: at most this many images,
# and at most this many pixel values (512 MiB; 10922 RGB 64x64 images), checked before allocating
MAX_GENERATE = 100_000
MAX_GENERATE_VALUES = 2**27


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("encode", help="images (or sentences) -> latent codes (.npz)")
    p.add_argument("run", type=Path)
    p.add_argument(
        "input",
        help="NAME[:split] (default split: test), image folder, or .npy/.npz; for a text model "
        "a sentence, a .txt file or a corpus name",
    )
    p.add_argument("--out", type=Path, help="codes file to write (.npz; text: else printed)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    p.add_argument(
        "--sample",
        action="store_true",
        help="VAE: draw from the posterior instead of taking its mean",
    )
    p.add_argument("--seed", type=int, default=0, help="with --sample")
    p.add_argument("--limit", type=int, help="encode only the first N images")
    add_device_arguments(p)
    p.set_defaults(handler=run_encode)

    p = subparsers.add_parser("decode", help="latent codes (.npz) -> images")
    p.add_argument("run", type=Path)
    p.add_argument("codes", type=Path, help="a codes file written by `latentspace encode`")
    p.add_argument(
        "--out", type=Path, help="a folder (one PNG per code) or grid.png (text: a .txt file)"
    )
    p.add_argument("--seed", type=int, default=0, help="text models: seeds --strategy sample")
    _text.add_decoding_arguments(p)
    p.add_argument(
        "--force",
        action="store_true",
        help="decode codes that another run (other weights) made; their images mean nothing here",
    )
    add_device_arguments(p)
    p.set_defaults(handler=run_decode)

    p = subparsers.add_parser("generate", help="new images from the model's prior")
    p.add_argument("run", type=Path)
    p.add_argument(
        "-n", type=int, default=64, help=f"how many images (default 64, at most {MAX_GENERATE:,})"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="grid.png, or a folder for single PNGs (text: .txt)")
    _text.add_decoding_arguments(p)
    add_device_arguments(p)
    p.set_defaults(handler=run_generate)

    p = subparsers.add_parser("reconstruct", help="originals above, reconstructions below")
    p.add_argument("run", type=Path)
    p.add_argument("input", help="NAME[:split] (default split: test), image folder, or .npy/.npz")
    p.add_argument("-n", type=int, default=16, help="how many images (default 16)")
    p.add_argument("--out", type=Path, help="grid.png to write (text: a .txt file, else printed)")
    add_device_arguments(p)
    p.set_defaults(handler=run_reconstruct)

    p = subparsers.add_parser("info", help="a run's config, layers and final metrics")
    p.add_argument("run", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run_info, device="cpu", threads=0)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _need_out(args: argparse.Namespace) -> None:
    """--out is optional only for text models, which print their sentences."""
    if args.out is None:
        raise ConfigError(f"{args.command}: give --out (the file or folder to write)")


def weights_id(run: Run) -> str:
    """The SHA-256 of the run's model.safetensors: which weights made a codes file."""
    return weights_sha256(run.path)


def run_encode(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: give at least 1, or leave --limit out")
    run = open_run_for_use(args)
    if run.model.inputs == "text":
        return _text.encode(args, run)
    _need_out(args)
    images = load_input(args.input, run, args.limit)
    generator = torch.Generator().manual_seed(args.seed)
    model = run.model
    codes = batched(
        lambda x: model.encode(x, sample=args.sample, generator=generator),
        images.images,
        model.device,
    )
    array = codes.numpy().astype(args.dtype)
    payload: dict[str, Any] = {
        "codes": array,
        "run": np.array(str(run.path)),
        "weights_sha256": np.array(weights_id(run)),  # decode refuses codes of other weights
        "source": np.array(images.source),
    }
    if images.labels is not None:
        payload["labels"] = images.labels.numpy()
    if images.names is not None:
        payload["names"] = np.array(images.names)
    out = args.out if args.out.suffix == ".npz" else args.out.with_suffix(".npz")

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **payload)

    atomic_write(out, write)
    image_bytes = images.images.numel()  # uint8: one byte per pixel value
    print(
        f"encoded {len(array)} images {images.image_shape} -> {array.shape[1]} {args.dtype} "
        f"each into {out}"
    )
    print(
        f"images {_human(image_bytes)} -> codes {_human(array.nbytes)} "
        f"(compression {image_bytes / array.nbytes:.1f}x)"
    )
    return 0


def _read_codes(path: Path, latent_dim: int) -> tuple[np.ndarray, dict[str, str]]:
    """The codes (N, latent_dim) of a codes file and what it says made them: "run" and
    "weights_sha256" where it records them (older codes files lack the hash)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "codes" not in data:
                raise DataError(f"{path} has no 'codes' array; write it with `latentspace encode`")
            codes = data["codes"]
            origin = {
                key: str(data[key])
                for key in ("run", "weights_sha256")
                if key in data and data[key].ndim == 0
            }
    except FileNotFoundError:
        raise DataError(f"codes file {path} not found") from None
    except (ValueError, OSError) as error:
        raise DataError(f"cannot read codes file {path}: {error}") from None
    if codes.ndim != 2 or codes.shape[1] != latent_dim:
        raise DataError(
            f"codes in {path} have shape {codes.shape}; this run needs (N, {latent_dim})"
        )
    if not np.isfinite(codes).all():
        raise DataError(f"codes in {path} contain NaN or infinite values")
    return codes, origin


def _check_origin(path: Path, origin: dict[str, str], run: Run, force: bool) -> None:
    """Codes mean something only to the weights that made them: refuse another run's (one line)
    unless forced; a file that does not record its weights decodes with a note."""
    made_by = origin.get("run", "an unknown run")
    recorded = origin.get("weights_sha256")
    if recorded is None:
        print(
            f"note: {path} does not record which weights made it (an older codes file, from "
            f"{made_by}); decoding it with {run.path} as asked",
            file=sys.stderr,
        )
        return
    current = weights_id(run)
    if recorded == current or force:
        return
    same = Path(made_by).resolve() == run.path.resolve()
    who = f"{run.path} before its weights changed" if same else made_by
    raise DataError(
        f"codes in {path} were made by {who} (weights sha256 {recorded[:12]}), not by "
        f"{run.path} (weights {current[:12]}): decode them with the run that made them, encode "
        "the images again with this one, or pass --force"
    )


def _write_images(images: torch.Tensor, out: Path, title: str) -> str:
    """A labelled grid when `out` is a .png, else one PNG per image in the folder `out`."""
    if out.suffix.lower() == ".png":
        save_grid(images, out, title=title)
        return f"a grid of {len(images)} images in {out}"
    save_images(images, out)
    return f"{len(images)} PNG files in {out}/"


def run_decode(args: argparse.Namespace) -> int:
    run = open_run_for_use(args)
    array, origin = _read_codes(args.codes, run.model.latent_dim)
    _check_origin(args.codes, origin, run, args.force)
    if run.model.inputs == "text":
        return _text.decode(args, run, array)
    _need_out(args)
    codes = torch.from_numpy(array.astype(np.float32))
    images = batched(run.model.decode, codes, run.model.device)
    title = f"{run.path}: {len(images)} codes of {args.codes} decoded"
    print(f"decoded {_write_images(images, args.out, title)}")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise DataError(f"-n {args.n}: ask for at least one image")
    if args.n > MAX_GENERATE:
        raise DataError(
            f"-n {args.n}: at most {MAX_GENERATE:,} images at once; run generate again with "
            "another --seed for more"
        )
    run = open_run_for_use(args)
    if run.model.inputs == "text":
        return _text.generate(args, run)
    _need_out(args)
    values = math.prod(run.image_shape)
    most = MAX_GENERATE_VALUES // values
    if args.n > most:
        raise DataError(
            f"-n {args.n}: at most {most:,} images of {'x'.join(map(str, run.image_shape))} at "
            f"once ({MAX_GENERATE_VALUES * 4 >> 20} MiB of pixels); run generate again with "
            "another --seed for more"
        )
    images = run.model.generate(args.n, generator=torch.Generator().manual_seed(args.seed)).cpu()
    title = f"{run.path}: {args.n} images generated from the prior, seed {args.seed}"
    print(f"generated {_write_images(images, args.out, title)}")
    return 0


def run_reconstruct(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise DataError(f"-n {args.n}: ask for at least one image")
    run = open_run_for_use(args)
    if run.model.inputs == "text":
        return _text.reconstruct(args, run)
    _need_out(args)
    images = load_input(args.input, run, args.n)
    model = run.model
    recon = batched(model.reconstruct, images.images, model.device)
    originals = images.images[:].float() / 255
    nrow = min(len(originals), 8)
    rows = []
    for start in range(0, len(originals), nrow):  # an originals row, then its reconstructions
        rows += [originals[start : start + nrow], recon[start : start + nrow]]
    grid_rows = [torch.cat([r, torch.ones(nrow - len(r), *r.shape[1:])]) for r in rows]
    error = float((recon - originals).pow(2).mean())
    save_grid(
        torch.cat(grid_rows),
        args.out,
        nrow=nrow,
        title=f"{run.path}: {len(originals)} images of {images.source}, each row of originals "
        f"above its reconstructions (mean squared error {error:.5f})",
        rows=[
            label
            for start in range(0, len(originals), nrow)
            for label in (
                f"originals {start}-{min(start + nrow, len(originals)) - 1}",
                "reconstructed",
            )
        ],
    )
    print(
        f"wrote {args.out}: each row of originals is followed by its reconstructions "
        f"(mean squared error {error:.5f})"
    )
    return 0


def run_info(args: argparse.Namespace) -> int:
    from latentspace.config import config_to_dict

    run = open_run_for_use(args)
    layers = [(name, tuple(p.shape), p.numel()) for name, p in run.model.named_parameters()]
    epochs = [r for r in run.metrics if r.get("kind", "epoch") == "epoch"]
    if args.json:
        print(
            json.dumps(
                {
                    "run": str(run.path),
                    "image_shape": run.image_shape,
                    "config": config_to_dict(run.config),
                    **run.info,
                    "parameters": {n: c for n, _, c in layers},
                    "last_epoch": epochs[-1] if epochs else None,
                }
            )
        )
        return 0
    print(
        f"run {run.path}: {run.model.name} on {run.config.data.dataset}, images "
        f"{'x'.join(map(str, run.image_shape))}, latent_dim {run.model.latent_dim}, "
        f"latentspace {run.info.get('latentspace_version')}"
    )
    for section, values in config_to_dict(run.config).items():
        shown = {
            k: v if len(str(v)) < 200 else f"<{len(str(v))} characters>" for k, v in values.items()
        }
        print(f"[{section}] " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    print(f"parameters: {sum(c for *_, c in layers):,}")
    for name, shape, count in layers:
        print(f"  {name:<40} {'x'.join(map(str, shape)):>14} {count:>10,}")
    if epochs:
        last = epochs[-1]
        terms = ", ".join(f"{k} {v:.4f}" for k, v in last.get("val", last["train"]).items())
        print(f"after epoch {last['epoch']}: {'validation' if 'val' in last else 'train'} {terms}")
    else:
        print("not trained yet (no epochs in metrics.jsonl)")
    return 0
