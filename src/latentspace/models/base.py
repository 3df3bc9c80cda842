"""`GenerativeModel`: what every model family offers the trainer and the user.

The model owns its optimisation step (as in Lightning's manual optimisation): the trainer asks it
for its optimizers once, then hands it batches. That is what lets one trainer serve an
autoencoder, a VAE and a GAN without knowing which it drives.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, NamedTuple, Protocol

import torch
from torch import nn

from latentspace.distributed import average_gradients
from latentspace.errors import DataError
from latentspace.models.layers import weight_penalties
from latentspace.settings import TrainConfig

__all__ = ["GenerativeModel", "LikelihoodBound", "LossTerms", "diverging_lr", "make_optimizer"]

_Options = Callable[[TrainConfig, tuple[float, float]], dict[str, Any]]
# optimizer name (settings.OPTIMIZERS) -> (class, the options it takes from TrainConfig, the
# learning rate from which it usually diverges on these models: the trainer's advice names it)
_OPTIMIZERS: dict[str, tuple[Any, _Options, float]] = {
    "sgd": (torch.optim.SGD, lambda train, betas: {"momentum": train.momentum}, 0.1),
    "adam": (torch.optim.Adam, lambda train, betas: {"betas": betas}, 0.01),
    "adamw": (torch.optim.AdamW, lambda train, betas: {"betas": betas}, 0.01),
}


def _for_use(method: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """`encode` / `decode` as a user calls them: outside training (the model in eval mode) and
    with no input that asks for gradients, they build no graph, so `model.encode(x).numpy()`
    works. Training (train mode) and a caller that differentiates with respect to its input (GAN
    inversion: decode(z) with z requiring grad; an exported graph's probe) keep the graph."""
    if getattr(method, "_for_use", False):
        return method

    @functools.wraps(method)
    def wrapper(self: GenerativeModel, *args: Any, **kwargs: Any) -> torch.Tensor:
        wanted = self.training or any(
            isinstance(a, torch.Tensor) and a.requires_grad for a in (*args, *kwargs.values())
        )
        if wanted or not torch.is_grad_enabled():
            return method(self, *args, **kwargs)
        with torch.no_grad():
            return method(self, *args, **kwargs)

    wrapper._for_use = True  # type: ignore[attr-defined]
    return wrapper


def diverging_lr(optimizer: str) -> float:
    """The learning rate from which `optimizer` usually diverges (the advice after a divergence)."""
    return float(_OPTIMIZERS[optimizer][2])


class LossTerms(Protocol):
    """What `GenerativeModel.loss` returns: named terms (a NamedTuple), at least `total`."""

    @property
    def total(self) -> torch.Tensor: ...


class LikelihoodBound(NamedTuple):
    """A family's bound on log p(x), per image, in nats (`GenerativeModel.likelihood_bound`).

    nll: (B,) -log p(x) bounded with K importance samples (IWAE, Burda et al. 2016);
    negative_elbo: (B,); kl: (B, D) the KL of each latent dimension from the prior;
    code: (B, D) the deterministic code (the posterior mean), for active units and
    reconstructions."""

    nll: torch.Tensor
    negative_elbo: torch.Tensor
    kl: torch.Tensor
    code: torch.Tensor


def make_optimizer(
    params: Iterable[nn.Parameter],
    train: TrainConfig,
    lr: float | None = None,
    betas: tuple[float, float] | None = None,
) -> torch.optim.Optimizer:
    """The optimizer `train.optimizer` names, over `params`.

    The fused implementations are used where torch has them: on one CPU thread fused Adam takes
    0.8 ms per step on the 784-400-20 VAE against 5-9 ms for the per-tensor default (measured
    with bench/train_speed.py's model), which is a third of the whole training step.
    """
    lr = train.lr if lr is None else lr
    params = list(params)
    cls, take_options, _ = _OPTIMIZERS[train.optimizer]
    options = take_options(train, train.betas if betas is None else betas)
    try:
        return cls(params, lr=lr, weight_decay=train.weight_decay, fused=True, **options)
    except (RuntimeError, TypeError):  # fused not available for this device or dtype
        return cls(params, lr=lr, weight_decay=train.weight_decay, **options)


class GenerativeModel(nn.Module):
    """Base class of every model family. Images are (B, C, H, W) floats in [0, 1]; codes are
    (B, D).

    What a family can do is declared here, never inferred by a caller from its class or name:
    `monitor` (the validation term that early stopping and tuning minimise, or None), `loss`
    (its training loss on a batch, where it has one; `has_loss()`) and `likelihood_bound` (a bound
    on log p(x), where it defines one; `has_likelihood()`); both say so without building a model.
    `encode` and `decode` check their input with `check_images` / `check_codes`, so a wrong shape
    is a one-line error rather than a matrix-size message from deep inside a network."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    # The validation term that early stopping and tuning minimise. None for a family whose losses
    # no single player minimises (a GAN's d_loss + g_loss): patience is refused and tuning scores
    # samples instead.
    monitor: ClassVar[str | None] = "total"
    # True: `encode` is one forward pass of a network (cheap, and a graph can hold it: ONNX export).
    # False: an optimisation per image (GAN inversion), slow, and not exportable.
    encode_is_network: ClassVar[bool] = True
    # What the family reads and writes: "images" ((B, C, H, W) floats in [0, 1], the data shape
    # (C, H, W)) or "text" (sentences: encode takes a list of strings or (B, T) token ids and
    # decode returns a list of strings; the data shape is (1, max tokens, vocabulary size)).
    # The commands print sentences where they would save pictures; `models.for_data` refuses a
    # family that cannot read the training data.
    inputs: ClassVar[str] = "images"
    # what to try when the code collapses (diagnostics' posterior-collapse warning says it);
    # empty: the warning's own advice (the KL weight and its warm-up)
    collapse_advice: ClassVar[str] = ""
    # buffers added after runs were first saved: a weights file without one loads, and the buffer
    # keeps its initial value (a counter that only sets a phase, never a learned weight)
    optional_state: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A family's own `encode` and `decode` return codes and images without a graph when
        used (see `_for_use`), as the base class's `generate` and `reconstruct` do."""
        super().__init_subclass__(**kwargs)
        for name in ("encode", "decode"):
            if name in cls.__dict__:
                setattr(cls, name, _for_use(cls.__dict__[name]))

    def __init__(
        self, config: Any, image_shape: tuple[int, int, int], train: TrainConfig | None = None
    ) -> None:
        """config: the family's config dataclass; image_shape: (C, H, W); train: the settings its
        optimizers, precision, penalties and gradient clipping follow (default `TrainConfig()`).
        They are fixed here: a model trains only as it was built to."""
        super().__init__()
        config.validate()
        self.config = config
        self.image_shape = tuple(image_shape)
        self.train_config = train if train is not None else TrainConfig()
        self.epoch = 0  # set by the trainer at the start of every epoch
        self.epochs = 1

    @classmethod
    def has_likelihood(cls) -> bool:
        """Whether the family defines `likelihood_bound`."""
        return cls.likelihood_bound is not GenerativeModel.likelihood_bound

    @classmethod
    def has_loss(cls) -> bool:
        """Whether the family defines `loss` (one differentiable training loss)."""
        return cls.loss is not GenerativeModel.loss

    def check_images(self, x: torch.Tensor) -> None:
        """A one-line error unless x is a (B, C, H, W) batch of this model's image shape."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise DataError(
                f"this {self.name} model takes images of shape (B, {', '.join(map(str, self.image_shape))})"
                f", got {tuple(x.shape)}"
            )

    def check_codes(self, z: torch.Tensor) -> None:
        """A one-line error unless z is a (B, latent_dim) batch of codes."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise DataError(
                f"this {self.name} model takes codes of shape (B, {self.latent_dim}), "
                f"got {tuple(z.shape)}"
            )

    @property
    def latent_dim(self) -> int:
        return int(self.config.latent_dim)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- training: called by the trainer -------------------------------------------------
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers `training_step` takes, as the model's training settings say: one over
        all parameters; a GAN returns two."""
        return [make_optimizer(self.parameters(), self.train_config)]

    def training_step(
        self, x: torch.Tensor, optimizers: list[torch.optim.Optimizer]
    ) -> dict[str, torch.Tensor]:
        """One optimisation step on batch x; returns the named loss terms as detached 0-dim
        tensors on the model's device. The trainer reads them to the host only every few steps,
        so a GPU is never made to wait for a number after every batch."""
        raise NotImplementedError

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision for a forward pass when `train.precision` is "bf16": matrix products
        and convolutions in bfloat16, losses and weights in float32 (torch.autocast's op lists).
        Backward passes run outside it, as torch advises. A no-op for "fp32"."""
        if self.train_config.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def validation_step(self, x: torch.Tensor) -> dict[str, float]:
        """The same named terms as training_step, without updating anything; they include
        `monitor` when the family declares one."""
        raise NotImplementedError

    def loss(self, x: torch.Tensor) -> LossTerms:
        """The training loss on batch x as named terms averaged over the batch (summed over
        pixels), differentiable. A family without one loss (a GAN's two players) raises
        NotImplementedError."""
        raise NotImplementedError(f"a {self.name} model has no single training loss")

    def prior_metrics(self, codes: torch.Tensor) -> dict[str, float]:
        """Numbers on how well the family's prior covers `codes` (N, D) of held-out images, for
        `evaluate`; {} when the prior is fixed (N(0, I)) rather than fitted."""
        return {}

    def likelihood_bound(
        self,
        x: torch.Tensor,
        samples: int,
        *,
        generator: torch.Generator | None = None,
        chunk_rows: int = 4096,
        precision: str = "fp32",
    ) -> LikelihoodBound:
        """A bound on log p(x) per image with `samples` importance samples (see LikelihoodBound);
        families without a likelihood do not define it (`has_likelihood()`)."""
        raise NotImplementedError(f"a {self.name} model defines no likelihood")

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.epoch, self.epochs = epoch, epochs

    def epoch_warnings(self, record: dict[str, Any]) -> list[str]:
        """Plain-language warnings about the epoch just finished (each with its measured number);
        the trainer logs them and stores them in the record under "warnings"."""
        return []

    def on_train_end(self, batches: Iterable[torch.Tensor]) -> None:
        """Called once after the last epoch with the training batches (AE fits its prior here)."""

    def penalties(self, network: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(l1 * sum|w|, l2 * sum w^2) with the run's coefficients over `network` (default: the
        whole model; a GAN penalises each player in its own loss); zeros when both are off."""
        train = self.train_config
        if train.l1 == 0 and train.l2 == 0:
            zero = torch.zeros((), device=self.device)
            return zero, zero
        l1, l2 = weight_penalties(self if network is None else network)
        return train.l1 * l1, train.l2 * l2

    def optimizer_step(
        self,
        optimizer: torch.optim.Optimizer,
        loss: torch.Tensor,
        parameters: Iterable[nn.Parameter] | None = None,
    ) -> None:
        """Backpropagate `loss` and take one step, clipping the gradient norm when configured.
        Under torchrun the gradients of `parameters` are first averaged over the processes
        (`distributed.average_gradients`), so each optimizer steps on its own players' mean."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = list(parameters) if parameters is not None else list(self.parameters())
        average_gradients(params)
        if self.train_config.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, self.train_config.grad_clip)
        optimizer.step()

    # ---- use: encode, decode, generate ----------------------------------------------------
    # A family's encode and decode are wrapped when its class is made (`__init_subclass__`): in
    # eval mode, on inputs that do not require grad, they return tensors without a graph.
    def encode(
        self, x: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x: (B, C, H, W) in [0, 1] -> z: (B, D). Deterministic unless sample=True. In eval
        mode the codes carry no graph unless x requires grad (train mode: they do)."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, D) -> images (B, C, H, W) in [0, 1]. In eval mode the images carry no graph
        unless z requires grad (train mode: they do)."""
        raise NotImplementedError

    def sample_latent(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes from the model's prior: (n, D)."""
        z = torch.randn(n, self.latent_dim, generator=generator)
        return z.to(self.device)

    @torch.no_grad()
    def generate(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n new images (n, C, H, W) in [0, 1] decoded from the prior."""
        was_training = self.training
        self.eval()
        images = self.decode(self.sample_latent(n, generator=generator))
        self.train(was_training)
        return images

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.training
        self.eval()
        images = self.decode(self.encode(x))
        self.train(was_training)
        return images
