"""Finite scalar quantisation with a step size per quality level, and the learned entropy model
over its symbols: the parts of a learned codec that sit between an encoder and a decoder.

Quantisation follows FSQ (Mentzer et al. 2023): each code channel is bounded with tanh and
rounded, with a straight-through gradient. One model serves several rates as Cui et al. 2021's
gain units do: quality level q scales the bounded value by its own learned step count s[q, c]
(so a channel takes at most 2 round(s) + 1 of the `levels` symbols) and the decoder sees the
symbol divided by s again. A low quality uses few, coarse levels; a high one, all of them.

The entropy model is a factorised prior (Balle et al. 2017) made richer by two contexts: one
categorical distribution over the symbols of each (quality, channel, context), where the context
is the symbols of up to `context` channels before it at the same position (after Minnen & Singh
2020's channel conditioning) and, with `spatial = "above"`, the three symbols above it in its
own channel (up-left, up, up-right: a causal context as in Minnen et al. 2018, restricted to the
row above so that a whole row decodes in one vectorised call). It is shared by every position of
the code map, so it holds for images of any size. Its rate is exact at the symbols and, for the
encoder's gradient, linearly interpolated between the two symbols around the continuous value:
the encoder learns which values are cheap, the prior learns the symbols' frequencies (a
cross-entropy).

The contexts index integer tables, not a network's output, so that coding is bit-exact: a
network's probabilities differ in their last bits between machines and thread counts, and a
decoder that rounds one frequency differently from the encoder decodes garbage. Which context
to use was measured on a Fashion-MNIST codec's symbols (docs/journal.md): the row above beat
a checkerboard (He et al. 2021) and the left and upper neighbours.

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
    "SPATIAL_CONTEXTS",
    "ChannelContextPrior",
    "StepQuantiser",
    "channel_contexts",
    "context_count",
    "context_index",
    "integer_frequencies",
]

PRECISION = 16  # bits of the integer frequency tables: each row sums to 2**PRECISION
SATURATION = 3.0  # |gain y| beyond which tanh(gain y) rounds to an end symbol at every step count
SPATIAL_CONTEXTS = ("above", "none")  # what of a channel's own neighbours predicts a symbol


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
    """The channel part of a context: the `previous` channels' symbols at the same positions
    (nearest first; tensors or arrays of one shape) as one index in [0, levels**k):
    sum_j previous[j] * levels**j. 0 for the first channel."""
    index: Any = 0
    for power, plane in enumerate(previous):
        index = index + plane * levels**power
    return index


def _above(plane: Any) -> Any:
    """Integer symbols (..., h, w) (a tensor or an array) -> each position's up-left, up and
    up-right neighbours (three planes of that shape), each as 1 + its symbol, 0 outside the
    map."""
    up_left, up, up_right = plane * 0, plane * 0, plane * 0
    up_left[..., 1:, 1:] = plane[..., :-1, :-1] + 1
    up[..., 1:, :] = plane[..., :-1, :] + 1
    up_right[..., 1:, :-1] = plane[..., :-1, 1:] + 1
    return up_left, up, up_right


def context_count(levels: int, context: int, spatial: str) -> int:
    """How many contexts (table rows) a channel has: levels**context channel contexts, times
    (levels + 1)**3 with the row above (each neighbour a symbol, or outside the map)."""
    return levels**context * ((levels + 1) ** 3 if spatial == "above" else 1)


def channel_contexts(
    previous: Sequence[Any], plane: Any, levels: int, context: int, spatial: str
) -> Any:
    """Each symbol's context index (..., h, w) in one channel, from `previous` (that channel's
    up to `context` channels before it, nearest first) and `plane`, its own symbols (a row's
    context reads only the row above it). Tensors or arrays, integer arithmetic: the entropy
    model and the coder both compute contexts here, so they can never disagree."""
    index = context_index(previous, levels) + plane * 0
    if spatial == "above":
        up_left, up, up_right = _above(plane)
        base = levels + 1
        index = index + levels**context * (up_left + base * (up + base * up_right))
    return index


class ChannelContextPrior(nn.Module):
    """A categorical over `levels` symbols per (quality, channel, context): channel c's symbol at
    a position is predicted from the symbols of up to `context` channels before it at the same
    position (context 0: none) and, with `spatial` = "above", from the three symbols above it in
    channel c (see `channel_contexts`). Shared by every position, so it holds for any image
    size. `frequencies` (Q, C, K, A) int32, K = `context_count(...)`, is its integer table for
    entropy coding (see `refresh`)."""

    frequencies: torch.Tensor

    def __init__(
        self, qualities: int, channels: int, levels: int, context: int, spatial: str = "none"
    ) -> None:
        super().__init__()
        self.levels, self.context, self.spatial = levels, context, spatial
        contexts = context_count(levels, context, spatial)
        self.logits = nn.Parameter(torch.zeros(qualities, channels, contexts, levels))
        self.register_buffer("frequencies", integer_frequencies(self.logits))

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the integer tables from the current logits (after each training step, so
        the saved tables are always those of the saved logits)."""
        self.frequencies.copy_(integer_frequencies(self.logits))

    def _channel(self, symbols: torch.Tensor, c: int) -> torch.Tensor:
        """symbols (B, C, h, w), the channels before c known (and channel c's rows above the
        ones wanted) -> the contexts (B, h, w) of channel c's symbols."""
        previous = [symbols[:, c - j] for j in range(1, self.context + 1) if c - j >= 0]
        return channel_contexts(previous, symbols[:, c], self.levels, self.context, self.spatial)

    def contexts(self, symbols: torch.Tensor) -> torch.Tensor:
        """symbols (B, C, h, w) -> each symbol's context index (B, C, h, w)."""
        return torch.stack([self._channel(symbols, c) for c in range(symbols.shape[1])], dim=1)

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
        """Symbols (n, C, h, w) drawn from the prior of `quality` (0-based): channel by channel
        and, with the row-above context, row by row, as a decoder reads them."""
        _, channels, height, _ = shape
        probabilities = torch.softmax(self.logits[quality].float().cpu(), dim=-1)  # (C, K, A)
        drawn = torch.zeros(shape, dtype=torch.long)
        rows = (
            [slice(r, r + 1) for r in range(height)] if self.spatial == "above" else [slice(None)]
        )
        for c in range(channels):
            for row in rows:
                where = self._channel(drawn, c)[:, row]  # (n, k, w)
                picked = torch.multinomial(
                    probabilities[c][where.flatten()], 1, generator=generator
                )
                drawn[:, c, row] = picked.view(where.shape)
        return drawn
