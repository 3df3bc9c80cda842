"""The journal: albums of images coded in a few bytes each by a learned codec (a model with an
entropy model, such as finite scalar quantisation with a learned prior), entropy-coded with
`constriction`. `compress` / `decompress` work on files; `encode_album` / `decode_album` on bytes.
See docs/journal.md."""

from __future__ import annotations

from latentspace.journal.album import (
    Compressed,
    Decoded,
    compress,
    decode_album,
    decompress,
    encode_album,
    open_codec,
    read_images,
)
from latentspace.journal.container import FORMAT_VERSION, Album, AlbumError

__all__ = [
    "FORMAT_VERSION",
    "Album",
    "AlbumError",
    "Compressed",
    "Decoded",
    "compress",
    "decode_album",
    "decompress",
    "encode_album",
    "open_codec",
    "read_images",
]
