"""Figures of a run that the report and the CLI share, made through the generic model API
(`encode`, `decode`, `sample_latent`) so they serve every model family: traversals, the latent
map and its decoded plane, the loss curves, the active-unit / KL chart.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from latentspace.analysis import latent
from latentspace.data import ImageSet
from latentspace.diagnostics.measure import ACTIVE_UNIT_THRESHOLD
from latentspace.errors import LatentspaceError
from latentspace.imaging import save_grid
from latentspace.models import GenerativeModel
from latentspace.runs import Run

__all__ = [
    "kl_figure",
    "latent_map",
    "loss_figure",
    "prior_moments",
    "traversal_images",
    "traversal_labels",
]


@torch.no_grad()
def prior_moments(
    model: GenerativeModel, n: int = 4096, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation per latent dimension of the model's prior, estimated from n
    seeded draws of `sample_latent` (N(0, I) for a VAE; the fitted Gaussian for an AE)."""
    draws = model.sample_latent(n, generator=torch.Generator().manual_seed(seed)).cpu()
    return draws.mean(0), draws.std(0)


@torch.no_grad()
def traversal_images(
    model: GenerativeModel, z: torch.Tensor, dims: list[int], spread: float, steps: int
) -> torch.Tensor:
    """Rows of decoded images, one per dimension in `dims`: that dimension of z (D,) set to
    prior mean + t * prior std for t in [-spread, spread]. -> (len(dims) * steps, C, H, W)."""
    mean, std = prior_moments(model)
    t = torch.linspace(-spread, spread, steps)
    index = torch.tensor(dims)
    values = mean[index, None] + t[None, :] * std[index, None]
    codes = latent.traversal_grid(z.cpu(), dims, values).reshape(-1, z.shape[-1])
    return model.decode(codes.to(model.device)).cpu()


def traversal_labels(
    model: GenerativeModel, dims: list[int], spread: float, steps: int, around: str
) -> dict[str, Any]:
    """The title, row and column labels of `traversal_images`' grid (for `save_grid`): each row
    names its dimension and the values it runs through, each column its t."""
    mean, std = prior_moments(model)
    rows = [
        f"z{d}: {float(mean[d] - spread * std[d]):.2g} to {float(mean[d] + spread * std[d]):.2g}"
        for d in dims
    ]
    columns = [f"{t:+.2g} sd" for t in torch.linspace(-spread, spread, steps).tolist()]
    title = (
        f"{around}: each row sets one latent dimension to the prior mean + t prior standard "
        "deviations (t across, the values it takes on the left); the other dimensions stay"
    )
    return {"title": title, "rows": rows, "columns": columns}


def _plane_range(projected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2nd to 98th percentile of each coordinate: the plane where the codes actually are."""
    low = torch.quantile(projected, 0.02, dim=0)
    high = torch.quantile(projected, 0.98, dim=0)
    return low, high


def latent_map(
    run: Run,
    codes: torch.Tensor,
    images: ImageSet,
    scatter_path: Path,
    plane_path: Path,
    method: str = "pca",
    grid: int = 15,
    seed: int = 0,
) -> dict[str, str]:
    """A scatter of codes (N, D) in 2-D coloured by label, and a grid of images decoded over a
    plane: the latent plane itself when D = 2, else the first two principal directions (t-SNE
    has no inverse, so the plane is PCA's for either method). Returns a caption for each."""
    dim = codes.shape[1]
    if dim == 2:
        projected, directions, mean = codes, torch.eye(2), torch.zeros(2)
        axes, plane_text = ("z0", "z1"), "the latent plane itself"
    else:
        projected, directions, mean = latent.pca(codes)
        axes, plane_text = ("PC1", "PC2"), "the plane of the codes' first two principal directions"
    if method != "pca":
        shown, axes = latent.embed(codes, method, seed=seed)
    else:
        shown = projected
    labels = images.labels.tolist() if images.labels is not None else None
    what = (
        "PCA" if method == "pca" and dim != 2 else ("latent" if method == "pca" else axes[0][:-2])
    )
    title = f"{len(codes)} codes of {images.source} ({what} view)" + (
        ", coloured by label" if labels is not None else ""
    )
    _scatter(shown, labels, images.classes, axes, scatter_path, title)
    plane_axes = ("z0", "z1") if dim == 2 else ("PC1", "PC2")
    low, high = _plane_range(projected)
    u = torch.linspace(float(low[0]), float(high[0]), grid)
    v = torch.linspace(float(high[1]), float(low[1]), grid)  # top row: largest second coordinate
    plane = latent.plane_codes(mean, directions, u, v)
    with torch.no_grad():
        decoded = run.model.decode(plane.to(run.model.device)).cpu()
    save_grid(
        decoded,
        plane_path,
        nrow=grid,
        title=f"{run.path}: images decoded over {plane_text}, {plane_axes[0]} across (values "
        f"above), {plane_axes[1]} down (values left)",
        columns=[f"{value:.2g}" for value in u.tolist()],
        rows=[f"{plane_axes[1]} {value:.2g}" for value in v.tolist()],
    )
    return {
        "scatter": f"{len(codes)} codes of {images.source} ({what} view), coloured by label",
        "plane": f"{grid}x{grid} images decoded over {plane_text} (2nd-98th percentile of the "
        "codes on each axis)",
    }


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # the object API: no pyplot, no global backend state

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _scatter(
    points: torch.Tensor,
    labels: list[int] | None,
    classes: list[str] | None,
    axes: tuple[str, str],
    path: Path,
    title: str = "",
) -> None:
    figure = _figure(6.5, 5.5)
    ax = figure.add_subplot()
    if title:
        ax.set_title(title, fontsize=10)
    xy = points.detach().cpu().numpy()
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.6)
    else:
        for value in sorted(set(labels)):
            chosen = [i for i, label in enumerate(labels) if label == value]
            name = classes[value] if classes and 0 <= value < len(classes) else str(value)
            ax.scatter(xy[chosen, 0], xy[chosen, 1], s=4, alpha=0.7, label=name)
        ax.legend(markerscale=3, fontsize=8, loc="best", title="label")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    figure.savefig(path)


def loss_figure(records: list[dict[str, Any]], path: Path) -> list[str]:
    """One panel per loss term: train and validation against epoch. Returns the terms drawn
    (penalty terms that stayed zero are left out)."""
    epochs = [r for r in records if r.get("kind", "epoch") == "epoch"]
    if not epochs:
        raise LatentspaceError("no epochs in metrics.jsonl yet")
    terms = [t for t in epochs[-1]["train"] if any(abs(r["train"].get(t, 0.0)) > 0 for r in epochs)]
    columns = min(3, len(terms))
    rows = math.ceil(len(terms) / columns)
    figure = _figure(4.2 * columns, 3.2 * rows)
    from matplotlib.ticker import MaxNLocator

    x = [r["epoch"] for r in epochs]
    for i, term in enumerate(terms):
        ax = figure.add_subplot(rows, columns, i + 1)
        ax.plot(x, [r["train"].get(term, math.nan) for r in epochs], label="train", marker=".")
        if any(term in r.get("val", {}) for r in epochs):
            val = [r.get("val", {}).get(term, math.nan) for r in epochs]
            ax.plot(x, val, label="validation", marker=".")
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    figure.savefig(path)
    return terms


def kl_figure(record: dict[str, Any], path: Path) -> None:
    """Per latent dimension: the active-unit measure Cov_x E_q[z_u] (log scale, the threshold
    dashed) above its KL in nats; active units blue, inactive ones grey."""
    spread = record["posterior_mean_variance"]
    threshold = record.get("active_unit_threshold", ACTIVE_UNIT_THRESHOLD)
    colours = ["tab:blue" if v > threshold else "tab:gray" for v in spread]
    dims = range(len(spread))
    figure = _figure(7, 4.2)
    top, bottom = figure.subplots(2, 1, sharex=True)
    top.bar(dims, [max(v, 1e-8) for v in spread], color=colours)
    top.axhline(threshold, color="black", linestyle="--", linewidth=1)
    top.set_yscale("log")
    top.set_ylabel("Cov_x E_q[z]")
    bottom.bar(dims, record["kl_per_dim"], color=colours)
    bottom.set_ylabel("KL (nats)")
    bottom.set_xlabel("latent dimension")
    figure.savefig(path)
