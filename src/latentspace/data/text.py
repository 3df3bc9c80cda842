"""Text data: sentences from a UTF-8 file, a folder of .txt files or a named corpus, a BPE
tokenizer trained on the training sentences, and batches of token ids.

A text dataset is a `TextSet`: the sentences, the tokenizer and their token ids (N, T) padded with
PAD_ID, each row BOS ... EOS. The tokenizer (Hugging Face `tokenizers`, byte-pair encoding) is
trained on the training split only and travels with the run as its JSON in the model section of
config.json (`model.tokenizer`): loading it builds a tokenizer from data, no code is executed.
The batches are padded LongTensors (B, T) cut to the longest sentence of the batch; the lengths
are `(ids != PAD_ID).sum(1)` (PAD_ID never occurs inside a sentence).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from latentspace.data.batches import batches_per_epoch, shard
from latentspace.data.text_corpus import CORPORA, SPLITS, corpus_status
from latentspace.errors import DataError
from latentspace.settings import DataConfig, TrainConfig

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "MAX_TOKENS",
    "PAD_ID",
    "VOCAB_SIZE",
    "TextBatches",
    "TextSet",
    "TextTokenizer",
    "is_text",
    "load_text",
    "prepare_text",
    "read_lines",
    "text_held_out",
]

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
VOCAB_SIZE = 4000  # BPE merges stop here (or earlier, on a small corpus)
MAX_TOKENS = 64  # per sentence with BOS and EOS; longer lines are cut, with one warning


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise DataError(
            "text data needs the `tokenizers` library: pip install 'latentspace[text]'"
        ) from None
    return tokenizers


class TextTokenizer:
    """Byte-pair encoding, lower-cased and NFKC-normalised, with SentencePiece-style word
    boundaries (Metaspace), so decoding gives back the spacing. Built from its JSON only."""

    def __init__(self, json_text: str) -> None:
        try:
            self._tokenizer = _tokenizers().Tokenizer.from_str(json_text)
        except Exception as error:  # the library raises its own exception type
            raise DataError(f"the tokenizer's JSON cannot be read ({error})") from None
        self.json = json_text
        if [self._tokenizer.token_to_id(t) for t in SPECIALS] != [PAD_ID, UNK_ID, BOS_ID, EOS_ID]:
            raise DataError(f"the tokenizer lacks the special tokens {', '.join(SPECIALS)}")

    @classmethod
    def train(cls, sentences: Sequence[str], vocab_size: int = VOCAB_SIZE) -> TextTokenizer:
        tk = _tokenizers()
        tokenizer = tk.Tokenizer(tk.models.BPE(unk_token="[UNK]"))
        tokenizer.normalizer = tk.normalizers.Sequence(
            [tk.normalizers.NFKC(), tk.normalizers.Lowercase()]
        )
        tokenizer.pre_tokenizer = tk.pre_tokenizers.Metaspace()
        tokenizer.decoder = tk.decoders.Metaspace()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=list(SPECIALS),
            show_progress=False,
        )
        tokenizer.train_from_iterator(list(sentences), trainer=trainer)
        return cls(tokenizer.to_str())

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size())

    def encode(
        self, sentences: Sequence[str], max_tokens: int = MAX_TOKENS
    ) -> tuple[torch.Tensor, int]:
        """sentences -> (ids (N, T) int64, BOS ... EOS padded with PAD_ID, T <= max_tokens;
        how many sentences were cut to fit)."""
        rows = [
            e.ids for e in self._tokenizer.encode_batch(list(sentences), add_special_tokens=False)
        ]
        cut = sum(len(r) > max_tokens - 2 for r in rows)
        rows = [[BOS_ID, *r[: max_tokens - 2], EOS_ID] for r in rows]
        ids = torch.full((len(rows), max((len(r) for r in rows), default=2)), PAD_ID)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        return ids, cut

    def decode(self, rows: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
        """Token ids (with or without BOS) -> sentences; each stops at its first EOS or PAD."""
        sentences = []
        for row in rows.tolist() if isinstance(rows, torch.Tensor) else rows:
            kept = []
            for token in row:
                if token in (EOS_ID, PAD_ID):
                    break
                if token != BOS_ID:
                    kept.append(int(token))
            sentences.append(self._tokenizer.decode(kept).strip())
        return sentences


def read_lines(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped. One-line errors name the file (and
    line) when it is empty, binary or not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise DataError(f"{path} is binary (a NUL byte on line {line}): give a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(
            f"{path} line {line} is not UTF-8 (byte 0x{data[error.start]:02x}): save the file "
            "as UTF-8"
        ) from None
    lines = [line.strip() for line in text.removeprefix("\ufeff").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise DataError(f"{path} is empty: give a text file with one sentence per line")
    return lines


def is_text(spec: str) -> bool:
    """Whether a dataset string names text: a named corpus, a .txt file, or a folder whose
    files are all .txt."""
    name = spec.partition(":")[0]
    if name in CORPORA:
        return True
    path = Path(spec).expanduser()
    if path.is_file():
        return path.suffix == ".txt"
    if path.is_dir():  # stops at the first other file: an image folder is not walked whole
        found = False
        for file in path.rglob("*"):
            if file.is_file() and not file.name.startswith("."):
                if file.suffix != ".txt":
                    return False
                found = True
        return found
    return False


def load_text(spec: str, default_split: str = "train") -> list[str]:
    """The sentences a dataset string names: `fortunes` / `fortunes:test`, a .txt file, or every
    .txt file below a folder (sorted by path)."""
    name, _, split = spec.partition(":")
    if name in CORPORA:
        split = split or default_split
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r} of {name}; use one of {', '.join(SPLITS)}")
        present, directory = corpus_status(name)
        if not present:
            raise DataError(
                f"text corpus {name!r} not found in {directory}: run `latentspace data fetch {name}`"
            )
        return read_lines(directory / f"{split}.txt")
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        return [line for file in files for line in read_lines(file)]
    return read_lines(path)


class TextBatches:
    """Iterate over token ids (N, T) in batches (B, T_b) int64, T_b the longest sentence of the
    batch. shuffle: a new permutation from `generator` each epoch. rank, world: this process's
    contiguous part of every global batch when `world` processes train together (as
    data.Batches shares images out); `dynamic` is accepted for the same signature and unused."""

    def __init__(
        self,
        ids: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        dynamic: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.images = ids
        self.lengths = (ids != PAD_ID).sum(1).cpu()
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator if generator is not None else torch.Generator()
        self.device = torch.device(device) if device is not None else ids.device
        self.rank, self.world = rank, world
        self.global_size = 0  # sentences in the global batch of the batch last yielded

    def __len__(self) -> int:
        return batches_per_epoch(len(self.images), self.batch_size, self.world)

    def __iter__(self) -> Iterator[torch.Tensor]:
        n = len(self.images)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            size = min(self.batch_size, n - start)
            if size < self.world:
                break
            first, end = shard(start, size, self.rank, self.world)
            index = order[first:end]
            self.global_size = size
            longest = int(self.lengths[index].max())
            yield self.images[index.to(self.images.device), :longest].to(self.device)


@dataclasses.dataclass(frozen=True)
class TextSet:
    """sentences: N strings; ids: (N, T) int64 token ids of them (see the module docstring)."""

    sentences: list[str]
    ids: torch.Tensor
    tokenizer: TextTokenizer
    source: str
    inputs = "text"  # what a model must read to train on it (models.for_data checks)
    batch_class = TextBatches  # how the trainer batches it
    classes = None
    labels = None

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The data's shape for the model contract: (1, MAX_TOKENS, vocabulary size)."""
        return 1, MAX_TOKENS, self.tokenizer.vocab_size

    def model_settings(self) -> dict[str, object]:
        """What a text model is built with besides its own settings: the tokenizer."""
        return {"tokenizer": self.tokenizer.json}

    def subset(self, index: torch.Tensor) -> TextSet:
        picked = index.tolist()
        return dataclasses.replace(
            self, sentences=[self.sentences[i] for i in picked], ids=self.ids[index]
        )

    def head(self, n: int) -> TextSet:
        return self if n >= len(self) else self.subset(torch.arange(n))

    def split(self, fraction: float, seed: int) -> tuple[TextSet, TextSet | None]:
        """Hold out `fraction` of the sentences (at least one) for validation, seeded."""
        if fraction <= 0 or len(self) < 2:
            return self, None
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        n_val = min(len(self) - 1, max(1, round(len(self) * fraction)))
        return self.subset(order[n_val:].sort().values), self.subset(order[:n_val].sort().values)

    @property
    def images(self) -> torch.Tensor:
        """The token ids, under the name the trainer and diagnostics read a dataset's rows by."""
        return self.ids

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> TextBatches:
        return TextBatches(
            self.ids, batch_size, shuffle=shuffle, generator=generator, device=device
        )


class _RunSettings(Protocol):
    @property
    def data(self) -> DataConfig: ...
    @property
    def train(self) -> TrainConfig: ...


def _text_set(sentences: list[str], tokenizer: TextTokenizer, source: str) -> TextSet:
    ids, cut = tokenizer.encode(sentences)
    if cut:
        warnings.warn(
            f"{cut} of {len(sentences)} sentences of {source} are longer than {MAX_TOKENS - 2} "
            "tokens: cut to that length",
            stacklevel=3,
        )
    return TextSet(sentences, ids, tokenizer, source)


def _tokenizer_for(config: _RunSettings, train: list[str]) -> TextTokenizer:
    """The run's own tokenizer (model.tokenizer, once it trained) or a new one from `train`."""
    saved = getattr(getattr(config, "model", None), "tokenizer", "")
    return TextTokenizer(saved) if saved else TextTokenizer.train(train)


def prepare_text(config: _RunSettings) -> tuple[TextSet, TextSet | None]:
    """(training sentences, validation sentences or None) of a text dataset: a named corpus's
    own train and valid splits; a file's sentences split by data.val_fraction, seeded."""
    data = config.data
    name = data.dataset.partition(":")[0]
    sentences = load_text(data.dataset)
    if name in CORPORA:
        train = sentences[: data.limit] if data.limit is not None else sentences
        tokenizer = _tokenizer_for(config, train)
        train_set = _text_set(train, tokenizer, f"{name}:train")
        if data.val_fraction <= 0:
            return train_set, None
        return train_set, _text_set(load_text(f"{name}:valid"), tokenizer, f"{name}:valid")
    if data.limit is not None:
        sentences = sentences[: data.limit]
    order = torch.randperm(
        len(sentences), generator=torch.Generator().manual_seed(config.train.seed)
    )
    n_val = (
        0
        if data.val_fraction <= 0 or len(sentences) < 2
        else min(len(sentences) - 1, max(1, round(len(sentences) * data.val_fraction)))
    )
    val_index, train_index = order[:n_val].sort().values, order[n_val:].sort().values
    train = [sentences[i] for i in train_index.tolist()]
    tokenizer = _tokenizer_for(config, train)
    train_set = _text_set(train, tokenizer, data.dataset)
    if n_val == 0:
        return train_set, None
    return train_set, _text_set([sentences[i] for i in val_index.tolist()], tokenizer, data.dataset)


def text_held_out(config: _RunSettings) -> tuple[TextSet | None, TextSet, str, str]:
    """(held-out sentences, training sentences, what they are, split): a named corpus's test
    split, else the run's validation sentences (None without any)."""
    train, val = prepare_text(config)
    name = config.data.dataset.partition(":")[0]
    if name in CORPORA:
        test = _text_set(load_text(f"{name}:test"), train.tokenizer, f"{name}:test")
        return test, train, f"{name}:test", "test"
    return val, train, f"{config.data.dataset} (the run's held-out sentences)", "val"
