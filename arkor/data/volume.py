"""One volume: an append-only file of needles plus its index file. Blocking I/O, worker threads only.

The store calls everything here through `trio.to_thread.run_sync` with a bounded limiter; only the
fields marked trio-side are touched from the trio thread. Space is handed out by `reserve`, which
writes the needle's header in the same locked step, so any later fsync also makes that header
durable and a scan after a crash can always step over a needle whose data never completed (it
fails its data CRC and is marked aborted) to the needles after it.

What lives here: a volume's state, creating one, reserving, writing, aborting, syncing, sealing
and closing. What must not: loading and recovery (`loading`), the index-file layout (`idxfile`),
the group-commit policy (`commit`), compaction (`compaction`), or raw system calls (`fileops`).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from arkor.data import needle as nd
from arkor.data.fileops import FileOps
from arkor.data.idxfile import idx_path, replace_index
from arkor.errors import InsufficientStorage

log = logging.getLogger(__name__)

COPY_CHUNK = 1024 * 1024  # I/O unit for large needles (reads, scans, compaction copies)


class VolumeError(Exception):
    """A volume file that cannot be opened safely (not a volume, wrong id)."""


def dat_path(directory: Path, volume_id: int) -> Path:
    return directory / f"{volume_id:08d}.dat"


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


@dataclass(slots=True, eq=False)
class Append:
    """A small needle waiting for the next group commit, which writes every waiting one back to
    back in one `pwrite` and fsyncs them together (`Volume.write_appends`): one worker-thread call
    for many writers instead of one each. Filled in by the worker: `offset` where it went (None:
    it did not fit, the writer rotates the volume and tries again) or `error`."""

    needle: bytes
    max_size: int
    reserve_bytes: int
    offset: int | None = None
    error: BaseException | None = None
    taken: bool = False  # handed to a worker: no longer cancellable


@dataclass
class Volume:
    """State of one volume. `end` and the file are guarded by `lock` (worker threads)."""

    directory: Path
    volume_id: int
    revision: int
    file: VolumeFile
    idx_fd: int
    end: int
    ops: FileOps
    sealed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    # trio-side bookkeeping (touched only from the trio thread)
    inflight: int = 0
    write_gen: int = 0
    synced_gen: int = 0
    pending_idx: list[bytes] = field(default_factory=list)
    pending_appends: list[Append] = field(default_factory=list)
    live_bytes: int = 0
    compacting: bool = False
    syncing: object = None  # the trio.Event of the group commit in progress, if any
    failed: str = ""  # why a sync failed: the volume is then read-only until checked (a restart)

    @property
    def dat(self) -> Path:
        return dat_path(self.directory, self.volume_id)

    @classmethod
    def create(cls, directory: Path, volume_id: int, ops: FileOps) -> Volume:
        path = dat_path(directory, volume_id)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            ops.pwrite_all(fd, nd.pack_superblock(volume_id, 0), 0)
            ops.fsync(fd)
            idx_fd = replace_index(directory, volume_id, 0, [], ops)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        ops.fsync_dir(directory)
        return cls(directory, volume_id, 0, VolumeFile(fd), idx_fd, nd.SUPERBLOCK_SIZE, ops)

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
                self.ops.pwrite_all(self.file.fd, header, offset)
            except OSError as exc:
                self._truncate_locked(offset)
                if exc.errno == errno.ENOSPC:
                    raise InsufficientStorage("the disk is full") from None
                raise
            self.end = offset + length
            return offset

    def write_appends(self, appends: list[Append]) -> None:
        """Reserve and write `appends` back to back in one pwrite (each as `reserve` would: not
        past `max_size` unless the volume is empty, not below the free-space reserve)."""
        with self.lock:
            start = self.end
            parts: list[bytes] = []
            free: int | None = None
            fits = not self.sealed
            for append in appends:
                length = len(append.needle)
                if fits and self.end > nd.SUPERBLOCK_SIZE and self.end + length > append.max_size:
                    fits = False
                if not fits:
                    continue  # offset None: the writer rotates and tries the next volume
                if append.reserve_bytes:
                    if free is None:
                        st = os.statvfs(self.directory)
                        free = st.f_bavail * st.f_frsize
                    left = free - (self.end - start) - length
                    if left < append.reserve_bytes:
                        append.error = InsufficientStorage(
                            f"{length} bytes would leave {max(left, 0)} free, below the reserve of "
                            f"{append.reserve_bytes} bytes")
                        continue
                append.offset = self.end
                parts.append(append.needle)
                self.end += length
            if not parts:
                return
            try:
                self.ops.pwrite_all(self.file.fd, b"".join(parts), start)
            except OSError as exc:
                self._truncate_locked(start)
                error: BaseException = (InsufficientStorage("the disk is full")
                                        if exc.errno == errno.ENOSPC else exc)
                for append in appends:
                    if append.offset is not None:
                        append.offset, append.error = None, error

    def write_at(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        try:
            self.ops.pwrite_all(self.file.fd, data, offset)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise InsufficientStorage("the disk is full") from None
            raise

    def abort(self, offset: int, length: int, header: nd.Header) -> None:
        """Undo a reservation whose write failed: truncate it if it is the tail, else mark the
        needle aborted so scans and compaction step over it."""
        try:
            with self.lock:
                if self.end == offset + length:
                    self._truncate_locked(offset)
                    return
            aborted = nd.Header(header.key, header.cookie, header.size, header.timestamp_ns,
                                header.flags | nd.FLAG_ABORTED)
            self.ops.pwrite_all(self.file.fd, nd.pack_header(aborted), offset)
        except OSError:
            log.exception("volume %d: could not abort the needle at %d", self.volume_id, offset)

    def _truncate_locked(self, offset: int) -> None:
        self.ops.ftruncate(self.file.fd, offset)
        self.end = offset

    def sync(self, idx_records: list[bytes], appends: list[Append] | None = None) -> None:
        """Write the waiting small needles, append index records of needles already durable,
        then make the volume durable."""
        if appends:
            self.write_appends(appends)
        if idx_records:
            self.ops.write_all(self.idx_fd, b"".join(idx_records))
        self.ops.fdatasync(self.file.fd)

    def seal(self) -> None:
        with self.lock:
            self.sealed = True

    def close(self, idx_records: list[bytes]) -> None:
        """Sync and close; a failed volume is only closed (fsyncgate: a sync after a failed one
        may report success for data that is gone, so it is never tried again)."""
        try:
            if not self.failed:
                self.sync(idx_records)
                self.ops.fsync(self.idx_fd)
        finally:
            os.close(self.idx_fd)
            self.file.retire()


__all__ = ["COPY_CHUNK", "Append", "Volume", "VolumeError", "VolumeFile", "dat_path", "idx_path"]
