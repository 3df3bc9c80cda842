"""Entropy coding of one image's symbol map with `constriction`'s ANS coder (Bamler 2022), its
categorical models built from the integer frequency tables saved with the run.

Each image is its own stream, so a damaged image never takes the others with it. ANS writes
32-bit words and its last word (the coder's head) is mostly high zero bytes on a short message:
those are dropped on writing and put back on reading (the payload's length says how many), which
saves 1.5 bytes an image on average, a lot on a 20-byte image.
"""

from __future__ import annotations

import numpy as np

from latentspace.errors import ConfigError
from latentspace.models.entropy import context_index

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
    """Codes symbol maps (C, h, w), channel by channel, each symbol with the categorical model
    of its channel and context (the symbols of up to `context` channels before it at the same
    position: models.entropy.context_index).

    frequencies: (C, contexts, A) integers, each >= 1, every row with the same power-of-two sum.
    The models get those frequencies divided by their sum: exact in float64, and constriction
    turns them into its own fixed-point table by a deterministic computation, so every process
    that reads the same table codes the same bits."""

    def __init__(self, frequencies: np.ndarray, context: int) -> None:
        constriction = _constriction()
        self._stream = constriction.stream  # type: ignore[attr-defined]
        table = np.asarray(frequencies, dtype=np.float64)
        self.probabilities = table / table.sum(axis=-1, keepdims=True)
        self.levels, self.context = table.shape[-1], context
        self.family = self._stream.model.Categorical(perfect=False)

    def _rows(self, channel: int, planes: list[np.ndarray], n: int) -> np.ndarray:
        """(n, A) probabilities of channel `channel`'s n symbols, given the planes before it."""
        previous = [planes[channel - j] for j in range(1, self.context + 1) if channel - j >= 0]
        where = np.broadcast_to(context_index(previous, self.levels), (n,))
        return np.ascontiguousarray(self.probabilities[channel][where])

    def encode(self, symbols: np.ndarray) -> bytes:
        """symbols (C, h, w) ints in [0, A) -> the payload."""
        planes = [np.ascontiguousarray(p.ravel(), dtype=np.int32) for p in symbols]
        coder = self._stream.stack.AnsCoder()
        # a stack: the last channel is pushed first so that decoding pops channel 0 first
        for channel in reversed(range(len(planes))):
            rows = self._rows(channel, planes, len(planes[channel]))
            coder.encode_reverse(planes[channel], self.family, rows)
        words = np.asarray(coder.get_compressed(), dtype="<u4").tobytes()
        trimmed = len(words)
        while trimmed > len(words) - 3 and trimmed > 0 and words[trimmed - 1] == 0:
            trimmed -= 1  # the head's high zero bytes; never a whole word
        return words[:trimmed]

    def decode(self, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray | None:
        """The symbols (C, h, w) int32 of a payload, or None when it does not decode to exactly
        that many symbols (a damaged payload whose checksum happened to match)."""
        channels, height, width = shape
        padded = payload + b"\0" * (-len(payload) % 4)
        words = np.frombuffer(padded, dtype="<u4").astype(np.uint32)
        planes: list[np.ndarray] = []
        try:
            coder = self._stream.stack.AnsCoder(words)
            for channel in range(channels):
                rows = self._rows(channel, planes, height * width)
                planes.append(coder.decode(self.family, rows).astype(np.int64))
        except (ValueError, RuntimeError, AssertionError):
            return None
        if not coder.is_empty():
            return None
        return np.stack(planes).reshape(channels, height, width)
