"""Looking at a trained run: evaluate, interpolate, traverse, map, neighbours, report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from latentspace.analysis import latent
from latentspace.commands import _text
from latentspace.commands._common import add_device_arguments, load_input, open_run_for_use
from latentspace.data import (
    Images,
    ImageSet,
    batched,
    load_image,
    named_dataset,
    split_reference,
    to_float,
)
from latentspace.diagnostics.measure import ACTIVE_UNIT_THRESHOLD
from latentspace.errors import ConfigError, DataError
from latentspace.imaging import save_grid
from latentspace.runs import METRICS, Run, append_metrics, check_writable, lock_run
from latentspace.settings import PRECISIONS

__all__ = ["load_one", "parse_dims", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="reconstruction error, ELBO, importance-weighted NLL, active units",
        description="Evaluate a run; the numbers are also appended to its metrics.jsonl.",
    )
    p.add_argument("run", type=Path)
    p.add_argument("--split", default="test", help="test | val | train (default: test)")
    p.add_argument(
        "--nll-samples",
        type=int,
        metavar="K",
        help="VAE: importance samples per image for the NLL (default 1000; 0 skips it); "
        "sentence VAE: per sentence (default 100)",
    )
    p.add_argument("--limit", type=int, help="evaluate only the first N images (or sentences)")
    p.add_argument(
        "--batch-size", type=int, default=100, help="images (or sentences) per batch (default 100)"
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the importance samples")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument(
        "--precision",
        default=PRECISIONS[0],
        choices=PRECISIONS,
        help="VAE NLL: decoder matrix products in bfloat16 for the K samples (about 2x faster "
        "on CPUs with bf16 units; the NLL moves by a few hundredths of a nat, see "
        "docs/latent-tools.md); default fp32",
    )
    p.add_argument(
        "--fid",
        type=int,
        nargs="?",
        const=10000,
        metavar="N",
        help="also FID/KID and class coverage of N generated images (default 10000) in "
        "latentspace's classifier features (trained once, cached); see docs/gans.md",
    )
    add_device_arguments(p)
    # measured (bench/nll_mnist.py --phase speed): K=1000 on the MNIST test set, 784-200-200-50
    # VAE, 2 threads 51.7 s against 83.0 s on 1; the large matrix products split well
    p.set_defaults(handler=run_evaluate, threads=2)

    p = subparsers.add_parser("interpolate", help="decode a path between two images' codes")
    p.add_argument("run", type=Path)
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        help="image file or dataset:split:index (text models: a sentence)",
    )
    p.add_argument(
        "--to",
        dest="target",
        required=True,
        help="image file or dataset:split:index (text models: a sentence)",
    )
    p.add_argument("--steps", type=int, default=10, help="codes on the path, ends included")
    p.add_argument("--mode", choices=["lerp", "slerp"], default="lerp")
    p.add_argument("--out", type=Path, help="strip.png to write (text models print the steps)")
    _text.add_decoding_arguments(p)
    add_device_arguments(p)
    p.set_defaults(handler=run_interpolate)

    p = subparsers.add_parser("traverse", help="vary one latent dimension at a time")
    p.add_argument("run", type=Path)
    p.add_argument("--input", help="image file or dataset:split:index (default: the prior mean)")
    p.add_argument("--dims", default="all", help="all, or a list such as 0,3,5")
    p.add_argument("--range", type=float, default=3.0, help="prior standard deviations each way")
    p.add_argument("--steps", type=int, default=9, help="images per dimension (default 9)")
    p.add_argument("--out", type=Path, help="grid.png: one row per dimension (text: printed)")
    _text.add_decoding_arguments(p)
    add_device_arguments(p)
    p.set_defaults(handler=run_traverse)

    p = subparsers.add_parser("map", help="2-D map of codes coloured by label, and a decoded plane")
    p.add_argument("run", type=Path)
    p.add_argument("--dataset", help="NAME[:split], folder or array (default: the run's, test)")
    p.add_argument("--method", choices=latent.MAP_METHODS, default="pca")
    p.add_argument("--limit", type=int, default=2000, help="images to encode (default 2000)")
    p.add_argument("--grid", type=int, default=15, help="decoded plane: N x N images")
    p.add_argument("--seed", type=int, default=0, help="t-SNE seed")
    p.add_argument(
        "--out", type=Path, required=True, help="map.png (the plane goes to map-plane.png)"
    )
    add_device_arguments(p)
    p.set_defaults(handler=run_map)

    p = subparsers.add_parser("neighbours", help="nearest training images in latent space")
    p.add_argument("run", type=Path)
    p.add_argument("query", help="image file or dataset:split:index")
    p.add_argument("-k", type=int, default=8, help="how many neighbours (default 8)")
    p.add_argument("--dataset", help="where to search (default: the run's training split)")
    p.add_argument("--limit", type=int, help="search only the first N images")
    p.add_argument("--out", type=Path, help="grid.png: the query, then neighbours (text: printed)")
    add_device_arguments(p)
    p.set_defaults(handler=run_neighbours)

    p = subparsers.add_parser("report", help="write report.html with figures and metrics")
    p.add_argument("run", type=Path)
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_device_arguments(p)
    p.set_defaults(handler=run_report)


# ---- inputs -----------------------------------------------------------------------------------
def load_one(spec: str, run: Run) -> tuple[torch.Tensor, str]:
    """One image for `run`: `dataset:split:index` (or `folder:index`, `file.npz:index`) or an
    image file. Returns (1, C, H, W) uint8 and a short description."""
    reference = split_reference(spec)
    if reference is not None:
        head, index = reference
        images = load_input(head, run)
        if not 0 <= index < len(images):
            raise DataError(
                f"index {index} in {spec} is out of range: {images.source} has {len(images)} "
                f"images (0 to {len(images) - 1})"
            )
        label = ""
        if images.labels is not None:
            value = int(images.labels[index])
            label = images.classes[value] if images.classes else str(value)
        return images.images[index : index + 1], f"{images.source}[{index}]" + (
            f" ({label})" if label else ""
        )
    path = Path(spec)
    if not path.is_file():
        raise DataError(
            f"{spec} is neither an image file nor dataset:split:index (e.g. mnist:test:0)"
        )
    c, h, w = run.image_shape
    image = load_image(path, channels=c, size=h if h == w else None)
    if tuple(image.shape) != run.image_shape:
        raise DataError(
            f"image {path} is {tuple(image.shape)} but {run.path} needs {run.image_shape}"
        )
    return image.unsqueeze(0), str(path)


def _check_limit(limit: int | None) -> None:
    """`--limit N` takes at least one image (left out: all of them)."""
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: give at least 1, or leave --limit out for all images")


def parse_dims(text: str, latent_dim: int) -> list[int]:
    if text == "all":
        return list(range(latent_dim))
    try:
        dims = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--dims {text!r}: write all, or dimensions such as 0,3,5") from None
    bad = [d for d in dims if not 0 <= d < latent_dim]
    if bad or not dims:
        raise ConfigError(
            f"--dims {text!r}: dimensions must be between 0 and {latent_dim - 1} for this run"
        )
    return dims


_ENCODE_BUDGET_S = 300.0  # map and neighbours refuse work that would take longer than this


def _encode(run: Run, images: torch.Tensor | Images) -> torch.Tensor:
    model = run.model
    if len(images) > 2:  # an encoder that is an optimisation (GAN inversion) is slow: say so
        from latentspace.analysis.evaluate import affordable_encodes

        with torch.no_grad():
            probe = to_float(images[:2].to(model.device))
            affordable = affordable_encodes(model, probe, _ENCODE_BUDGET_S)
        if 0 < affordable < len(images):
            raise ConfigError(
                f"encoding {len(images)} images with this {model.name!r} model would take more "
                f"than {_ENCODE_BUDGET_S / 60:g} minutes (its encoder is slow); pass "
                f"--limit {affordable} or fewer"
            )
    try:
        return batched(model.encode, images, model.device)
    except NotImplementedError:
        raise ConfigError(
            f"{run.path} is a {model.name!r} model without an encoder: it cannot place images "
            "in its latent space"
        ) from None


# ---- commands ---------------------------------------------------------------------------------
def run_evaluate(args: argparse.Namespace) -> int:
    from latentspace.analysis.evaluate import evaluate

    if args.nll_samples is not None and args.nll_samples < 0:
        raise ConfigError(f"--nll-samples {args.nll_samples} must be 0 or more")
    _check_limit(args.limit)
    run = open_run_for_use(args)
    if run.model.inputs == "text":
        return _text.evaluate(args, run)
    # the record is appended to the run: a read-only folder or another writer is one line now,
    # not after the evaluation
    check_writable(run.path / METRICS)
    with lock_run(run.path, "evaluate"):
        pass
    record = evaluate(
        run,
        args.split,
        nll_samples=args.nll_samples,
        limit=args.limit,
        batch_size=max(1, args.batch_size),
        seed=args.seed,
        precision=args.precision,
        quiet=args.quiet or args.json,
    )
    record["threads"] = torch.get_num_threads()
    report = None
    if args.fid is not None:
        from latentspace.analysis.quality import evaluate_quality

        quiet = args.json  # the output must stay one JSON object
        log = (lambda line: None) if quiet else print
        report = evaluate_quality(
            run, n=max(2, args.fid), seed=args.seed, log=log, quiet=args.quiet
        )
        record["quality"] = dict(vars(report))
    append_metrics(run.path, record)
    if args.json:
        print(json.dumps(record))
        return 0
    for line in describe_evaluation(record) + (report.lines() if report else []):
        print(line)
    return 0


def describe_evaluation(record: dict[str, Any]) -> list[str]:
    """The evaluation record as sentences a person reads."""
    r = record
    lines = [f"evaluated on {r['data']}"]
    if "mse" in r:
        ssim = f", SSIM {r['ssim']:.4f}" if "ssim" in r else ""
        lines.append(
            f"reconstruction: MSE {r['mse']:.5f}, PSNR {r['psnr']:.2f} dB{ssim} "
            "(per image, averaged)"
        )
    if "negative_elbo" in r:
        lines.append(
            f"negative ELBO {r['negative_elbo']:.2f} nats = reconstruction "
            f"{r['reconstruction']:.2f} + KL {r['kl']:.2f} "
            f"({r['negative_elbo_bits_per_dim']:.4f} bits/dim)"
        )
    if "nll" in r:
        lines.append(
            f"NLL {r['nll']:.2f} nats ({r['nll_bits_per_dim']:.4f} bits/dim): IWAE bound with "
            f"K={r['nll_samples']} importance samples per image, on {r['likelihood']}"
            + (" (decoder in bfloat16)" if r.get("precision") == "bf16" else "")
        )
    if "active_units" in r:
        kl = [float(v) for v in r["kl_per_dim"]]
        top = sorted(range(len(kl)), key=lambda i: -kl[i])[:8]
        lines.append(
            f"active units {r['active_units']}/{r['latent_dim']} (Cov_x E_q[z] > "
            f"{r.get('active_unit_threshold', ACTIVE_UNIT_THRESHOLD):g}); "
            "largest KL per dimension: " + ", ".join(f"z{i} {kl[i]:.2f}" for i in top)
        )
    if "prior_code_log_density" in r:
        lines.append(
            f"fitted Gaussian prior: evaluation codes have mean log-density "
            f"{r['prior_code_log_density']:.2f} nats under it, and "
            f"{100 * float(r['prior_outside_99']):.1f}% of them fall outside its 99% ellipsoid "
            "(1% if it fits)"
        )
    lines.append(f"took {r['seconds']} s; appended to metrics.jsonl")
    return lines


def run_interpolate(args: argparse.Namespace) -> int:
    if args.steps < 2:
        raise ConfigError(f"--steps {args.steps}: an interpolation needs at least 2")
    run = open_run_for_use(args)
    if run.model.inputs == "text":
        return _text.interpolate(args, run)
    if args.out is None:
        raise ConfigError("interpolate: give --out (the strip.png to write)")
    source, source_name = load_one(args.source, run)
    target, target_name = load_one(args.target, run)
    codes = _encode(run, torch.cat([source, target]))
    path = latent.interpolate(codes[0], codes[1], args.steps, args.mode)
    with torch.no_grad():
        decoded = run.model.decode(path.to(run.model.device)).cpu()
    strip = torch.cat([to_float(source), decoded, to_float(target)])
    weights = torch.linspace(0, 1, args.steps).tolist()
    save_grid(
        strip,
        args.out,
        nrow=len(strip),
        title=f"{run.path}: {args.mode} from {source_name} (left) to {target_name} (right), "
        f"the originals framed; {args.steps} codes decoded between them, t = share of the way",
        columns=["from", *(f"t={t:.2g}" for t in weights), "to"],
        marked=[(0, 0), (0, len(strip) - 1)],
    )
    print(f"wrote {args.out}: {source_name}, {args.steps} decoded {args.mode} steps, {target_name}")
    return 0


def run_traverse(args: argparse.Namespace) -> int:
    if args.steps < 2:
        raise ConfigError(f"--steps {args.steps}: a traversal needs at least 2")
    from latentspace.analysis.figures import prior_moments, traversal_images, traversal_labels

    run = open_run_for_use(args)
    dims = parse_dims(args.dims, run.model.latent_dim)
    if run.model.inputs == "text":
        return _text.traverse(args, run, dims)
    if args.out is None:
        raise ConfigError("traverse: give --out (the grid.png to write)")
    if args.input:
        image, name = load_one(args.input, run)
        z = _encode(run, image)[0]
    else:
        z, name = prior_moments(run.model)[0], "the prior mean"
    images = traversal_images(run.model, z, dims, args.range, args.steps)
    save_grid(
        images,
        args.out,
        nrow=args.steps,
        **traversal_labels(run.model, dims, args.range, args.steps, f"{run.path}: {name}"),
    )
    print(
        f"wrote {args.out}: {len(dims)} rows (dimensions {_short(dims)}) x {args.steps} images, "
        f"each dimension from -{args.range:g} to +{args.range:g} prior standard deviations "
        f"around {name}"
    )
    return 0


def _short(dims: list[int]) -> str:
    return ",".join(map(str, dims)) if len(dims) <= 12 else f"{dims[0]}..{dims[-1]}"


def run_map(args: argparse.Namespace) -> int:
    from latentspace.analysis.figures import latent_map

    _check_limit(args.limit)
    run = open_run_for_use(args)
    if run.model.inputs == "text":
        return _text.map_codes(args, run)
    spec = args.dataset or run.config.data.dataset
    images = load_input(spec, run, args.limit)
    codes = _encode(run, images.images)
    plane = args.out.with_name(f"{args.out.stem}-plane.png")
    summary = latent_map(run, codes, images, args.out, plane, args.method, args.grid, args.seed)
    print(f"wrote {args.out} ({summary['scatter']}) and {plane} ({summary['plane']})")
    return 0


def run_neighbours(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise ConfigError(f"-k {args.k} must be at least 1")
    _check_limit(args.limit)
    run = open_run_for_use(args)
    if run.model.inputs == "text":
        return _text.neighbours(args, run)
    if args.out is None:
        raise ConfigError("neighbours: give --out (the grid.png to write)")
    query, name = load_one(args.query, run)
    data = run.config.data.dataset
    named = named_dataset(data)
    spec = args.dataset or (f"{named}:train" if named is not None else data)
    pool = load_input(spec, run, args.limit)
    codes = _encode(run, pool.images)
    query_code = _encode(run, query)
    k = min(args.k, len(pool))
    distances, indices = latent.nearest_neighbours(query_code, codes, k)
    found = indices[0]
    labels = [_label_of(pool, index) for index in found.tolist()]
    save_grid(
        torch.cat([to_float(query), to_float(pool.images[found])]),
        args.out,
        nrow=k + 1,
        title=f"{run.path}: the query {name} (framed), then its {k} nearest images of "
        f"{pool.source} in latent space, with their distance and label",
        columns=[
            "query",
            *(
                f"{d:.3f}{f' ({label})' if label else ''}"
                for d, label in zip(distances[0].tolist(), labels, strict=True)
            ),
        ],
        marked=[(0, 0)],
    )
    print(f"wrote {args.out}: {name}, then its {k} nearest images of {pool.source}")
    for index, distance, label in zip(found.tolist(), distances[0].tolist(), labels, strict=True):
        print(f"  {pool.source}[{index}]{f' ({label})' if label else ''}  distance {distance:.3f}")
    return 0


def _label_of(images: ImageSet, index: int) -> str:
    """The class name (or number) of image `index`, or '' for unlabelled images."""
    if images.labels is None:
        return ""
    value = int(images.labels[index])
    return images.classes[value] if images.classes else str(value)


def run_report(args: argparse.Namespace) -> int:
    from latentspace.analysis.report import write_report

    open_run_for_use(args)  # fails early, in one line, on a run that cannot be opened
    path = write_report(args.run, device=args.device, quiet=args.quiet)
    print(f"wrote {path}")
    return 0
