"""Evaluation: the IWAE bound against a model whose likelihood is exact, and the CLI's promises."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import latentspace as ls
from latentspace.analysis.evaluate import (
    evaluate,
    evaluation_set,
    posterior_mean_variance,
    reconstruction_metrics,
)
from latentspace.cli import main
from latentspace.config import Config
from latentspace.errors import ConfigError
from latentspace.models.vae import gaussian_kl, iwae_bound
from latentspace.runs import read_metrics

# A linear-Gaussian VAE: p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I), so p(x) = N(b, WW' + s^2 I)
# exactly. W has orthogonal columns, which makes the true posterior diagonal.
W = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
B = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)
S = 0.5


def _data(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return z @ W.T + B + S * torch.randn(n, 3, generator=g, dtype=torch.float64)


def _log_px(x: torch.Tensor) -> torch.Tensor:
    cov = W @ W.T + S**2 * torch.eye(3, dtype=torch.float64)
    return torch.distributions.MultivariateNormal(B, cov).log_prob(x)


def _true_posterior(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    precision = 1 + (W**2).sum(0) / S**2  # diagonal because W'W is
    mu = ((x - B) @ W) / S**2 / precision
    return mu, (-precision.log()).expand_as(mu)


def _log_likelihood(x: torch.Tensor):  # type: ignore[no-untyped-def]
    def f(z: torch.Tensor) -> torch.Tensor:  # (S, B, D) -> (S, B)
        return torch.distributions.Normal(z @ W.T + B, S).log_prob(x).sum(-1)

    return f


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_bound_is_exact_with_the_true_posterior() -> None:
    # every importance weight equals p(x), so any K gives log p(x) exactly
    x = _data(20)
    mu, logvar = _true_posterior(x)
    for k in (1, 7):
        bound, _ = iwae_bound(mu, logvar, _log_likelihood(x), k, generator=_generator())
        torch.testing.assert_close(bound, _log_px(x))


def test_bound_tightens_with_k_and_stays_below_the_true_likelihood() -> None:
    x = _data(400, seed=1)
    mu, logvar = _true_posterior(x)
    mu, logvar = mu + 0.6, logvar + 0.8  # a poor posterior: wide and shifted
    means = {}
    for k in (1, 10, 100):
        bound, _ = iwae_bound(
            mu, logvar, _log_likelihood(x), k, chunk_rows=3000, generator=_generator(k)
        )
        means[k] = float(bound.mean())
    truth = float(_log_px(x).mean())
    assert means[1] < means[10] < means[100] <= truth + 0.01
    assert truth - means[100] < truth - means[1]


def test_k1_bound_equals_the_elbo_in_expectation() -> None:
    x = _data(1, seed=2).expand(4000, 3)
    mu, logvar = _true_posterior(x)
    mu, logvar = mu - 0.4, logvar + 0.5
    bound, elbo = iwae_bound(mu, logvar, _log_likelihood(x), 1, generator=_generator(3))
    # the analytic ELBO of the linear-Gaussian model
    var = logvar.exp()
    residual = (x - mu @ W.T - B).pow(2).sum(-1) + (var * (W**2).sum(0)).sum(-1)
    expected_ll = -0.5 * residual / S**2 - 3 * math.log(S * math.sqrt(2 * math.pi))
    analytic = expected_ll - gaussian_kl(mu, logvar).sum(-1)
    torch.testing.assert_close(elbo.mean(), analytic.mean(), atol=0.1, rtol=0)
    standard_error = float(bound.std() / math.sqrt(len(bound)))
    assert abs(float(bound.mean() - analytic.mean())) < 4 * standard_error


def test_chunking_does_not_change_the_bound() -> None:
    x = _data(8)
    mu, logvar = _true_posterior(x)
    mu = mu + 0.3
    whole, _ = iwae_bound(mu, logvar, _log_likelihood(x), 50, generator=_generator())
    parts, _ = iwae_bound(mu, logvar, _log_likelihood(x), 50, chunk_rows=24, generator=_generator())
    torch.testing.assert_close(whole, parts)


def test_active_units_and_reconstruction_metrics() -> None:
    means = torch.stack([torch.randn(500), 0.01 * torch.randn(500)], dim=1)
    variance = posterior_mean_variance(means)
    assert variance[0] > 0.5 and variance[1] < 0.01
    x = torch.rand(4, 1, 12, 12)
    same = reconstruction_metrics(x, x)
    assert float(same["mse"].max()) == 0 and torch.allclose(
        same["ssim"].double(), torch.ones(4).double()
    )
    noisy = reconstruction_metrics(x, (x + 0.1 * torch.randn_like(x)).clamp(0, 1))
    assert 15 < float(noisy["psnr"].mean()) < 25 and float(noisy["ssim"].mean()) < 1


def test_vae_evaluation_numbers_are_consistent(tiny_run: Path) -> None:
    run = ls.open_run(tiny_run)
    record = evaluate(run, "val", nll_samples=64)
    assert record["nll"] <= record["negative_elbo"] + 1e-6  # the bound is tighter
    assert record["negative_elbo"] == pytest.approx(record["reconstruction"] + record["kl"])
    assert len(record["kl_per_dim"]) == 2 and 0 <= record["active_units"] <= 2
    pixels = 12 * 12
    assert record["nll_bits_per_dim"] == pytest.approx(record["nll"] / (pixels * math.log(2)))
    assert "grey pixels" in record["data"] and "not comparable" in record["likelihood"]
    assert record["likelihood"].startswith("bernoulli decoder on grey pixels")


def test_bf16_nll_stays_close_to_float32(tiny_run: Path) -> None:
    run = ls.open_run(tiny_run)
    exact = evaluate(run, "val", nll_samples=64)
    fast = evaluate(run, "val", nll_samples=64, precision="bf16")
    assert fast["precision"] == "bf16" and exact["precision"] == "fp32"
    assert fast["nll"] != exact["nll"], "bf16 must actually change the arithmetic"
    assert fast["nll"] == pytest.approx(exact["nll"], abs=0.05 * 12 * 12 / 100)
    with pytest.raises(ConfigError, match="precision = 'fp16'"):
        evaluate(run, "val", nll_samples=4, precision="fp16")


def test_binarized_runs_are_evaluated_on_one_seeded_binarization(
    tmp_path: Path, tiny_config: Config
) -> None:
    config = ls.apply_overrides(tiny_config, ["data.binarize=dynamic", "train.epochs=1"])
    run = ls.train(config, tmp_path / "binary", quiet=True, report=False)
    first, second = evaluation_set(run, "val"), evaluation_set(run, "val")
    values = first.images.images.unique().tolist()
    assert set(values) <= {0, 255} and torch.equal(first.images.images, second.images.images)
    assert "binarized once with seed" in first.description
    # the default likelihood (`auto`) is named as the model resolved it: Bernoulli on grey
    assert (
        evaluate(run, "val", nll_samples=2)["likelihood"] == "binarized pixels, Bernoulli decoder"
    )


def test_evaluate_cli_json_is_appended_to_metrics(
    tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(tiny_run), "--split", "val", "--nll-samples", "8", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = read_metrics(tiny_run)[-1]
    assert saved == printed and saved["kind"] == "evaluation" and saved["nll_samples"] == 8


def test_nll_of_an_autoencoder_is_a_one_line_error(
    tmp_path: Path, tiny_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ls.apply_overrides(tiny_config, ["model.name=ae", "train.epochs=1"])
    ls.train(config, tmp_path / "ae", quiet=True, report=False)
    assert main(["evaluate", str(tmp_path / "ae"), "--split", "val", "--nll-samples", "10"]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "defines no likelihood" in error
    # without --nll-samples the AE gets reconstruction and fitted-prior numbers
    assert main(["evaluate", str(tmp_path / "ae"), "--split", "val", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert "nll" not in record and 0 <= record["prior_outside_99"] <= 1 and "ssim" in record


def test_test_split_needs_a_named_dataset(
    tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(tiny_run)]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "--split val" in error


def test_a_slow_encoder_gets_reconstruction_metrics_on_a_named_subset(
    tmp_path: Path, tiny_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import latentspace.analysis.evaluate as evaluation

    config = ls.apply_overrides(tiny_config, ["model.name=ae", "train.epochs=1"])
    run = ls.train(config, tmp_path / "ae", quiet=True, report=False)
    encode = run.model.encode

    def slow(x: torch.Tensor, **kwargs: object) -> torch.Tensor:
        time.sleep(0.05)  # stands in for an optimisation such as GAN inversion
        return encode(x)

    monkeypatch.setattr(run.model, "encode", slow)
    monkeypatch.setattr(evaluation, "ENCODE_BUDGET_S", 0.01)
    record = evaluate(run, "train")
    assert record["images"] == 58 and record["reconstruction_images"] == 2
    assert "reconstruction metrics on the first 2" in record["data"]
