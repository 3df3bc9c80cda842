"""Pixel likelihoods shared by the AE and VAE (the reconstruction term in nats per image), and the
structural similarity (SSIM, MS-SSIM) that codecs are judged and trained by.

Likelihoods, chosen by `model.likelihood`:
- bernoulli: binary cross-entropy on logits; right for binary or near-binary pixels (MNIST).
- gaussian: a fixed standard deviation (`model.gaussian_std`): MSE with its normalising constant.
- gaussian_learned: a learned standard deviation per channel (the calibrated decoder of Rybkin
  et al. 2021, "sigma-VAE"): the model finds the noise level instead of a weight being guessed.
- logistic: a discretised logistic per 8-bit pixel with a learned scale per channel (Salimans et
  al. 2017, PixelCNN++, one mixture component): a probability mass on the 256 pixel values, so
  its nats are a code length and bits per dimension compare with published numbers.
- auto (the default): bernoulli for one channel, logistic for colour. Scoring colour photos with
  a Bernoulli gives ~0.6 nats per pixel even for a perfect reconstruction (8000 nats for a 64x64
  RGB crop) and pulls every pixel towards 0 or 1.
The decoder's image is sigmoid(logits) under every likelihood, so decode is the same for all.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentspace.errors import ConfigError, DataError

__all__ = [
    "LIKELIHOODS",
    "MS_SSIM_WEIGHTS",
    "SSIM_WINDOWS",
    "PixelLikelihood",
    "check_likelihood",
    "mean_image",
    "ms_ssim",
    "ms_ssim_scales",
    "reconstruction_nll",
    "resolve_likelihood",
    "ssim",
]

LIKELIHOODS = ("auto", "bernoulli", "gaussian", "gaussian_learned", "logistic")
_LEARNED = ("gaussian_learned", "logistic")
_MIN_LOG_SCALE = math.log(1e-4)  # a floor keeps a learned Gaussian's density finite
_HALF_BIN = 1 / 510  # half of one 8-bit level, with pixels in [0, 1]


def check_likelihood(name: str, gaussian_std: float) -> None:
    if name not in LIKELIHOODS:
        raise ConfigError(f"model.likelihood = {name!r} is not one of: {', '.join(LIKELIHOODS)}")
    if gaussian_std <= 0:
        raise ConfigError(f"model.gaussian_std = {gaussian_std} must be greater than 0")


def resolve_likelihood(name: str, channels: int) -> str:
    """The likelihood `name` means for images of `channels` channels: "auto" is bernoulli for
    grey images and the discretised logistic for colour; any other name is itself."""
    if name != "auto":
        return name
    return "bernoulli" if channels == 1 else "logistic"


def _discretised_logistic_nll(
    mean: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """-log P(x) elementwise for 8-bit pixels x in [0, 1]: the logistic's mass on x's bin, the
    edge bins taking the tails (Salimans et al. 2017, eq. 2; their log-space branches)."""
    inv_scale = torch.exp(-log_scale)
    centred = x - mean
    upper = inv_scale * (centred + _HALF_BIN)
    lower = inv_scale * (centred - _HALF_BIN)
    log_cdf_upper = upper - F.softplus(upper)  # log sigmoid(upper): the mass below 0's bin top
    log_survival_lower = -F.softplus(lower)  # log(1 - sigmoid(lower)): the mass above 1's bin
    mass = torch.sigmoid(upper) - torch.sigmoid(lower)
    middle = inv_scale * centred
    # where the bin's mass underflows, its density at the centre times the bin's width
    log_density = middle - log_scale - 2 * F.softplus(middle) + math.log(2 * _HALF_BIN)
    log_mass = torch.where(mass > 1e-5, torch.log(mass.clamp_min(1e-12)), log_density)
    log_p = torch.where(
        x < _HALF_BIN, log_cdf_upper, torch.where(x > 1 - _HALF_BIN, log_survival_lower, log_mass)
    )
    return -log_p


def reconstruction_nll(
    logits: torch.Tensor,
    x: torch.Tensor,
    likelihood: str,
    gaussian_std: float,
    log_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """-log p(x | z) per image, summed over pixels: (B, C, H, W) -> (B,) nats.

    bernoulli: binary cross-entropy on the decoder's logits. gaussian: std `gaussian_std`, with
    the normalising constant (a density, so it can be negative). gaussian_learned and logistic
    take `log_scale` (C,), one learned log-scale per channel. likelihood is resolved ("auto" is
    not accepted here: see `resolve_likelihood`)."""
    if likelihood == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        return nll.flatten(1).sum(1)
    mean = torch.sigmoid(logits)
    if likelihood == "gaussian":
        squared = (x - mean).pow(2).flatten(1).sum(1)
        pixels = x[0].numel()
        return squared / (2 * gaussian_std**2) + pixels * math.log(
            gaussian_std * math.sqrt(2 * math.pi)
        )
    if log_scale is None or likelihood not in _LEARNED:
        raise ValueError(f"likelihood {likelihood!r} needs a resolved name and its log_scale")
    log_s = log_scale.clamp_min(_MIN_LOG_SCALE).reshape(1, -1, 1, 1).to(mean.dtype)
    if likelihood == "logistic":
        return _discretised_logistic_nll(mean, log_s, x).flatten(1).sum(1)
    z = (x - mean) * torch.exp(-log_s)
    nll = 0.5 * z.pow(2) + log_s + 0.5 * math.log(2 * math.pi)
    return nll.flatten(1).sum(1)


class PixelLikelihood(nn.Module):
    """-log p(x | logits) per image: (B, C, H, W) x 2 -> (B,) nats (see the module docstring).

    A learned likelihood holds `log_scale` (C,), one per channel, starting at the scale whose
    standard deviation is `gaussian_std`; the fixed ones hold no parameter, so runs saved before
    learned scales existed load unchanged."""

    def __init__(self, likelihood: str, channels: int, gaussian_std: float) -> None:
        super().__init__()
        check_likelihood(likelihood, gaussian_std)
        self.likelihood = resolve_likelihood(likelihood, channels)
        self.gaussian_std = gaussian_std
        self.log_scale: nn.Parameter | None = None
        if self.likelihood in _LEARNED:
            # a logistic of scale s has standard deviation s * pi / sqrt(3)
            std = gaussian_std * (math.sqrt(3) / math.pi if self.likelihood == "logistic" else 1)
            self.log_scale = nn.Parameter(torch.full((channels,), math.log(std)))

    def forward(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return reconstruction_nll(logits, x, self.likelihood, self.gaussian_std, self.log_scale)

    def extra_repr(self) -> str:
        return self.likelihood


def mean_image(logits: torch.Tensor) -> torch.Tensor:
    """The decoder's expected image in [0, 1] under every likelihood."""
    return torch.sigmoid(logits)


# ---- structural similarity -------------------------------------------------------------------
# Wang, Simoncelli & Bovik 2003: the weight of each scale, finest first
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_KERNEL = 11  # the Gaussian window's side (sigma 1.5), as in both papers


def _functional() -> Any:
    try:
        import torchmetrics.functional.image as image
    except ImportError as error:  # optional: the metrics extra
        raise ConfigError(
            "SSIM and MS-SSIM need torchmetrics: pip install 'latentspace[metrics]'"
        ) from error
    return image


def ms_ssim_scales(height: int, width: int) -> int:
    """How many of MS-SSIM's 5 scales an image of this size has room for: at the coarsest scale
    a side still spans the 11-pixel window (side >= 11 * 2**(scales - 1)), and torchmetrics'
    own bound holds (side // (scales - 1)**2 > 10). 176 pixels for all 5; 0 below 22."""
    side = min(height, width)

    def fits(scales: int) -> bool:
        coarse = side >= _KERNEL * 2 ** (scales - 1)
        return coarse and side // max(1, scales - 1) ** 2 > _KERNEL - 1

    return max((s for s in range(1, len(MS_SSIM_WEIGHTS) + 1) if fits(s)), default=0)


SSIM_WINDOWS = ("gaussian", "uniform")
_UNIFORM = 7  # scikit-image's default window side


def ssim(x: torch.Tensor, y: torch.Tensor, window: str = "gaussian") -> torch.Tensor:
    """SSIM per image (Wang et al. 2004), data range 1: (B, C, H, W) x 2 in [0, 1] -> (B,),
    averaged over channels and pixels. Differentiable. Two windows, as the two usual tools
    compute it:

    - "gaussian": an 11x11 Gaussian window (sigma 1.5), the paper's; torchmetrics' formula
      (reflect padding, the whole image averaged), but the window applied as an 11x1 and a 1x11
      convolution: torchmetrics convolves with the 11x11 window in one grouped convolution whose
      backward took 61 of the 64 ms an SSIM cost on a batch of 32 28x28 images (one thread,
      forward and backward), more than the codec's networks; this takes 29 ms under the same load.
    - "uniform": scikit-image's default (`structural_similarity` with no options): a 7x7 mean
      window, sample (co)variances, averaged over the positions where the window fits inside the
      image. On a 28x28 image that leaves out a 3-pixel border the Gaussian version counts.

    tests/test_journal.py checks values and gradients against torchmetrics' and values against
    scikit-image's."""
    if window not in SSIM_WINDOWS:
        raise ConfigError(f"SSIM window {window!r} is not one of: {', '.join(SSIM_WINDOWS)}")
    stacked = torch.cat([x, y, x * x, y * y, x * y])
    if window == "uniform":
        if min(x.shape[-2:]) < _UNIFORM:
            raise DataError(
                f"a {x.shape[-2]}x{x.shape[-1]} image is smaller than SSIM's {_UNIFORM}x{_UNIFORM} "
                "window; use larger images or the squared error"
            )
        blurred = F.avg_pool2d(stacked, _UNIFORM, stride=1)
        unbiased = _UNIFORM**2 / (_UNIFORM**2 - 1)  # sample, not population, (co)variances
    else:
        channels, pad = x.shape[1], _KERNEL // 2
        offsets = torch.arange(_KERNEL, dtype=x.dtype, device=x.device) - pad
        taps = torch.exp(-((offsets / 1.5) ** 2) / 2)
        taps = taps / taps.sum()
        blurred = F.pad(stacked, (pad, pad, pad, pad), mode="reflect")
        blurred = F.conv2d(
            blurred, taps.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels
        )
        blurred = F.conv2d(
            blurred, taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels
        )
        unbiased = 1.0
    mu_x, mu_y, xx, yy, xy = blurred.split(len(x))
    c1, c2 = 0.01**2, 0.03**2
    var_x = unbiased * (xx - mu_x**2).clamp(min=0.0)
    var_y = unbiased * (yy - mu_y**2).clamp(min=0.0)
    covariance = unbiased * (xy - mu_x * mu_y)
    score = ((2 * mu_x * mu_y + c1) * (2 * covariance + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return score.flatten(1).mean(1)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, scales: int | None = None) -> torch.Tensor:
    """MS-SSIM per image (Wang et al. 2003): (B, C, H, W) x 2 in [0, 1] -> (B,). Differentiable;
    `1 - ms_ssim(x_hat, x).mean()` is a loss beside MSE (its contrast term is clipped at 0, as
    torchmetrics and pytorch-msssim do, so from unrelated images it has no gradient). scales: None for as many of the 5 as the image has
    room for (`ms_ssim_scales`; fewer than 5 is not the published measure: their weights are
    renormalised), else exactly that many, refused when the image is too small for them."""
    height, width = x.shape[-2:]
    room = ms_ssim_scales(height, width)
    scales = room if scales is None else scales
    if scales < 2 or scales > room:
        wanted = max(scales, 2)
        raise DataError(
            f"a {height}x{width} image is too small for MS-SSIM at {wanted} scales (each "
            f"side needs {_KERNEL * 2 ** (wanted - 1)} pixels or more); use ssim, or larger images"
        )
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales])
    betas = tuple((weights / weights.sum()).tolist())
    image = _functional()
    return image.multiscale_structural_similarity_index_measure(
        x, y, data_range=1.0, reduction="none", betas=betas
    )
