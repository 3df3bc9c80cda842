"""The field's numbers for a trained run: reconstruction error, the VAE's ELBO and importance-
weighted log-likelihood, posterior collapse, and how well an autoencoder's fitted prior covers
its codes.

    import latentspace as ls
    from latentspace.evaluate import evaluate
    metrics = evaluate(ls.open_run("runs/mnist-vae"), split="test", nll_samples=1000)

Likelihoods are in nats per image (summed over pixels) and in bits per dimension. A Bernoulli
decoder defines a likelihood only for binary pixels, so a run trained on binarized pixels is
evaluated on one fixed, seeded binarization of the evaluation images (`EVAL_BINARIZE_SEED`); a
run trained on grey pixels is evaluated on them, and the output says so.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from latentspace.data import ImageSet, binarize_static, resolve, to_float
from latentspace.data.datasets import DATASETS
from latentspace.errors import ConfigError, DataError, RunError
from latentspace.models import GenerativeModel
from latentspace.models.likelihood import reconstruction_nll
from latentspace.models.vae import VAE, gaussian_kl
from latentspace.runs import Run

__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "DEFAULT_NLL_SAMPLES",
    "ENCODE_BUDGET_S",
    "EVAL_BINARIZE_SEED",
    "EvaluationSet",
    "active_units",
    "affordable_encodes",
    "evaluate",
    "evaluation_set",
    "iwae_bound",
    "posterior_mean_variance",
    "reconstruction_metrics",
]

DEFAULT_NLL_SAMPLES = 1000  # the usual reporting convention for MNIST VAEs
EVAL_BINARIZE_SEED = 0
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016, section 5.2
ENCODE_BUDGET_S = 60.0  # a slower encoder (GAN inversion) gets reconstruction metrics on a subset
_LOG_2PI = math.log(2 * math.pi)

LogLikelihood = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class EvaluationSet:
    """The images a run is evaluated on, and a sentence saying what they are."""

    images: ImageSet
    description: str
    binarized: bool


def evaluation_set(run: Run, split: str = "test", limit: int | None = None) -> EvaluationSet:
    """`split`: test (a named dataset's test split), val (the run's held-out images, the same the
    trainer used) or train. Runs trained on binarized pixels get a fixed seeded binarization."""
    from latentspace.train import prepare_data

    data = run.config.data
    if split == "test":
        name = data.dataset.partition(":")[0]
        if name not in DATASETS:
            raise DataError(
                f"{data.dataset} has no test split (only named datasets do); use --split val"
            )
        images = resolve(f"{name}:test")
    elif split in ("val", "train"):
        train_set, val_set = prepare_data(run.config)
        if split == "val" and val_set is None:
            raise DataError(f"{run.path} was trained without validation images; use --split train")
        images = val_set if split == "val" and val_set is not None else train_set
    else:
        raise ConfigError(f"--split {split!r} is not one of: test, val, train")
    if images.image_shape != run.image_shape:
        raise DataError(f"{images.source} gives {images.image_shape} images, not {run.image_shape}")
    if limit is not None:
        images = images.head(max(1, limit))
    description = f"{images.source} {split} split, {len(images)} images"
    binarized = data.binarize != "none"
    if binarized:
        if split != "train" or data.binarize == "dynamic":  # static train images already are
            binary = binarize_static(images.images, EVAL_BINARIZE_SEED)
            images = dataclasses.replace(images, images=binary)
        description += (
            f", binarized once with seed {EVAL_BINARIZE_SEED} (the run trained on "
            f"{data.binarize}ally binarized pixels)"
        )
    else:
        description += ", grey pixels in [0, 1] as trained (not binarized)"
    return EvaluationSet(images, description, binarized)


# ---- pure functions ---------------------------------------------------------------------------
def iwae_bound(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    log_likelihood: Callable[[torch.Tensor], torch.Tensor],
    samples: int,
    *,
    chunk_rows: int = 4096,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The importance-weighted bound (Burda et al. 2016) on log p(x), and the ELBO, per image.

    mu, logvar: (B, D) the Gaussian posterior q(z|x); the prior is N(0, I). log_likelihood maps
    z: (S, B, D) -> log p(x_b | z_sb): (S, B). The K=`samples` draws are taken S at a time, with
    S * B <= chunk_rows, so memory stays bounded for any K. Returns (log-likelihood bound, ELBO),
    each (B,) in nats; the ELBO uses the analytic KL and the mean log-likelihood of the same draws.
    """
    if samples < 1:
        raise ValueError(f"samples = {samples} must be at least 1")
    batch, dim = mu.shape
    std = (0.5 * logvar).exp()
    per_chunk = max(1, min(samples, chunk_rows // max(batch, 1)))
    log_weights, expected = [], torch.zeros(batch, dtype=torch.float64, device=mu.device)
    for start in range(0, samples, per_chunk):
        s = min(per_chunk, samples - start)
        eps = torch.randn(s, batch, dim, generator=generator).to(mu.device)
        z = mu + eps * std
        log_px_z = log_likelihood(z)
        # log p(z) - log q(z|x); the 2*pi terms cancel
        log_prior_ratio = -0.5 * (z.pow(2) - eps.pow(2) - logvar).sum(-1)
        log_weights.append(log_px_z + log_prior_ratio)
        expected += log_px_z.double().sum(0)
    stacked = torch.cat(log_weights).double()
    bound = torch.logsumexp(stacked, dim=0) - math.log(samples)
    elbo = expected / samples - gaussian_kl(mu, logvar).double().sum(-1)
    return bound, elbo


def posterior_mean_variance(means: torch.Tensor) -> torch.Tensor:
    """Per latent dimension, Cov_x(E_q[z_u | x]) over the images: means (N, D) -> (D,)."""
    return means.double().var(dim=0, unbiased=False)


def active_units(means: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """How many units have Cov_x(E_q[z_u | x]) > threshold (Burda et al. 2016): the rest have
    collapsed to the prior."""
    return int((posterior_mean_variance(means) > threshold).sum())


def _vae_log_likelihood(model: VAE, x: torch.Tensor, bf16: bool = False) -> LogLikelihood:
    """log p(x|z) for the VAE's decoder, vectorised over samples: z (S, B, D) -> (S, B).
    bf16: the decoder runs under bfloat16 autocast; its logits are summed in float32."""
    flat = x.flatten(1)

    def decoder(z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=bf16):
            return model.decoder(z).float()

    def bernoulli(z: torch.Tensor) -> torch.Tensor:
        s, b, d = z.shape
        logits = decoder(z.reshape(s * b, d)).reshape(s, b, -1)
        # -BCE(logits, x) = x * logits - softplus(logits), in two passes instead of five
        return (logits * flat).sum(-1) - F.softplus(logits).sum(-1)

    def gaussian(z: torch.Tensor) -> torch.Tensor:
        s, b, d = z.shape
        logits = decoder(z.reshape(s * b, d))
        target = x.unsqueeze(0).expand(s, *x.shape).reshape(s * b, *x.shape[1:])
        nll = reconstruction_nll(logits, target, "gaussian", model.config.gaussian_std)
        return -nll.reshape(s, b)

    return bernoulli if model.config.likelihood == "bernoulli" else gaussian


def reconstruction_metrics(x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image MSE, PSNR (dB) and SSIM of reconstructions, both (B, C, H, W) in [0, 1]
    (torchmetrics; SSIM's Gaussian window shrinks to fit images smaller than 11 pixels)."""
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    mse = (x_hat - x).pow(2).flatten(1).mean(1)
    psnr = peak_signal_noise_ratio(x_hat, x, data_range=1.0, reduction="none", dim=(1, 2, 3))
    result = {"mse": mse, "psnr": psnr}
    side = min(x.shape[-2:])
    kernel = min(11, side if side % 2 else side - 1)
    if kernel >= 3:
        ssim = structural_similarity_index_measure(
            x_hat, x, data_range=1.0, reduction="none", kernel_size=kernel, sigma=1.5 * kernel / 11
        )
        result["ssim"] = torch.as_tensor(ssim)
    return result


def affordable_encodes(model: GenerativeModel, x: torch.Tensor, budget_s: float) -> int:
    """How many images `model.encode` can take within about `budget_s` seconds, timed on the
    images x (B, C, H, W): all of an encoder network's, few of an encoder that is an optimisation
    (GAN inversion). 0 when the model cannot encode."""
    probe = x[:2]
    start = time.perf_counter()
    try:
        model.encode(probe)
    except NotImplementedError:
        return 0
    per_image = (time.perf_counter() - start) / len(probe)
    return max(len(probe), int(budget_s / max(per_image, 1e-9)))


# ---- the whole evaluation ---------------------------------------------------------------------
@torch.no_grad()
def evaluate(
    run: Run,
    split: str = "test",
    *,
    nll_samples: int | None = None,
    limit: int | None = None,
    batch_size: int = 100,
    seed: int = 0,
    chunk_rows: int = 4096,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Evaluate `run` on `split`; returns one flat dict of numbers (the evaluation record).

    nll_samples: K importance samples per image for the VAE's NLL (default 1000; 0 skips it).
    Asking for an NLL from a model that is not a VAE is an error. precision "bf16" runs the
    decoder on the K samples with bfloat16 matrix products (everything else stays float32)."""
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"precision = {precision!r} is not one of: fp32, bf16")
    model = run.model
    vae = model if isinstance(model, VAE) else None
    is_vae = vae is not None
    if nll_samples and not is_vae:
        raise RunError(
            f"{run.path} holds a {model.name!r} model, not a VAE: the NLL needs a VAE's "
            "posterior for its importance weights; leave out --nll-samples"
        )
    samples = (DEFAULT_NLL_SAMPLES if nll_samples is None else nll_samples) if is_vae else 0
    start = time.perf_counter()
    chosen = evaluation_set(run, split, limit)
    images = chosen.images.images
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    device = model.device
    sums: dict[str, float] = {}
    means: list[torch.Tensor] = []
    kl_dims = torch.zeros(model.latent_dim, dtype=torch.float64)
    counts: dict[str, int] = {}
    # a slow encoder (an optimisation) gets reconstruction metrics on a subset, said in the record
    encodes = (
        len(images)
        if is_vae
        else affordable_encodes(model, to_float(images[:2].to(device)), ENCODE_BUDGET_S)
    )
    for i in range(0, len(images), batch_size):
        x = to_float(images[i : i + batch_size].to(device))
        values: dict[str, torch.Tensor] = {}
        if vae is not None:
            mu, logvar = vae.posterior(x)
            x_hat = vae.decode(mu)
            means.append(mu.cpu())
            kl_dims += gaussian_kl(mu, logvar).double().sum(0).cpu()
            log_likelihood = _vae_log_likelihood(vae, x, bf16=precision == "bf16")
            k = max(samples, 1)
            bound, elbo = iwae_bound(
                mu, logvar, log_likelihood, k, chunk_rows=chunk_rows, generator=generator
            )
            values["negative_elbo"] = -elbo
            values["kl"] = gaussian_kl(mu, logvar).sum(-1)
            if samples:
                values["nll"] = -bound
        elif i < encodes:
            x = x[: encodes - i]
            code = model.encode(x)
            means.append(code.cpu())
            x_hat = model.decode(code)
        if i < encodes:
            values.update(reconstruction_metrics(x, x_hat))
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + float(value.double().sum())
            counts[key] = counts.get(key, 0) + len(value)
    n = len(images)
    record: dict[str, Any] = {
        "kind": "evaluation",
        "model": model.name,
        "split": split,
        "images": n,
        "data": chosen.description,
    }
    record.update({key: value / counts[key] for key, value in sums.items()})
    if 0 < encodes < n:
        record["reconstruction_images"] = encodes
        record["data"] += (
            f"; reconstruction metrics on the first {encodes} (encoding is slow for this model)"
        )
    pixels = math.prod(run.image_shape)
    if vae is not None:
        record["reconstruction"] = record["negative_elbo"] - record["kl"]
        variance = posterior_mean_variance(torch.cat(means))
        record["active_units"] = int((variance > ACTIVE_UNIT_THRESHOLD).sum())
        record["latent_dim"] = vae.latent_dim
        record["kl_per_dim"] = [round(v, 5) for v in (kl_dims / n).tolist()]
        record["posterior_mean_variance"] = [round(v, 5) for v in variance.tolist()]
        record["negative_elbo_bits_per_dim"] = record["negative_elbo"] / (pixels * math.log(2))
        if samples:
            record["nll_samples"] = samples
            record["precision"] = precision
            record["nll_bits_per_dim"] = record["nll"] / (pixels * math.log(2))
            record["likelihood"] = (
                "binarized pixels, Bernoulli decoder"
                if chosen.binarized and vae.config.likelihood == "bernoulli"
                else f"{vae.config.likelihood} decoder on grey pixels (a density; not "
                "comparable with binarized-MNIST numbers)"
            )
    elif means and hasattr(model, "prior_mean"):
        record.update(_fitted_prior_metrics(model, torch.cat(means)))
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


def _fitted_prior_metrics(model: GenerativeModel, codes: torch.Tensor) -> dict[str, Any]:
    """How well the Gaussian fitted to the training codes (the AE's prior) covers the codes of
    the evaluation images: their mean log-density under it (nats per image; higher is better,
    compare with 0.5 * D * (1 + log 2pi) below the entropy), and the fraction outside the
    ellipsoid that holds 99% of the prior's mass (1% if the prior fits; more means decoded
    prior samples come from regions no image encodes to)."""
    from scipy.stats import chi2

    mean = torch.as_tensor(model.prior_mean).detach().double().cpu()
    tril = torch.as_tensor(model.prior_scale_tril).detach().double().cpu()
    centred = (codes.double() - mean).T
    whitened = torch.linalg.solve_triangular(tril, centred, upper=False)  # (D, N)
    mahalanobis = whitened.pow(2).sum(0)
    dim = codes.shape[1]
    log_det = tril.diagonal().log().sum()
    log_density = -0.5 * (mahalanobis + dim * _LOG_2PI) - log_det
    outside = float((mahalanobis > chi2.ppf(0.99, dim)).double().mean())
    return {
        "prior_code_log_density": float(log_density.mean()),
        "prior_outside_99": outside,
    }
