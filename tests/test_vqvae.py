"""The VQ-VAE family (models/vqvae.py): spatial codes of any image size, the EMA codebook against
its formula, dead-code restarts, usage counted over each epoch, and a short training run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import latentspace as ls
from latentspace.errors import ConfigError
from latentspace.models import build_model
from latentspace.models.vqvae import VQVAE, Codebook, VQVAEConfig
from latentspace.settings import TrainConfig


def _model(shape: tuple[int, int, int] = (3, 16, 12), **overrides: object) -> VQVAE:
    torch.manual_seed(0)
    settings: dict[str, object] = {"latent_dim": 4, "width": 8, "codebook_size": 8}
    config = VQVAEConfig(**{**settings, **overrides})  # type: ignore[arg-type]
    model = build_model(config, shape, TrainConfig(lr=1e-3))
    assert isinstance(model, VQVAE)
    return model


def test_spatial_codes_and_any_image_size() -> None:
    model = _model().eval()
    x = torch.rand(2, 3, 16, 12)
    assert model.latent_dim == 4 * 4 * 3 and tuple(model.encode(x).shape) == (2, 48)
    assert tuple(model.decode(model.encode(x)).shape) == (2, 3, 16, 12)
    other = torch.rand(1, 3, 21, 30)  # not the trained shape, not a multiple of the factor
    indices = model.to_indices(other)
    assert indices.dtype == torch.long and tuple(indices.shape) == (1, 6, 8)
    assert int(indices.min()) >= 0 and int(indices.max()) < 8
    back = model.from_indices(indices, (21, 30))
    assert tuple(back.shape) == (1, 3, 21, 30) and 0 <= float(back.min()) <= float(back.max()) <= 1


def test_codes_are_codebook_vectors() -> None:
    model = _model().eval()
    x = torch.rand(2, 3, 16, 12)
    codes = model.encode(x).reshape(2, 4, 4, 3).permute(0, 2, 3, 1).reshape(-1, 4)
    indices = model.to_indices(x).flatten()
    torch.testing.assert_close(codes, model.codebook.vectors[indices])


def test_ema_update_follows_its_formula() -> None:
    """One step with decay d: N = d N + (1-d) n, m = d m + (1-d) sum z, e = m / N (smoothed)."""
    torch.manual_seed(0)
    book = Codebook(3, 2, decay=0.5)
    before_size, before_sum = book.cluster_size.clone(), book.vector_sum.clone()
    rows = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    book.update(rows, torch.tensor([0, 0, 2]))
    size = 0.5 * before_size + 0.5 * torch.tensor([2.0, 0.0, 1.0])
    total = 0.5 * before_sum + 0.5 * torch.stack([rows[0] + rows[1], torch.zeros(2), rows[2]])
    torch.testing.assert_close(book.cluster_size, size)
    smoothed = (size + 1e-5) / (size.sum() + 3e-5) * size.sum()
    torch.testing.assert_close(book.vectors, total / smoothed[:, None])
    assert book.counts.tolist() == [2.0, 0.0, 1.0]


def test_usage_and_perplexity_over_counts() -> None:
    book = Codebook(4, 2, decay=0.9)
    book.counts.copy_(torch.tensor([5.0, 5.0, 0.0, 0.0]))
    used, perplexity = book.usage()
    assert used == 2 and math.isclose(perplexity, 2.0, rel_tol=1e-6)  # two codes, equally used


def test_first_step_starts_the_codebook_from_encoder_outputs() -> None:
    model = _model()
    model.on_epoch_start(0, 2)
    x = torch.rand(4, 3, 16, 12)
    z_e = model._analyse(x).detach().permute(0, 2, 3, 1).reshape(-1, 4)
    model.training_step(x, model.configure_optimizers())
    # every code was drawn from that batch's encoder outputs (then moved once by the EMA)
    distance = torch.cdist(model.codebook.vectors, z_e).min(1).values
    assert float(distance.max()) < 0.1


def test_dead_codes_restart_and_are_warned_about() -> None:
    model = _model()
    optimizers = model.configure_optimizers()
    x = torch.rand(4, 3, 16, 12)
    model.on_epoch_start(0, 2)
    model.training_step(x, optimizers)
    # codes 0-1 unused, code 2 chosen under 10% of an even share (1000 / 8 positions)
    model.codebook.counts.copy_(torch.tensor([0, 0, 1, 199, 200, 200, 200, 200.0]))
    book = model.codebook
    book.vectors[:3] = 100.0  # far from every encoder output, and so are their averages
    book.vector_sum[:3] = 100.0 * book.cluster_size[:3, None]
    record: dict[str, object] = {"train": {"total": 1.0}}
    warnings = model.epoch_warnings(record)
    assert len(warnings) == 1 and warnings[0].startswith("3 of 8 codes unused this epoch")
    train = record["train"]
    assert isinstance(train, dict) and train["codebook_usage"] == 6 / 8
    assert model.training_signals(train)["codebook_usage"] == 6 / 8
    assert "2 never chosen" in warnings[0]
    model.on_epoch_start(1, 2)
    assert float(model.codebook.counts.sum()) == 0  # counting starts again
    model.training_step(x, optimizers)
    assert float(model.codebook.vectors[:3].abs().max()) < 50  # restarted near the data


def test_generate_draws_codebook_vectors_uniformly_given_a_generator() -> None:
    model = _model()
    z1 = model.sample_latent(3, generator=torch.Generator().manual_seed(1))
    z2 = model.sample_latent(3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(z1, z2)
    rows = z1.reshape(3, 4, -1).permute(0, 2, 1).reshape(-1, 4)
    gaps = (rows[:, None, :] - model.codebook.vectors[None]).abs().amax(-1).min(1).values
    assert float(gaps.max()) == 0.0
    assert tuple(model.generate(2).shape) == (2, 3, 16, 12)


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="codebook_size = 1 must be at least 2"):
        VQVAEConfig(codebook_size=1).validate()
    with pytest.raises(ConfigError, match="decay = 1.0 must be between 0 and 1"):
        VQVAEConfig(decay=1.0).validate()
    with pytest.raises(ConfigError, match="factor 3 is not one of"):
        VQVAEConfig(factor=3).validate()


def test_trains_and_logs_codebook_usage_every_epoch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # smooth colour images: a few blobs, so a 4x4 code map has something to code
    yy, xx = np.mgrid[0:16, 0:16]
    images = []
    for _ in range(48):
        cy, cx = rng.uniform(2, 14, 2)
        colour = rng.uniform(0, 255, 3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 12.0)
        images.append((blob[None] * colour[:, None, None]).astype(np.uint8))
    npz = tmp_path / "blobs.npz"
    np.savez(npz, images=np.stack(images))
    config = ls.default_config(
        "vqvae", dataset=str(npz), epochs=3, batch_size=16, latent_dim=4, device="cpu", lr=3e-3
    )
    config = ls.config.apply_overrides(config, ["model.width=16", "model.codebook_size=16"])
    run = ls.train(config, tmp_path / "run", quiet=True, report=False)
    records = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    assert len(epochs) == 3
    for record in epochs:
        assert 0 < record["train"]["codebook_usage"] <= 1
        assert 1 <= record["train"]["codebook_perplexity"] <= 16
    assert epochs[-1]["train"]["reconstruction"] < epochs[0]["train"]["reconstruction"]
    diagnostics = [
        json.loads(line) for line in (run.path / "diagnostics.jsonl").read_text().splitlines()
    ]
    assert any("codebook_usage" in (d.get("signals") or {}) for d in diagnostics)
