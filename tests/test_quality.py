"""FID/KID in latentspace's own feature networks, mode coverage, and the commands that show them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import latentspace as ls
from conftest import make_images
from latentspace import cli
from latentspace.analysis.classifier import FeatureNetwork, cache_paths, feature_network
from latentspace.analysis.quality import class_distribution, fid_kid, uniform_deviation
from latentspace.errors import DataError


@pytest.fixture(autouse=True)
def _data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Feature networks are cached in the data home: keep the tests' out of the real one."""
    monkeypatch.setenv("LATENTSPACE_DATA", str(tmp_path / "home"))


@pytest.fixture
def blobs(tmp_path: Path) -> Path:
    path = tmp_path / "blobs.npz"
    np.savez(path, images=make_images(240, seed=1), labels=np.arange(240) % 3)
    return path


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise(blobs: Path) -> None:
    network, info = feature_network(str(blobs), epochs=1, log=lambda line: None)
    assert info.kind == "classifier" and network.num_features == 128
    images = ls.resolve(str(blobs)).images.float() / 255
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(images.shape, generator=generator)
    scores = [
        fid_kid(images, (images + sigma * noise).clamp(0, 1), network, kid_subsets=20)
        for sigma in (0.0, 0.05, 0.2)
    ]
    fids = [s[0] for s in scores]
    kids = [s[1] for s in scores]
    assert abs(fids[0]) < 1e-3 * max(fids[2], 1e-3)
    assert fids[0] < fids[1] < fids[2]
    # KID is unbiased, so a small difference can come out slightly negative: only the clear one
    # is required to stand out
    assert kids[2] > 10 * abs(kids[0]) and kids[2] > kids[1]


def test_feature_network_is_trained_once_and_cached(blobs: Path) -> None:
    lines: list[str] = []
    first, info = feature_network(str(blobs), epochs=1, log=lines.append)
    assert lines and info.test_accuracy is not None and 0 <= info.test_accuracy <= 1
    weights, meta = cache_paths(info.key)
    assert weights.exists() and json.loads(meta.read_text())["test_accuracy"] == info.test_accuracy
    lines.clear()
    second, again = feature_network(str(blobs), log=lines.append)
    assert lines == [] and again == info  # loaded, not trained
    x = torch.rand(4, 1, 12, 12)
    assert torch.equal(first(x), second(x))


def test_unlabelled_images_get_autoencoder_features(tmp_path: Path) -> None:
    path = tmp_path / "plain.npy"
    np.save(path, make_images(80, seed=2))
    network, info = feature_network(str(path), epochs=1, log=lambda line: None)
    assert info.kind == "autoencoder" and "autoencoder features" in info.label
    assert info.test_mse is not None and info.classes is None
    assert network(torch.rand(3, 1, 12, 12)).shape == (3, 64)
    with pytest.raises(DataError, match="no classes"):
        class_distribution(torch.rand(3, 1, 12, 12), network)


def test_class_distribution_and_deviation() -> None:
    network = FeatureNetwork((1, 4, 4), 2)
    fractions = class_distribution(torch.rand(50, 1, 4, 4), network)
    assert fractions.shape == (2,) and float(fractions.sum()) == pytest.approx(1.0)
    assert uniform_deviation(torch.tensor([0.25, 0.25, 0.25, 0.25])) == 0.0
    assert uniform_deviation(torch.tensor([0.3, 0.2, 0.25, 0.25])) == pytest.approx(0.2)


def test_quality_command_names_its_features(tiny_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["quality", str(tiny_run), "-n", "40", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "classifier features" in report["features"]
    assert report["n_generated"] == 40 and report["fid"] > report["floor_fid"] >= 0
    assert len(report["generated_classes"]) == 4
    assert cli.main(["quality", str(tiny_run), "-n", "40"]) == 0
    text = capsys.readouterr().out
    assert "FID (latentspace" in text and "not comparable with published Inception" in text
    # 40 samples, 4 classes: each share +- 1.96 sqrt(0.25 * 0.75 / 40) = 0.134
    assert "each share +- 0.1342 at 95% from 40 samples" in text
    # the largest deviation to a tenth of a point (20.4% misses a 20% line), beside the real one
    real = uniform_deviation(torch.tensor(report["reference_classes"]))
    assert f"largest deviation {report['max_deviation']:.1%}, real held-out {real:.1%})" in text
    saved = [r for r in ls.open_run(tiny_run).metrics if r["kind"] == "quality"]
    assert len(saved) == 2 and saved[0]["fid"] == report["fid"]


def test_classifier_command(blobs: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["classifier", str(blobs), "--epochs", "1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["kind"] == "classifier" and Path(shown["path"]).exists()
    assert cli.main(["classifier", str(blobs)]) == 0
    assert "test accuracy" in capsys.readouterr().out


def test_evaluate_fid_flag(tiny_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        cli.main(["evaluate", str(tiny_run), "--split", "val", "--fid", "30", "--nll-samples", "0"])
        == 0
    )
    text = capsys.readouterr().out
    assert "FID (latentspace" in text and "classes of generated samples" in text
    record = [r for r in ls.open_run(tiny_run).metrics if "quality" in r][-1]
    assert record["quality"]["n_generated"] == 30


def test_sample_fid_reads_the_held_out_images_once_and_scores_like_the_one_off(
    blobs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tuning scores a GAN after every epoch: the reference images and the feature network are
    read when the scorer is made, not again at each call, and each call equals `sample_fid`."""
    from latentspace.analysis import quality

    feature_network(str(blobs), epochs=1, log=lambda line: None)  # cached, as tuning does first
    config = ls.default_config(
        "gan", dataset=str(blobs), epochs=1, latent_dim=2, hidden_sizes=(16,), device="cpu"
    )
    run = ls.train(config, tmp_path / "gan", quiet=True, diagnostics=False, report=False)
    reads = []
    held_out = quality.held_out
    monkeypatch.setattr(quality, "held_out", lambda c: reads.append(1) or held_out(c))
    scorer = quality.SampleFID(run.config, run.model, n=64)
    first, second = scorer(run.model), scorer(run.model)
    assert len(reads) == 1 and first == second
    assert first == pytest.approx(quality.sample_fid(run.model, run.config, n=64))
