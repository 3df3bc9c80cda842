"""The GAN's adversarial losses, from raw discriminator scores, and the generator's feature-matching
term.

- non-saturating: the minimax game of Goodfellow et al. 2014, with the generator maximising
  log D(G(z)) instead of minimising log(1 - D(G(z))) (their section 3), so it still gets a
  gradient while the discriminator rejects its samples with confidence;
- hinge: Lim & Ye 2017 (Geometric GAN), as used by Miyato et al. 2018 and Brock et al. 2019;
- lsgan: least squares with targets 0 and 1 (Mao et al. 2017);
- wgan-gp: the Wasserstein critic's loss of Gulrajani et al. 2017; its gradient penalty is in
  `gan_regularisers`;
- feature matching: Salimans et al. 2016, an extra generator term that sees the whole batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "WON_SCORES", "feature_matching", "gan_losses", "won_below"]

LOSSES = ("nonsaturating", "hinge", "lsgan", "wgan-gp")
# A discriminator that has won outright judges every image at least this surely: raw scores
# (D(x), D(G(z))) 1% short of each loss's targets: probabilities 0.99 and 0.01 (logits +-4.595)
# for the non-saturating loss, 0.99 of the way to the margins +-1 for hinge, 0.99 and 0.01
# against the targets 1 and 0 for least squares. WGAN-GP's critic is unbounded: no such point.
WON_SCORES = {
    "nonsaturating": (4.59512, -4.59512),
    "hinge": (0.99, -0.99),
    "lsgan": (0.99, 0.01),
}


def won_below(loss: str) -> float | None:
    """The discriminator loss under which it has won outright: its loss at `WON_SCORES`, so the
    one criterion is said in each loss's own units (the losses have different scales: 0.0201 for
    the non-saturating loss, 0.02 for hinge, 1e-4 for least squares, which squares the 1%).
    None for a loss without such a point (wgan-gp). diagnostics/rules.py reads it through
    `GAN.training_signals`."""
    if loss not in WON_SCORES:
        return None
    real, fake = WON_SCORES[loss]
    d_loss, _ = gan_losses(loss, torch.tensor([real]), torch.tensor([fake]))
    return float(d_loss)


def gan_losses(
    loss: str, real_scores: torch.Tensor, fake_scores: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(discriminator loss, generator loss) from raw scores D(x), D(G(z)): (B,) each, batch means.

    nonsaturating: -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))) and -log sigmoid(D(G(z)))
    (Goodfellow et al. 2014, section 3); hinge: relu(1 - D(x)) + relu(1 + D(G(z))) and -D(G(z))
    (Lim & Ye 2017); lsgan: ((D(x) - 1)^2 + D(G(z))^2) / 2 and (D(G(z)) - 1)^2 / 2 (Mao et al.
    2017, targets 0 and 1); wgan-gp: D(G(z)) - D(x) and -D(G(z)), the penalty added by the caller."""
    if loss == "nonsaturating":
        d_loss = F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()
        return d_loss, F.softplus(-fake_scores).mean()
    if loss == "hinge":
        d_loss = F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()
        return d_loss, -fake_scores.mean()
    if loss == "lsgan":
        d_loss = 0.5 * ((real_scores - 1.0).pow(2).mean() + fake_scores.pow(2).mean())
        return d_loss, 0.5 * (fake_scores - 1.0).pow(2).mean()
    return fake_scores.mean() - real_scores.mean(), -fake_scores.mean()


def feature_matching(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The squared distance between the mean features of generated and real images, divided by
    the real features' mean variance (so the weight does not depend on their scale): Salimans et
    al. 2016, section 3.1, on the discriminator's last hidden layer. (B, F) each; a first moment
    of the whole batch, so the generator is told when it makes too many of one kind of image,
    which a per-image score cannot see."""
    scale = real.var(0).mean().detach().clamp_min(1e-12)
    return (fake.mean(0) - real.mean(0)).pow(2).mean() / scale
