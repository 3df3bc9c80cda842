"""The album file (.lsj): a small container of entropy-coded images, read without trusting it.

Layout (integers little-endian; varint: LEB128, 7 bits a byte):

    magic "\\x89LSJ" | format version u8 | flags u8 | weights SHA-256 (32 bytes) | quality u8 |
    channels u8 | height varint | width varint | count varint | run path: varint length + UTF-8 |
    index length varint | index CRC-32 (u32: of everything before it and of the index) |
    payloads CRC-32 (u32: of all payloads, in order) | index | payloads

The index holds, per image: its height and width (varints; only with FLAG_SIZES, else the album's
one size), its original file name (varint length + UTF-8; only with FLAG_NAMES), its payload's
length (varint) and the payload's CRC-16 (CRC-CCITT, u16). The per-image fields are what a few
dozen bytes per image can afford: two bytes of check still catch every one-bit flip and every
burst of up to 16 bits; the album-wide CRC-32 catches the rest, without saying where.
"""

from __future__ import annotations

import binascii
import dataclasses
import struct
import zlib

from latentspace.errors import DataError

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "Album",
    "AlbumError",
    "Entry",
    "pack",
    "unpack",
]

MAGIC = b"\x89LSJ"
FORMAT_VERSION = 1
FLAG_NAMES = 1  # the index holds each image's file name
FLAG_SIZES = 2  # the index holds each image's size (else every image has the album's size)
_MAX_COUNT = 10_000_000  # more images than any album this reader takes: the header is damaged


class AlbumError(DataError):
    """An album that cannot be read (wholly or in part), or that belongs to another model."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One image in an album: its size, name ("" when the album keeps none) and payload."""

    height: int
    width: int
    name: str
    payload: bytes


@dataclasses.dataclass(frozen=True)
class Album:
    """An album's header and its images' entries, as written or as read back. On reading, an
    entry whose payload is missing or damaged is replaced by the problem in words."""

    weights_sha256: str
    quality: int
    channels: int
    run_path: str
    entries: list[Entry]
    problems: dict[int, str] = dataclasses.field(default_factory=dict)  # image index -> why
    version: int = FORMAT_VERSION


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Reader:
    """Reads fields from bytes; running past the end or a malformed field is an AlbumError
    whose message starts with `what` (the file, and the part being read)."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.at, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise AlbumError(f"{self.what} is truncated: no image can be read")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def varint(self) -> int:
        value = 0
        for shift in range(0, 63, 7):
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise AlbumError(f"{self.what} is damaged (a number runs on): no image can be read")

    def text(self) -> str:
        raw = self.take(self.varint())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise AlbumError(f"{self.what} is damaged (a name is not UTF-8)") from None


def crc16(payload: bytes) -> int:
    """CRC-CCITT (binascii's CRC-16): every 1-bit error and every burst up to 16 bits shows."""
    return binascii.crc_hqx(payload, 0)


def pack(album: Album) -> bytes:
    """The album file's bytes."""
    entries = album.entries
    first = entries[0] if entries else Entry(0, 0, "", b"")
    sizes = any((e.height, e.width) != (first.height, first.width) for e in entries)
    names = any(e.name for e in entries)
    flags = (FLAG_NAMES if names else 0) | (FLAG_SIZES if sizes else 0)
    index = bytearray()
    for entry in entries:
        if sizes:
            index += _varint(entry.height) + _varint(entry.width)
        if names:
            name = entry.name.encode("utf-8")
            index += _varint(len(name)) + name
        index += _varint(len(entry.payload)) + struct.pack("<H", crc16(entry.payload))
    run_path = album.run_path.encode("utf-8")
    head = b"".join(
        [
            MAGIC,
            bytes([FORMAT_VERSION, flags]),
            bytes.fromhex(album.weights_sha256),
            bytes([album.quality, album.channels]),
            _varint(first.height),
            _varint(first.width),
            _varint(len(entries)),
            _varint(len(run_path)),
            run_path,
            _varint(len(index)),
        ]
    )
    payloads = b"".join(e.payload for e in entries)
    checks = struct.pack("<II", zlib.crc32(bytes(index), zlib.crc32(head)), zlib.crc32(payloads))
    return head + checks + bytes(index) + payloads


def unpack(data: bytes, name: str) -> Album:
    """Read an album's bytes (`name`: the file, for messages). The header and index must be
    whole (else an AlbumError: nothing can be located); each image whose payload is cut off or
    fails its check is listed in `problems` and the others are returned whole."""
    reader = _Reader(data, f"{name}")
    if data[:4] != MAGIC:
        raise AlbumError(f"{name} is not a latentspace album (it does not start with {MAGIC!r})")
    reader.take(4)
    version, flags = reader.take(2)
    if version > FORMAT_VERSION:
        raise AlbumError(
            f"{name} is album format version {version}, newer than this latentspace reads "
            f"(up to {FORMAT_VERSION}): upgrade latentspace to decompress it"
        )
    if version < 1 or flags & ~(FLAG_NAMES | FLAG_SIZES):
        raise AlbumError(f"{name} is damaged (format version {version}, flags {flags})")
    weights = reader.take(32).hex()
    quality, channels = reader.take(2)
    height, width, count = reader.varint(), reader.varint(), reader.varint()
    run_path = reader.text()
    index_length = reader.varint()
    head_end = reader.at
    index_crc, payloads_crc = struct.unpack("<II", reader.take(8))
    index = reader.take(index_length)
    if zlib.crc32(index, zlib.crc32(data[:head_end])) != index_crc:
        raise AlbumError(
            f"{name}: its header or index is damaged (checksum mismatch): the images "
            "cannot be located"
        )
    if count > min(_MAX_COUNT, index_length):
        raise AlbumError(f"{name} is damaged: it claims {count} images")
    entries, problems = _read_entries(
        _Reader(index, f"{name}'s index"), data, reader.at, count, flags, (height, width), name
    )
    if not problems and zlib.crc32(b"".join(e.payload for e in entries)) != payloads_crc:
        raise AlbumError(
            f"{name} is damaged where its per-image checks cannot tell which image: the "
            "payloads' CRC-32 does not match"
        )
    return Album(weights, quality, channels, run_path, entries, problems, version)


def _read_entries(
    index: _Reader,
    data: bytes,
    start: int,
    count: int,
    flags: int,
    size: tuple[int, int],
    name: str,
) -> tuple[list[Entry], dict[int, str]]:
    """Each image's entry, and the problem of each image that cannot be read."""
    entries, problems, at = [], {}, start
    for i in range(count):
        height, width = (index.varint(), index.varint()) if flags & FLAG_SIZES else size
        label = index.text() if flags & FLAG_NAMES else ""
        length, check = index.varint(), struct.unpack("<H", index.take(2))[0]
        payload = data[at : at + length]
        at += length
        who = f"image {i + 1}" + (f" ({label})" if label else "")
        if len(payload) < length:
            problems[i] = f"{who} is truncated ({len(payload)} of its {length} bytes are there)"
        elif crc16(payload) != check:
            problems[i] = f"{who} is damaged (its checksum does not match)"
        entries.append(Entry(height, width, label, payload))
    if index.at != len(index.data):
        raise AlbumError(f"{name}: its index is damaged (it has bytes beyond its {count} images)")
    return entries, problems
