"""Shared fixtures: tiny generated image sets and fast configs, so unit tests run in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import latentspace as ls
from latentspace.config import Config


def make_images(n: int = 64, size: int = 12, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Blobs on a dark background, (n, H, W) or (n, H, W, C) uint8: structured enough to learn."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images = []
    for _ in range(n):
        cy, cx = rng.uniform(2, size - 2, 2)
        r = rng.uniform(1.5, size / 3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
        images.append(blob)
    array = (np.stack(images) * 255).astype(np.uint8)
    if channels == 3:
        array = np.stack([array, array[:, ::-1], array[:, :, ::-1]], axis=-1)
    return array


class InterruptAfter:
    """A trainer callback that raises KeyboardInterrupt (like Ctrl-C) after epoch `epoch` is
    saved: what an interrupted run leaves behind."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: object, record: dict[str, object]) -> None:
        if record["epoch"] == self.epoch:
            raise KeyboardInterrupt


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """64 labelled 12x12 grayscale images as an .npz."""
    path = tmp_path / "tiny.npz"
    labels = np.arange(64) % 4
    np.savez(path, images=make_images(64), labels=labels)
    return path


@pytest.fixture
def tiny_config(tiny_npz: Path) -> Config:
    """A VAE config on tiny_npz that trains in well under a second per epoch."""
    config = ls.default_config(
        "vae",
        dataset=str(tiny_npz),
        epochs=2,
        batch_size=16,
        latent_dim=2,
        hidden_sizes=(32,),
        device="cpu",
    )
    return config


@pytest.fixture
def tiny_run(tmp_path: Path, tiny_config: Config) -> Path:
    """A trained (2 epochs) tiny VAE run directory (without report.html: tests that need one
    write it)."""
    out = tmp_path / "run"
    ls.train(tiny_config, out, quiet=True, report=False)
    return out
