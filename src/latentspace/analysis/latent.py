"""Latent-space tools as pure tensor functions: interpolation, traversal, projection, neighbours.

    import latentspace as ls
    from latentspace.analysis import latent
    model = ls.load("runs/mnist-vae")
    z = model.encode(x)                          # (B, D)
    path = latent.slerp(z[0], z[1], steps=10)    # (10, D), endpoints included
    images = model.decode(path)

Nothing here knows a model family: these functions take and return codes, so they serve any
model with `encode`/`decode`/`sample_latent`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

__all__ = [
    "MAP_METHODS",
    "embed",
    "interpolate",
    "lerp",
    "nearest_neighbours",
    "pca",
    "plane_codes",
    "slerp",
    "traversal_grid",
    "tsne",
    "umap",
]

# the 2-D views of codes a map offers: PCA (a linear projection with an exact inverse), and the
# nonlinear t-SNE (scikit-learn) and UMAP (umap-learn), which keep neighbourhoods
MAP_METHODS = ("pca", "tsne", "umap")
_NONLINEAR_AXES = {"tsne": ("t-SNE 1", "t-SNE 2"), "umap": ("UMAP 1", "UMAP 2")}


def _weights(steps: int, like: torch.Tensor) -> torch.Tensor:
    if steps < 2:
        raise ValueError(f"steps = {steps}: an interpolation needs at least 2 (its endpoints)")
    return torch.linspace(0.0, 1.0, steps, dtype=like.dtype, device=like.device)


def lerp(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """Straight line from a to b: (D,), (D,) -> (steps, D), a first and b last."""
    t = _weights(steps, a)[:, None]
    return (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for generative models): the direction
    moves along the great circle from a to b at constant angular speed while the norm moves
    linearly, so codes keep the norm typical of a Gaussian prior instead of shrinking towards
    the origin midway as a straight line does. (D,), (D,) -> (steps, D). Parallel codes fall
    back to lerp."""
    t = _weights(steps, a)[:, None]
    norm_a, norm_b = a.norm(), b.norm()
    if norm_a < eps or norm_b < eps:
        return lerp(a, b, steps)
    unit_a, unit_b = a / norm_a, b / norm_b
    omega = torch.arccos((unit_a @ unit_b).clamp(-1.0, 1.0))
    sin_omega = torch.sin(omega)
    if sin_omega < eps:
        return lerp(a, b, steps)
    direction = (torch.sin((1 - t) * omega) * unit_a + torch.sin(t * omega) * unit_b) / sin_omega
    return direction * ((1 - t) * norm_a + t * norm_b)


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int, mode: str = "lerp") -> torch.Tensor:
    """lerp or slerp by name."""
    if mode == "lerp":
        return lerp(a, b, steps)
    if mode == "slerp":
        return slerp(a, b, steps)
    raise ValueError(f"interpolation mode {mode!r} is not one of: lerp, slerp")


def traversal_grid(z: torch.Tensor, dims: Sequence[int], values: torch.Tensor) -> torch.Tensor:
    """Vary one latent dimension at a time: z (D,), values (len(dims), S) -> codes
    (len(dims), S, D), where codes[i, j] is z with dimension dims[i] set to values[i, j]."""
    if values.ndim != 2 or values.shape[0] != len(dims):
        raise ValueError(
            f"values must be (len(dims), steps) = ({len(dims)}, S), not {values.shape}"
        )
    codes = z.expand(len(dims), values.shape[1], z.shape[-1]).clone()
    for row, dim in enumerate(dims):
        codes[row, :, dim] = values[row]
    return codes


def pca(
    codes: torch.Tensor, components: int = 2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Principal directions of codes (N, D) -> (projection (N, k), directions (k, D), mean (D,)).
    Each direction's sign is fixed so that its largest entry is positive (reproducible)."""
    mean = codes.mean(0)
    centred = codes - mean
    k = min(components, codes.shape[1])
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    directions = vh[:k]
    signs = torch.sign(directions.gather(1, directions.abs().argmax(1, keepdim=True)))
    directions = directions * torch.where(signs == 0, torch.ones_like(signs), signs)
    if k < components:  # a 1-D latent space: pad the plane with a zero direction
        pad = torch.zeros(components - k, codes.shape[1], dtype=codes.dtype, device=codes.device)
        directions = torch.cat([directions, pad])
    return centred @ directions.T, directions, mean


def plane_codes(
    mean: torch.Tensor, directions: torch.Tensor, u: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Codes on the plane mean + u * directions[0] + v * directions[1], row by row (v down,
    u across): (D,), (2, D), (U,), (V,) -> (V * U, D)."""
    grid_v, grid_u = torch.meshgrid(v, u, indexing="ij")
    return mean + grid_u.reshape(-1, 1) * directions[0] + grid_v.reshape(-1, 1) * directions[1]


def nearest_neighbours(
    queries: torch.Tensor, codes: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k codes nearest to each query (Euclidean): (Q, D), (N, D) -> distances (Q, k) and
    indices (Q, k) into codes, nearest first."""
    if not 1 <= k <= len(codes):
        raise ValueError(f"k = {k} must be between 1 and the number of codes ({len(codes)})")
    # exact distances (the matrix-multiply shortcut leaves ~1e-8 where the distance is zero)
    distances = torch.cdist(
        queries.double(), codes.double(), compute_mode="donot_use_mm_for_euclid_dist"
    )
    found = distances.topk(k, dim=1, largest=False)
    return found.values.to(queries.dtype), found.indices


def tsne(codes: torch.Tensor, seed: int = 0, perplexity: float = 30.0) -> torch.Tensor:
    """A 2-D t-SNE embedding of codes (N, D) -> (N, 2), from scikit-learn (imported here)."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:  # pragma: no cover - the metrics extra is installed in development
        from latentspace.errors import ConfigError

        raise ConfigError("t-SNE needs scikit-learn: pip install 'latentspace[metrics]'") from None
    perplexity = min(perplexity, max(1.0, (len(codes) - 1) / 3))
    embedding = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed
    ).fit_transform(codes.detach().double().cpu().numpy())
    return torch.from_numpy(embedding).float()


def umap(codes: torch.Tensor, seed: int = 0, neighbours: int = 15) -> torch.Tensor:
    """A 2-D UMAP embedding (McInnes et al. 2018) of codes (N, D) -> (N, 2), from umap-learn
    (imported here; its first call in a process compiles numba code, about 15 s on 2 cores)."""
    try:
        import umap as umap_learn
    except ImportError:
        from latentspace.errors import ConfigError

        raise ConfigError("UMAP needs umap-learn: pip install 'latentspace[explore]'") from None
    with warnings.catch_warnings():
        # a seeded UMAP runs on one thread and says so: seeded maps are what we want
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        embedding = umap_learn.UMAP(
            n_components=2,
            n_neighbors=min(neighbours, max(2, len(codes) - 1)),
            random_state=seed,
        ).fit_transform(codes.detach().double().cpu().numpy())
    return torch.from_numpy(embedding).float()


def embed(codes: torch.Tensor, method: str, seed: int = 0) -> tuple[torch.Tensor, tuple[str, str]]:
    """A nonlinear 2-D view of codes (N, D): (points (N, 2), axis names); method tsne or umap."""
    points = tsne(codes, seed=seed) if method == "tsne" else umap(codes, seed=seed)
    return points, _NONLINEAR_AXES[method]
