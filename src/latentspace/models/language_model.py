"""The language model `lm`: the sentence VAE's GRU decoder without a code, p(x) = prod_t
p(x_t | x_<t), the baseline the VAE's likelihood is measured against; and everything the two text
families share (token ids in, sentences out, the packed teacher-forced NLL, decoding, training
and validation steps). The sentence VAE (sentence_vae.py) subclasses it and adds the encoder and
the code.

Inputs are sentences (a list of strings, tokenized with the run's own tokenizer) or token ids
(B, T) int64 as `data.text` makes them: BOS ... EOS padded with PAD_ID. The data shape is
(1, max tokens, vocabulary size). All losses are in nats per sentence, averaged over the batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from latentspace.data.text import BOS_ID, PAD_ID, UNK_ID, TextTokenizer
from latentspace.errors import ConfigError, DataError
from latentspace.models.base import GenerativeModel, LikelihoodBound
from latentspace.models.layers import check_finite
from latentspace.models.text_decoding import beam_search, step_by_step
from latentspace.models.vae import gaussian_kl
from latentspace.settings import TrainConfig

__all__ = ["LanguageModel", "LanguageModelConfig", "Sentences", "TextLoss"]

Sentences = Sequence[str] | torch.Tensor


@dataclasses.dataclass(frozen=True)
class LanguageModelConfig:
    """The decoder's settings, which the VAE shares; a language model has no code (no
    latent_dim), so switching a config between the two families keeps what they share."""

    name: str = "lm"
    embedding_dim: int = 256
    hidden_size: int = 256  # the decoder GRU's units
    # on the decoder's outputs before the vocabulary layer. Fortunes' 19252 training sentences
    # are few for this decoder: without dropout the LM's validation NLL was best after 7
    # epochs (103.3 nats) and then rose; with 0.3 it still fell at epoch 10 (102.5)
    dropout: float = 0.3
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


class TextLoss(NamedTuple):
    """Nats per sentence, averaged over the batch."""

    reconstruction: torch.Tensor  # -log p(x | z) summed over the sentence's tokens (EOS included)
    kl: torch.Tensor  # KL(q(z|x) || p(z)) summed over dimensions
    # reconstruction + kl_weight * max(free_bits, KL per dimension) + the auxiliary loss
    total: torch.Tensor


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
        # the VAE's skip from the code straight to the vocabulary logits (model.skip_code)
        self.code_to_output: nn.Linear | None = None

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
        logits = self.output(self.output_dropout(out))
        if self.code_to_output is not None:
            logits = logits + self.code_to_output(z).unsqueeze(1)
        return logits, hidden

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
        # each position's sentence
        rows = pack(torch.arange(len(ids), device=ids.device).unsqueeze(1).expand_as(targets))
        if self.code_to_output is not None:
            logits = logits + self.code_to_output(z)[rows]
        nll = F.cross_entropy(logits.float(), pack(targets), ignore_index=PAD_ID, reduction="none")
        return nll.new_zeros(len(ids)).index_add_(0, rows, nll)

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
        total = reconstruction + self.kl_weight * pushed + self.auxiliary_loss(ids, z)
        return TextLoss(reconstruction, kl, total)

    def auxiliary_loss(self, ids: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """A training-only term beside the bound (the VAE's bag-of-words loss); none here."""
        return z.new_zeros(())

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
