"""`latentspace export RUN --format onnx`: the encoder and decoder as files that run without
latentspace (see docs/export.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentspace.export import FORMATS, MANIFEST, PROBE_BATCHES, default_out, export_run

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="the encoder and decoder as ONNX files, for use without latentspace",
        description="Write the run's encoder and decoder (a GAN: its generator) as ONNX graphs "
        "with a dynamic batch dimension, check each against PyTorch with onnxruntime, and write "
        f"{MANIFEST} (shapes, names, ranges, the weights' SHA-256). See docs/export.md.",
    )
    p.add_argument("run", type=Path, help="run directory")
    p.add_argument("--format", choices=FORMATS, default=FORMATS[0], help="default: onnx")
    p.add_argument(
        "--out", type=Path, help="a new or empty folder (default: RUN-onnx beside the run)"
    )
    p.set_defaults(handler=run_export)


def _describe(spec: dict) -> str:
    """codes (batch, 20), images (batch, 1, 28, 28) in [0, 1]"""
    shape = f"{spec['name']} ({', '.join(map(str, spec['shape']))})"
    low_high = spec["range"]
    return shape if low_high is None else f"{shape} in [{low_high[0]:g}, {low_high[1]:g}]"


def run_export(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else default_out(args.run)
    manifest = export_run(args.run, out)
    batches = " and ".join(map(str, PROBE_BATCHES))
    exported = list(manifest["parts"])
    for part, reason in manifest["not_exported"].items():
        print(f"{part}: not exported: {reason}; exporting the {' and '.join(exported)} only")
    for entry in manifest["parts"].values():
        print(
            f"{entry['file']}: {_describe(entry['input'])} -> {_describe(entry['output'])}; "
            f"onnxruntime vs PyTorch on batches of {batches}: max |difference| "
            f"{entry['max_abs_difference']:.1e}"
        )
    print(f"wrote {out} ({MANIFEST}: shapes, names, ranges, weights SHA-256, opset)")
    return 0
