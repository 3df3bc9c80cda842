"""A learned image codec: a fully convolutional autoencoder whose code is a spatial map quantised
by finite scalar quantisation (Mentzer et al. 2023), with a learned entropy model over the
symbols, trained for rate and distortion together: D + lambda * R (Balle et al. 2017).

One model holds several rates: each quality level has its own lambda (`lambdas`), its own step
sizes (see models/entropy.py) and its own entropy tables, and every training batch trains them
all (image i of a batch at level i mod Q). `latentspace compress` codes the symbols with these
tables; the model contract's `encode` gives the dequantised code at the highest quality.

With `architecture = "spatial"` (the default) the code is a map of `latent_dim` channels at
1/`factor` of the image's side, and images of any size go through `to_symbols` /
`from_symbols` (padded to the factor, cropped back). With mlp, conv or networks of your own the
code is a vector of `latent_dim` symbols (a 1x1 map) for images of the trained shape.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn

from latentspace.errors import ConfigError, DataError
from latentspace.models.base import GenerativeModel, make_optimizer
from latentspace.models.entropy import (
    SPATIAL_CONTEXTS,
    ChannelContextPrior,
    StepQuantiser,
    context_count,
)
from latentspace.models.layers import NetworkConfig
from latentspace.models.likelihood import SSIM_WINDOWS, ms_ssim, ssim
from latentspace.models.spatial import (
    UPSAMPLES,
    check_factor,
    code_networks,
    code_size,
    crop_to,
    pad_to_multiple,
)
from latentspace.settings import TrainConfig

__all__ = ["FSQ", "FSQConfig", "FSQLoss"]

DISTORTIONS = ("mse", "ssim", "ms-ssim")
# the entropy model's learning rate over the networks' (configure_optimizers)
PRIOR_LR_FACTOR = 10.0
MAX_CONTEXTS = 10_000  # rows of the entropy table per channel and quality
MAX_SIDE = 8192  # the largest image side `to_symbols` takes (memory, and the album's limit)


@dataclasses.dataclass(frozen=True)
class FSQConfig(NetworkConfig):
    # settings added after runs were saved, with the value such a run trained with (runs.py
    # fills them in when a saved config.json lacks them, so older runs still load)
    SAVED_BEFORE: ClassVar[dict[str, Any]] = {"upsample": "transposed", "spatial_context": "none"}

    name: str = "fsq"
    latent_dim: int = 4  # spatial: channels of the code map; otherwise: symbols per image
    architecture: str = "spatial"  # spatial (any image size) | mlp | conv
    factor: int = 4  # spatial: the code map is 1/factor of the image's side (4, 8 or 16)
    width: int = 64  # spatial: channels inside the networks
    blocks: int = 1  # spatial: residual blocks after each halving
    # spatial: the decoder's last doubling: "subpixel" (a 3x3 convolution to 4x the channels,
    # then pixel shuffle; ~2x faster training steps) or "transposed" (the first version's)
    upsample: str = "subpixel"
    levels: int = 9  # symbols per code channel at the highest quality (odd, >= 3)
    # the entropy model predicts a symbol from the symbols of this many channels before it at
    # the same position (models/entropy.py)
    context: int = 0
    # and, with "above", from the three symbols above it in its channel; "none": positions are
    # coded independently. Measured on Fashion-MNIST (docs/journal.md): the row above, alone,
    # 15% fewer bytes than two channels of context; both together 1% fewer again, for 81 times
    # the table
    spatial_context: str = "above"
    # the rate weight of each quality level, quality 1 first: distortion (squared error summed
    # over pixels in [0, 1]) + lambda * rate (bits per image); larger lambda, fewer bytes
    lambdas: tuple[float, ...] = (0.03, 0.012, 0.005, 0.002)
    # mse: squared error summed over pixels; ssim / ms-ssim: (1 - SSIM) x the image's values
    # (C x H x W), about 30x the squared error at a given quality: scale lambdas up to match
    distortion: str = "mse"
    # the SSIM window of distortion = ssim (models.likelihood.ssim): "gaussian" (11x11, Wang et
    # al. 2004's) or "uniform" (7x7, scikit-image's default, which bench/journal.py scores
    # Fashion-MNIST with)
    ssim_window: str = "gaussian"

    def validate(self) -> None:
        # the shared checks know mlp and conv; a spatial model uses neither's settings
        shared = (
            self
            if self.architecture != "spatial"
            else dataclasses.replace(self, architecture="conv")
        )
        NetworkConfig.validate(shared)
        if self.architecture == "spatial":
            check_factor(self.factor)
            if self.upsample not in UPSAMPLES:
                raise ConfigError(
                    f"model.upsample = {self.upsample!r} is not one of: {', '.join(UPSAMPLES)}"
                )
            if self.width < 1 or self.blocks < 0:
                raise ConfigError(
                    f"model.width = {self.width} and model.blocks = {self.blocks}: width must be "
                    "at least 1 and blocks 0 or more"
                )
        if self.levels < 3 or self.levels % 2 == 0 or self.levels > 255:
            raise ConfigError(f"model.levels = {self.levels} must be odd, between 3 and 255")
        if self.spatial_context not in SPATIAL_CONTEXTS:
            raise ConfigError(
                f"model.spatial_context = {self.spatial_context!r} is not one of: "
                f"{', '.join(SPATIAL_CONTEXTS)}"
            )
        contexts = context_count(self.levels, max(self.context, 0), self.spatial_context)
        if not 0 <= self.context <= 3 or contexts > MAX_CONTEXTS:
            raise ConfigError(
                f"model.context = {self.context} with {self.levels} levels and "
                f"model.spatial_context = {self.spatial_context!r} makes {contexts} contexts: "
                f"give context 0 to 3 and at most {MAX_CONTEXTS} contexts (fewer levels or "
                "channels of context)"
            )
        if not self.lambdas or any(not lam > 0 for lam in self.lambdas):
            raise ConfigError(f"model.lambdas = {self.lambdas}: give one positive value or more")
        if any(b >= a for a, b in zip(self.lambdas, self.lambdas[1:], strict=False)):
            raise ConfigError(
                f"model.lambdas = {self.lambdas} must decrease: quality 1 (the first) spends "
                "the fewest bytes, so it has the largest lambda"
            )
        if self.ssim_window not in SSIM_WINDOWS:
            raise ConfigError(
                f"model.ssim_window = {self.ssim_window!r} is not one of: {', '.join(SSIM_WINDOWS)}"
            )
        if self.distortion not in DISTORTIONS:
            raise ConfigError(
                f"model.distortion = {self.distortion!r} is not one of: {', '.join(DISTORTIONS)}"
            )


class FSQLoss(NamedTuple):
    """Averaged over the batch: reconstruction, the distortion D (squared error summed over
    pixels, or (1 - SSIM) x pixels), rate R (bits per image), total = D + lambda * R with each
    image's quality level's lambda."""

    reconstruction: torch.Tensor
    rate: torch.Tensor
    total: torch.Tensor


class FSQ(GenerativeModel):
    """Images (B, C, H, W) in [0, 1]; contract codes (B, latent_dim) are the dequantised code at
    the highest quality (spatial: the flattened map, latent_dim = channels x h x w)."""

    name = "fsq"
    config_class = FSQConfig
    config: FSQConfig
    lambdas: torch.Tensor

    def __init__(
        self,
        config: FSQConfig,
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
        qualities = len(config.lambdas)
        self.quantiser = StepQuantiser(qualities, config.latent_dim, config.levels)
        self.prior = ChannelContextPrior(
            qualities, config.latent_dim, config.levels, config.context, config.spatial_context
        )
        self.register_buffer("lambdas", torch.tensor(config.lambdas), persistent=False)
        if self.spatial:  # oneDNN's faster layout, as build_model does for conv networks
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    # ---- sizes -----------------------------------------------------------------------------
    @property
    def quality_levels(self) -> int:
        """How many rates the model holds: qualities 1..quality_levels, higher keeps more."""
        return len(self.config.lambdas)

    @property
    def context_channels(self) -> int:
        """How many channels before it predict a channel's symbols (the coder's context)."""
        return int(self.config.context)

    @property
    def spatial_context(self) -> str:
        """What of a channel's own neighbours predicts a symbol (the coder's second context)."""
        return str(self.config.spatial_context)

    def code_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(channels, h, w) of the symbol map of an image of that size."""
        if not self.spatial:
            return self.config.latent_dim, 1, 1
        return (self.config.latent_dim, *code_size(height, width, self.config.factor))

    @property
    def _size(self) -> tuple[int, int]:
        return int(self.image_shape[1]), int(self.image_shape[2])

    @property
    def latent_dim(self) -> int:
        return int(np.prod(self.code_shape(*self.image_shape[1:])))

    def check_size(self, height: int, width: int) -> None:
        """A one-line DataError unless the model codes images of that size."""
        if self.spatial:
            if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
                raise DataError(
                    f"a {height}x{width} image is larger than this model codes (sides up to "
                    f"{MAX_SIDE}); resize it first"
                )
        elif (height, width) != tuple(self.image_shape[1:]):
            raise DataError(
                f"this model codes only {self.image_shape[1]}x{self.image_shape[2]} images "
                f"(its networks are not fully convolutional), got {height}x{width}; resize it"
            )

    # ---- the networks around the quantiser ----------------------------------------------------
    def _analyse(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> y (B, C', h, w), the unbounded code before quantisation."""
        if not self.spatial:
            return self.encoder(x)[:, :, None, None]
        padded, _ = pad_to_multiple(x, self.config.factor)
        return self.encoder(padded)

    def _synthesise(self, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """dequantised z (B, C', h, w) -> logits (B, C, H, W) cropped to `size`."""
        if not self.spatial:
            return self.decoder(z.flatten(1))
        return crop_to(self.decoder(z), size)

    def _qualities(self, n: int) -> torch.Tensor:
        """Image i of a batch trains quality level i mod Q: every level learns at every step."""
        return torch.arange(n, device=self.device) % self.quality_levels

    def loss(self, x: torch.Tensor) -> FSQLoss:
        quality = self._qualities(len(x))
        y = self._analyse(x)
        z, coordinate, symbols = self.quantiser(y, quality)
        x_hat = torch.sigmoid(self._synthesise(z, (x.shape[2], x.shape[3])))
        distortion = self._distortion(x_hat.float(), x)
        rate = self.prior.rate(coordinate.float(), symbols, quality)
        # + the quantiser's overshoot: 0 unless the code saturates tanh (StepQuantiser.overshoot)
        total = distortion + self.lambdas[quality] * rate + self.quantiser.overshoot(y.float())
        return FSQLoss(distortion.mean(), rate.mean(), total.mean())

    def _distortion(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B,) per image: the squared error summed over pixels, or (1 - SSIM) x pixels."""
        if self.config.distortion == "mse":
            return (x_hat - x).pow(2).flatten(1).sum(1)
        if self.config.distortion == "ssim":
            score = ssim(x_hat, x, self.config.ssim_window)
        else:
            score = ms_ssim(x_hat, x)
        return (1 - score) * x[0].numel()

    # ---- training ------------------------------------------------------------------------------
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """One optimizer; the entropy model's logits learn PRIOR_LR_FACTOR times faster than
        the networks. Why: they start uniform and must move several nats, at most ~lr per Adam
        step; on photos (two steps an epoch) the rate stayed near log2(levels) bits a symbol
        for hundreds of steps, and a near-uniform prior gives the encoder no reason to prefer
        cheap symbols, so every quality level coded alike."""
        prior = list(self.prior.parameters())
        mine = {id(p) for p in prior}
        networks = [p for p in self.parameters() if id(p) not in mine]
        optimizer = make_optimizer(networks, self.train_config)
        optimizer.add_param_group({"params": prior, "lr": self.train_config.lr * PRIOR_LR_FACTOR})
        return [optimizer]

    def training_step(
        self, x: torch.Tensor, optimizers: list[torch.optim.Optimizer]
    ) -> dict[str, torch.Tensor]:
        with self.autocast():
            terms = self.loss(x)
        l1, l2 = self.penalties()
        total = terms.total + l1 + l2
        self.optimizer_step(optimizers[0], total)
        self.prior.refresh()  # the integer tables saved with the run follow the logits
        values = torch.stack([terms.reconstruction, terms.rate, l1, l2, total]).detach().float()
        return dict(zip(("reconstruction", "rate", "l1", "l2", "total"), values, strict=True))

    @torch.no_grad()
    def validation_step(self, x: torch.Tensor) -> dict[str, float]:
        terms = self.loss(x)
        return {key: float(value) for key, value in terms._asdict().items()}

    # ---- the model contract ----------------------------------------------------------------------
    def _level(self, quality: int) -> torch.Tensor:
        """Quality 1..Q as the 0-dim index the quantiser broadcasts over a batch."""
        return torch.tensor(quality - 1, dtype=torch.long, device=self.device)

    def encode(
        self, x: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The dequantised code at the highest quality, flattened: (B, latent_dim). FSQ is
        deterministic, so `sample` changes nothing."""
        self.check_images(x)
        z, _, _ = self.quantiser(self._analyse(x), self._level(self.quality_levels))
        return z.flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.check_codes(z)
        shape = (-1, *self.code_shape(*self._size))  # -1: a traced graph keeps B free
        return torch.sigmoid(self._synthesise(z.reshape(shape), self._size))

    def sample_latent(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Codes decoded from symbols drawn from the entropy model at the highest quality:
        independent per position, so samples show texture more than objects."""
        shape = (n, *self.code_shape(*self.image_shape[1:]))
        symbols = self.prior.sample(self.quality_levels - 1, shape, generator).to(self.device)
        return self.quantiser.dequantise(symbols, self._level(self.quality_levels)).flatten(1)

    # ---- compression: what latentspace.journal reads ---------------------------------------------
    @torch.no_grad()
    def to_symbols(self, x: torch.Tensor, quality: int) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1], any size the model codes -> symbols (B, C', h, w) long in
        [0, levels), at quality 1..quality_levels."""
        self._check_quality(quality)
        self.check_size(x.shape[2], x.shape[3])
        _, _, symbols = self.quantiser(self._analyse(x.to(self.device)), self._level(quality))
        return symbols

    @torch.no_grad()
    def from_symbols(
        self, symbols: torch.Tensor, quality: int, size: tuple[int, int]
    ) -> torch.Tensor:
        """symbols (B, C', h, w) -> images (B, C, H, W) in [0, 1] of `size` (H, W)."""
        self._check_quality(quality)
        z = self.quantiser.dequantise(symbols.to(self.device), self._level(quality))
        return torch.sigmoid(self._synthesise(z, size))

    def frequency_table(self, quality: int) -> np.ndarray:
        """The integer table (C', contexts, levels) int64 that codes the symbols of `quality`
        (see entropy.ChannelContextPrior): each entry >= 1, each row summing to
        2**entropy.PRECISION."""
        self._check_quality(quality)
        return self.prior.frequencies[quality - 1].cpu().numpy().astype(np.int64)

    def _check_quality(self, quality: int) -> None:
        if not 1 <= quality <= self.quality_levels:
            raise DataError(
                f"quality {quality} is not one of this model's levels 1..{self.quality_levels}"
            )
