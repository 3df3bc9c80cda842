"""What a GAN's step reports: the named results of each player's step, the terms the trainer logs
and validates on, and what the diagnostics judge of them.

A GAN has no loss that falls as it learns (`total` = d_loss + g_loss is minimised by neither
player), so what it logs must say how the game goes instead: the discriminator's mean outputs on
real and generated images, and the spread of the generated batch against the real one (near 0:
the generator collapsed onto a few images). Kept apart from `gan.py`, which owns the step itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch

from latentspace.models.gan_losses import won_below

__all__ = [
    "DiscriminatorResult",
    "DiscriminatorTerms",
    "GeneratorResult",
    "logged_terms",
    "mean_outputs",
    "pairwise_spread",
    "training_signals",
    "validation_terms",
]


class DiscriminatorTerms(NamedTuple):
    """One evaluation of the discriminator's loss, averaged over the batch. `loss` includes the
    gradient penalty, weighted; `gp` is that penalty unweighted: WGAN-GP's, or R1's times the
    lazy-R1 weight (0 when neither). The scores D(x), D(G(z)) and, with feature matching, D's
    last hidden layer on x (else None) are detached."""

    loss: torch.Tensor
    gp: torch.Tensor
    real_scores: torch.Tensor
    fake_scores: torch.Tensor
    real_features: torch.Tensor | None


class DiscriminatorResult(NamedTuple):
    """One discriminator step: its terms, and what it minimised, `terms.loss + l1 + l2`."""

    terms: DiscriminatorTerms
    loss: torch.Tensor
    l1: torch.Tensor
    l2: torch.Tensor


class GeneratorResult(NamedTuple):
    """One generator step: what it minimised (adversarial + feature_matching x matching + l1 +
    l2), its weight penalties, the unweighted feature-matching term and the images it made."""

    loss: torch.Tensor
    l1: torch.Tensor
    l2: torch.Tensor
    matching: torch.Tensor
    fake: torch.Tensor


def pairwise_spread(images: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance between the images of a batch, per pixel (RMS): a cheap measure of
    diversity. (B, C, H, W) -> scalar."""
    flat = images.flatten(1)
    if len(flat) < 2:
        return torch.zeros((), device=images.device)
    return torch.pdist(flat).mean() / flat.shape[1] ** 0.5


def mean_outputs(scores: torch.Tensor, loss: str) -> torch.Tensor:
    """D's mean output: a probability for the non-saturating loss, else the raw score."""
    return torch.sigmoid(scores).mean() if loss == "nonsaturating" else scores.mean()


def logged_terms(
    x: torch.Tensor,
    d: DiscriminatorResult,
    g: GeneratorResult,
    loss: str,
    feature_matching: bool,
) -> dict[str, torch.Tensor]:
    """The terms `GAN.training_step` returns for real batch x, detached, as the float32 rows of
    one stacked tensor (one host read for all of them). `matching` only with feature matching."""
    with torch.no_grad():
        diversity = pairwise_spread(g.fake.float()) / pairwise_spread(x).clamp_min(1e-8)
    values = torch.stack(
        [
            d.loss.detach(),
            g.loss.detach(),
            mean_outputs(d.terms.real_scores, loss),
            mean_outputs(d.terms.fake_scores, loss),
            d.terms.gp.detach(),
            diversity,
            (d.l1 + g.l1).detach(),
            (d.l2 + g.l2).detach(),
            (d.loss + g.loss).detach(),
        ]
    ).float()
    keys = ("d_loss", "g_loss", "d_real", "d_fake", "gp", "diversity", "l1", "l2", "total")
    logged = dict(zip(keys, values, strict=True))
    if feature_matching:
        logged["matching"] = g.matching.detach().float()
    return logged


def validation_terms(
    x: torch.Tensor,
    fake: torch.Tensor,
    terms: DiscriminatorTerms,
    g_loss: torch.Tensor,
    loss: str,
) -> dict[str, float]:
    """The terms `GAN.validation_step` returns for held-out x against generated `fake`: the
    training terms but for l1 and l2 (no step is taken, so there are no weight penalties)."""
    diversity = pairwise_spread(fake) / pairwise_spread(x).clamp_min(1e-8)
    values = torch.stack(
        [
            terms.loss,
            g_loss,
            mean_outputs(terms.real_scores, loss),
            mean_outputs(terms.fake_scores, loss),
            terms.gp,
            diversity,
            terms.loss + g_loss,
        ]
    ).tolist()
    keys = ("d_loss", "g_loss", "d_real", "d_fake", "gp", "diversity", "total")
    return dict(zip(keys, values, strict=True))


def training_signals(terms: Mapping[str, float], loss: str) -> dict[str, float]:
    """What `latentspace.diagnostics` judges of an epoch, from its mean training terms: the
    rules and their thresholds live there; the family only says what its terms measure.
    sample_diversity: the generated images' spread over the real batch's (1.0 = as varied
    as the data, near 0: the generator collapses); discriminator_loss and
    discriminator_won_below: its loss and the loss under which it has won outright
    (`gan_losses.won_below`, per loss; none for wgan-gp)."""
    signals: dict[str, float] = {}
    if "diversity" in terms:
        signals["sample_diversity"] = float(terms["diversity"])
    limit = won_below(loss)
    if limit is not None and "d_loss" in terms:
        signals["discriminator_loss"] = float(terms["d_loss"])
        signals["discriminator_won_below"] = limit
    return signals
