"""Data larger than memory (issue 21): peak memory of training on a folder 8x larger than another,
and the speed of reading batches from the folder's cache against decoding its files each epoch.

Two folders of PNG photos (generated: coloured blobs, so they compress like pictures) are decoded
into the cache (LATENTSPACE_CACHE is a temporary folder) and trained on, each in its own process,
which reports its peak resident memory (getrusage ru_maxrss). Target: the 8x folder raises the
peak by less than 10%. For scale, the same images as an .npy held in memory, and the folder again
with glibc's mmap threshold fixed (freed heap blocks that glibc keeps vary from run to run: 804,
821 and 887 MiB for three identical runs here, so each folder trains --repeats times and the
median is compared). A fixed threshold is not the default: it made each training step 2x slower
here (12-14 s against 28 s for the same 2 epochs, alternating). Then, in this process, the
second epoch of batches read from the larger folder's cache against a torch DataLoader whose
Dataset decodes each file with PIL, at the same worker count as the cache's decoding (and at 0
workers for reference). Target: >= 10x.

    .venv/bin/python bench/data_memory.py            # 2000 and 16000 images of 96x96
    .venv/bin/python bench/data_memory.py --quick    # 100 and 800 images of 32x32
    .venv/bin/python bench/data_memory.py --part memory   # the peaks, beside other work
    .venv/bin/python bench/data_memory.py --part reading  # the speeds, alone on the machine
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_folder(folder: Path, n: int, side: int, seed: int) -> None:
    """`n` colour PNGs of side x side: a few soft blobs each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    for i in range(n):
        image = np.zeros((side, side, 3))
        for _ in range(3):
            cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.3)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
            image += blob[..., None] * rng.uniform(0, 1, 3)
        pixels = (np.clip(image, 0, 1) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.png")


def child(folder: str, epochs: int) -> None:
    """Train on `folder` (its cache already built) and print the peak memory as JSON."""
    import latentspace as ls

    config = ls.default_config(
        "vae",
        dataset=folder,
        epochs=epochs,
        batch_size=128,
        hidden_sizes=(64,),
        latent_dim=8,
        threads=1,
        device="cpu",
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ls.train(config, Path(tmp) / "run", quiet=True, diagnostics=False, report=False)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record = {"peak_rss_mib": peak_mib, "seconds": time.perf_counter() - start}
    print(json.dumps(record))


def build(folder: str) -> None:
    """Decode `folder` into the cache (in worker processes) and print the seconds it took."""
    from latentspace.data import resolve

    start = time.perf_counter()
    images = resolve(folder)
    print(json.dumps({"seconds": time.perf_counter() - start, "images": len(images)}))


def _in_child(*args: str, env: dict[str, str] | None = None) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


class _Decoded(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """The baseline: every image decoded from its file with PIL, each time it is read."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(array.transpose(2, 0, 1).copy())


def _second_epoch(batches: object) -> float:
    """Seconds of the second pass over `batches` (the first warms the page cache)."""
    for _ in batches:  # type: ignore[attr-defined]
        pass
    start = time.perf_counter()
    for batch in batches:  # type: ignore[attr-defined]
        batch.float()
    return time.perf_counter() - start


def reading_speed(folder: Path, batch_size: int) -> None:
    from latentspace.data import Batches, cache, resolve

    torch.set_num_threads(1)  # the float conversion alike on both sides, without thread spin
    images = resolve(str(folder)).images
    workers = cache.workers()
    cached = _second_epoch(
        Batches(images, batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    )
    n = len(images)
    print(f"reading {n} images, batches of {batch_size}, second epoch:")
    print(f"  from the cache (this process):      {n / cached:9.0f} images/s")
    paths = sorted(folder.glob("*.png"))
    for count in sorted({0, workers}):
        loader = torch.utils.data.DataLoader(
            _Decoded(paths), batch_size=batch_size, shuffle=True, num_workers=count
        )
        decoded = _second_epoch(loader)
        print(
            f"  PIL in a DataLoader, {count} worker(s): {n / decoded:9.0f} images/s   "
            f"cache / PIL = {decoded / cached:.1f}x" + ("  (target >= 10x)" if count else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="100 and 800 images of 32x32")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="trainings per folder (median)")
    parser.add_argument(
        "--part",
        choices=("all", "memory", "reading"),
        default="all",
        help="memory: the peaks only (not sensitive to other load); reading: the speeds only",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--build", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.epochs)
    if args.build:
        return build(args.build)
    n, side = (100, 32) if args.quick else (2000, 96)
    epochs = 1 if args.quick else args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LATENTSPACE_CACHE"] = str(Path(tmp) / "cache")
        peaks: dict[str, dict[int, float]] = {"folder": {}, "folder, glibc mmap": {}, "npy": {}}
        for count in (n, 8 * n) if args.part != "reading" else ():
            folder = Path(tmp) / f"photos-{count}"
            make_folder(folder, count, side, seed=count)
            built = _in_child("--build", str(folder))
            train = ("--child", str(folder), "--epochs", str(epochs))
            runs = [_in_child(*train) for _ in range(1 if args.quick else args.repeats)]
            trained = runs[0]
            each = sorted(r["peak_rss_mib"] for r in runs)
            peaks["folder"][count] = each[len(each) // 2]
            print(f"{count} images: peak RSS of each training (MiB): {each}", flush=True)
            # glibc keeps freed heap blocks (its mmap threshold rises with each large free), so
            # more steps alone raise the peak; a fixed threshold shows the data's own share
            fixed = {"MALLOC_MMAP_THRESHOLD_": "65536"}
            peaks["folder, glibc mmap"][count] = _in_child(*train, env=fixed)["peak_rss_mib"]
            array = Path(tmp) / f"photos-{count}.npy"  # the same images held in memory
            np.save(array, resolve_all(folder))
            peaks["npy"][count] = _in_child("--child", str(array), "--epochs", str(epochs))[
                "peak_rss_mib"
            ]
            decoded_mib = count * 3 * side * side / 2**20
            print(
                f"{count} images {side}x{side} ({decoded_mib:.0f} MiB decoded): cache built in "
                f"{built['seconds']:.1f} s; {epochs} epoch(s) in {trained['seconds']:.1f} s"
            )
        if args.part != "reading":
            print("peak RSS (MiB)            1x folder   8x folder   8x / 1x")
            for what, peak in peaks.items():
                ratio = peak[8 * n] / peak[n]
                target = "  (target < 1.10)" if what == "folder" else ""
                print(f"  {what:<22} {peak[n]:9.0f}   {peak[8 * n]:9.0f}   {ratio:7.3f}{target}")
        if args.part != "memory":
            folder = Path(tmp) / f"photos-{8 * n}"
            if not folder.exists():
                make_folder(folder, 8 * n, side, seed=8 * n)
            reading_speed(folder, batch_size=128)


def resolve_all(folder: Path) -> np.ndarray:
    """A folder's images as one (N, C, H, W) uint8 array, read from its cache."""
    from latentspace.data import resolve

    return resolve(str(folder)).images[:].numpy()


if __name__ == "__main__":
    main()
