"""The codes the explorer maps: encoded once, and cached in the run folder when encoding is slow.

An encoder network codes 10,000 MNIST images in about a second, so its codes are recomputed at
every start. An encoder that is an optimisation (GAN inversion) takes minutes to hours for the
same images: its codes are computed once with a progress bar, saved every minute while they
are computed (Ctrl-C loses at most a minute) and kept in `RUN/explore-codes.npz` with the
SHA-256 of the weights, the config and the images, so a retrained run or other images recompute.
"""

from __future__ import annotations

import hashlib
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from latentspace.analysis.evaluate import affordable_encodes
from latentspace.data import Images, batched, to_float
from latentspace.errors import ConfigError, StorageError
from latentspace.runs import CONFIG, WEIGHTS, Run, atomic_write, file_sha256

__all__ = ["CACHE", "ENCODE_BUDGET_S", "encode_images"]

CACHE = "explore-codes.npz"
# an encoder that would take longer than this for all the images is slow: its codes are cached
ENCODE_BUDGET_S = 10.0
_SLOW_BATCH = 64  # images per inversion batch: the progress bar moves, memory stays small
_SAVE_EVERY_S = 60.0  # partial codes are saved this often while a slow encoder runs


def _key(run: Run, images: torch.Tensor) -> dict[str, str]:
    """What the cached codes belong to: these weights, this config (inversion settings) and
    these images, in this order."""
    return {
        "weights_sha256": file_sha256(run.path / WEIGHTS),
        "config_sha256": file_sha256(run.path / CONFIG),
        "images_sha256": hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest(),
    }


def _read_cache(path: Path, key: dict[str, str], n: int, latent_dim: int) -> torch.Tensor | None:
    """The cached codes (done, D) when they belong to `key`, else None (ignored, recomputed)."""
    try:
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as stored:
            if any(str(stored[name]) != value for name, value in key.items()):
                return None
            codes = np.asarray(stored["codes"], dtype=np.float32)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None  # absent, damaged or not ours: computed again
    if codes.ndim != 2 or codes.shape[1] != latent_dim or len(codes) > n:
        return None
    if not np.isfinite(codes).all():
        return None
    return torch.from_numpy(codes)


def _write_cache(path: Path, key: dict[str, str], codes: torch.Tensor) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:  # a file object: np.savez would add .npz to the name
            arrays: dict[str, Any] = {name: np.array(value) for name, value in key.items()}
            np.savez(handle, codes=codes.numpy(), **arrays)

    atomic_write(path, write)


def encode_images(
    run: Run,
    images: torch.Tensor | Images,
    *,
    budget_s: float = ENCODE_BUDGET_S,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> torch.Tensor:
    """Codes (N, D) on the CPU of uint8 images (N, C, H, W). Fast encoders run at once; a slow
    one (all N would take more than `budget_s`, timed by `affordable_encodes`) runs batch by
    batch with a progress bar, resuming from and saving to the run's explore-codes.npz."""
    model = run.model
    probe = to_float(images[:2].to(model.device))
    with torch.no_grad():
        try:  # the first call pays for allocation and warm-up: time the second
            model.encode(probe[:1])
        except NotImplementedError:
            pass
        affordable = affordable_encodes(model, probe, budget_s)
    if affordable == 0:
        raise ConfigError(
            f"{run.path} holds a {model.name!r} model without an encoder: it cannot place "
            "images in its latent space"
        )
    if affordable >= len(images):
        return batched(model.encode, images, model.device)
    slow = images[:]  # read whole: its codes are cached under a hash of its pixels
    return _encode_slowly(run, slow, len(images) * budget_s / affordable, progress, log)


def _encode_slowly(
    run: Run,
    images: torch.Tensor,
    estimate_s: float,
    progress: bool,
    log: Callable[[str], None],
) -> torch.Tensor:
    path = run.path / CACHE
    key = _key(run, images)
    n, model = len(images), run.model
    cached = _read_cache(path, key, n, model.latent_dim)
    if cached is not None and len(cached) == n:
        log(f"codes of {n} images read from {path}")
        return cached
    done = [] if cached is None else [cached]
    start = 0 if cached is None else len(cached)
    remaining = estimate_s * (n - start) / n
    about = f"{remaining:.0f} s" if remaining < 90 else f"{remaining / 60:.0f} min"
    log(
        f"encoding {n - start} images with this model's encoder (an optimisation: about "
        f"{about}, once); the codes are cached in {path}"
        + (f" (resuming after {start})" if start else "")
    )
    last_save = time.monotonic()
    cache_ok = True
    with tqdm(total=n, initial=start, unit="image", desc="encoding", disable=not progress) as bar:
        for i in range(start, n, _SLOW_BATCH):
            done.append(batched(model.encode, images[i : i + _SLOW_BATCH], model.device))
            bar.update(len(done[-1]))
            if cache_ok and time.monotonic() - last_save > _SAVE_EVERY_S and i + _SLOW_BATCH < n:
                cache_ok = _save(path, key, torch.cat(done), log)
                last_save = time.monotonic()
    codes = torch.cat(done)
    if cache_ok:
        _save(path, key, codes, log)
    return codes


def _save(path: Path, key: dict[str, str], codes: torch.Tensor, log: Callable[[str], None]) -> bool:
    """Write the cache; a folder that cannot take it costs a recomputation next time, not this
    session (one line says so)."""
    try:
        _write_cache(path, key, codes)
    except StorageError as error:
        log(f"the codes are not cached ({error}); the next start encodes them again")
        return False
    return True
