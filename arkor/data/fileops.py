"""The system calls that change a volume's files, behind one small seam; blocking, worker threads only.

Why a seam: durability depends on how the engine reacts when `fsync` or a write fails, and that
must be testable in-process. Tests hand `NeedleStore` a `FileOps` subclass that fails (or blocks)
on cue instead of patching `os`. What lives here: writes, truncation, fsync and the helpers built
on them. What must not: any policy (what a failure means is decided by the callers: `commit`
turns a failed fsync into a read-only volume), and reads, which change nothing.
"""

from __future__ import annotations

import os
from pathlib import Path


class FileOps:
    """The real system calls. One instance is shared by every volume of a store."""

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def pwrite_all(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = self.pwrite(fd, view, offset)
            view = view[written:]
            offset += written

    def write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self.write(fd, view):]  # type: ignore[arg-type]

    def fsync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            self.fsync(fd)
        finally:
            os.close(fd)


SYSTEM = FileOps()


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
