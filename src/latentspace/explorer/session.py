"""What the explorer shows of a run: held-out images, their codes, a 2-D map of the codes and the
way back from a point of the map to a code.

Everything here goes through the model contract (`encode`, `decode`, `sample_latent`,
`latent_dim`, `image_shape`), so it serves every family. Each question the page asks is one
decoder forward pass under `torch.no_grad` and a PNG per image.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable

import torch

from latentspace.analysis import latent
from latentspace.analysis.figures import prior_moments
from latentspace.analysis.report import report_images
from latentspace.data import ImageSet
from latentspace.errors import ConfigError, DataError
from latentspace.explorer.codes import ENCODE_BUDGET_S, encode_images
from latentspace.imaging import to_pil
from latentspace.runs import Run

__all__ = ["MAX_POINTS", "METHODS", "NEIGHBOURS", "SPREAD", "Explorer", "open_explorer", "png"]

MAX_POINTS = 10_000
METHODS = latent.MAP_METHODS
NEIGHBOURS = 8  # a click on a t-SNE map: the codes of this many nearest points, weighted
SPREAD = 3.0  # sliders reach the prior mean +- this many prior standard deviations


def png(image: torch.Tensor) -> bytes:
    """(C, H, W) in [0, 1] -> PNG bytes."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclasses.dataclass(frozen=True)
class Explorer:
    """A run's held-out images (N, C, H, W uint8), their codes (N, D), the map (N, 2) and the
    inverse of the map. `plane` is (mean (D,), directions (2, D)) when the map is a linear
    projection (PCA, or the latent plane itself), whose inverse is exact; None for t-SNE."""

    run: Run
    images: ImageSet
    codes: torch.Tensor
    points: torch.Tensor
    method: str
    axes: tuple[str, str]
    plane: tuple[torch.Tensor, torch.Tensor] | None
    low: torch.Tensor  # (D,) slider ranges
    high: torch.Tensor

    @property
    def latent_dim(self) -> int:
        return int(self.codes.shape[1])

    def __len__(self) -> int:
        return len(self.images)

    def label(self, index: int) -> str | None:
        """The label of image `index` as a person reads it (a class name or a number)."""
        images = self.images
        if images.labels is None:
            return None
        value = int(images.labels[index])
        return images.classes[value] if images.classes else str(value)

    def click(self) -> str:
        """How a point of the map becomes a code, in one sentence for the page."""
        if self.plane is not None:
            return (
                f"the exact inverse of the {self.axes[0]}/{self.axes[1]} projection: the code on "
                "the plane of the map, at the clicked point"
            )
        return (
            f"{self.axes[0][:-2]} has no inverse: the codes of the {NEIGHBOURS} nearest map "
            "points, weighted "
            "by inverse squared distance on the map"
        )

    def code_at(self, x: float, y: float) -> torch.Tensor:
        """The code (D,) of the map point (x, y) (see `click`)."""
        point = torch.tensor([x, y], dtype=self.points.dtype)
        if self.plane is not None:
            mean, directions = self.plane
            return mean + point @ directions
        distances = (self.points - point).norm(dim=1)
        found = distances.topk(min(NEIGHBOURS, len(distances)), largest=False)
        if float(found.values[0]) == 0.0:  # on a point: its own code
            return self.codes[int(found.indices[0])].clone()
        weights = found.values.double().pow(-2)
        weights = (weights / weights.sum()).to(self.codes.dtype)
        return weights @ self.codes[found.indices]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> list[bytes]:
        """Codes (B, D) -> B PNG images, in one forward pass of the decoder."""
        model = self.run.model
        images = model.decode(codes.to(model.device, torch.float32)).cpu()
        return [png(image) for image in images]

    def thumbnail(self, index: int) -> bytes:
        """Held-out image `index` as PNG, at its own size (the page scales it)."""
        return png(self.images.images[index].float() / 255)

    def traverse(self, code: torch.Tensor, dim: int, steps: int) -> tuple[list[float], list[bytes]]:
        """Dimension `dim` of code (D,) swept over its slider range: (values, PNGs)."""
        values = torch.linspace(float(self.low[dim]), float(self.high[dim]), steps)
        codes = latent.traversal_grid(code, [dim], values[None]).reshape(steps, -1)
        return values.tolist(), self.decode(codes)

    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int) -> dict[str, list[bytes]]:
        """Decoded lerp and slerp paths from a to b (ends included), in one forward pass."""
        paths = torch.cat([latent.lerp(a, b, steps), latent.slerp(a, b, steps)])
        decoded = self.decode(paths)
        return {"lerp": decoded[:steps], "slerp": decoded[steps:]}

    def describe(self) -> dict[str, object]:
        """What the page needs to know once: shapes, names, slider ranges, what a click does."""
        model = self.run.model
        return {
            "run": str(self.run.path),
            "model": model.name,
            "latent_dim": self.latent_dim,
            "image_shape": list(self.run.image_shape),
            "source": self.images.source,
            "points": len(self),
            "method": self.method,
            "axes": list(self.axes),
            "click": self.click(),
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "classes": self._classes(),
        }

    def map_data(self) -> dict[str, object]:
        """The map: x, y and label index per point, rounded for a small payload."""
        labels = self.images.labels
        return {
            "x": [round(v, 5) for v in self.points[:, 0].tolist()],
            "y": [round(v, 5) for v in self.points[:, 1].tolist()],
            "label": labels.tolist() if labels is not None else None,
        }

    def _classes(self) -> list[str] | None:
        images = self.images
        if images.labels is None:
            return None
        if images.classes:
            return list(images.classes)
        return [str(v) for v in range(int(images.labels.max()) + 1)]


def _project(
    codes: torch.Tensor, method: str, seed: int
) -> tuple[torch.Tensor, tuple[str, str], tuple[torch.Tensor, torch.Tensor] | None]:
    """(points (N, 2), axis names, plane for the inverse or None)."""
    if method != "pca":
        points, axes = latent.embed(codes, method, seed=seed)
        return points, axes, None
    if codes.shape[1] == 2:  # the latent plane itself: its axes mean something
        return codes.clone(), ("z0", "z1"), (torch.zeros(2), torch.eye(2))
    points, directions, mean = latent.pca(codes)
    return points, ("PC1", "PC2"), (mean, directions)


def _slider_ranges(run: Run, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per dimension, the prior's mean +- SPREAD standard deviations, widened to hold the middle
    98% of the held-out codes (an encoder's codes may lie outside its prior)."""
    mean, std = prior_moments(run.model)
    low = torch.minimum(mean - SPREAD * std, torch.quantile(codes, 0.01, dim=0))
    high = torch.maximum(mean + SPREAD * std, torch.quantile(codes, 0.99, dim=0))
    return low, high


def open_explorer(
    run: Run,
    *,
    limit: int = MAX_POINTS,
    method: str = "pca",
    seed: int = 0,
    encode_budget_s: float = ENCODE_BUDGET_S,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Explorer:
    """Encode up to `limit` held-out images of `run` (a named dataset's test split, else the
    run's validation images) and map them in 2-D by `method` (pca or tsne)."""
    if run.model.inputs != "images":
        raise ConfigError(
            f"{run.path} is a {run.model.inputs} model: the explorer shows images; use "
            "`latentspace neighbours`, `interpolate` or `traverse`, which print its "
            f"{run.model.inputs}"
        )
    if method not in METHODS:
        raise ConfigError(f"map method {method!r} is not one of: {', '.join(METHODS)}")
    if not 1 <= limit <= MAX_POINTS:
        raise ConfigError(f"--limit {limit}: the map takes 1 to {MAX_POINTS} images")
    images = report_images(run, limit)
    if images.image_shape != run.image_shape:
        raise DataError(
            f"{images.source} gives {images.image_shape} images but {run.path} was trained on "
            f"{run.image_shape}"
        )
    codes = encode_images(run, images.images, budget_s=encode_budget_s, progress=progress, log=log)
    codes = codes.float().cpu()
    if not bool(torch.isfinite(codes).all()):
        raise DataError(
            f"{run.path}: the encoder gave NaN or infinite codes; the map cannot hold them"
        )
    if method != "pca":
        log(f"{method} of {len(codes)} codes (minutes for 10,000; --limit makes it faster)")
    points, axes, plane = _project(codes, method, seed)
    low, high = _slider_ranges(run, codes)
    return Explorer(run, images, codes, points.float(), method, axes, plane, low, high)
