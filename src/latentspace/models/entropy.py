"""Finite scalar quantisation with a step size per quality level, and the learned entropy model
over its symbols: the parts of a learned codec that sit between an encoder and a decoder.

Quantisation follows FSQ (Mentzer et al. 2023): each code channel is bounded with tanh and
rounded, with a straight-through gradient. One model serves several rates as Cui et al. 2021's
gain units do: quality level q scales the bounded value by its own learned step count s[q, c]
(so a channel takes at most 2 round(s) + 1 of the `levels` symbols) and the decoder sees the
symbol divided by s again. A low quality uses few, coarse levels; a high one, all of them.

The entropy model is a factorised prior (Balle et al. 2017) made a little richer: one
categorical distribution over the symbols of each (quality, channel, context), where the context
is the symbols of the previous channels at the same position; it is shared by every position of
the code map, so it holds for images of any size. Its rate is exact at the symbols and, for the encoder's gradient, linearly
interpolated between the two symbols around the continuous value: the encoder learns which
values are cheap, the prior learns the symbols' frequencies (a cross-entropy).

For coding, the prior's probabilities become integer frequency tables (`PRECISION` bits, every
symbol at least 1) kept as a buffer and saved with the run, so an entropy coder in any process
reads the same numbers, whatever torch computes on that machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PRECISION",
    "SATURATION",
    "ChannelContextPrior",
    "StepQuantiser",
    "context_index",
    "integer_frequencies",
]

PRECISION = 16  # bits of the integer frequency tables: each row sums to 2**PRECISION
SATURATION = 3.0  # |gain y| beyond which tanh(gain y) rounds to an end symbol at every step count


def integer_frequencies(logits: torch.Tensor, precision: int = PRECISION) -> torch.Tensor:
    """logits (..., A) -> int32 frequencies (..., A), each >= 1, each row summing to
    2**precision: floor(p * (2**precision - A)) + 1, the rounding remainder given to the most
    likely symbol. Computed in float64 so the table barely depends on float rounding."""
    symbols = logits.shape[-1]
    total = 2**precision
    probabilities = torch.softmax(logits.detach().double(), dim=-1)
    frequencies = torch.floor(probabilities * (total - symbols)).long() + 1
    remainder = total - frequencies.sum(-1, keepdim=True)
    top = probabilities.argmax(-1, keepdim=True)
    frequencies.scatter_add_(-1, top, remainder)
    return frequencies.int()


class StepQuantiser(nn.Module):
    """y (B, C, h, w) -> symbols in {0..levels-1} and their dequantised values, at a quality
    level per image. steps[q, c] lies in (0.5, half]: half = (levels - 1) / 2 symbols either side
    of the middle one."""

    def __init__(self, qualities: int, channels: int, levels: int) -> None:
        super().__init__()
        self.middle = (levels - 1) // 2
        # every level starts fine (half of the symbols to all of them) and the rate term makes
        # the low qualities coarse: imposing coarse steps from the start cost reconstruction
        # that the rate did not ask for
        top = self.middle - 0.05
        start = torch.linspace(max(1.0, self.middle / 2), top, qualities) if qualities > 1 else None
        start = start if start is not None else torch.tensor([top])
        fraction = ((start - 0.5) / (self.middle - 0.5)).clamp(0.02, 0.98)
        raw = torch.logit(fraction)[:, None].repeat(1, channels)
        self.raw_steps = nn.Parameter(raw)  # (Q, C), squashed by `steps`
        # A gain on the code before tanh, learned. Default inits make encoders whose outputs
        # have a standard deviation of 0.03-0.09 (measured on Fashion-MNIST: spatial 0.026,
        # conv 0.045, mlp 0.086), which round to the middle symbol, and a decoder fed only zeros
        # gets no gradient. x3 lets a first step reach the decoder (tests/test_models.py); x10
        # saturated tanh and stalled 3 of 5 seeds of its overfit-one-batch test, x3 none.
        self.log_gain = nn.Parameter(torch.full((channels,), math.log(3.0)))

    def steps(self, quality: torch.Tensor) -> torch.Tensor:
        """quality (B,) or 0-dim long -> steps (B or 1, C, 1, 1), each in (0.5, half). A 0-dim
        quality broadcasts over the batch (a traced graph then keeps its batch size free)."""
        squashed = torch.sigmoid(self.raw_steps[quality])
        steps = 0.5 + (self.middle - 0.5) * squashed
        return steps.reshape(-1, steps.shape[-1], 1, 1)

    def forward(
        self, y: torch.Tensor, quality: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """y (B, C, h, w), quality (B,) or 0-dim -> (decoder input (B, C, h, w) with a straight-through
        gradient, continuous symbol coordinate in [0, levels - 1] (for the rate's gradient),
        symbols (B, C, h, w) long)."""
        steps = self.steps(quality)
        gain = self.log_gain.exp()[None, :, None, None]
        bounded = torch.tanh(y * gain) * steps  # |bounded| < steps < half: within the alphabet
        rounded = torch.round(bounded)
        straight = bounded + (rounded - bounded).detach()
        symbols = (rounded.detach() + self.middle).long()
        return straight / steps, bounded + self.middle, symbols

    def overshoot(self, y: torch.Tensor) -> torch.Tensor:
        """(B,) per image: sum of (|gain y| - SATURATION)^2 over the code where tanh is flat.

        Why: past |gain y| ~ 2.5 tanh rounds to the outermost symbol and its gradient vanishes,
        but Adam scales a vanishing, consistent gradient back up to full steps, and with no
        normalisation layer the encoder's output then grows without bound (on photo crops, from
        std 0.03 to 30-4000 within 40 steps at lr 3e-4..2e-3; every symbol at an end, the
        reconstruction worse than each image's mean colour). This term is zero inside the useful
        range and pulls saturated values back, so the decoder's gradient is heard again."""
        gain = self.log_gain.exp()[None, :, None, None]
        beyond = F.relu((y * gain).abs() - SATURATION)
        return beyond.pow(2).flatten(1).sum(1)

    def dequantise(self, symbols: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        """symbols (B, C, h, w) long -> the decoder's input (B, C, h, w)."""
        return (symbols.float() - self.middle) / self.steps(quality)


def context_index(previous: Sequence[Any], levels: int) -> Any:
    """The context of one channel's symbols: its `previous` channels' symbols at the same
    positions (nearest first; tensors or arrays of one shape) as one index in [0, levels**k):
    sum_j previous[j] * levels**j. 0 for the first channel. The entropy model and the coder both
    compute it here, so they can never disagree."""
    index: Any = 0
    for power, plane in enumerate(previous):
        index = index + plane * levels**power
    return index


class ChannelContextPrior(nn.Module):
    """A categorical over `levels` symbols per (quality, channel, context): channel c's symbol at
    a position is predicted from the symbols of up to `context` channels before it at the same
    position (a cheap channel-wise context, after Minnen & Singh 2020's channel conditioning;
    context 0 is the factorised prior). Shared by every position, so it holds for any image
    size, and every channel of an image decodes in one call. `frequencies` (Q, C, K, A) int32,
    K = levels**context, is its integer table for entropy coding (see `refresh`)."""

    frequencies: torch.Tensor

    def __init__(self, qualities: int, channels: int, levels: int, context: int) -> None:
        super().__init__()
        self.levels, self.context = levels, context
        contexts = levels**context
        self.logits = nn.Parameter(torch.zeros(qualities, channels, contexts, levels))
        self.register_buffer("frequencies", integer_frequencies(self.logits))

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the integer tables from the current logits (after each training step, so
        the saved tables are always those of the saved logits)."""
        self.frequencies.copy_(integer_frequencies(self.logits))

    def contexts(self, symbols: torch.Tensor) -> torch.Tensor:
        """symbols (B, C, h, w) -> each symbol's context index (B, C, h, w)."""
        planes = [
            context_index(
                [symbols[:, c - j] for j in range(1, self.context + 1) if c - j >= 0], self.levels
            )
            * torch.ones_like(symbols[:, 0])
            for c in range(symbols.shape[1])
        ]
        return torch.stack(planes, dim=1)

    def rate(
        self, coordinate: torch.Tensor, symbols: torch.Tensor, quality: torch.Tensor
    ) -> torch.Tensor:
        """Bits per image (B,) of `symbols` (B, C, h, w): exact in value; the gradient reaches
        the logits through the exact code lengths and the encoder through `coordinate` (the
        continuous position between two symbols), by linear interpolation of the lengths
        (contexts are taken as given). quality: (B,) or 0-dim.

        The code lengths are looked up in the flattened (Q, C, K, A) table by one index per
        symbol. Gathering each position's whole row of A lengths first, as the first version
        did, made (B, C, h*w, A) tensors and their scatter-add backward: 3x slower on a photo's
        code map (bench/journal.py --step)."""
        _, channels, contexts, levels = self.logits.shape
        bits = (-F.log_softmax(self.logits.float(), dim=-1) / math.log(2)).flatten()
        where = self.contexts(symbols.detach()).flatten(2)  # (B, C, N)
        channel = torch.arange(channels, device=symbols.device).reshape(1, -1, 1)
        row = quality.reshape(-1, 1, 1) * channels + channel  # (B or 1, C, 1)
        start = (row * contexts + where) * levels  # each symbol's row of A lengths
        exact = bits[start + symbols.flatten(2)]
        fixed = bits.detach()
        position = coordinate.flatten(2).clamp(0, levels - 1)
        below = position.detach().floor().clamp(max=levels - 2).long()
        share = position - below
        low, high = fixed[start + below], fixed[start + below + 1]
        between = (1 - share) * low + share * high
        return (exact + between - between.detach()).flatten(1).sum(1)

    @torch.no_grad()
    def sample(
        self, quality: int, shape: tuple[int, int, int, int], generator: torch.Generator | None
    ) -> torch.Tensor:
        """Symbols (n, C, h, w) drawn from the prior of `quality` (0-based), channel by channel."""
        n, channels, height, width = shape
        probabilities = torch.softmax(self.logits[quality].float().cpu(), dim=-1)  # (C, K, A)
        drawn: list[torch.Tensor] = []
        for c in range(channels):
            previous = [drawn[c - j] for j in range(1, self.context + 1) if c - j >= 0]
            where = context_index(previous, self.levels) * torch.ones(n * height * width).long()
            rows = probabilities[c][where]  # (n*h*w, A)
            drawn.append(torch.multinomial(rows, 1, generator=generator)[:, 0])
        return torch.stack(drawn).view(channels, n, height, width).transpose(0, 1).contiguous()
