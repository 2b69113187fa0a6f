"""The verified read: a needle's bytes are handed out only after its header and CRC32C check out.

`NeedleStore.open_stream` is the one entrance (GET, range reads, the scrubber and repair all go
through it): it runs `verify` here in a worker thread before the first byte leaves, so a needle
failing its checks raises CorruptNeedle while the caller can still answer with an error. A small
needle whose pages are all in the page cache is read on the event loop instead (`verify_cached`,
RWF_NOWAIT: the kernel never waits for the disk there), since the thread hand-off would cost more
than the read; the checks are the same.
Small needles are read and checked in one call and served from that buffer. `NeedleStore.get`
(which returns the bytes whole anyway) does the same for large ones, with header, data and
trailer in separate reads so the data buffer is handed out without a copy; a stream checks a
large needle in a first pass and then reads it again in bounded chunks.

What lives here: blocking verification over an open volume file. What must not: index lookups,
write logic, or any decision about what a corrupt needle means (the store's corruption hook).
"""

from __future__ import annotations

import os

from arkor.checksum import crc32c
from arkor.data import needle as nd
from arkor.data.fileops import pread_exact
from arkor.data.index import Entry
from arkor.data.volume import COPY_CHUNK
from arkor.errors import CorruptNeedle

# Needles up to this size are verified and served from one read; larger ones are streamed.
WHOLE_READ_MAX = 1024 * 1024
# Needles up to this size are first tried on the event loop, from the page cache only.
CACHED_READ_MAX = 64 * 1024
_NOWAIT = getattr(os, "RWF_NOWAIT", 0)


def clamp(size: int, offset: int, length: int | None) -> tuple[int, int]:
    start = min(max(offset, 0), size)
    end = size if length is None else min(size, start + max(length, 0))
    return start, end


def verify(fd: int, entry: Entry, whole: bool = False) -> bytes | None:
    """Check the needle at `entry`: its data when small or `whole` (one read), None when large
    (checked in a streaming pass, to be read again chunk by chunk). CorruptNeedle when anything
    is off."""
    if whole or entry.size <= WHOLE_READ_MAX:
        return _read_whole(fd, entry)
    _verify_streaming(fd, entry)
    return None


def read_chunk(fd: int, entry: Entry, pos: int, n: int) -> bytes:
    """`n` data bytes at `pos` of an already verified needle."""
    chunk = pread_exact(fd, n, entry.offset + nd.HEADER_SIZE + pos)
    if len(chunk) != n:
        raise CorruptNeedle(f"needle {entry.key:x} is truncated")
    return chunk


def _check_header(raw: bytes | bytearray, entry: Entry) -> None:
    header = nd.parse_header(raw)
    if header is None or (header.key, header.cookie, header.size) != (entry.key, entry.cookie, entry.size):
        raise CorruptNeedle(f"needle {entry.key:x}: header at {entry.offset} is damaged")


def verify_cached(fd: int, entry: Entry) -> bytes | None:
    """`verify` of a small needle without blocking: None (decide nothing) when the needle is large,
    any of its pages is not cached, or the platform has no RWF_NOWAIT; the caller then runs
    `verify` in a worker thread, which also owns every verdict on a short or failed read."""
    if not _NOWAIT or entry.size > CACHED_READ_MAX:
        return None
    total = nd.HEADER_SIZE + entry.size + nd.TRAILER_SIZE
    raw = bytearray(total)
    try:
        if os.preadv(fd, [raw], entry.offset, _NOWAIT) != total:
            return None
    except OSError:  # EAGAIN: not all cached; EOPNOTSUPP: this file system cannot say
        return None
    return _check_whole(raw, entry)


def _read_whole(fd: int, entry: Entry) -> bytes:
    if entry.size > CACHED_READ_MAX:
        scattered = _read_scattered(fd, entry)
        if scattered is not None:
            return scattered
    total = nd.HEADER_SIZE + entry.size + nd.TRAILER_SIZE
    raw = pread_exact(fd, total, entry.offset)
    if len(raw) != total:
        raise CorruptNeedle(f"needle {entry.key:x} is truncated")
    return _check_whole(raw, entry)


def _read_scattered(fd: int, entry: Entry) -> bytes | None:
    """A large needle read whole with its data in a buffer of its own (three reads: header, data,
    trailer), so the data is handed out without a copy (a fragment is MiBs); None on a short
    read (the caller's plain path then decides)."""
    header = os.pread(fd, nd.HEADER_SIZE, entry.offset)
    data = os.pread(fd, entry.size, entry.offset + nd.HEADER_SIZE)
    trailer = os.pread(fd, nd.TRAILER_SIZE, entry.offset + nd.HEADER_SIZE + entry.size)
    if (len(header), len(data), len(trailer)) != (nd.HEADER_SIZE, entry.size, nd.TRAILER_SIZE):
        return None
    _check_header(header, entry)
    return _check_data(data, trailer, entry)


def _check_whole(raw: bytes | bytearray, entry: Entry) -> bytes:
    _check_header(raw, entry)
    data = bytes(memoryview(raw)[nd.HEADER_SIZE : nd.HEADER_SIZE + entry.size])  # the one copy
    return _check_data(data, raw[-nd.TRAILER_SIZE:], entry)


def _check_data(data: bytes, trailer: bytes | bytearray, entry: Entry) -> bytes:
    """`data` when its CRC32C matches both the needle's trailer and the index entry."""
    actual = crc32c(data)
    if actual != int.from_bytes(trailer, "little") or actual != entry.crc32c:
        raise CorruptNeedle(f"needle {entry.key:x} failed its CRC32C check")
    return data


def _verify_streaming(fd: int, entry: Entry) -> None:
    _check_header(pread_exact(fd, nd.HEADER_SIZE, entry.offset), entry)
    running = 0
    pos = 0
    base = entry.offset + nd.HEADER_SIZE
    while pos < entry.size:
        chunk = pread_exact(fd, min(COPY_CHUNK, entry.size - pos), base + pos)
        if not chunk:
            raise CorruptNeedle(f"needle {entry.key:x} is truncated")
        running = crc32c(chunk, running)
        pos += len(chunk)
    stored = int.from_bytes(pread_exact(fd, 4, base + entry.size), "little")
    if running != stored or running != entry.crc32c:
        raise CorruptNeedle(f"needle {entry.key:x} failed its CRC32C check")
