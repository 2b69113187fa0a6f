"""Opening a store directory: recovering every volume from its files. Blocking I/O, worker threads.

The volume file is the truth; the index file is trusted only where it checks out (see `idxfile`).
Regions of a volume no index record covers (gaps and the tail) are scanned needle by needle,
checking header CRC and data CRC; a torn tail is cut off (truncated) so it is never served, and a
torn needle before complete ones is marked aborted. This is also the "check" a volume gets after a
failed fsync: needles whose fsync failed were never indexed, so they are scanned here again.

What lives here: directory preparation, per-volume recovery, the scan. What must not: the
in-memory index (the store builds it from the records returned here) or anything async.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from pathlib import Path

from arkor.checksum import crc32c
from arkor.data import needle as nd
from arkor.data.fileops import FileOps, pread_exact
from arkor.data.idxfile import Record, idx_path, read_index, replace_index
from arkor.data.volume import COPY_CHUNK, Volume, VolumeError, VolumeFile, dat_path

log = logging.getLogger(__name__)

_DAT_NAME = re.compile(r"([0-9]{8})\.dat")


def prepare_dir(directory: Path) -> list[int]:
    """Drop leftovers of interrupted compactions and empty volume files; list volume ids."""
    for pattern in ("*.cpd", "*.cpx", "*.idx.tmp"):
        for path in directory.glob(pattern):
            path.unlink()
    ids = []
    for path in directory.iterdir():
        match = _DAT_NAME.fullmatch(path.name)
        if not match:
            continue
        if path.stat().st_size < nd.SUPERBLOCK_SIZE:  # crashed while being created
            path.unlink()
            idx_path(directory, int(match.group(1))).unlink(missing_ok=True)
            continue
        ids.append(int(match.group(1)))
    return sorted(ids)


def load_volume(directory: Path, volume_id: int, ops: FileOps) -> tuple[Volume, list[Record], dict[str, int]]:
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
        records, stats = _recover(fd, size, read_index(directory, volume_id, revision), ops)
        end = records[-1].offset + records[-1].length if records else nd.SUPERBLOCK_SIZE
        end = max(end, stats.pop("end"))
        if end < size:
            log.warning("volume %d: cutting torn tail of %d bytes at %d", volume_id, size - end, end)
            ops.ftruncate(fd, end)
            ops.fsync(fd)
            stats["truncated_bytes"] = size - end
        if (stats["scanned_needles"] or stats["truncated_bytes"] or stats["idx_dropped"]
                or not idx_path(directory, volume_id).exists()):  # crashed before creating it
            idx_fd = replace_index(directory, volume_id, revision, records, ops)
        else:
            idx_fd = os.open(idx_path(directory, volume_id), os.O_WRONLY | os.O_APPEND)
    except BaseException:
        os.close(fd)
        raise
    live = [r for r in records if not r.flags & nd.FLAG_ABORTED]
    return Volume(directory, volume_id, revision, VolumeFile(fd), idx_fd, end, ops), live, stats


def release_free_memory() -> None:
    """Hand the heap freed after loading (a million transient index records) back to the OS.

    glibc keeps freed small blocks in its arenas, so without this the process RSS after a start
    stays about 40 B per needle above what the compact index really holds."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _recover(fd: int, size: int, indexed: list[Record], ops: FileOps) -> tuple[list[Record], dict[str, int]]:
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
            found, _ = _scan(fd, expected, r.offset, stats, ops, tail=False)
            out.extend(found)
        out.append(r)
        stats["indexed_needles"] += 1
        expected = r.offset + r.length
    found, end = _scan(fd, expected, size, stats, ops, tail=True)
    out.extend(found)
    stats["end"] = end
    return out, stats


def _scan(
    fd: int, start: int, stop: int, stats: dict[str, int], ops: FileOps, *, tail: bool
) -> tuple[list[Record], int]:
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
            ops.pwrite_all(fd, nd.pack_header(aborted), offset)
            found.append(Record(offset, header.key, header.cookie, header.size, 0, header.timestamp_ns,
                                aborted.flags))
    found.sort(key=lambda r: r.offset)
    return found, good_end if tail else stop
