"""The index-file format (``NNNNNNNN.idx``): a cache of a volume's needle records. Blocking I/O.

The volume file is the truth; the index file only makes restart fast, and `loading` verifies it
against the volume: every record carries its own CRC32C and must lie inside the volume file, and
the header names the volume's *revision* (bumped by each compaction), so an index left over from
before a compaction is recognised and ignored. Records are appended only for needles already
durable (the group commit writes them just before the next fsync of the volume).

What lives here: the header and record layouts, packing, unpacking, writing a whole index file
atomically and reading one. What must not: recovery decisions (`loading`) or needle parsing.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import NamedTuple

from arkor.checksum import crc32c
from arkor.data import needle as nd
from arkor.data.fileops import FileOps

log = logging.getLogger(__name__)

IDX_HEADER = struct.Struct("<4sHHII")  # magic, version, reserved, volume id, revision
IDX_MAGIC = b"ARKI"
IDX_RECORD = struct.Struct("<QQQQIIB3x")  # key, offset, size, timestamp ns, cookie, crc, flags
IDX_RECORD_SIZE = IDX_RECORD.size + 4  # + CRC32C of the record
_IDX_FULL = struct.Struct("<QQQQIIB3xI")

assert IDX_RECORD_SIZE == 48


class Record(NamedTuple):
    """One needle as found in a volume (from the index file or a scan). A NamedTuple: a million
    of them are created at start-up, and tuples are the cheapest objects to make."""

    offset: int
    key: int
    cookie: int
    size: int
    crc32c: int
    timestamp_ns: int
    flags: int

    @property
    def length(self) -> int:
        return nd.padded_length(self.size)

    def pack(self) -> bytes:
        raw = IDX_RECORD.pack(
            self.key, self.offset, self.size, self.timestamp_ns, self.cookie, self.crc32c, self.flags
        )
        return raw + struct.pack("<I", crc32c(raw))


STALE = Record(-1, 0, 0, 0, 0, 0, 0)  # read_index's marker for "stale: rewrite after the scan"


def idx_path(directory: Path, volume_id: int) -> Path:
    return directory / f"{volume_id:08d}.idx"


def header(volume_id: int, revision: int) -> bytes:
    return IDX_HEADER.pack(IDX_MAGIC, 1, 0, volume_id, revision)


def unpack_records(raw: bytes) -> list[Record]:
    """Index records with a valid CRC; a torn or garbled record is dropped (the scan recovers it)."""
    out: list[Record] = []
    usable = len(raw) // IDX_RECORD_SIZE * IDX_RECORD_SIZE
    view = memoryview(raw)[:usable]
    body = IDX_RECORD.size
    append = out.append
    for pos, (key, offset, size, ts, cookie, crc, flags, check) in zip(
        range(0, usable, IDX_RECORD_SIZE), _IDX_FULL.iter_unpack(view), strict=True
    ):
        if crc32c(view[pos : pos + body]) == check:
            append(Record(offset, key, cookie, size, crc, ts, flags))
    return out


def write_index(path: Path, volume_id: int, revision: int, packed: list[bytes], ops: FileOps) -> None:
    """Write a complete index file at `path` and fsync it (not renamed: the caller decides when)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        ops.pwrite_all(fd, header(volume_id, revision) + b"".join(packed), 0)
        ops.fsync(fd)
    finally:
        os.close(fd)


def replace_index(directory: Path, volume_id: int, revision: int, records: list[Record], ops: FileOps) -> int:
    """Write a complete index file atomically (temp + rename) and return it open for appends."""
    final = idx_path(directory, volume_id)
    tmp = final.with_suffix(".idx.tmp")
    write_index(tmp, volume_id, revision, [r.pack() for r in records], ops)
    os.replace(tmp, final)
    ops.fsync_dir(directory)
    return os.open(final, os.O_WRONLY | os.O_APPEND)


def read_index(directory: Path, volume_id: int, revision: int) -> list[Record]:
    """The index file's records: [] when it is missing, [STALE] when it belongs to another revision."""
    try:
        raw = idx_path(directory, volume_id).read_bytes()
    except FileNotFoundError:
        return []
    if len(raw) < IDX_HEADER.size:
        return []
    magic, version, _res, vid, rev = IDX_HEADER.unpack_from(raw, 0)
    if magic != IDX_MAGIC or version != 1 or vid != volume_id or rev != revision:
        log.warning("volume %d: index file is stale (revision %d, the volume's is %d); rescanning",
                    volume_id, rev, revision)
        return [STALE]
    return unpack_records(raw[IDX_HEADER.size :])
