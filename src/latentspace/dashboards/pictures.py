"""What a logger shows of the model: samples from fixed codes, reconstructions of a fixed batch
of held-out images, and the held-out images' codes for an embedding, each looked at in eval mode
without touching the global random state (a run trains to the same weights with or without them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from PIL import Image
from torch import nn

from latentspace.analysis.evaluate import affordable_encodes
from latentspace.dashboards.records import TrainerView
from latentspace.data import ImageSet, to_float
from latentspace.imaging import image_grid

__all__ = ["EMBEDDING_BUDGET_S", "SAMPLES_SEED", "Pictures", "evaluating", "label_names"]

SAMPLES_SEED = 0  # the codes of the sample grid: the same every epoch and on resume
EMBEDDING_BUDGET_S = 10.0  # the most seconds the end-of-run embedding may spend encoding


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (no batch-norm statistics updated, no dropout) for a look at the model."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


class Pictures:
    """What a logger shows of the model: `samples` images from fixed codes, reconstructions of
    the first `reconstructions` held-out images (the run's validation images, else its first
    training images), codes of up to `embedding` of them.

    The encoder is timed once, at the start: the reconstructions are drawn each epoch only if
    they cost at most `encode_budget_s` or 1% of the first epoch's time (an encoder that is an
    optimisation does not fit), and the embedding gets what EMBEDDING_BUDGET_S affords."""

    def __init__(
        self,
        trainer: TrainerView,
        samples: int,
        reconstructions: int,
        embedding: int,
        encode_budget_s: float,
    ) -> None:
        held = trainer.val_set
        n = max(reconstructions, embedding, 2)
        if held is not None:
            self.images = held.images[:n].cpu()
            self.labels = label_names(held, n)
        else:
            self.images = trainer.train_batches.images[:n].cpu()
            self.labels = None
        self.samples = samples
        self.wanted = min(reconstructions, len(self.images))
        self.encode_budget_s = encode_budget_s
        self.per_second = self._encodes_per_second(trainer) if self.wanted or embedding else 0.0
        self.reconstructions: int | None = None if self.wanted else 0  # decided after epoch 1
        self.batch: torch.Tensor | None = None
        self.embedding = min(embedding, len(self.images), int(self.per_second * EMBEDDING_BUDGET_S))

    def _encodes_per_second(self, trainer: TrainerView) -> float:
        model, probe = trainer.model, to_float(self.images[:2].to(trainer.device))
        with evaluating(model):
            try:
                model.encode(probe[:1])  # warm-up: a first call pays for kernel choices
            except NotImplementedError:
                return 0.0
            return float(affordable_encodes(model, probe, 1.0))

    def reconstruction_count(self, trainer: TrainerView, epoch_seconds: float) -> int:
        """How many reconstructions each epoch shows: decided once, on the first epoch's time."""
        if self.reconstructions is None:
            cost = self.wanted / max(self.per_second, 1e-9)
            fits = cost <= max(self.encode_budget_s, 0.01 * epoch_seconds)
            self.reconstructions = self.wanted if fits else 0
            if not fits and self.per_second > 0 and not trainer.quiet:  # 0: cannot encode
                trainer.log(
                    f"dashboards: encoding {self.wanted} images would take about {cost:.1f} s "
                    f"each epoch ({epoch_seconds:.1f} s of training): no reconstructions"
                )
        return self.reconstructions

    def sample_grid(self, model: Any) -> Image.Image:
        generator = torch.Generator().manual_seed(SAMPLES_SEED)
        return image_grid(model.generate(self.samples, generator=generator).float(), scale=1)

    def reconstruction_grid(self, model: Any, device: torch.device) -> Image.Image:
        """Rows of 8 held-out images, each followed by the row of their reconstructions."""
        if self.batch is None:  # once, on the model's device
            self.batch = to_float(self.images[: self.reconstructions or 0].to(device))
        x = self.batch
        with evaluating(model):
            x_hat = model.decode(model.encode(x)).float()
        rows = [t for i in range(0, len(x), 8) for t in (x[i : i + 8], x_hat[i : i + 8])]
        return image_grid(torch.cat(rows), nrow=min(8, len(x)), scale=1)

    def codes(self, model: Any, device: torch.device) -> torch.Tensor:
        """Codes (N, D) of the first `embedding` images, on the CPU."""
        x = to_float(self.images[: self.embedding])
        with evaluating(model):
            return torch.cat([model.encode(b.to(device)).cpu() for b in x.split(500)])


def label_names(images: ImageSet, n: int) -> list[str] | None:
    if images.labels is None:
        return None
    labels = images.labels[:n].tolist()
    classes = images.classes
    return [classes[i] if classes and 0 <= i < len(classes) else str(i) for i in labels]
