"""The album file (.lsj): a small container of entropy-coded images, read without trusting it.

Layout (integers little-endian; varint: LEB128, 7 bits a byte):

    magic "\\x89LSJ" | format version u8 | flags u8 | weights SHA-256 (32 bytes) | quality u8 |
    channels u8 | height varint | width varint | count varint | run path: varint length + UTF-8 |
    index length varint | index CRC-32 (u32: of everything before it and of the index) |
    payloads CRC-32 (u32: of all payloads, in order) | index | payloads

The index holds, per image: its height and width (varints; only with FLAG_SIZES, else the album's
one size) and its original file name (varint length + UTF-8; only with FLAG_NAMES). Then, per
stream of coded symbols: format version 1 has one stream per image, in the images' order, and
its entry ends with the stream's length (varint) and CRC-16 (CRC-CCITT, u16); format version 2
(written only when images share streams) follows the images' entries with the number of streams
(varint) and, per stream, how many images it holds, its length (varints) and its CRC-16. A
version-2 stream holds images of one size: the album's images taken size by size (the sizes in
the order they first appear, each size's images in album order), then stream by stream.

The per-stream fields are what a few dozen bytes per image can afford: two bytes of check still
catch every one-bit flip and every burst of up to 16 bits; the album-wide CRC-32 catches the
rest, without saying where.
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
    "Stream",
    "by_size",
    "pack",
    "size_order",
    "unpack",
    "who",
]

MAGIC = b"\x89LSJ"
FORMAT_VERSION = 2  # the newest this reader reads; images alone in their streams still write 1
FLAG_NAMES = 1  # the index holds each image's file name
FLAG_SIZES = 2  # the index holds each image's size (else every image has the album's size)
_MAX_COUNT = 10_000_000  # more images than any album this reader takes: the header is damaged


class AlbumError(DataError):
    """An album that cannot be read (wholly or in part), or that belongs to another model."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One image in an album: its size and name ("" when the album keeps none)."""

    height: int
    width: int
    name: str


@dataclasses.dataclass(frozen=True)
class Stream:
    """One entropy-coded stream: the indices of the images it holds (all of one size, in the
    order they were coded) and its bytes."""

    members: tuple[int, ...]
    payload: bytes


@dataclasses.dataclass(frozen=True)
class Album:
    """An album's header, its images' entries and its streams, as written or as read back. On
    reading, a stream whose bytes are missing or damaged is left out and each of its images is
    listed in `problems` with the reason in words."""

    weights_sha256: str
    quality: int
    channels: int
    run_path: str
    entries: list[Entry]
    streams: list[Stream]
    problems: dict[int, str] = dataclasses.field(default_factory=dict)  # image index -> why
    version: int = FORMAT_VERSION

    @property
    def payload_bytes(self) -> int:
        """The coded images' bytes: the album less its header and index."""
        return sum(len(s.payload) for s in self.streams)


def by_size(sizes: list[tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
    """Image indices by size: the sizes in the order they first appear, each one's images in
    album order."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault(size, []).append(i)
    return groups


def size_order(sizes: list[tuple[int, int]]) -> list[int]:
    """Image indices size by size (`by_size`): the order in which version-2 streams take the
    images."""
    return [i for members in by_size(sizes).values() for i in members]


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
    """The album file's bytes: format version 1 when every image is alone in its stream (as
    older readers expect), else version 2."""
    entries, streams = album.entries, album.streams
    first = entries[0] if entries else Entry(0, 0, "")
    sizes = any((e.height, e.width) != (first.height, first.width) for e in entries)
    names = any(e.name for e in entries)
    flags = (FLAG_NAMES if names else 0) | (FLAG_SIZES if sizes else 0)
    single = all(len(s.members) == 1 for s in streams)
    if single:
        streams = sorted(streams, key=lambda s: s.members[0])
        if [s.members[0] for s in streams] != list(range(len(entries))):
            raise ValueError("every image needs exactly one stream")
    else:
        taken = [i for s in streams for i in s.members]
        if taken != size_order([(e.height, e.width) for e in entries]):
            raise ValueError("streams must take the images size by size, in album order")
    index = bytearray()
    for i, entry in enumerate(entries):
        if sizes:
            index += _varint(entry.height) + _varint(entry.width)
        if names:
            name = entry.name.encode("utf-8")
            index += _varint(len(name)) + name
        if single:
            index += _stream_fields(streams[i])
    if not single:
        index += _varint(len(streams))
        for stream in streams:
            index += _varint(len(stream.members)) + _stream_fields(stream)
    run_path = album.run_path.encode("utf-8")
    head = b"".join(
        [
            MAGIC,
            bytes([1 if single else FORMAT_VERSION, flags]),
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
    payloads = b"".join(s.payload for s in streams)
    checks = struct.pack("<II", zlib.crc32(bytes(index), zlib.crc32(head)), zlib.crc32(payloads))
    return head + checks + bytes(index) + payloads


def _stream_fields(stream: Stream) -> bytes:
    return _varint(len(stream.payload)) + struct.pack("<H", crc16(stream.payload))


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
    # version 1 spends at least 3 index bytes an image; version 2 none, but a stream of images
    # takes a few bits each at the very least
    most = index_length if version == 1 else 64 * len(data)
    if count > min(_MAX_COUNT, most):
        raise AlbumError(f"{name} is damaged: it claims {count} images")
    entries, streams = _read_index(
        _Reader(index, f"{name}'s index"), version, count, flags, (height, width), name
    )
    at, kept, problems = reader.at, [], {}
    for members, length, check in streams:
        payload = data[at : at + length]
        at += length
        if len(payload) < length:
            why = f"truncated ({len(payload)} of its {length} bytes are there)"
        elif crc16(payload) != check:
            why = "damaged (its checksum does not match)"
        else:
            kept.append(Stream(members, payload))
            continue
        for i in members:
            shared = f", as is the stream of {len(members)} images it is coded in" * (
                len(members) > 1
            )
            problems[i] = f"{who(i, entries[i].name)} is {why}{shared}"
    if not problems and zlib.crc32(b"".join(s.payload for s in kept)) != payloads_crc:
        raise AlbumError(
            f"{name} is damaged where its per-image checks cannot tell which image: the "
            "payloads' CRC-32 does not match"
        )
    return Album(weights, quality, channels, run_path, entries, kept, problems, version)


def who(i: int, label: str) -> str:
    """An image as messages name it: its number from 1, and its file name if it has one."""
    return f"image {i + 1}" + (f" ({label})" if label else "")


def _read_index(
    index: _Reader, version: int, count: int, flags: int, size: tuple[int, int], name: str
) -> tuple[list[Entry], list[tuple[tuple[int, ...], int, int]]]:
    """The images' entries and the streams as (members, length, CRC-16)."""
    entries: list[Entry] = []
    streams: list[tuple[tuple[int, ...], int, int]] = []
    for i in range(count):
        height, width = (index.varint(), index.varint()) if flags & FLAG_SIZES else size
        label = index.text() if flags & FLAG_NAMES else ""
        entries.append(Entry(height, width, label))
        if version == 1:
            streams.append(((i,), index.varint(), struct.unpack("<H", index.take(2))[0]))
    if version >= 2:
        order = size_order([(e.height, e.width) for e in entries])
        at = 0
        for _ in range(min(index.varint(), count)):
            members = tuple(order[at : at + index.varint()])
            at += len(members)
            if not members or len({(entries[i].height, entries[i].width) for i in members}) > 1:
                raise AlbumError(f"{name}: its index is damaged (a stream's images do not fit)")
            streams.append((members, index.varint(), struct.unpack("<H", index.take(2))[0]))
        if at != count:
            raise AlbumError(f"{name}: its index is damaged (its streams do not hold its images)")
    if index.at != len(index.data):
        raise AlbumError(f"{name}: its index is damaged (it has bytes beyond its {count} images)")
    return entries, streams
