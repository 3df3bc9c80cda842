"""Decode latent codes with a model exported by `latentspace export RUN --format onnx`, using
onnxruntime and numpy only: no latentspace, no PyTorch. Walked through in docs/export.md, and run
by tests/test_export.py against an exported run, so it stays true.

    python decode_onnx.py EXPORT_DIR --out samples.pgm                # 16 codes drawn from N(0, I)
    python decode_onnx.py EXPORT_DIR --codes codes.npz --out grid.pgm # codes of `latentspace encode`
    python decode_onnx.py EXPORT_DIR --images digits.npy --out recon.pgm  # encode, then decode

The grid is a binary PGM (grey) or PPM (colour) image, which most image viewers open; --npy also
saves the decoded images as an array (N, C, H, W) of floats in [0, 1].
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime


def read_manifest(folder: Path) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("format") != "latentspace-onnx":
        sys.exit(f"{folder}/manifest.json is not a latentspace ONNX export")
    return manifest


def run_part(folder: Path, manifest: dict, part: str, batch: np.ndarray) -> np.ndarray:
    """Run one exported graph ("encoder" or "decoder") on a float32 batch."""
    if part not in manifest["parts"]:
        sys.exit(f"no {part} in {folder}: {manifest['not_exported'].get(part, 'not exported')}")
    entry = manifest["parts"][part]
    session = onnxruntime.InferenceSession(
        str(folder / entry["file"]), providers=["CPUExecutionProvider"]
    )
    feed = {entry["input"]["name"]: batch.astype(np.float32)}
    return session.run([entry["output"]["name"]], feed)[0]


def read_codes(path: Path, manifest: dict) -> np.ndarray:
    """The codes of a .npz written by `latentspace encode`, refused when another run made them
    (its weights' SHA-256 differs from the exported run's)."""
    with np.load(path, allow_pickle=False) as data:
        codes = data["codes"]
        made_by = str(data["weights_sha256"]) if "weights_sha256" in data else None
    if made_by and manifest["weights_sha256"] and made_by != manifest["weights_sha256"]:
        sys.exit(f"{path} holds codes of other weights than this export's: they mean nothing here")
    return codes


def read_images(path: Path, shape: list[int]) -> np.ndarray:
    """uint8 images (N, H, W), (N, H, W, C) or (N, C, H, W) from a .npy -> floats (N, C, H, W)."""
    images = np.load(path, allow_pickle=False)
    channels, height, width = shape
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1:3] == (height, width):
        images = images.transpose(0, 3, 1, 2)  # channels last -> first
    if images.shape[1:] != (channels, height, width):
        sys.exit(f"{path} holds images of shape {images.shape[1:]}, the model takes {shape}")
    return images.astype(np.float32) / 255


def write_grid(images: np.ndarray, path: Path) -> None:
    """images (N, C, H, W) in [0, 1] -> one PGM (C = 1) or PPM (C = 3) grid, 1-pixel gaps."""
    n, channels, height, width = images.shape
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * (height + 1) + 1, columns * (width + 1) + 1, channels), np.uint8)
    pixels = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    for i, image in enumerate(pixels):
        top, left = 1 + (i // columns) * (height + 1), 1 + (i % columns) * (width + 1)
        grid[top : top + height, left : left + width] = image
    magic = b"P5" if channels == 1 else b"P6"
    header = b"%s\n%d %d\n255\n" % (magic, grid.shape[1], grid.shape[0])
    path.write_bytes(header + grid.tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="the folder `latentspace export` wrote")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--codes", type=Path, help="a .npz written by `latentspace encode`")
    source.add_argument("--images", type=Path, help="a .npy of uint8 images to reconstruct")
    parser.add_argument("-n", type=int, default=16, help="codes drawn from N(0, I) (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="the grid: a .pgm or .ppm")
    parser.add_argument("--npy", type=Path, help="also save the images (N, C, H, W) here")
    args = parser.parse_args()

    manifest = read_manifest(args.export)
    if args.codes:
        codes = read_codes(args.codes, manifest)
    elif args.images:
        codes = run_part(
            args.export, manifest, "encoder", read_images(args.images, manifest["image_shape"])
        )
    else:
        # a VAE's and a GAN's prior; an autoencoder's fitted prior is not N(0, I): give it codes
        codes = np.random.default_rng(args.seed).standard_normal((args.n, manifest["latent_dim"]))
    images = run_part(args.export, manifest, "decoder", codes)
    write_grid(images, args.out)
    if args.npy:
        np.save(args.npy, images)
    low, high = float(images.min()), float(images.max())
    print(f"decoded {len(codes)} codes -> images {images.shape[1:]} in [{low:.3f}, {high:.3f}]")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
