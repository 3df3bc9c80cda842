"""The field's numbers for a trained run: reconstruction error, the VAE's ELBO and importance-
weighted log-likelihood, posterior collapse, and how well an autoencoder's fitted prior covers
its codes.

    import latentspace as ls
    from latentspace.analysis.evaluate import evaluate
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
from typing import Any

import torch

from latentspace.data import (
    ImageSet,
    binarize_static,
    held_out,
    prepare_data,
    to_float,
)
from latentspace.diagnostics.measure import (
    ACTIVE_UNIT_THRESHOLD,
    active_units,
    posterior_mean_variance,
)
from latentspace.errors import ConfigError, DataError, RunError
from latentspace.models import GenerativeModel
from latentspace.progress import Progress
from latentspace.runs import Run
from latentspace.settings import PRECISIONS

__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "DEFAULT_NLL_SAMPLES",
    "ENCODE_BUDGET_S",
    "EVAL_BINARIZE_SEED",
    "EvaluationSet",
    "active_units",
    "affordable_encodes",
    "check_limit",
    "evaluate",
    "evaluation_set",
    "posterior_mean_variance",
    "reconstruction_metrics",
]

DEFAULT_NLL_SAMPLES = 1000  # the usual reporting convention for MNIST VAEs
EVAL_BINARIZE_SEED = 0
ENCODE_BUDGET_S = 60.0  # a slower encoder (GAN inversion) gets reconstruction metrics on a subset


@dataclasses.dataclass(frozen=True)
class EvaluationSet:
    """The images a run is evaluated on, and a sentence saying what they are."""

    images: ImageSet
    description: str
    binarized: bool


def evaluation_set(run: Run, split: str = "test", limit: int | None = None) -> EvaluationSet:
    """`split`: test (a named dataset's test split), val (the run's held-out images, the same the
    trainer used) or train. Runs trained on binarized pixels get a fixed seeded binarization."""
    data = run.config.data
    check_limit(limit)
    if split == "test":
        chosen = held_out(run.config)
        if chosen.split != "test" or chosen.images is None:
            raise DataError(
                f"{data.dataset} has no test split (only named datasets do); use --split val"
            )
        images = chosen.images
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
        images = images.head(limit)
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


def check_limit(limit: int | None) -> None:
    """A limit on the images evaluated is at least 1 (None: all of them)."""
    if limit is not None and limit < 1:
        raise ConfigError(
            f"limit = {limit}: evaluate at least one image (leave the limit out for all of them)"
        )


# ---- pure functions ---------------------------------------------------------------------------
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
    quiet: bool = False,
) -> dict[str, Any]:
    """Evaluate `run` on `split`; returns one flat dict of numbers (the evaluation record).
    Progress (batches done, time left) goes to stderr unless `quiet`.

    nll_samples: K importance samples per image for the NLL of a family that defines a likelihood
    (default 1000; 0 skips it). Asking another family for an NLL is an error. precision "bf16"
    runs the decoder on the K samples with bfloat16 matrix products (everything else float32)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision = {precision!r} is not one of: {', '.join(PRECISIONS)}")
    check_limit(limit)
    model = run.model
    bounded = model.has_likelihood()
    if nll_samples and not bounded:
        raise RunError(
            f"{run.path} holds a model of family {model.name!r}, which defines no likelihood: the NLL needs "
            "a posterior for its importance weights; leave out --nll-samples"
        )
    samples = (DEFAULT_NLL_SAMPLES if nll_samples is None else nll_samples) if bounded else 0
    start = time.perf_counter()
    chosen = evaluation_set(run, split, limit)
    images = chosen.images.images
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    device = model.device
    sums: dict[str, float] = {}
    codes: list[torch.Tensor] = []
    kl_dims = torch.zeros(model.latent_dim, dtype=torch.float64)
    counts: dict[str, int] = {}
    # a slow encoder (an optimisation) gets reconstruction metrics on a subset, said in the record
    encodes = (
        len(images)
        if bounded
        else affordable_encodes(model, to_float(images[:2].to(device)), ENCODE_BUDGET_S)
    )
    what = f"{len(images)} images" + (f", {samples} importance samples each" if samples else "")
    with Progress("evaluate", math.ceil(len(images) / batch_size), unit="batch", quiet=quiet) as (
        progress
    ):
        progress.phase(f"{chosen.images.source} {split}: {what}")
        for i in range(0, len(images), batch_size):
            x = to_float(images[i : i + batch_size].to(device))
            values: dict[str, torch.Tensor] = {}
            if bounded:
                bound = model.likelihood_bound(
                    x,
                    max(samples, 1),
                    generator=generator,
                    chunk_rows=chunk_rows,
                    precision=precision,
                )
                code = bound.code
                kl_dims += bound.kl.double().sum(0).cpu()
                values["negative_elbo"] = bound.negative_elbo
                values["kl"] = bound.kl.sum(-1)
                if samples:
                    values["nll"] = bound.nll
            elif i < encodes:
                x = x[: encodes - i]
                code = model.encode(x)
            if i < encodes:
                codes.append(code.cpu())
                values.update(reconstruction_metrics(x, model.decode(code)))
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + float(value.double().sum())
                counts[key] = counts.get(key, 0) + len(value)
            progress.advance(1)
    n = len(images)
    pixels = math.prod(run.image_shape)
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
    if bounded:
        record.update(_likelihood_record(run, chosen, record, torch.cat(codes), kl_dims / n))
        if samples:
            record["nll_samples"] = samples
            record["precision"] = precision
            record["nll_bits_per_dim"] = record["nll"] / (pixels * math.log(2))
            record["likelihood"] = _likelihood_name(run, chosen)
    elif codes:
        record.update(model.prior_metrics(torch.cat(codes)))
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


def _likelihood_record(
    run: Run,
    chosen: EvaluationSet,
    record: dict[str, Any],
    codes: torch.Tensor,
    kl_per_dim: torch.Tensor,
) -> dict[str, Any]:
    """The ELBO's split, the latent units in use and bits per dimension, from a record whose
    negative_elbo and kl are filled in; codes (N, D) are the posterior means."""
    pixels = math.prod(run.image_shape)
    variance = posterior_mean_variance(codes)
    return {
        "reconstruction": record["negative_elbo"] - record["kl"],
        "active_units": active_units(codes),
        "active_unit_threshold": ACTIVE_UNIT_THRESHOLD,
        "latent_dim": run.model.latent_dim,
        "kl_per_dim": [round(v, 5) for v in kl_per_dim.tolist()],
        "posterior_mean_variance": [round(v, 5) for v in variance.tolist()],
        "negative_elbo_bits_per_dim": record["negative_elbo"] / (pixels * math.log(2)),
    }


def _likelihood_name(run: Run, chosen: EvaluationSet) -> str:
    # the likelihood the model resolved (`auto` is Bernoulli on grey, logistic on colour)
    chosen_name = getattr(run.model.config, "likelihood", "")
    likelihood = getattr(getattr(run.model, "pixel_likelihood", None), "likelihood", chosen_name)
    if chosen.binarized and likelihood == "bernoulli":
        return "binarized pixels, Bernoulli decoder"
    pixels = "grey" if run.image_shape[0] == 1 else "colour"
    return (
        f"{likelihood} decoder on {pixels} pixels (a density; not comparable with binarized-MNIST "
        "numbers)"
    )
