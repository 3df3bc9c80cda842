"""Entropy coding of images' symbol maps with `constriction`'s ANS coder (Bamler 2022), its
categorical models built from the integer frequency tables saved with the run.

By default each image is its own stream, so a damaged image never takes the others with it. A
stream costs about 6 bytes beyond its symbols' information (ANS's final state, about 3 bytes on
a short message, and the album's length and CRC-16 for it), a fifth of a 30-byte Fashion-MNIST
image: images can instead share streams of about `group_bytes` each, at the price that a damaged
byte loses its stream's images. ANS writes 32-bit words and its last word (the coder's head) is
mostly high zero bytes on a short message: those are dropped on writing and put back on reading
(the payload's length says how many), which saves 1.5 bytes a stream on average.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latentspace.errors import ConfigError
from latentspace.models.entropy import channel_contexts

__all__ = ["SymbolCoder"]


def _constriction() -> object:
    try:
        import constriction
    except ImportError:
        raise ConfigError(
            "compress and decompress need the constriction package: "
            "pip install 'latentspace[journal]'"
        ) from None
    return constriction


class SymbolCoder:
    """Codes symbol maps (C, h, w) row by row with the row-above context (else all rows at
    once) and channel by channel when channels are context (else all at once), each symbol with
    the categorical model of its channel and context (models.entropy.channel_contexts: the
    symbols of up to `context` channels before it at the same position, and with `spatial` =
    "above" the three above it in its channel).

    frequencies: (C, contexts, A) integers, each >= 1, every row with the same power-of-two sum.
    The models get those frequencies divided by their sum: exact in float64, and constriction
    turns them into its own fixed-point table by a deterministic computation, so every process
    that reads the same table codes the same bits.

    Many images are coded together: the contexts of a row of all of them are computed in one
    numpy call, and the coder is called once a row for each stream, whether the stream holds
    one image (the default: a damaged image never takes the others with it) or several."""

    def __init__(self, frequencies: np.ndarray, context: int, spatial: str = "none") -> None:
        constriction = _constriction()
        self._stream = constriction.stream  # type: ignore[attr-defined]
        table = np.asarray(frequencies, dtype=np.float64)
        self.probabilities = table / table.sum(axis=-1, keepdims=True)
        self.levels, self.context, self.spatial = table.shape[-1], context, spatial
        self.family = self._stream.model.Categorical(perfect=False)

    def _contexts(self, planes: np.ndarray, channel: int) -> np.ndarray:
        """planes (N, C, h, w) -> the contexts (N, h, w) of channel `channel`'s symbols (read
        from the channels before it and its rows above)."""
        previous = [planes[:, channel - j] for j in range(1, self.context + 1) if channel >= j]
        return channel_contexts(
            previous, planes[:, channel], self.levels, self.context, self.spatial
        )

    def _phases(self, channels: int, height: int) -> list[tuple[list[int], slice]]:
        """The decoding order: (channels, rows) whose symbols are decoded in one call, each
        reading only symbols decoded before it. Rows one at a time with the row above as
        context; channels one at a time when a channel's context is the channels before it."""
        rows = (
            [slice(r, r + 1) for r in range(height)] if self.spatial == "above" else [slice(None)]
        )
        groups = [list(range(channels))] if self.context == 0 else [[c] for c in range(channels)]
        return [(group, row) for row in rows for group in groups]

    def _order(self, shape: tuple[int, int, int]) -> np.ndarray:
        """The flat positions of a (C, h, w) map in decoding order."""
        flat = np.arange(int(np.prod(shape))).reshape(shape)
        return np.concatenate([flat[group, row].ravel() for group, row in self._phases(*shape[:2])])

    def encode_many(self, symbols: np.ndarray, group_bytes: int = 0) -> list[tuple[int, bytes]]:
        """symbols (N, C, h, w) ints in [0, A) -> streams as (images, payload), taking the
        images in order: one each, or with group_bytes > 0 as many as fill about that many
        bytes (by their ideal code length), so a stream's overhead is spread over them.

        A stream holds its images phase by phase (`_phases`: all images' first row, then their
        second, ...), so a decoder reads every image of a stream in lockstep."""
        planes = np.asarray(symbols, dtype=np.int64)
        n = len(planes)
        # every context is known when encoding: one table row per symbol, in decoding order
        rows = np.stack(
            [self.probabilities[c][self._contexts(planes, c)] for c in range(planes.shape[1])],
            axis=1,
        ).reshape(n, -1, self.levels)  # (N, C*h*w, A)
        order = self._order(planes.shape[1:])
        values = np.ascontiguousarray(planes.reshape(n, -1)[:, order], dtype=np.int32)
        probabilities = np.ascontiguousarray(rows[:, order])
        sizes = self._sizes(planes.shape[1:])
        phase = np.repeat(np.arange(len(sizes)), sizes)  # each position's phase
        counts = [1] * n
        if group_bytes > 0:
            picked = np.take_along_axis(probabilities, values[..., None], axis=2)[..., 0]
            counts = _fill(-np.log2(picked).sum(1) / 8, group_bytes)
        payloads, start = [], 0
        orders: dict[int, np.ndarray] = {}  # a stream's symbol order, by its number of images
        for count in counts:
            chosen = slice(start, start + count)
            start += count
            if count not in orders:
                # phase by phase, image by image within a phase, in decoding order within both
                image = np.repeat(np.arange(count), len(phase))
                orders[count] = np.lexsort((image, np.tile(phase, count)))
            within = orders[count]
            coder = self._stream.stack.AnsCoder()
            coder.encode_reverse(
                np.ascontiguousarray(values[chosen].reshape(-1)[within]),
                self.family,
                np.ascontiguousarray(probabilities[chosen].reshape(-1, self.levels)[within]),
            )
            words = np.asarray(coder.get_compressed(), dtype="<u4").tobytes()
            trimmed = len(words)
            while trimmed > len(words) - 3 and trimmed > 0 and words[trimmed - 1] == 0:
                trimmed -= 1  # the head's high zero bytes; never a whole word
            payloads.append((count, words[:trimmed]))
        return payloads

    def _sizes(self, shape: tuple[int, ...]) -> list[int]:
        """Symbols per phase of a (C, h, w) map."""
        flat = np.empty(shape, dtype=np.int8)
        return [flat[group, row].size for group, row in self._phases(shape[0], shape[1])]

    def encode(self, symbols: np.ndarray) -> bytes:
        """symbols (C, h, w) ints in [0, A) -> the payload."""
        return self.encode_many(np.asarray(symbols)[None])[0][1]

    def decode_many(
        self,
        payloads: list[bytes],
        shape: tuple[int, int, int],
        counts: list[int] | None = None,
    ) -> list[np.ndarray | None]:
        """The symbols (C, h, w) int64 of every image of the streams (`counts`: images in
        each, default one), in order; None for each image of a stream that does not decode to
        exactly that many symbols (damage its checksum happened to miss)."""
        counts = [1] * len(payloads) if counts is None else counts
        coders: list[Any] = []
        for payload in payloads:
            padded = payload + b"\0" * (-len(payload) % 4)
            words = np.frombuffer(padded, dtype="<u4").astype(np.uint32)
            try:
                coders.append(self._stream.stack.AnsCoder(words))
            except (ValueError, RuntimeError, AssertionError):
                coders.append(None)
        ends = np.cumsum(counts)
        n, family = int(ends[-1]) if counts else 0, self.family
        planes = np.zeros((n, *shape), dtype=np.int64)
        for group, row in self._phases(*shape[:2]):
            # the contexts of a row need only it and the row above: computing them over the
            # whole map at every row made decoding a photo's code map quadratic in its height
            start = row.start or 0
            window = planes[:, :, max(start - 1, 0) : row.stop]
            wanted = slice(-1, None) if row.stop is not None else slice(None)
            # (N, g * k * w, A): the probabilities of these channels' rows in every image
            probabilities = np.stack(
                [self.probabilities[c][self._contexts(window, c)[:, wanted]] for c in group],
                axis=1,
            ).reshape(n, -1, self.levels)
            decoded = np.zeros(planes[:, group, row].shape, dtype=np.int64)
            for s, coder in enumerate(coders):
                if coder is None:
                    continue
                images = slice(int(ends[s]) - counts[s], int(ends[s]))
                try:
                    out = coder.decode(family, probabilities[images].reshape(-1, self.levels))
                    decoded[images] = out.reshape(decoded[images].shape)
                except (ValueError, RuntimeError, AssertionError):
                    coders[s] = None
            planes[:, group, row] = decoded
        whole = [coder is not None and coder.is_empty() for coder in coders]
        owner = np.repeat(np.arange(len(coders)), counts)
        return [plane if whole[s] else None for plane, s in zip(planes, owner, strict=True)]

    def decode(self, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray | None:
        """The symbols (C, h, w) int64 of a payload, or None when it does not decode to exactly
        that many symbols."""
        return self.decode_many([payload], shape)[0]


def _fill(sizes: np.ndarray, target: int) -> list[int]:
    """Images per group, in order: a group takes images until their sizes reach `target`."""
    counts, total, count = [], 0.0, 0
    for size in sizes:
        total, count = total + float(size), count + 1
        if total >= target:
            counts.append(count)
            total, count = 0.0, 0
    return counts + [count] * (count > 0)
