"""Sentence VAE (Bowman et al. 2016) and the same decoder without a code as a language model.

The VAE reads a sentence with a recurrent encoder (GRU or LSTM, both directions) into a Gaussian
posterior over a code z, and an autoregressive GRU decoder, conditioned on z through its first
hidden state and on every input step, writes the sentence back token by token. Three remedies
for posterior collapse (the decoder learning to ignore z), each a setting: KL annealing, linear
(Bowman et al. 2016) or cyclical (Fu et al. 2019); word dropout on the decoder's inputs (Bowman
et al. 2016, section 3.2); free bits, a floor on each dimension's KL (Kingma et al. 2016). The
language model `lm` is the decoder alone: the baseline the VAE's likelihood is compared with.

Inputs are sentences (a list of strings, tokenized with the run's own tokenizer) or token ids
(B, T) int64 as `data.text` makes them: BOS ... EOS padded with PAD_ID. The data shape is
(1, max tokens, vocabulary size). All losses are in nats per sentence, averaged over the batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from latentspace.data.text import BOS_ID, PAD_ID, UNK_ID, TextTokenizer
from latentspace.errors import ConfigError, DataError
from latentspace.models.base import GenerativeModel, LikelihoodBound
from latentspace.models.layers import check_finite
from latentspace.models.text_decoding import beam_search, step_by_step
from latentspace.models.vae import gaussian_kl, iwae_bound
from latentspace.settings import TrainConfig

__all__ = ["LanguageModel", "LanguageModelConfig", "SentenceVAE", "SentenceVAEConfig"]

KL_SCHEDULES = ("none", "linear", "cyclical")
CELLS = ("gru", "lstm")
Sentences = Sequence[str] | torch.Tensor


@dataclasses.dataclass(frozen=True)
class LanguageModelConfig:
    """The decoder's settings, which the VAE shares; a language model has no code (no
    latent_dim), so switching a config between the two families keeps what they share."""

    name: str = "lm"
    embedding_dim: int = 256
    hidden_size: int = 512  # the decoder GRU's units
    dropout: float = 0.0  # on the decoder's outputs before the vocabulary layer
    word_dropout: float = 0.0  # share of decoder input tokens replaced by UNK while training
    # the run's tokenizer as JSON (set from the training data; loading it runs no code)
    tokenizer: str = ""

    def validate(self) -> None:
        check_finite(self, "model")
        for key in ("embedding_dim", "hidden_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key} = {getattr(self, key)} must be at least 1")
        for key in ("dropout", "word_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"model.{key} = {getattr(self, key)} must be in [0, 1)")
        self._validate_code()

    def _validate_code(self) -> None:
        """The code's settings (the VAE's)."""


@dataclasses.dataclass(frozen=True)
class SentenceVAEConfig(LanguageModelConfig):
    name: str = "sentence_vae"
    latent_dim: int = 32
    cell: str = "gru"  # the encoder's recurrent cell: gru | lstm
    # units of each encoder direction (0: hidden_size). The encoder only has to summarise the
    # sentence into the code: at half the decoder's width (128 of 256) a training step on
    # fortunes took 410 ms instead of 552 ms, the language model's 288-310 ms (text_vae --step)
    encoder_size: int = 0
    word_dropout: float = 0.4
    kl_schedule: str = "cyclical"  # none | linear | cyclical
    # linear: steps until the KL weight reaches beta; cyclical: steps per cycle, the weight
    # rising over the first half and held at beta over the second (Fu et al. 2019, R = 0.5)
    kl_steps: int = 2000
    free_bits: float = 0.1  # nats per latent dimension below which its KL is not pushed down
    beta: float = 1.0  # weight of the KL term once annealed

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


class TextLoss(NamedTuple):
    """Nats per sentence, averaged over the batch."""

    reconstruction: torch.Tensor  # -log p(x | z) summed over the sentence's tokens (EOS included)
    kl: torch.Tensor  # KL(q(z|x) || p(z)) summed over dimensions
    total: torch.Tensor  # reconstruction + kl_weight * max(free_bits, KL per dimension)


class LanguageModel(GenerativeModel):
    """The GRU decoder without a code: p(x) = prod_t p(x_t | x_<t). Its `likelihood_bound` is
    exact (there is nothing to bound); `generate` samples."""

    name = "lm"
    config_class = LanguageModelConfig
    config: LanguageModelConfig
    inputs = "text"

    def __init__(
        self,
        config: LanguageModelConfig,
        image_shape: tuple[int, int, int],
        train: TrainConfig | None = None,
    ) -> None:
        """image_shape: the text data's shape (1, max tokens, vocabulary size)."""
        super().__init__(config, image_shape, train)
        _, self.max_tokens, self.vocab_size = self.image_shape
        self.tokenizer = TextTokenizer(config.tokenizer) if config.tokenizer else None
        if self.tokenizer is not None and self.tokenizer.vocab_size != self.vocab_size:
            raise ConfigError(
                f"model.tokenizer has {self.tokenizer.vocab_size} tokens but the data shape says "
                f"{self.vocab_size}"
            )
        latent, hidden = self.latent_dim, config.hidden_size
        self.embedding = nn.Embedding(self.vocab_size, config.embedding_dim, padding_idx=PAD_ID)
        self.decoder_rnn = nn.GRU(config.embedding_dim + latent, hidden, batch_first=True)
        self.latent_to_hidden = nn.Linear(latent, hidden) if latent else None
        self.output_dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(hidden, self.vocab_size)

    @property
    def latent_dim(self) -> int:
        return int(getattr(self.config, "latent_dim", 0))

    # ---- inputs ---------------------------------------------------------------------------
    def token_ids(self, x: Sentences) -> torch.Tensor:
        """Sentences or token ids -> (B, T) int64 ids on the model's device; a one-line error
        for anything else."""
        if isinstance(x, torch.Tensor):
            if x.dim() != 2 or x.dtype != torch.int64 or len(x) == 0:
                raise DataError(
                    f"this {self.name} model takes sentences (a list of strings) or token ids of "
                    f"shape (B, T) int64, got {tuple(x.shape)} {x.dtype}"
                )
            if bool((x < 0).any()) or bool((x >= self.vocab_size).any()):
                raise DataError(f"token ids must lie in [0, {self.vocab_size}): the vocabulary")
            return x.to(self.device)
        if isinstance(x, str) or not all(isinstance(s, str) for s in x) or not x:
            raise DataError(f"this {self.name} model takes a list of sentences, got {x!r:.60}")
        if self.tokenizer is None:
            raise DataError(f"this {self.name} model has no tokenizer: it was built without data")
        ids, _ = self.tokenizer.encode(list(x), self.max_tokens)
        return ids.to(self.device)

    def to_text(self, ids: torch.Tensor) -> list[str]:
        """Token ids (B, T) -> sentences (the tokenizer's), or the ids as words without one."""
        if self.tokenizer is not None:
            return self.tokenizer.decode(ids)
        return [" ".join(map(str, row)) for row in ids.tolist()]

    # ---- the decoder ----------------------------------------------------------------------
    def initial_hidden(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, D) -> the decoder GRU's first hidden state (1, B, H)."""
        if self.latent_to_hidden is None:
            return z.new_zeros(1, len(z), self.config.hidden_size)
        return torch.tanh(self.latent_to_hidden(z)).unsqueeze(0)

    def decoder_step(
        self, tokens: torch.Tensor, z: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens: (B, T) inputs, z: (B, D), hidden: (1, B, H) -> logits (B, T, V), hidden."""
        embedded = self.embedding(tokens)
        inputs = torch.cat([embedded, z.unsqueeze(1).expand(-1, tokens.shape[1], -1)], dim=2)
        out, hidden = self.decoder_rnn(inputs, hidden)
        return self.output(self.output_dropout(out)), hidden

    def sentence_nll(self, ids: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) per sentence (B,), teacher-forced; word dropout while training.

        One fused GRU call runs over the whole batch as a packed sequence, and the vocabulary
        layer and softmax see only the positions that have a token to predict: padding is most
        of a padded batch of sentences (T is the longest one), and the (positions x vocabulary)
        product and its softmax are most of a step's cost."""
        inputs, targets = ids[:, :-1], ids[:, 1:]
        if self.training and self.config.word_dropout > 0:
            drop = torch.rand(inputs.shape, device=ids.device) < self.config.word_dropout
            drop &= (inputs != PAD_ID) & (inputs != BOS_ID)  # BOS keeps the start visible
            inputs = inputs.masked_fill(drop, UNK_ID)
        # tokens to predict per sentence (EOS included); padding is only ever at the end
        lengths = (targets != PAD_ID).sum(1).clamp(min=1).cpu()

        def pack(t: torch.Tensor) -> torch.Tensor:
            return nn.utils.rnn.pack_padded_sequence(
                t, lengths, batch_first=True, enforce_sorted=False
            ).data

        embedded = self.embedding(inputs)
        steps = torch.cat([embedded, z.unsqueeze(1).expand(-1, inputs.shape[1], -1)], dim=2)
        packed = nn.utils.rnn.pack_padded_sequence(
            steps, lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = self.decoder_rnn(packed, self.initial_hidden(z))
        logits = self.output(self.output_dropout(out.data))  # (positions, V)
        rows = torch.arange(len(ids), device=ids.device).unsqueeze(1).expand_as(targets)
        nll = F.cross_entropy(logits.float(), pack(targets), ignore_index=PAD_ID, reduction="none")
        return nll.new_zeros(len(ids)).index_add_(0, pack(rows), nll)

    # ---- training -------------------------------------------------------------------------
    def code_posterior(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) (B, D) each; a language model's are empty (B, 0)."""
        empty = torch.zeros(len(ids), 0, device=ids.device)
        return empty, empty

    def loss(self, x: torch.Tensor) -> TextLoss:
        ids = self.token_ids(x)
        mu, logvar = self.code_posterior(ids)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation trick
        reconstruction = self.sentence_nll(ids, z).mean()
        kl_per_dim = gaussian_kl(mu, logvar).mean(0)
        kl = kl_per_dim.sum()
        floor = getattr(self.config, "free_bits", 0.0)
        pushed = kl_per_dim.clamp(min=floor).sum() if floor > 0 and self.training else kl
        return TextLoss(reconstruction, kl, reconstruction + self.kl_weight * pushed)

    @property
    def kl_weight(self) -> float:
        return 1.0

    def training_step(
        self, x: torch.Tensor, optimizers: list[torch.optim.Optimizer]
    ) -> dict[str, torch.Tensor]:
        with self.autocast():
            terms = self.loss(x)
        l1, l2 = self.penalties()
        total = terms.total + l1 + l2
        self.optimizer_step(optimizers[0], total)
        self.after_step()
        values = torch.stack([terms.reconstruction, terms.kl, l1, l2, total]).detach().float()
        return dict(zip(("reconstruction", "kl", "l1", "l2", "total"), values, strict=True))

    def after_step(self) -> None:
        """Called after every optimisation step (the VAE counts them for its KL schedule)."""

    @torch.no_grad()
    def validation_step(self, x: torch.Tensor) -> dict[str, float]:
        """total: the negative ELBO (reconstruction + KL, weight 1, no free bits), in nats per
        sentence: the bound early stopping and tuning minimise."""
        terms = self.loss(x)
        ids = self.token_ids(x)
        tokens = float((ids[:, 1:] != PAD_ID).sum()) / len(ids)
        values = [float(terms.reconstruction), float(terms.kl)]
        return {
            "reconstruction": values[0],
            "kl": values[1],
            "total": values[0] + values[1],
            "tokens": tokens,
        }

    # ---- use ------------------------------------------------------------------------------
    def encode(
        self, x: Sentences, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sentences or ids -> codes (B, D): the posterior mean, or a draw when sample=True."""
        mu, logvar = self.code_posterior(self.token_ids(x))
        if not sample:
            return mu
        eps = torch.randn(mu.shape, generator=generator).to(mu.device)
        return mu + eps * (0.5 * logvar).exp()

    def decode(  # type: ignore[override]
        self,
        z: torch.Tensor,
        *,
        strategy: str = "greedy",
        beam: int = 5,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> list[str]:
        """Codes (B, D) -> sentences: greedy, beam search or sampling at a temperature."""
        return self.to_text(
            self.decode_ids(
                z, strategy=strategy, beam=beam, temperature=temperature, generator=generator
            )
        )

    @torch.no_grad()
    def decode_ids(
        self,
        z: torch.Tensor,
        *,
        strategy: str = "greedy",
        beam: int = 5,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Codes (B, D) -> token ids (B, T), each row BOS ... EOS (or cut at max tokens)."""
        self.check_codes(z)
        z = z.to(self.device, torch.float32)
        if strategy == "beam":
            return beam_search(self, z, beam)
        if strategy not in ("greedy", "sample"):
            raise DataError(f"decoding strategy {strategy!r} is not one of: greedy, beam, sample")
        if strategy == "sample" and not temperature > 0:
            raise DataError(f"temperature = {temperature} must be above 0")
        return step_by_step(self, z, None if strategy == "greedy" else temperature, generator)

    def check_codes(self, z: torch.Tensor) -> None:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise DataError(
                f"this {self.name} model takes codes of shape (B, {self.latent_dim}), "
                f"got {tuple(z.shape)}"
            )

    @torch.no_grad()
    def generate(  # type: ignore[override]
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        strategy: str = "",
        temperature: float = 1.0,
    ) -> list[str]:
        """n sentences from the prior: a language model samples; the VAE decodes codes drawn
        from N(0, I) greedily unless a strategy is given."""
        was_training = self.training
        self.eval()
        chosen = strategy or ("greedy" if self.latent_dim else "sample")
        z = self.sample_latent(n, generator=generator)
        sentences = self.decode(z, strategy=chosen, temperature=temperature, generator=generator)
        self.train(was_training)
        return sentences

    @torch.no_grad()
    def reconstruct(self, x: Sentences) -> list[str]:  # type: ignore[override]
        was_training = self.training
        self.eval()
        sentences = self.decode(self.encode(x))
        self.train(was_training)
        return sentences

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
        """-log p(x) per sentence, exact for the language model (nll = negative ELBO)."""
        ids = self.token_ids(x)
        nll = self.sentence_nll(ids, ids.new_zeros(len(ids), 0, dtype=torch.float32)).double()
        empty = torch.zeros(len(ids), 0, device=ids.device)
        return LikelihoodBound(nll, nll, empty, empty)


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
