"""`bench/journal.py --step`: the milliseconds of one training step of the codec, now against its
first implementation, in one process, so the speed-up is a ratio that the machine's load
affects alike.

- first: the decoder's last doubling a transposed convolution followed by a 3x3 convolution at
  full size (`model.upsample=transposed`), and the rate's code lengths gathered as whole rows of
  the table per position (the first `ChannelContextPrior.rate`, kept below as the baseline).
- now: the sub-pixel last doubling and the flat-index rate (models/spatial.py, entropy.py).
- networks alone: the same encoder and decoder trained on the squared error with no quantiser
  and no entropy model: what the codec's own parts add to a step.

Variants run in turns (round-robin), each timed over a few steps, and the median is printed.
"""

from __future__ import annotations

import math
import statistics
import time
import types
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

import latentspace as ls
from latentspace.models import build_model
from latentspace.models.entropy import ChannelContextPrior


def first_rate(
    self: ChannelContextPrior,
    coordinate: torch.Tensor,
    symbols: torch.Tensor,
    quality: torch.Tensor,
) -> torch.Tensor:
    """The first implementation of `ChannelContextPrior.rate` (commit 352659f), the baseline:
    each position's whole row of code lengths is gathered, (B, C, N, A), then the symbol's."""
    table = -F.log_softmax(self.logits[quality].float(), dim=-1) / math.log(2)  # (B,C,K,A)
    where = self.contexts(symbols.detach()).flatten(2)  # (B, C, N)
    bits = table.gather(2, where[..., None].expand(-1, -1, -1, self.levels))  # (B,C,N,A)
    exact = bits.gather(3, symbols.flatten(2)[..., None])[..., 0]
    fixed = bits.detach()
    position = coordinate.flatten(2).clamp(0, self.levels - 1)
    below = position.detach().floor().clamp(max=self.levels - 2).long()
    share = position - below
    low = fixed.gather(3, below[..., None])[..., 0]
    high = fixed.gather(3, below[..., None] + 1)[..., 0]
    between = (1 - share) * low + share * high
    return (exact + between - between.detach()).flatten(1).sum(1)


def _codec(
    overrides: Sequence[str], shape: tuple[int, int, int], first: bool
) -> Callable[[torch.Tensor], object]:
    config = ls.apply_overrides(
        ls.default_config("fsq", device="cpu"),
        [*overrides, *(["model.upsample=transposed"] if first else [])],
    )
    model: object = build_model(config.model, shape, config.train)
    if first:
        prior = model.prior  # type: ignore[attr-defined]
        prior.rate = types.MethodType(first_rate, prior)
    optimizers = model.configure_optimizers()  # type: ignore[attr-defined]
    return lambda x: model.training_step(x, optimizers)  # type: ignore[attr-defined]


def _networks_alone(
    overrides: Sequence[str], shape: tuple[int, int, int]
) -> Callable[[torch.Tensor], object]:
    config = ls.apply_overrides(ls.default_config("fsq", device="cpu"), overrides)
    model = build_model(config.model, shape, config.train)
    encoder, decoder = model.encoder, model.decoder
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)

    def step(x: torch.Tensor) -> object:
        x_hat = torch.sigmoid(decoder(encoder(x)))
        loss = (x_hat - x).pow(2).flatten(1).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def time_steps(
    overrides: Sequence[str],
    shape: tuple[int, int, int],
    batch: int,
    rounds: int,
    steps: int,
) -> dict[str, float]:
    """Median ms per step of each variant on random images (B, *shape)."""
    torch.manual_seed(0)
    x = torch.rand(batch, *shape).contiguous(memory_format=torch.channels_last)
    variants = {
        "first": _codec(overrides, shape, first=True),
        "now": _codec(overrides, shape, first=False),
        "networks alone": _networks_alone(overrides, shape),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for step in variants.values():  # warm-up: oneDNN picks its kernels on the first calls
        for _ in range(2):
            step(x)
    for _ in range(rounds):
        for name, step in variants.items():
            started = time.perf_counter()
            for _ in range(steps):
                step(x)
            times[name].append((time.perf_counter() - started) / steps * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def report(
    title: str, overrides: Sequence[str], shape: tuple[int, int, int], batch: int, quick: bool
) -> None:
    rounds, steps = (2, 2) if quick else (5, 5)
    ms = time_steps(overrides, shape, batch, rounds, steps)
    c, h, w = shape
    print(f"{title}: batch {batch} of {c}x{h}x{w}, {rounds} rounds of {steps} steps, median")
    for name, value in ms.items():
        print(f"  {name:15} {value:8.1f} ms/step  {value / batch:7.2f} ms/image")
    print(
        f"  now is x{ms['first'] / ms['now']:.2f} as fast as the first implementation; "
        f"the codec's own parts add {100 * (ms['now'] / ms['networks alone'] - 1):.0f}% to the "
        "networks alone"
    )
