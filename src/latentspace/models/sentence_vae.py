"""Sentence VAE (Bowman et al. 2016): the language model's decoder (language_model.py) given a
code z.

The VAE reads a sentence with a recurrent encoder (GRU or LSTM, both directions) into a Gaussian
posterior over a code z, and the autoregressive GRU decoder, conditioned on z through its first
hidden state and on every input step, writes the sentence back token by token. Three remedies
for posterior collapse (the decoder learning to ignore z), each a setting: KL annealing, linear
(Bowman et al. 2016) or cyclical (Fu et al. 2019); word dropout on the decoder's inputs (Bowman
et al. 2016, section 3.2); free bits, a floor on each dimension's KL (Kingma et al. 2016).
And one that makes the code learn the sentence faster: the bag-of-words loss (Zhao et al. 2017),
a second head that predicts every word of the sentence, in any order, from z alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from latentspace.data.text import EOS_ID, PAD_ID
from latentspace.errors import ConfigError
from latentspace.models.base import LikelihoodBound
from latentspace.models.language_model import LanguageModel, LanguageModelConfig
from latentspace.models.vae import gaussian_kl, iwae_bound
from latentspace.settings import TrainConfig

__all__ = ["LanguageModel", "LanguageModelConfig", "SentenceVAE", "SentenceVAEConfig"]

KL_SCHEDULES = ("none", "linear", "cyclical")
CELLS = ("gru", "lstm")


@dataclasses.dataclass(frozen=True)
class SentenceVAEConfig(LanguageModelConfig):
    # settings added after runs were saved, with the value such a run trained with (run_config
    # fills them in when a saved config.json lacks them, so older runs still load)
    SAVED_BEFORE: ClassVar[dict[str, Any]] = {"encoder_size": 0}

    name: str = "sentence_vae"
    latent_dim: int = 32
    cell: str = "gru"  # the encoder's recurrent cell: gru | lstm
    # units of each encoder direction (0: hidden_size). The encoder only has to summarise the
    # sentence into the code, and every unit of it slows training against the language model:
    # one training step on fortunes (1 thread) took 1.07x the LM's at 64 units, 1.41x at 128,
    # 2.16x at 256
    encoder_size: int = 64
    # The defaults below are the recipe whose NLL bound beat the matched LM's on fortunes
    # (docs/text.md, bench/text_vae.py): no word dropout (at 0.4 the decoder was a weaker LM at
    # test time by about its KL, and the VAE lost by 8.6 nats), free bits to keep the code in
    # use instead, and linear annealing that ends while training still has far to go
    word_dropout: float = 0.0
    kl_schedule: str = "linear"  # none | linear | cyclical
    # linear: steps until the KL weight reaches beta; cyclical: steps per cycle, the weight
    # rising over the first half and held at beta over the second (Fu et al. 2019, R = 0.5)
    kl_steps: int = 1500
    # nats per latent dimension below which its KL is not pushed down: 0.2 x 32 dimensions
    # holds the KL at >= 6.4 nats a sentence while training
    free_bits: float = 0.2
    beta: float = 1.0  # weight of the KL term once annealed
    # weight of the bag-of-words loss (Zhao et al. 2017): -sum over the sentence's tokens of
    # log softmax(W z), a training-only term beside the ELBO that gives the encoder a direct
    # gradient to put the words in the code (0: off, and no head is built)
    bow_weight: float = 0.0
    # a skip connection from z to the decoder's vocabulary logits at every step (the skip-VAE
    # of Dieng et al. 2019, at the output layer): the code can favour the sentence's words
    # directly instead of only through the recurrent state
    skip_code: bool = False

    def _validate_code(self) -> None:
        if self.latent_dim < 1:
            raise ConfigError(f"model.latent_dim = {self.latent_dim} must be at least 1")
        if self.cell not in CELLS:
            raise ConfigError(f"model.cell = {self.cell!r} is not one of: {', '.join(CELLS)}")
        if self.kl_schedule not in KL_SCHEDULES:
            raise ConfigError(
                f"model.kl_schedule = {self.kl_schedule!r} is not one of: {', '.join(KL_SCHEDULES)}"
            )
        if self.kl_steps < 1:
            raise ConfigError(f"model.kl_steps = {self.kl_steps} must be at least 1")
        if self.encoder_size < 0:
            raise ConfigError(f"model.encoder_size = {self.encoder_size} must be 0 or more")
        if self.free_bits < 0 or self.beta < 0:
            raise ConfigError("model.free_bits and model.beta must be 0 or more")
        if self.bow_weight < 0:
            raise ConfigError(f"model.bow_weight = {self.bow_weight} must be 0 or more")


class SentenceVAE(LanguageModel):
    """Bowman et al. 2016: a recurrent encoder -> N(mu, sigma^2) -> the conditioned decoder."""

    name = "sentence_vae"
    config_class = SentenceVAEConfig
    config: SentenceVAEConfig
    collapse_advice = (
        "try word dropout (--set model.word_dropout=0.5), free bits (--set model.free_bits=0.5) "
        "or cyclical KL annealing (--set model.kl_schedule=cyclical)"
    )

    def __init__(
        self,
        config: SentenceVAEConfig,
        image_shape: tuple[int, int, int],
        train: TrainConfig | None = None,
    ) -> None:
        super().__init__(config, image_shape, train)
        cell = nn.GRU if config.cell == "gru" else nn.LSTM
        width = config.encoder_size or config.hidden_size
        # named "encoder" so diagnostics find the layer that outputs the code
        self.encoder = nn.ModuleDict(
            {
                "rnn": cell(config.embedding_dim, width, batch_first=True, bidirectional=True),
                "posterior": nn.Linear(2 * width, 2 * config.latent_dim),
            }
        )
        # the bag-of-words head: only when it is used, so runs without it keep their weights' names
        self.bow = nn.Linear(config.latent_dim, self.vocab_size) if config.bow_weight > 0 else None
        if config.skip_code:
            self.code_to_output = nn.Linear(config.latent_dim, self.vocab_size)
        # optimisation steps taken: the KL schedule's clock, saved with the weights so a resumed
        # run anneals exactly as an uninterrupted one
        self.steps: torch.Tensor
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    def code_posterior(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = (ids != PAD_ID).sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embedding(ids), lengths, batch_first=True, enforce_sorted=False
        )
        _, last = self.encoder["rnn"](packed)
        hidden = last[0] if isinstance(last, tuple) else last  # an LSTM's (h, c)
        both = torch.cat([hidden[0], hidden[1]], dim=1)  # forward and backward directions
        mu, logvar = self.encoder["posterior"](both).float().chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)  # clamp keeps exp() finite

    def auxiliary_loss(self, ids: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """bow_weight x the bag-of-words loss, nats per sentence averaged over the batch: every
        token after BOS but EOS, predicted from z by one softmax over the vocabulary."""
        if self.bow is None or not self.training:
            return z.new_zeros(())
        log_probs = torch.log_softmax(self.bow(z).float(), dim=1)  # (B, V)
        words = ids[:, 1:]
        keep = (words != PAD_ID) & (words != EOS_ID)
        picked = log_probs.gather(1, words) * keep
        return -self.config.bow_weight * picked.sum(1).mean()

    @property
    def kl_weight(self) -> float:
        """beta times the schedule's factor at this step; beta outside training."""
        return self.scheduled_kl_weight() if self.training else self.config.beta

    def training_signals(self, terms: Mapping[str, float]) -> dict[str, float]:
        """The KL weight the next step trains with: the diagnostics then know the first step's
        loss weighed the KL differently from validation (see diagnostics.loss_rules._diverged)."""
        return {"kl_weight": self.scheduled_kl_weight()}

    def scheduled_kl_weight(self) -> float:
        config, step = self.config, int(self.steps)
        if config.kl_schedule == "none":
            return config.beta
        if config.kl_schedule == "linear":
            return config.beta * min(1.0, (step + 1) / config.kl_steps)
        phase = (step % config.kl_steps) / config.kl_steps
        return config.beta * min(1.0, phase / 0.5)

    def after_step(self) -> None:
        self.steps.add_(1)

    @torch.no_grad()
    def likelihood_bound(
        self,
        x: torch.Tensor,
        samples: int,
        *,
        generator: torch.Generator | None = None,
        chunk_rows: int = 4096,
        precision: str = "fp32",
    ) -> LikelihoodBound:
        """The importance-weighted bound with K=`samples` posterior draws (Burda et al. 2016)
        and the ELBO; precision "bf16" runs the decoder's K passes under bfloat16 autocast."""
        ids = self.token_ids(x)
        mu, logvar = self.code_posterior(ids)

        def log_likelihood(z: torch.Tensor) -> torch.Tensor:
            s, b, d = z.shape
            repeated = ids.unsqueeze(0).expand(s, *ids.shape).reshape(s * b, -1)
            with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                nll = self.sentence_nll(repeated, z.reshape(s * b, d))
            return -nll.float().reshape(s, b)

        rows = max(1, chunk_rows // 8)  # a sentence's logits (T, V) are many images' pixels
        bound, elbo = iwae_bound(
            mu, logvar, log_likelihood, samples, chunk_rows=rows, generator=generator
        )
        return LikelihoodBound(-bound, -elbo, gaussian_kl(mu, logvar), mu)
