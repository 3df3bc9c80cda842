"""How good a text model is on sentences it never saw: its likelihood and how it uses its code.

Numbers are in nats per sentence unless named otherwise. `perplexity` is exp(total NLL / total
tokens), the tokens being each sentence's BPE tokens and its end (EOS), as language models count
them. For a model with a code: the KL of the posterior from the prior, the active units (the
threshold `evaluate` and diagnostics use), the mutual information between x and z under the
model's posterior (Hoffman & Johnson 2016, estimated as in He et al. 2019), and the greedy
reconstructions' token accuracy and BLEU (sacrebleu, the reference implementation of Post 2018).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from latentspace.data.text import PAD_ID
from latentspace.diagnostics.measure import (
    ACTIVE_UNIT_THRESHOLD,
    active_units,
    posterior_mean_variance,
)
from latentspace.diagnostics.rules import Thresholds
from latentspace.errors import DataError

__all__ = [
    "collapse_verdict",
    "evaluate_text",
    "is_collapsed",
    "mutual_information",
    "token_accuracy",
]


def token_accuracy(reference: torch.Tensor, decoded: torch.Tensor) -> tuple[int, int]:
    """(tokens recovered, tokens in the references): position by position after BOS, the EOS
    included, so a reconstruction that stops early or late loses the positions it misses."""
    target = reference[:, 1:]
    width = target.shape[1]
    guess = torch.full_like(target, -1)
    got = decoded[:, 1 : 1 + width]
    guess[:, : got.shape[1]] = got
    mask = target != PAD_ID
    return int(((guess == target) & mask).sum()), int(mask.sum())


def mutual_information(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator) -> float:
    """I(x; z) under q(z|x) and the aggregate posterior q(z) = mean_x q(z|x), in nats: E[log
    q(z|x)] - E[log q(z)] with one z drawn from each posterior (He et al. 2019, `calc_mi`)."""
    n, d = mu.shape
    std = (0.5 * logvar).exp()
    z = mu + torch.randn(mu.shape, generator=generator).to(mu.device) * std
    log_2pi = math.log(2 * math.pi)
    neg_entropy = (-0.5 * d * log_2pi - 0.5 * (1 + logvar).sum(-1)).mean()
    # log q(z_i | x_j) for every pair, then log of the mean over j: the aggregate posterior
    norm = 0.5 * (d * log_2pi + logvar.sum(-1)).unsqueeze(0)
    parts = []
    for block in z.split(256):  # (256, N, D) at a time: memory stays bounded for any N
        dev = (block.unsqueeze(1) - mu.unsqueeze(0)) / std.unsqueeze(0)
        parts.append(torch.logsumexp(-0.5 * dev.pow(2).sum(-1) - norm, dim=1))
    log_qz = torch.cat(parts) - math.log(n)
    return float(neg_entropy - log_qz.mean())


def _bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    try:
        import sacrebleu
    except ImportError:
        raise DataError("BLEU needs sacrebleu: pip install 'latentspace[text]'") from None
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


@torch.no_grad()
def evaluate_text(
    model: Any,
    ids: torch.Tensor,
    *,
    samples: int = 100,
    batch_size: int = 64,
    seed: int = 0,
    precision: str = "fp32",
) -> dict[str, Any]:
    """The model's numbers on sentences `ids` (N, T) (see the module docstring); `samples`
    importance samples for the NLL bound (K >= 100 for a tight one)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    nll, elbo, kl, codes, logvars = [], [], [], [], []
    hits = total = 0
    hypotheses: list[str] = []
    for start in range(0, len(ids), batch_size):
        batch = ids[start : start + batch_size]
        batch = batch[:, : int((batch != PAD_ID).sum(1).max())].to(model.device)
        bound = model.likelihood_bound(batch, samples, generator=generator, precision=precision)
        nll.append(bound.nll.cpu())
        elbo.append(bound.negative_elbo.cpu())
        kl.append(bound.kl.cpu())
        if model.latent_dim:
            mu, logvar = model.code_posterior(batch)
            codes.append(mu.cpu())
            logvars.append(logvar.cpu())
            decoded = model.decode_ids(mu)
            got, count = token_accuracy(batch.cpu(), decoded.cpu())
            hits, total = hits + got, total + count
            hypotheses += model.to_text(decoded)
    tokens = int((ids[:, 1:] != PAD_ID).sum())
    nll_all = torch.cat(nll).double()
    result: dict[str, Any] = {
        "sentences": len(ids),
        "tokens": tokens,
        "samples": samples,
        "nll": float(nll_all.mean()),
        "negative_elbo": float(torch.cat(elbo).double().mean()),
        "perplexity": math.exp(float(nll_all.sum()) / max(tokens, 1)),
        "kl": float(torch.cat(kl).double().sum(1).mean()),
        "latent_dim": int(model.latent_dim),
    }
    if model.latent_dim:
        mu, logvar = torch.cat(codes), torch.cat(logvars)
        result.update(
            active_units=active_units(mu),
            active_unit_threshold=ACTIVE_UNIT_THRESHOLD,
            mutual_information=mutual_information(mu, logvar, generator),
            token_accuracy=hits / max(total, 1),
            bleu=_bleu(hypotheses, model.to_text(ids)),
            # per dimension, as the image evaluation records them (the report's KL chart)
            kl_per_dim=[round(v, 5) for v in torch.cat(kl).double().mean(0).tolist()],
            posterior_mean_variance=[round(v, 8) for v in posterior_mean_variance(mu).tolist()],
        )
    return result


def is_collapsed(record: dict[str, Any]) -> bool:
    """Posterior collapse by the training diagnostics' own rule (`Thresholds.collapse`): at most
    that share of the latent units active, so the decoder writes (almost) without the code."""
    dims = int(record.get("latent_dim") or 0)
    return bool(dims) and record["active_units"] / dims <= Thresholds().collapse


def collapse_verdict(record: dict[str, Any], advice: str = "") -> str:
    """An evaluation record's code use in plain words, with the numbers and, when collapsed,
    what to try (the family's own `collapse_advice`)."""
    if not record.get("latent_dim"):
        return "a language model: it has no code, so nothing to collapse"
    numbers = (
        f"KL {record['kl']:.2f} nats per sentence, {record['active_units']} of "
        f"{record['latent_dim']} latent units active, mutual information I(x; z) "
        f"{record['mutual_information']:.2f} nats"
    )
    if is_collapsed(record):
        return (
            f"posterior collapse: {numbers}; the decoder writes its sentences (almost) without "
            f"the code" + (f"; {advice}" if advice else "")
        )
    # active units count codes that vary across sentences; how much of a sentence they carry
    # is what the mutual information and the reconstructions say
    said = f"no posterior collapse by the active-unit rule: {numbers}"
    if "token_accuracy" in record:
        said += f"; greedy reconstructions recover {record['token_accuracy']:.1%} of tokens"
    return said
