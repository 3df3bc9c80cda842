"""VQ-VAE (van den Oord et al. 2017): an autoencoder whose code is a map of indices into a
learned codebook of K vectors.

- The codebook follows its assigned encoder outputs by exponential moving averages (the paper's
  Appendix A.1; Laplace-smoothed counts as in Razavi et al. 2019), not by gradients; the encoder
  is pulled towards its codes by the commitment loss, and gradients reach it through the
  quantiser by the straight-through estimator.
- Codes no training image used in an epoch (or used for under 10% of an even share of its
  positions) are dead weight: after the next epoch's first step they restart from random
  encoder outputs of that batch (the restarts of Dhariwal et al. 2020,
  Jukebox), and the epoch's record says how many died.
- Usage is counted over each epoch: `codebook_usage` (codes used / K) and `codebook_perplexity`
  (exp of the entropy of the code frequencies: K when all are used equally) join the epoch's
  training terms in metrics.jsonl and the diagnostics' signals.

With `architecture = "spatial"` (the default) the code is a map at 1/`factor` of the image's
side, one index per position, and `to_indices` / `from_indices` take images of any size. With
mlp, conv or networks of your own the code is `latent_dim` scalars per image, each quantised to
one of K learned values (a latent_dim x 1 map of one channel): one K-way choice per image would
merge images whose early codes are close, and a merged pair never separates again.
`generate` draws indices uniformly: VQ-VAE's learned prior (a PixelCNN over the indices) is a
second model this family does not train, so samples look like a collage of textures.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from latentspace.distributed import (
    all_reduce_sum,
    broadcast_state,
    is_distributed,
    rank,
    world_size,
)
from latentspace.errors import ConfigError
from latentspace.models.base import GenerativeModel
from latentspace.models.layers import NetworkConfig
from latentspace.models.likelihood import PixelLikelihood, check_likelihood, mean_image
from latentspace.models.spatial import (
    check_factor,
    code_networks,
    code_size,
    crop_to,
    pad_to_multiple,
)
from latentspace.settings import TrainConfig

__all__ = ["DEAD_SHARE", "VQVAE", "Codebook", "VQVAEConfig", "VQVAELoss"]

DEAD_SHARE = 0.1  # a code used for under 10% of an even share of an epoch's positions restarts


@dataclasses.dataclass(frozen=True)
class VQVAEConfig(NetworkConfig):
    name: str = "vqvae"
    latent_dim: int = 16  # spatial: channels of the code map (each code vector's length)
    architecture: str = "spatial"  # spatial (any image size) | mlp | conv
    factor: int = 4  # spatial: the code map is 1/factor of the image's side (4, 8 or 16)
    width: int = 64  # spatial: channels inside the networks
    blocks: int = 1  # spatial: residual blocks after each halving
    codebook_size: int = 256  # K: the vectors an index chooses from (log2 K bits per position)
    commitment: float = 0.25  # beta: the weight pulling encoder outputs to their codes
    decay: float = 0.99  # the codebook's moving averages keep this much of their past each step
    likelihood: str = (
        "auto"  # as the AE's: auto | bernoulli | gaussian | gaussian_learned | logistic
    )
    gaussian_std: float = 0.1

    def validate(self) -> None:
        # the shared checks know mlp and conv; a spatial model uses neither's settings
        spatial = self.architecture == "spatial"
        NetworkConfig.validate(dataclasses.replace(self, architecture="conv") if spatial else self)
        if spatial:
            check_factor(self.factor)
            if self.width < 1 or self.blocks < 0:
                raise ConfigError(
                    f"model.width = {self.width} and model.blocks = {self.blocks}: width must be "
                    "at least 1 and blocks 0 or more"
                )
        if self.codebook_size < 2:
            raise ConfigError(f"model.codebook_size = {self.codebook_size} must be at least 2")
        if self.commitment < 0:
            raise ConfigError(f"model.commitment = {self.commitment} must be 0 or more")
        if not 0 < self.decay < 1:
            raise ConfigError(f"model.decay = {self.decay} must be between 0 and 1 (e.g. 0.99)")
        check_likelihood(self.likelihood, self.gaussian_std)


class VQVAELoss(NamedTuple):
    """Averaged over the batch: reconstruction (nats per image, summed over pixels), commitment
    (squared distance of encoder outputs to their codes, summed over the code map) and
    total = reconstruction + commitment weight x commitment."""

    reconstruction: torch.Tensor
    commitment: torch.Tensor
    total: torch.Tensor


class Codebook(nn.Module):
    """K code vectors of length D, updated by exponential moving averages of the encoder outputs
    assigned to them, with this epoch's use of each code counted. All state is buffers: the
    codebook learns without an optimiser, and a saved run resumes its averages and counts."""

    vectors: torch.Tensor
    cluster_size: torch.Tensor
    vector_sum: torch.Tensor
    counts: torch.Tensor

    def __init__(self, size: int, dim: int, decay: float) -> None:
        super().__init__()
        self.decay = decay
        vectors = torch.randn(size, dim)
        self.register_buffer("vectors", vectors)
        self.register_buffer("cluster_size", torch.ones(size))
        self.register_buffer("vector_sum", vectors.clone())
        self.register_buffer("counts", torch.zeros(size))  # uses this epoch, for usage and restarts

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """flat: (N, D) -> the index (N,) of each row's nearest code vector (squared distance)."""
        distances = (
            flat.pow(2).sum(1, keepdim=True)
            - 2 * flat @ self.vectors.T
            + self.vectors.pow(2).sum(1)[None, :]
        )
        return distances.argmin(1)

    @torch.no_grad()
    def update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        """One moving-average step towards the mean of the rows assigned to each code, and count
        the uses (van den Oord et al. 2017, App. A.1)."""
        onehot = F.one_hot(indices, len(self.vectors)).type_as(flat)
        # under torchrun each rank holds part of the global batch: the averages move by the
        # whole batch's counts and sums (one all-reduce), as one process would move them
        size, dim = self.vectors.shape
        stats = all_reduce_sum(torch.cat([onehot.sum(0), (onehot.T @ flat).reshape(-1)]))
        used, sums = stats[:size], stats[size:].reshape(size, dim)
        self.counts += used
        self.cluster_size.mul_(self.decay).add_(used, alpha=1 - self.decay)
        self.vector_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        # Laplace smoothing keeps a code with no recent use from a division by zero
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + 1e-5) / (total + size * 1e-5) * total
        self.vectors.copy_(self.vector_sum / smoothed[:, None])

    @torch.no_grad()
    def restart(self, dead: torch.Tensor, flat: torch.Tensor, generator: torch.Generator) -> None:
        """Codes where `dead` (K,) is True take random rows of `flat` (N, D), the encoder's
        outputs for the batch in hand, with their averages reset to them."""
        n = int(dead.sum())
        if n == 0:
            return
        flat = _global_rows(flat)  # the whole global batch's rows, as one process sees them
        rows = flat[torch.randint(len(flat), (n,), generator=generator).to(flat.device)]
        self.vectors[dead] = rows
        self.vector_sum[dead] = rows
        self.cluster_size[dead] = 1.0
        broadcast_state(self, buffers_only=True)  # every rank restarts with rank 0's rows

    def dead(self) -> torch.Tensor:
        """(K,) True for the codes unused this epoch, or used for under DEAD_SHARE of an even
        share of its positions: in an epoch of millions of positions a code chosen a handful of
        times is as good as dead, yet "used"."""
        return self.counts < DEAD_SHARE * self.counts.sum() / len(self.counts)

    def usage(self) -> tuple[int, float]:
        """(codes used, perplexity) over the counts so far."""
        used = int((self.counts > 0).sum())
        total = float(self.counts.sum())
        if total == 0:
            return 0, 0.0
        p = self.counts / total
        entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
        return used, float(torch.exp(entropy))


class VQVAE(GenerativeModel):
    """Images (B, C, H, W) in [0, 1]; contract codes (B, latent_dim) are the quantised code
    vectors, flattened (spatial: latent_dim = channels x h x w of the model's image shape)."""

    name = "vqvae"
    config_class = VQVAEConfig
    config: VQVAEConfig

    def __init__(
        self,
        config: VQVAEConfig,
        image_shape: tuple[int, int, int],
        train: TrainConfig | None = None,
        *,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ) -> None:
        super().__init__(config, image_shape, train)
        self.encoder, self.decoder, self.spatial = code_networks(
            config, image_shape, encoder, decoder
        )
        if self.spatial:  # oneDNN's faster layout, as build_model does for conv networks
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        dim = config.latent_dim if self.spatial else 1
        self.codebook = Codebook(config.codebook_size, dim, config.decay)
        self.pixel_likelihood = PixelLikelihood(
            config.likelihood, image_shape[0], config.gaussian_std
        )
        # codes to restart after the next training step: at first all, so the codebook starts
        # from encoder outputs of the first batch rather than from noise of another scale
        self._dead: torch.Tensor | None = torch.ones(config.codebook_size, dtype=torch.bool)
        # restarts draw from their own generator, seeded by (seed, epoch): the same rows on
        # every rank and in one process, and again after a resume
        self._restart_seed = self.train_config.seed

    # ---- sizes -------------------------------------------------------------------------------
    def code_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(channels, h, w) of the code map of an image of that size (flat networks: 1 channel,
        latent_dim positions)."""
        if not self.spatial:
            return 1, self.config.latent_dim, 1
        return (self.config.latent_dim, *code_size(height, width, self.config.factor))

    @property
    def latent_dim(self) -> int:
        return math.prod(self.code_shape(*self.image_shape[1:]))

    # ---- the networks around the quantiser ---------------------------------------------------
    def _analyse(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> z_e (B, D, h, w) in float32, the encoder's output before quantising."""
        if not self.spatial:  # latent_dim positions of one dimension each
            return self.encoder(x)[:, None, :, None].float()
        return self.encoder(pad_to_multiple(x, self.config.factor)[0]).float()

    def _synthesise(self, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """z (B, D, h, w) -> logits (B, C, H, W) cropped to `size`."""
        if not self.spatial:
            return self.decoder(z.flatten(1))
        return crop_to(self.decoder(z), size)

    def _quantise(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z_e (B, D, h, w) -> (z_q (B, D, h, w), indices (B, h, w), z_e's rows (B*h*w, D))."""
        b, d, h, w = z_e.shape
        flat = _rows(z_e)
        indices = self.codebook.nearest(flat.detach())
        z_q = self.codebook.vectors[indices].reshape(b, h, w, d).permute(0, 3, 1, 2)
        return z_q, indices.reshape(b, h, w), flat

    def loss(self, x: torch.Tensor) -> VQVAELoss:
        return self._loss(x)[0]

    def _loss(self, x: torch.Tensor) -> tuple[VQVAELoss, torch.Tensor, torch.Tensor]:
        """The loss terms, z_e's rows and their code indices (for the codebook's update)."""
        z_e = self._analyse(x)
        z_q, indices, flat = self._quantise(z_e)
        # straight-through: the decoder sees z_q, the encoder gets the decoder's gradient
        z = z_e + (z_q - z_e).detach()
        logits = self._synthesise(z, (x.shape[2], x.shape[3]))
        reconstruction = self.pixel_likelihood(logits.float(), x).mean()
        commitment = (z_e - z_q.detach()).pow(2).flatten(1).sum(1).mean()
        total = reconstruction + self.config.commitment * commitment
        return VQVAELoss(reconstruction, commitment, total), flat, indices.flatten()

    # ---- training ------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """The codes unused in the epoch before restart after this epoch's first step; counting
        starts again. The counts are saved with the run, so a resumed run restarts the same."""
        super().on_epoch_start(epoch, epochs)
        self._restart_seed = self.train_config.seed * 1_000_003 + epoch
        counts = self.codebook.counts
        if float(counts.sum()) > 0:
            self._dead = self.codebook.dead()
        counts.zero_()

    def training_step(
        self, x: torch.Tensor, optimizers: list[torch.optim.Optimizer]
    ) -> dict[str, torch.Tensor]:
        with self.autocast():
            terms, flat, indices = self._loss(x)
        l1, l2 = self.penalties()
        total = terms.total + l1 + l2
        self.optimizer_step(optimizers[0], total)
        self.codebook.update(flat.detach(), indices)
        if self._dead is not None:
            # after this step's count, so a restarted code counts as used only once it wins
            # positions of its own in later steps
            generator = torch.Generator().manual_seed(self._restart_seed)
            self.codebook.restart(self._dead.to(self.device), flat.detach(), generator)
            self._dead = None
        values = torch.stack([terms.reconstruction, terms.commitment, l1, l2, total]).detach()
        names = ("reconstruction", "commitment", "l1", "l2", "total")
        return dict(zip(names, values.float(), strict=True))

    @torch.no_grad()
    def validation_step(self, x: torch.Tensor) -> dict[str, float]:
        terms = self.loss(x)
        return {key: float(value) for key, value in terms._asdict().items()}

    def epoch_warnings(self, record: dict[str, Any]) -> list[str]:
        """Adds the epoch's codebook usage to its training terms (`codebook_usage`: codes used
        / K; `codebook_perplexity`), and says in plain words how many codes died."""
        used, perplexity = self.codebook.usage()
        size = self.config.codebook_size
        record.setdefault("train", {}).update(
            {"codebook_usage": used / size, "codebook_perplexity": perplexity}
        )
        dead = int(self.codebook.dead().sum())
        if dead == 0 or float(self.codebook.counts.sum()) == 0:
            return []
        return [
            f"{dead} of {size} codes unused this epoch ({size - used} never chosen, the rest for "
            f"under {DEAD_SHARE:.0%} of an even share; perplexity {perplexity:.1f} of {size}); "
            "they restart from random encoder outputs next epoch. If many die every epoch, a "
            "smaller model.codebook_size codes the images as well"
        ]

    def training_signals(self, terms: Mapping[str, float]) -> dict[str, float]:
        """What the diagnostics record of an epoch: its codebook usage and perplexity."""
        keys = ("codebook_usage", "codebook_perplexity")
        return {key: float(terms[key]) for key in keys if key in terms}

    # ---- the model contract --------------------------------------------------------------------
    def encode(
        self, x: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The quantised code vectors, flattened: (B, latent_dim). Deterministic: `sample`
        changes nothing. `to_indices` gives the indices themselves."""
        self.check_images(x)
        return self._quantise(self._analyse(x))[0].flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (B, latent_dim) -> images. Codes between code vectors (an interpolation) are
        decoded as they are, not snapped to the codebook."""
        self.check_codes(z)
        shape = (-1, *self.code_shape(*self.image_shape[1:]))  # -1: an export keeps B free
        size = (self.image_shape[1], self.image_shape[2])
        return mean_image(self._synthesise(z.reshape(shape), size))

    def sample_latent(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Codes of indices drawn uniformly and independently per position: not a learned prior
        (see the module docstring)."""
        _, h, w = self.code_shape(*self.image_shape[1:])
        indices = torch.randint(self.config.codebook_size, (n, h, w), generator=generator)
        return self.codebook.vectors[indices.to(self.device)].permute(0, 3, 1, 2).flatten(1)

    @torch.no_grad()
    def to_indices(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1], any size (spatial) -> code indices (B, h, w) long in [0, K)."""
        if not self.spatial:
            self.check_images(x)
        return self._quantise(self._analyse(x.to(self.device)))[1]

    @torch.no_grad()
    def from_indices(self, indices: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """indices (B, h, w) -> images (B, C, H, W) in [0, 1] of `size` (H, W)."""
        z = self.codebook.vectors[indices.to(self.device)].permute(0, 3, 1, 2)
        return mean_image(self._synthesise(z, size))


def _global_rows(flat: torch.Tensor) -> torch.Tensor:
    """Under torchrun, every rank's rows (N_r, D) joined in rank order: each rank holds a
    contiguous part of the global batch, so this is the batch one process would hold. Each rank
    writes its part at its offset in zeros and one sum gathers them (parts may differ in size,
    which all_gather does not take). Restarts are rare: once an epoch."""
    if not is_distributed():
        return flat
    sizes = torch.zeros(world_size(), dtype=torch.long, device=flat.device)
    sizes[rank()] = len(flat)
    sizes = all_reduce_sum(sizes)
    start = int(sizes[: rank()].sum())
    whole = flat.new_zeros(int(sizes.sum()), flat.shape[1])
    whole[start : start + len(flat)] = flat
    return all_reduce_sum(whole)


def _rows(z: torch.Tensor) -> torch.Tensor:
    """A code map (B, D, h, w) as one row per position: (B*h*w, D)."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
