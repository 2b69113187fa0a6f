"""One volume: an append-only file of needles plus its index file. Blocking I/O only.

Everything here runs in worker threads (the store calls it through `trio.to_thread.run_sync` with a
bounded limiter). The volume file is the truth; the index file (``NNNNNNNN.idx``) is a cache that
makes restart fast and is verified against the volume when it is loaded:

- every index record carries its own CRC32C and must lie inside the volume file;
- the index header names the volume's *revision* (bumped by each compaction), so an index left
  over from before a compaction is recognised and ignored;
- regions of the volume no index record covers (gaps and the tail) are scanned needle by needle,
  checking header CRC and data CRC; a torn tail is cut off (truncated) so it is never served.

Space is handed out by `reserve`, which writes the needle's header in the same locked step. So any
later fsync also makes that header durable, and a scan after a crash can always step over a needle
whose data never completed (it fails its data CRC and is marked aborted) to the needles after it.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from arkor.checksum import crc32c
from arkor.data import needle as nd
from arkor.errors import InsufficientStorage

log = logging.getLogger(__name__)

IDX_HEADER = struct.Struct("<4sHHII")  # magic, version, reserved, volume id, revision
IDX_MAGIC = b"ARKI"
IDX_RECORD = struct.Struct("<QQQQIIB3x")  # key, offset, size, timestamp ns, cookie, crc, flags
IDX_RECORD_SIZE = IDX_RECORD.size + 4  # + CRC32C of the record
COPY_CHUNK = 1024 * 1024

assert IDX_RECORD_SIZE == 48


class VolumeError(Exception):
    """A volume file that cannot be opened safely (not a volume, wrong id)."""


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


_IDX_FULL = struct.Struct("<QQQQIIB3xI")


def unpack_records(raw: bytes) -> list[Record]:
    """Index records with a valid CRC; a torn or garbled record is dropped (the scan recovers it)."""
    out = []
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


def dat_path(directory: Path, volume_id: int) -> Path:
    return directory / f"{volume_id:08d}.dat"


def idx_path(directory: Path, volume_id: int) -> Path:
    return directory / f"{volume_id:08d}.idx"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def pread_exact(fd: int, length: int, offset: int) -> bytes:
    """Exactly `length` bytes or fewer at end of file."""
    data = os.pread(fd, length, offset)
    if len(data) == length or not data:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class VolumeFile:
    """An open volume file descriptor shared by readers; closed when retired and unused.

    Compaction swaps a volume's file: readers that already hold the old one keep reading it (the
    renamed-over inode stays readable while open) and the last of them closes it.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.refs = 0
        self.retired = False

    def acquire(self) -> VolumeFile:
        self.refs += 1
        return self

    def release(self) -> None:
        self.refs -= 1
        if self.retired and self.refs == 0:
            self._close()

    def retire(self) -> None:
        self.retired = True
        if self.refs == 0:
            self._close()

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class Volume:
    """State of one volume. `end` and the file are guarded by `lock` (worker threads)."""

    directory: Path
    volume_id: int
    revision: int
    file: VolumeFile
    idx_fd: int
    end: int
    sealed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    # trio-side bookkeeping (touched only from the trio thread)
    inflight: int = 0
    write_gen: int = 0
    synced_gen: int = 0
    pending_idx: list[bytes] = field(default_factory=list)
    live_bytes: int = 0
    compacting: bool = False
    syncing: object = None  # the trio.Event of the group commit in progress, if any

    @property
    def dat(self) -> Path:
        return dat_path(self.directory, self.volume_id)

    # --- creation and loading ---------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, volume_id: int) -> Volume:
        path = dat_path(directory, volume_id)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            pwrite_all(fd, nd.pack_superblock(volume_id, 0), 0)
            os.fsync(fd)
            idx_fd = _new_idx(directory, volume_id, 0, [])
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        fsync_dir(directory)
        return cls(directory, volume_id, 0, VolumeFile(fd), idx_fd, nd.SUPERBLOCK_SIZE)

    @classmethod
    def load(cls, directory: Path, volume_id: int) -> tuple[Volume, list[Record], dict[str, int]]:
        """Open and recover a volume: returns it, its needles in offset order, and load stats."""
        path = dat_path(directory, volume_id)
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            parsed = nd.parse_superblock(pread_exact(fd, nd.SUPERBLOCK_SIZE, 0))
            if parsed is None:
                raise VolumeError(f"{path}: not an arkor volume (bad superblock)")
            if parsed[0] != volume_id:
                raise VolumeError(f"{path}: superblock names volume {parsed[0]}")
            revision = parsed[1]
            records, stats = _recover(fd, size, _read_idx(directory, volume_id, revision))
            end = records[-1].offset + records[-1].length if records else nd.SUPERBLOCK_SIZE
            end = max(end, stats.pop("end"))
            if end < size:
                log.warning("volume %d: cutting torn tail of %d bytes at %d", volume_id, size - end, end)
                os.ftruncate(fd, end)
                os.fsync(fd)
                stats["truncated_bytes"] = size - end
            if (stats["scanned_needles"] or stats["truncated_bytes"] or stats["idx_dropped"]
                    or not idx_path(directory, volume_id).exists()):  # crashed before creating it
                idx_fd = _new_idx(directory, volume_id, revision, records)
            else:
                idx_fd = os.open(idx_path(directory, volume_id), os.O_WRONLY | os.O_APPEND)
        except BaseException:
            os.close(fd)
            raise
        live = [r for r in records if not r.flags & nd.FLAG_ABORTED]
        return cls(directory, volume_id, revision, VolumeFile(fd), idx_fd, end), live, stats

    # --- writing (worker threads) -------------------------------------------------------------

    def reserve(self, header: bytes, length: int, max_size: int, reserve_bytes: int) -> int | None:
        """Claim `length` bytes at the end and write the header there; None when the volume is
        sealed or would grow past `max_size` (an empty volume takes any needle)."""
        with self.lock:
            if self.sealed:
                return None
            if self.end > nd.SUPERBLOCK_SIZE and self.end + length > max_size:
                return None
            st = os.statvfs(self.directory)
            free = st.f_bavail * st.f_frsize
            if free - length < reserve_bytes:
                raise InsufficientStorage(
                    f"{length} bytes would leave {max(free - length, 0)} free, below the reserve of "
                    f"{reserve_bytes} bytes"
                )
            offset = self.end
            try:
                pwrite_all(self.file.fd, header, offset)
            except OSError as exc:
                self._truncate_locked(offset)
                if exc.errno == errno.ENOSPC:
                    raise InsufficientStorage("the disk is full") from None
                raise
            self.end = offset + length
            return offset

    def write_at(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        try:
            pwrite_all(self.file.fd, data, offset)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise InsufficientStorage("the disk is full") from None
            raise

    def abort(self, offset: int, length: int, header: nd.Header) -> None:
        """Undo a reservation whose write failed: truncate it if it is the tail, else mark the
        needle aborted so scans and compaction step over it."""
        with self.lock:
            if self.end == offset + length:
                self._truncate_locked(offset)
                return
        aborted = nd.Header(header.key, header.cookie, header.size, header.timestamp_ns,
                            header.flags | nd.FLAG_ABORTED)
        try:
            pwrite_all(self.file.fd, nd.pack_header(aborted), offset)
        except OSError:
            log.exception("volume %d: could not mark the needle at %d aborted", self.volume_id, offset)

    def _truncate_locked(self, offset: int) -> None:
        os.ftruncate(self.file.fd, offset)
        self.end = offset

    def sync(self, idx_records: list[bytes]) -> None:
        """Append index records of needles already durable, then make the volume durable."""
        if idx_records:
            os.write(self.idx_fd, b"".join(idx_records))
        os.fdatasync(self.file.fd)

    def seal(self) -> None:
        with self.lock:
            self.sealed = True

    def close(self, idx_records: list[bytes]) -> None:
        try:
            self.sync(idx_records)
            os.fsync(self.idx_fd)
        finally:
            os.close(self.idx_fd)
            self.file.retire()


def _new_idx(directory: Path, volume_id: int, revision: int, records: list[Record]) -> int:
    """Write a complete index file atomically (temp + rename) and return it open for appends."""
    final = idx_path(directory, volume_id)
    tmp = final.with_suffix(".idx.tmp")
    body = IDX_HEADER.pack(IDX_MAGIC, 1, 0, volume_id, revision) + b"".join(r.pack() for r in records)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        pwrite_all(fd, body, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync_dir(directory)
    return os.open(final, os.O_WRONLY | os.O_APPEND)


def _read_idx(directory: Path, volume_id: int, revision: int) -> list[Record]:
    """The index file's records, or [] when it is missing or belongs to another revision."""
    try:
        raw = idx_path(directory, volume_id).read_bytes()
    except FileNotFoundError:
        return []
    if len(raw) < IDX_HEADER.size:
        return []
    magic, version, _res, vid, rev = IDX_HEADER.unpack_from(raw, 0)
    if magic != IDX_MAGIC or version != 1 or vid != volume_id or rev != revision:
        log.warning("volume %d: index file is stale (revision %d, volume %d); rescanning", volume_id, rev,
                    revision)
        return [Record(-1, 0, 0, 0, 0, 0, 0)]  # marker: forces a rewrite after the scan
    return unpack_records(raw[IDX_HEADER.size :])


def _recover(fd: int, size: int, indexed: list[Record]) -> tuple[list[Record], dict[str, int]]:
    """Merge trusted index records with scans of every uncovered region; returns needles in offset
    order (aborted ones included, so their space is accounted) and stats."""
    stats = {"indexed_needles": 0, "scanned_needles": 0, "torn_needles": 0, "idx_dropped": 0,
             "truncated_bytes": 0, "end": nd.SUPERBLOCK_SIZE}
    valid = []
    for r in indexed:
        if r.offset < nd.SUPERBLOCK_SIZE or r.offset % nd.ALIGN or r.offset + r.length > size:
            stats["idx_dropped"] += 1
            continue
        valid.append(r)
    if any(valid[i].offset >= valid[i + 1].offset for i in range(len(valid) - 1)):
        by_offset = {r.offset: r for r in valid}
        valid = [by_offset[o] for o in sorted(by_offset)]
    out: list[Record] = []
    expected = nd.SUPERBLOCK_SIZE
    for r in valid:
        if r.offset < expected:  # overlaps what we already have: not trustworthy
            stats["idx_dropped"] += 1
            continue
        if r.offset > expected:
            found, _ = _scan(fd, expected, r.offset, stats, tail=False)
            out.extend(found)
        out.append(r)
        stats["indexed_needles"] += 1
        expected = r.offset + r.length
    found, end = _scan(fd, expected, size, stats, tail=True)
    out.extend(found)
    stats["end"] = end
    return out, stats


def _scan(fd: int, start: int, stop: int, stats: dict[str, int], *, tail: bool) -> tuple[list[Record], int]:
    """Parse needles in [start, stop). Returns the good ones and, for the tail, where the volume
    should end: after the last complete needle (torn ones after it are cut off)."""
    found: list[Record] = []
    torn: list[tuple[int, nd.Header]] = []
    pos = start
    good_end = start
    while pos + nd.HEADER_SIZE <= stop:
        header = nd.parse_header(pread_exact(fd, nd.HEADER_SIZE, pos))
        if header is None or pos + header.length > stop:
            break
        if header.aborted:
            found.append(Record(pos, header.key, header.cookie, header.size, 0, header.timestamp_ns,
                                header.flags))
            pos += header.length
            good_end = pos
            continue
        crc = 0
        done = 0
        while done < header.size:
            chunk = pread_exact(fd, min(COPY_CHUNK, header.size - done), pos + nd.HEADER_SIZE + done)
            if not chunk:
                break
            crc = crc32c(chunk, crc)
            done += len(chunk)
        stored = pread_exact(fd, nd.TRAILER_SIZE, pos + nd.HEADER_SIZE + header.size)
        if done == header.size and len(stored) == 4 and struct.unpack("<I", stored)[0] == crc:
            found.append(Record(pos, header.key, header.cookie, header.size, crc, header.timestamp_ns,
                                header.flags))
            stats["scanned_needles"] += 1
            good_end = pos + header.length
        else:
            torn.append((pos, header))
            stats["torn_needles"] += 1
        pos += header.length
    for offset, header in torn:
        if offset < good_end or not tail:
            # a torn needle before complete ones: mark it aborted so it is skipped from now on
            aborted = nd.Header(header.key, header.cookie, header.size, header.timestamp_ns,
                                header.flags | nd.FLAG_ABORTED)
            pwrite_all(fd, nd.pack_header(aborted), offset)
            found.append(Record(offset, header.key, header.cookie, header.size, 0, header.timestamp_ns,
                                aborted.flags))
    found.sort(key=lambda r: r.offset)
    return found, good_end if tail else stop
