"""Writing sentences from codes with a text model's decoder: greedy, sampled, or beam search.

Written by hand because the decoder is ours (a GRU conditioned on z at every step); a library's
generation loop (Hugging Face `generate`) would need its model classes. Each function returns
token ids (B, T): BOS, the tokens, EOS, then PAD_ID; a sentence not ended by `max_tokens` is cut.
"""

from __future__ import annotations

from typing import Protocol

import torch

from latentspace.data.text import BOS_ID, EOS_ID, PAD_ID

__all__ = ["beam_search", "step_by_step"]


class _Decoder(Protocol):
    max_tokens: int

    def initial_hidden(self, z: torch.Tensor) -> torch.Tensor: ...
    def decoder_step(
        self, tokens: torch.Tensor, z: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def step_by_step(
    model: _Decoder,
    z: torch.Tensor,
    temperature: float | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Greedy (temperature None) or sampled decoding of every code in z (B, D) at once."""
    batch = len(z)
    hidden = model.initial_hidden(z)
    token = torch.full((batch, 1), BOS_ID, dtype=torch.int64, device=z.device)
    rows = [token]
    done = torch.zeros(batch, dtype=torch.bool, device=z.device)
    for _ in range(model.max_tokens - 1):
        logits, hidden = model.decoder_step(token, z, hidden)
        logits = logits[:, -1].float()
        if temperature is None:
            token = logits.argmax(-1, keepdim=True)
        else:  # drawn on the CPU so a generator gives the same sentences on any device
            probabilities = torch.softmax(logits / temperature, -1).cpu()
            token = torch.multinomial(probabilities, 1, generator=generator).to(z.device)
        token = token.masked_fill(done.unsqueeze(1), PAD_ID)
        rows.append(token)
        done |= token.squeeze(1) == EOS_ID
        if bool(done.all()):
            break
    return torch.cat(rows, dim=1)


def beam_search(model: _Decoder, z: torch.Tensor, width: int) -> torch.Tensor:
    """The most likely sentence for each code by beam search of `width` beams, scored by
    log-probability per token (so short sentences are not favoured just for being short)."""
    if width < 1:
        raise ValueError(f"beam width {width} must be at least 1")
    found = []
    for code in z:
        found.append(_one_beam(model, code.unsqueeze(0), width))
    longest = max(len(f) for f in found)
    out = torch.full((len(found), longest), PAD_ID, dtype=torch.int64, device=z.device)
    for i, row in enumerate(found):
        out[i, : len(row)] = torch.tensor(row, device=z.device)
    return out


def _one_beam(model: _Decoder, z: torch.Tensor, width: int) -> list[int]:
    beams: list[tuple[float, list[int]]] = [(0.0, [BOS_ID])]
    hidden = model.initial_hidden(z)
    finished: list[tuple[float, list[int]]] = []
    for _ in range(model.max_tokens - 1):
        tokens = torch.tensor([[b[1][-1]] for b in beams], device=z.device)
        logits, hidden = model.decoder_step(tokens, z.expand(len(beams), -1), hidden)
        log_probs = torch.log_softmax(logits[:, -1].float(), -1)
        scores = torch.tensor([b[0] for b in beams], device=z.device).unsqueeze(1) + log_probs
        top = scores.flatten().topk(min(width, scores.numel()))
        vocab = log_probs.shape[1]
        next_beams, keep = [], []
        for score, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            beam, token = divmod(index, vocab)
            sequence = [*beams[beam][1], token]
            if token == EOS_ID:
                finished.append((score, sequence))
            else:
                next_beams.append((score, sequence))
                keep.append(beam)
        if not next_beams or len(finished) >= width:
            break
        beams = next_beams
        hidden = hidden[:, keep]
    pool = finished or beams
    return max(pool, key=lambda b: b[0] / len(b[1]))[1]
