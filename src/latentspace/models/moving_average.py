"""The generator average: an exponential moving average of the generator's weights, which samples
better than the generator being trained (Karras et al. 2018, Brock et al. 2019), and its "standing
statistics": batch-norm statistics measured anew for the averaged weights (Brock et al. 2019,
appendix C.1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

__all__ = ["standing_statistics", "update_moving_average"]


@torch.no_grad()
def update_moving_average(
    average: nn.Module, current: nn.Module, updates: torch.Tensor, decay: float
) -> None:
    """average <- d average + (1 - d) current for the weights, with d = min(decay, (1 + t) /
    (10 + t)) after t = `updates` earlier updates (so early averages do not hold on to the random
    initial weights); buffers (batch norm statistics) are copied."""
    t = updates.to(torch.float32)
    d = torch.clamp((1.0 + t) / (10.0 + t), max=decay)
    for averaged, weights in zip(average.parameters(), current.parameters(), strict=True):
        averaged.lerp_(weights, 1.0 - d)
    for kept, buffer in zip(average.buffers(), current.buffers(), strict=True):
        kept.copy_(buffer)


@torch.no_grad()
def standing_statistics(
    network: nn.Module,
    sample_codes: Callable[[int, torch.Generator], torch.Tensor],
    batches: int,
    batch_size: int,
) -> None:
    """Set the batch-norm statistics of `network` (a generator) to their mean over `batches`
    batches of `batch_size` codes from `sample_codes(n, generator)`, drawn from a fixed seed
    ("standing statistics", Brock et al. 2019, appendix C.1), with torch's `update_bn`. Training
    leaves the statistics of its last few batches (momentum 0.1), and a moving average copies the
    trained generator's, which were measured with other weights. A network without batch norm
    is left as it is, and no codes are drawn."""
    seeded = torch.Generator().manual_seed(0)
    codes = (sample_codes(batch_size, seeded) for _ in range(batches))  # drawn only when needed
    update_bn(codes, network)
