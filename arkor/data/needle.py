"""The on-disk needle format (docs/specs/Internal.md, "On-disk layout"): pure encode/decode, no I/O.

A needle is ``header (40 B) | data (size B) | CRC32C of data (4 B) | zero padding to 8 B``.
The header carries its own CRC32C so that a scan after a crash can tell a real header (and so the
needle's extent) from garbage; the data CRC tells a complete needle from a torn one.

Header, little-endian::

     0  magic      4s   b"ARKN"
     4  version    u8   1
     5  flags      u8   1 = tombstone, 2 = aborted (a write that never completed: skip it)
     6  reserved   u16  0
     8  cookie     u32
    12  hdr_crc    u32  CRC32C of bytes [0:12] + [16:40]
    16  key        u64
    24  size       u64  data bytes
    32  timestamp  u64  append time, ns since the Unix epoch
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from arkor.checksum import crc32c

MAGIC = b"ARKN"
VERSION = 1
FLAG_TOMBSTONE = 0x01
FLAG_ABORTED = 0x02

HEADER = struct.Struct("<4sBBHIIQQQ")
HEADER_SIZE = HEADER.size  # 40
TRAILER = struct.Struct("<I")
TRAILER_SIZE = TRAILER.size  # 4
ALIGN = 8

# Volume superblock: the first 16 bytes of every volume file.
SUPERBLOCK = struct.Struct("<4sHHII")  # magic, version, reserved, volume id, revision
SUPER_MAGIC = b"ARKV"
SUPERBLOCK_SIZE = SUPERBLOCK.size  # 16

assert HEADER_SIZE == 40 and SUPERBLOCK_SIZE == 16


def padded_length(size: int) -> int:
    """Bytes a needle with `size` data bytes occupies in a volume (always a multiple of 8)."""
    raw = HEADER_SIZE + size + TRAILER_SIZE
    return (raw + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True, slots=True)
class Header:
    key: int
    cookie: int
    size: int
    timestamp_ns: int
    flags: int = 0

    @property
    def tombstone(self) -> bool:
        return bool(self.flags & FLAG_TOMBSTONE)

    @property
    def aborted(self) -> bool:
        return bool(self.flags & FLAG_ABORTED)

    @property
    def length(self) -> int:
        return padded_length(self.size)


def _header_crc(raw: bytes | bytearray | memoryview) -> int:
    view = memoryview(raw)
    return crc32c(view[16:40], crc32c(view[0:12]))


def pack_header(header: Header) -> bytes:
    raw = bytearray(
        HEADER.pack(
            MAGIC, VERSION, header.flags, 0, header.cookie, 0,
            header.key, header.size, header.timestamp_ns,
        )
    )
    struct.pack_into("<I", raw, 12, _header_crc(raw))
    return bytes(raw)


def parse_header(raw: bytes | bytearray | memoryview) -> Header | None:
    """The header at the start of `raw`, or None when it is not a valid needle header."""
    if len(raw) < HEADER_SIZE:
        return None
    magic, version, flags, _res, cookie, hcrc, key, size, ts = HEADER.unpack_from(raw, 0)
    if magic != MAGIC or version != VERSION:
        return None
    if hcrc != _header_crc(memoryview(raw)[:HEADER_SIZE]):
        return None
    return Header(key=key, cookie=cookie, size=size, timestamp_ns=ts, flags=flags)


def trailer(data_crc: int, size: int) -> bytes:
    """The CRC32C trailer plus the zero padding that follows a needle's data."""
    pad = padded_length(size) - HEADER_SIZE - size - TRAILER_SIZE
    return TRAILER.pack(data_crc) + b"\0" * pad


def encode(header: Header, data: bytes) -> bytes:
    """A whole needle (used for tombstones and compaction copies of small needles)."""
    return pack_header(header) + data + trailer(crc32c(data), len(data))


def pack_superblock(volume_id: int, revision: int) -> bytes:
    return SUPERBLOCK.pack(SUPER_MAGIC, 1, 0, volume_id, revision)


def parse_superblock(raw: bytes) -> tuple[int, int] | None:
    """(volume id, revision) or None when `raw` is not a volume superblock."""
    if len(raw) < SUPERBLOCK_SIZE:
        return None
    magic, version, _res, volume_id, revision = SUPERBLOCK.unpack_from(raw, 0)
    if magic != SUPER_MAGIC or version != 1:
        return None
    return volume_id, revision
