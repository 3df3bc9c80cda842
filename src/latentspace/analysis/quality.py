"""Sample quality that works offline: FID and KID (torchmetrics) in the features of latentspace's
own per-dataset network (`latentspace.analysis.classifier`), and the class distribution of generated
samples under that classifier (mode coverage).

These scores are NOT comparable with published (Inception-v3) FID/KID: every output names the
features it used, e.g. "FID (latentspace mnist classifier features)". They compare models trained
here with each other and with the floor: the same score between real held-out images and real
training images of the same number.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from latentspace.analysis.classifier import FeatureNetwork, FeatureNetworkInfo, feature_network
from latentspace.config import Config
from latentspace.data import BATCH, Images, ImageSet, held_out, named_dataset, to_float
from latentspace.errors import DataError, LatentspaceError
from latentspace.models import GenerativeModel
from latentspace.progress import Progress
from latentspace.runs import Run

__all__ = [
    "QualityReport",
    "SampleFID",
    "class_distribution",
    "evaluate_quality",
    "fid_kid",
    "sample_fid",
    "uniform_deviation",
]


@dataclasses.dataclass(frozen=True)
class QualityReport:
    """FID/KID of generated samples against real held-out images, and their floor."""

    features: str  # "latentspace mnist classifier features": name every score with it
    reference: str  # the real held-out images compared against, e.g. "mnist:test"
    n_generated: int
    n_reference: int
    fid: float
    kid_mean: float
    kid_std: float
    floor_fid: float  # real training images (as many as generated) against the same reference
    floor_kid_mean: float
    floor_kid_std: float
    classes: list[str] | None
    generated_classes: list[float] | None  # fraction of generated samples per predicted class
    reference_classes: list[float] | None  # the same for the real held-out images
    max_deviation: float | None  # max over classes of |fraction * K - 1|: 0.2 = within 20%
    classes_covered: int | None  # classes with at least half their uniform share
    classifier_accuracy: float | None  # the feature network's held-out accuracy

    @property
    def share_margin(self) -> float:
        """Half the 95% interval of a uniform class's share among the generated samples
        (binomial: 1.96 sqrt(p (1 - p) / n), p = 1 / K); nan without classes."""
        if not self.classes:
            return float("nan")
        p = 1.0 / len(self.classes)
        return 1.96 * math.sqrt(p * (1.0 - p) / self.n_generated)

    def lines(self) -> list[str]:
        """The report in plain words, every score named with its features."""
        f = self.features
        out = [
            f"FID ({f}): {self.fid:.3f}   floor (real train vs {self.reference}): "
            f"{self.floor_fid:.3f}",
            f"KID x 10^3 ({f}): {1e3 * self.kid_mean:.3f} +- {1e3 * self.kid_std:.3f}   floor: "
            f"{1e3 * self.floor_kid_mean:.3f} +- {1e3 * self.floor_kid_std:.3f}",
            f"{self.n_generated} generated images against {self.n_reference} images of "
            f"{self.reference}; not comparable with published Inception-FID/KID",
        ]
        if self.classifier_accuracy is not None:
            out.append(f"classifier test accuracy: {self.classifier_accuracy:.4f}")
        if self.classes and self.generated_classes and self.reference_classes:
            k = len(self.classes)
            out.append(
                f"classes of generated samples (uniform = {1 / k:.3f}; {self.classes_covered}/{k} "
                f"classes with at least half that; largest deviation {self.max_deviation:.1%}, "
                f"real held-out {uniform_deviation(torch.tensor(self.reference_classes)):.1%}):"
            )
            margin = self.share_margin
            out.append(
                f"  (each share +- {margin:.4f} at 95% from {self.n_generated} samples, so a "
                f"deviation is known to about +- {margin * k:.0%}; more samples with -n)"
            )
            for name, fake, real in zip(
                self.classes, self.generated_classes, self.reference_classes, strict=True
            ):
                out.append(f"  {name:<14} {fake:.3f}   (real held-out {real:.3f})")
        else:
            out.append("no classes (unlabelled images): mode coverage cannot be measured")
        return out


def _metrics(network: FeatureNetwork, subset_size: int, subsets: int) -> tuple[Any, Any]:
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance
    except ImportError:
        raise LatentspaceError(
            "FID/KID need torchmetrics: pip install 'latentspace[metrics]'"
        ) from None
    with warnings.catch_warnings():
        # KID keeps all features in memory and says so; at 128 floats per image that is small
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        fid = FrechetInceptionDistance(feature=network, normalize=True)
        kid = KernelInceptionDistance(
            feature=network, normalize=True, subsets=subsets, subset_size=subset_size
        )
    return fid, kid


@torch.no_grad()
def fid_kid(
    reference: torch.Tensor | Images,
    images: torch.Tensor,
    network: FeatureNetwork,
    *,
    kid_subsets: int = 50,
    kid_subset_size: int = 1000,
    batch_size: int = BATCH,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[float, float, float]:
    """(FID, KID mean, KID std) of `images` against `reference`, both (N, C, H, W) uint8 or floats
    in [0, 1], in the features of `network` (torchmetrics; KID's subsets drawn with `seed`).
    KID is a squared distance of the order of 1e-3: people read it x 10^3. `progress` counts
    the batches."""
    if len(reference) < 2 or len(images) < 2:
        raise DataError("FID/KID need at least 2 images on each side")
    network.eval()
    device = next(network.parameters()).device
    subset_size = min(kid_subset_size, len(reference), len(images))
    fid, kid = (metric.to(device) for metric in _metrics(network, subset_size, kid_subsets))
    for tensor, real in ((reference, True), (images, False)):
        for i in range(0, len(tensor), batch_size):
            batch = tensor[i : i + batch_size].to(device)
            batch = to_float(batch) if batch.dtype == torch.uint8 else batch.float()
            fid.update(batch, real=real)
            kid.update(batch, real=real)
            if progress is not None:
                progress.advance()
    with torch.random.fork_rng(devices=[]):  # KID draws subsets from the global generator
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return float(fid.compute()), float(kid_mean), float(kid_std)


@torch.no_grad()
def class_distribution(
    images: torch.Tensor | Images, network: FeatureNetwork, batch_size: int = BATCH
) -> torch.Tensor:
    """Fraction of `images` the classifier assigns to each class: (n_classes,), sums to 1."""
    counts = torch.zeros(network.n_classes or 0)
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size].to(next(network.parameters()).device)
        predicted = network.logits(batch).argmax(1).cpu()
        counts += torch.bincount(predicted, minlength=len(counts)).float()
    return counts / counts.sum().clamp_min(1)


def uniform_deviation(fractions: torch.Tensor) -> float:
    """max over classes of |fraction * K - 1|: 0.2 means every class within 20% of uniform."""
    return float((fractions * len(fractions) - 1.0).abs().max())


def _real_images(run: Run) -> tuple[ImageSet, ImageSet, str]:
    """(reference held-out images, training images, reference name) for a run's dataset."""
    chosen = held_out(run.config)
    if chosen.images is None:
        raise DataError(
            f"{run.path} holds out no validation images (data.val_fraction = 0): "
            "there are no real held-out images to compare against"
        )
    return chosen.images, chosen.train, chosen.name


def evaluate_quality(
    run: Run,
    *,
    n: int = 10000,
    seed: int = 0,
    batch_size: int = BATCH,
    log: Callable[[str], None] = print,
    quiet: bool = False,
) -> QualityReport:
    """FID/KID and mode coverage of `n` samples generated by `run` (any model family), against
    the real held-out images, with the floor measured on as many real training images. Says
    which phase runs, batches n of N and the time left on stderr unless `quiet`."""
    reference, train, reference_name = _real_images(run)
    network, info = _feature_network_for(run.config, run.model, str(run.path), log)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    floor_images = train.images[order[: min(n, len(train))]]

    reals = math.ceil(len(reference) / BATCH)  # fid_kid's batches
    total = math.ceil(n / batch_size) + 2 * reals + math.ceil(n / BATCH)
    total += math.ceil(len(floor_images) / BATCH)
    with Progress("quality", total, unit="batch", quiet=quiet) as progress:
        progress.phase(f"generating {n} images")
        generated = _generate(run.model, n, seed, batch_size, progress)
        progress.phase(f"FID/KID of the samples against {reference_name}")
        scores = fid_kid(reference.images, generated, network, seed=seed, progress=progress)
        progress.phase("FID/KID floor: real training images against the same reference")
        floor = fid_kid(reference.images, floor_images, network, seed=seed, progress=progress)
    fid, kid_mean, kid_std = scores
    return _report(
        info, reference_name, reference, generated, (fid, kid_mean, kid_std), floor, network
    )


class SampleFID:
    """FID of `n` samples of a model against the first `n` held-out images of `config`'s data, in
    the features `evaluate_quality` uses: a cheap score to compare the epochs of a model that
    minimises no validation loss (tuning prunes GAN trials on it after every epoch). Higher and
    noisier than evaluate_quality's FID of 10000 samples. The held-out images and the feature
    network are read once, when it is made; each call only generates and scores. Samples come
    from their own seeded generator, so training that calls it stays reproducible."""

    def __init__(
        self,
        config: Config,
        model: GenerativeModel,
        *,
        n: int = 500,
        seed: int = 0,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        chosen = held_out(config)
        if chosen.images is None:
            raise DataError(
                "sample FID needs held-out images: set data.val_fraction > 0 (or use a named "
                "dataset)"
            )
        self.reference = chosen.images.images[:n]
        self.network, _ = _feature_network_for(config, model, config.data.dataset, log)
        self.n, self.seed = n, seed

    def __call__(self, model: GenerativeModel) -> float:
        generated = _generate(model, self.n, self.seed, batch_size=self.n)
        fid, _, _ = fid_kid(self.reference, generated, self.network, kid_subsets=1, seed=self.seed)
        return fid


def sample_fid(
    model: GenerativeModel,
    config: Config,
    *,
    n: int = 500,
    seed: int = 0,
    log: Callable[[str], None] = lambda line: None,
) -> float:
    """One `SampleFID` of `model` (see there)."""
    return SampleFID(config, model, n=n, seed=seed, log=log)(model)


def _feature_network_for(
    config: Config, model: GenerativeModel, where: str, log: Callable[[str], None]
) -> tuple[FeatureNetwork, FeatureNetworkInfo]:
    """The dataset's cached feature network on the model's device, checked against the shape of
    the images the model makes (`where` names the model in the error)."""
    named = named_dataset(config.data.dataset) is not None
    images = None if named else _full_images(config)
    network, info = feature_network(config.data.dataset, images=images, log=log)
    if info.image_shape != model.image_shape:
        raise DataError(
            f"the feature network for {info.dataset} takes {info.image_shape} images, but "
            f"{where} makes {model.image_shape}"
        )
    return network.to(model.device), info


def _generate(
    model: GenerativeModel,
    n: int,
    seed: int,
    batch_size: int,
    progress: Progress | None = None,
) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for i in range(0, n, batch_size):
        parts.append(model.generate(min(batch_size, n - i), generator=generator).cpu())
        if progress is not None:
            progress.advance()
    return torch.cat(parts)


def _full_images(config: Config) -> ImageSet:
    from latentspace.data import resolve

    data = config.data
    return resolve(data.dataset, size=data.size, channels=data.channels, strict=data.strict)


def _report(
    info: FeatureNetworkInfo,
    reference_name: str,
    reference: ImageSet,
    generated: torch.Tensor,
    scores: tuple[float, float, float],
    floor: tuple[float, float, float],
    network: FeatureNetwork,
) -> QualityReport:
    fake_classes = real_classes = None
    deviation = covered = None
    if info.kind == "classifier" and info.classes:
        fake = class_distribution(generated, network)
        real = class_distribution(reference.images, network)
        fake_classes, real_classes = fake.tolist(), real.tolist()
        deviation = uniform_deviation(fake)
        covered = int((fake >= 0.5 / len(fake)).sum())
    return QualityReport(
        features=info.label,
        reference=reference_name,
        n_generated=len(generated),
        n_reference=len(reference),
        fid=scores[0],
        kid_mean=scores[1],
        kid_std=scores[2],
        floor_fid=floor[0],
        floor_kid_mean=floor[1],
        floor_kid_std=floor[2],
        classes=info.classes,
        generated_classes=fake_classes,
        reference_classes=real_classes,
        max_deviation=deviation,
        classes_covered=covered,
        classifier_accuracy=info.test_accuracy,
    )
