"""`NeedleStore`: the HTTP-free volume engine of a data server (Haystack / SeaweedFS style).

Needles are appended to the active volume; a volume seals when the next needle would take it past
`volume_size` and a new one opens. All file I/O runs in worker threads under one bounded
`CapacityLimiter` (data.diskThreads); the index and all bookkeeping live in the trio thread, so
they need no locks. The pieces, one operation each:

- `writes`: the one verified write path (body size and CRC32C checked as it arrives);
- `commit`: group commit, and the fsync failure policy (a failed volume turns read-only);
- `reads`: the one verified read path (header and CRC32C checked before any byte leaves);
- `compaction`, `loading`, `idxfile`, `volume`, `fileops` (the seam tests fail on cue).

A write is published in the index, and so acknowledged, only after a successful fsync of its bytes.
A needle whose writer was cancelled or whose fsync failed is never published: a retry writes it
again (to a fresh volume after a failure). What must not live here: HTTP, repair decisions (the
store only reports corruption to its hooks), or file formats.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio
import trio.lowlevel

from arkor.data import compaction, loading, reads
from arkor.data import needle as nd
from arkor.data.commit import VolumeFailed, group_commit
from arkor.data.fileops import SYSTEM, FileOps
from arkor.data.idxfile import Record
from arkor.data.index import Entry, IndexBuilder, NeedleIndex
from arkor.data.volume import COPY_CHUNK, Append, Volume, VolumeError
from arkor.data.writes import SizeMismatch, read_body, write_streaming
from arkor.errors import Conflict, CorruptNeedle, NotFound, PayloadTooLarge
from arkor.fileid import FileID
from arkor.metrics import SCRUB_ERRORS

log = logging.getLogger(__name__)
T = TypeVar("T")

# Bodies up to this size are gathered and written in one thread call (one hop); larger ones stream.
WHOLE_WRITE_MAX = 1024 * 1024
# `get` (which returns the bytes whole anyway) reads and checks needles up to this size in one
# pass; larger ones stream (verified first, then read again chunk by chunk).
GET_WHOLE_MAX = 64 * 1024 * 1024
# Needles up to this size are written by the group commit itself, many in one pwrite (volume.Append).
GROUP_APPEND_MAX = 256 * 1024


class NeedleStore:
    """Open with `await NeedleStore.open(...)`, close with `await store.aclose()`."""

    def __init__(
        self,
        directory: Path,
        *,
        volume_size: int,
        reserve_bytes: int,
        max_needle_size: int,
        disk_threads: int,
        label: str = "",
        file_ops: FileOps = SYSTEM,
    ) -> None:
        self.directory = directory
        self.volume_size = volume_size
        self.reserve_bytes = reserve_bytes
        self.max_needle_size = max_needle_size
        self.limiter = trio.CapacityLimiter(max(1, disk_threads))
        self.label = label or str(directory)
        self.ops = file_ops
        self.index = NeedleIndex()
        self.volumes: dict[int, Volume] = {}
        self.active: Volume | None = None
        self.live_needles = 0
        self.live_bytes = 0  # data bytes of live needles
        self.load_stats: dict[str, Any] = {}
        self._writing: dict[int, trio.Event] = {}  # key -> set when its write (or delete) ends
        self._rotate_lock = trio.Lock()
        self._compact_lock = trio.Lock()
        self._closed = False
        self._corruption_hooks: list[Callable[[FileID], None]] = []

    def on_corruption(self, hook: Callable[[FileID], None]) -> None:
        """Call `hook(fid)` whenever a read (a GET, the scrubber, repair's own check) finds a
        needle failing its checks. Hooks run in the trio thread and must not block: repair
        subscribes and queues the needle for replacement from a good replica."""
        self._corruption_hooks.append(hook)

    def _report_corrupt(self, fid: FileID) -> None:
        SCRUB_ERRORS.labels(self.label).inc()
        for hook in self._corruption_hooks:
            hook(fid)

    # --- lifecycle -------------------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking `fn` in a worker thread under the store's disk limiter."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    @classmethod
    async def open(cls, directory: str | Path, **kwargs: Any) -> NeedleStore:
        store = cls(Path(directory), **kwargs)
        await store._load()
        return store

    async def _load(self) -> None:
        started = time.perf_counter()
        self.directory.mkdir(parents=True, exist_ok=True)
        ids = await self.run(loading.prepare_dir, self.directory)
        builder = IndexBuilder()
        stats: dict[str, Any] = {"volumes": 0, "indexed_needles": 0, "scanned_needles": 0, "torn_needles": 0,
                 "truncated_bytes": 0, "idx_dropped": 0}
        for vid in ids:
            volume, records, vstats = await self.run(loading.load_volume, self.directory, vid, self.ops)
            for key in stats.keys() & vstats.keys():
                stats[key] += vstats[key]
            stats["volumes"] += 1
            await self.run(builder.add_records, vid, records)
            del records
            self.volumes[vid] = volume
            await trio.lowlevel.checkpoint()
        self.index = await self.run(NeedleIndex.build, builder)
        del builder
        await self.run(self._recount)
        await self.run(loading.release_free_memory)
        if self.volumes:
            last = self.volumes[max(self.volumes)]
            for volume in self.volumes.values():
                if volume is not last:
                    volume.sealed = True
            self.active = last
        else:
            self.active = await self.run(Volume.create, self.directory, 1, self.ops)
            self.volumes[1] = self.active
        stats["seconds"] = round(time.perf_counter() - started, 3)
        self.load_stats = stats
        log.info("store %s opened: %s", self.directory, stats)

    def _recount(self) -> None:
        per_volume, self.live_needles, self.live_bytes = self.index.usage()
        for vid, volume in self.volumes.items():
            volume.live_bytes = per_volume.get(vid, 0)

    async def aclose(self) -> None:
        """Flush pending index records and close every file (shielded: must complete)."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            for volume in self.volumes.values():
                records, volume.pending_idx = volume.pending_idx, []
                try:
                    await self.run(volume.close, records)
                except OSError:
                    log.exception("closing volume %d", volume.volume_id)

    # --- writes ----------------------------------------------------------------------------------

    async def put(self, fid: FileID, chunks: AsyncIterable[bytes], size: int, crc: int) -> bool:
        """Store a needle from `chunks` (exactly `size` bytes whose CRC32C is `crc`) and fsync.

        Returns True when stored, False when the identical needle was already there (idempotent
        retry, also after waiting for a concurrent write of the same needle: only a durable needle
        is ever in the index). Raises ChecksumMismatch / SizeMismatch (nothing stored), Conflict
        (the key holds other content or was deleted), InsufficientStorage, PayloadTooLarge,
        VolumeFailed (its fsync failed: not stored, a retry writes it to another volume).
        """
        if size < 0 or size > self.max_needle_size:
            raise PayloadTooLarge(f"needle of {size} bytes exceeds data.maxNeedleSize {self.max_needle_size}")
        async with self._key_turn(fid.key):
            existing = self.index.get(fid.key)
            if existing is not None:
                if existing.deleted:
                    raise Conflict(f"needle {fid} was deleted; keys are never reused")
                if (existing.cookie, existing.size, existing.crc32c) != (fid.cookie, size, crc):
                    raise Conflict(f"key {fid.key:x} already holds other content")
                await read_body(chunks, size, crc, keep=False)
                return False
            await self._write(fid, chunks, size, crc, check_space=True)
            return True

    async def rewrite(self, fid: FileID, chunks: AsyncIterable[bytes], size: int, crc: int) -> None:
        """Append a fresh copy of a live needle whose stored copy is corrupt (repair, from a good
        replica): the index then points at the new copy and the bad one becomes garbage.
        Conflict unless `fid` is live here with this size and CRC32C."""
        async with self._key_turn(fid.key):
            existing = self.index.get(fid.key)
            if existing is None or existing.deleted or (
                existing.cookie, existing.size, existing.crc32c
            ) != (fid.cookie, size, crc):
                raise Conflict(f"needle {fid} is not live here with that content: nothing to rewrite")
            await self._write(fid, chunks, size, crc, check_space=False)

    async def delete(self, fid: FileID) -> bool:
        """Append a tombstone. True when a live needle was deleted; deleting an absent key writes a
        tombstone too (so a late write of that key is refused). NotFound on a wrong cookie."""
        async with self._key_turn(fid.key):
            existing = self.index.get(fid.key)
            if existing is not None and existing.cookie != fid.cookie:
                raise NotFound(f"no needle {fid}")
            if existing is not None and existing.deleted:
                return False
            header = nd.Header(fid.key, fid.cookie, 0, time.time_ns(), nd.FLAG_TOMBSTONE)
            # Tombstones ignore data.reserveBytes: deleting must work on a full disk.
            volume, offset = await self._append(nd.encode(header, b""), header.length, False)
            await self._finish_write(volume, offset, header, 0)
        return existing is not None

    @asynccontextmanager
    async def _key_turn(self, key: int) -> AsyncIterator[None]:
        """One write, rewrite or delete of a key at a time; a later one waits for the earlier.

        Why wait rather than refuse: the same needle can arrive twice at once (an object server's
        write and a repair copy of it from a peer, or a retried PUT), and a delete can chase a write
        being rolled back. After the wait the caller decides on what the first one left: identical
        bytes are an idempotent success, a tombstone wins."""
        while (busy := self._writing.get(key)) is not None:
            await busy.wait()
        done = self._writing[key] = trio.Event()
        try:
            yield
        finally:
            del self._writing[key]
            done.set()

    async def _write(
        self, fid: FileID, chunks: AsyncIterable[bytes], size: int, crc: int, *, check_space: bool
    ) -> None:
        """The one verified write path: check the body, append it, group-commit, publish."""
        header = nd.Header(fid.key, fid.cookie, size, time.time_ns())
        length = nd.padded_length(size)
        if size <= WHOLE_WRITE_MAX:
            data = await read_body(chunks, size, crc, keep=True)
            needle = nd.pack_header(header) + data + nd.trailer(crc, size)  # crc is data's, checked
            if size <= GROUP_APPEND_MAX:
                volume, offset = await self._append_durably(needle, check_space)
                self._publish(volume, offset, header, crc)
                return
            volume, offset = await self._append(needle, length, check_space)
        else:
            volume, offset = await self._append(nd.pack_header(header), length, check_space)
            try:
                await write_streaming(self.run, volume, offset, header, chunks, crc)
            except BaseException:
                with trio.CancelScope(shield=True), trio.move_on_after(30):
                    await self.run(volume.abort, offset, length, header)
                volume.inflight -= 1
                raise
        await self._finish_write(volume, offset, header, crc)

    async def _append(self, prefix: bytes, length: int, check_space: bool) -> tuple[Volume, int]:
        """Reserve `length` bytes in the active volume, writing `prefix` there; rotates volumes."""
        while True:
            volume = self.active
            assert volume is not None
            volume.inflight += 1  # before the await, so compaction never sees it idle meanwhile
            try:
                offset = await self.run(
                    volume.reserve, prefix, length, self.volume_size, self.reserve_bytes if check_space else 0
                )
            except BaseException:
                volume.inflight -= 1
                raise
            if offset is not None:
                return volume, offset
            volume.inflight -= 1
            await self.rotate_from(volume)

    async def _append_durably(self, needle: bytes, check_space: bool) -> tuple[Volume, int]:
        """Queue a small needle for the active volume's next group commit, which writes and
        fsyncs it with the others waiting (`volume.Append`); rotates volumes when it does not
        fit. Returns once it is durable. A writer cancelled before its needle was handed to a
        worker takes it back; after that the copy is written but never published (garbage)."""
        while True:
            volume = self.active
            assert volume is not None
            if volume.sealed or volume.failed:  # a failed fsync sealed it: the next volume
                await self.rotate_from(volume)
                continue
            append = Append(needle, self.volume_size, self.reserve_bytes if check_space else 0)
            volume.inflight += 1  # before the await, so compaction never sees it idle meanwhile
            volume.pending_appends.append(append)
            volume.write_gen += 1
            try:
                await group_commit(volume, volume.write_gen, self.run, self.label)
            except BaseException:
                if not append.taken:
                    volume.pending_appends.remove(append)
                raise
            finally:
                volume.inflight -= 1
            if append.error is not None:
                raise append.error
            if append.offset is not None:
                return volume, append.offset
            await self.rotate_from(volume)

    async def rotate_from(self, volume: Volume) -> None:
        """Seal `volume` and open the next one, unless another task already did."""
        async with self._rotate_lock:
            if self.active is not volume:
                return
            new_id = max(self.volumes) + 1
            try:
                new = await self.run(Volume.create, self.directory, new_id, self.ops)
            except OSError as exc:
                raise VolumeFailed(f"cannot create volume {new_id}: {exc}") from exc
            await self.run(volume.seal)
            self.volumes[new_id] = new
            self.active = new
            log.info("volume %d sealed at %d bytes; volume %d opened", volume.volume_id, volume.end, new_id)

    async def _finish_write(self, volume: Volume, offset: int, header: nd.Header, crc: int) -> None:
        """Group-commit the needle, then publish it in the index. Not published when the commit
        failed or the writer was cancelled: only durable needles are ever acknowledged, and an
        unpublished copy is garbage (a restart may find it again, as after a crash: its writer
        was never told it is stored, so nothing refers to it)."""
        volume.write_gen += 1
        gen = volume.write_gen
        try:
            await group_commit(volume, gen, self.run, self.label)
        finally:
            volume.inflight -= 1
        self._publish(volume, offset, header, crc)

    def _publish(self, volume: Volume, offset: int, header: nd.Header, crc: int) -> None:
        deleted = header.tombstone
        old = self.index.get(header.key)
        if old is not None:
            old_volume = self.volumes.get(old.volume)
            if old_volume is not None:
                old_volume.live_bytes -= nd.padded_length(0 if old.deleted else old.size)
            if not old.deleted:
                self.live_needles -= 1
                self.live_bytes -= old.size
        entry = Entry(header.key, volume.volume_id, offset, header.size, header.cookie, crc,
                      header.timestamp_ns // 1_000_000_000, deleted)
        self.index.set(entry)
        volume.live_bytes += header.length
        if not deleted:
            self.live_needles += 1
            self.live_bytes += header.size
        volume.pending_idx.append(
            Record(offset, header.key, header.cookie, header.size, crc, header.timestamp_ns,
                   header.flags).pack()
        )

    # --- reads -----------------------------------------------------------------------------------

    def lookup(self, fid: FileID) -> Entry:
        """The live entry for `fid`; NotFound when unknown, deleted or the cookie differs."""
        entry = self.index.get(fid.key)
        if entry is None or entry.deleted or entry.cookie != fid.cookie:
            raise NotFound(f"no needle {fid}")
        return entry

    async def get(self, fid: FileID, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes [offset, offset+length) of a needle, after verifying the whole needle's CRC32C."""
        entry = self.lookup(fid)
        start, end = reads.clamp(entry.size, offset, length)
        if entry.size <= GET_WHOLE_MAX:  # read and checked in one pass, without a stream
            vfile = self.volumes[entry.volume].file.acquire()
            try:
                data = await self._verified(fid, vfile.fd, entry, whole=True)
            finally:
                vfile.release()
            assert data is not None
            return data if (start, end) == (0, entry.size) else data[start:end]
        _entry, chunks, close = await self.open_stream(fid, start, end)
        try:
            return b"".join([chunk async for chunk in chunks])
        finally:
            with trio.CancelScope(shield=True):
                await close()

    async def open_stream(
        self, fid: FileID, start: int, end: int
    ) -> tuple[Entry, AsyncIterator[bytes], Callable[[], Awaitable[None]]]:
        """Verify the whole needle, then return (entry, chunks of bytes [start, end), close).

        Verification happens here, before any byte is handed out, so a needle failing its checks
        raises CorruptNeedle while the caller can still answer with an error instead of data.
        Chunks are at most 1 MiB: memory stays bounded whatever the needle size. `close` must be
        awaited (it releases the volume file, which compaction may have swapped meanwhile).
        """
        entry = self.lookup(fid)
        vfile = self.volumes[entry.volume].file.acquire()
        try:
            data = await self._verified(fid, vfile.fd, entry)
        except BaseException:
            vfile.release()
            raise
        if data is not None:
            chunks = one_chunk(data[start:end])
        else:
            chunks = self._chunks(fid, vfile.fd, entry, start, end)
        released = False

        async def close() -> None:
            nonlocal released
            if not released:
                released = True
                await chunks.aclose()  # type: ignore[attr-defined]
                vfile.release()

        return entry, chunks, close

    async def _verified(self, fid: FileID, fd: int, entry: Entry, *, whole: bool = False) -> bytes | None:
        """The one verified read path (`reads.verify`; every read goes through here): the data of
        a small needle (or with `whole`, of any), None for a large one (checked, to be streamed).
        A needle failing its checks is reported to the corruption hooks and raises CorruptNeedle."""
        try:
            cached = reads.verify_cached(fd, entry)  # on the loop, from the page cache only
            if cached is None:
                return await self.run(reads.verify, fd, entry, whole)
            await trio.lowlevel.checkpoint()  # a trio read yields, as the thread path does
            return cached
        except CorruptNeedle:
            self._report_corrupt(fid)
            raise

    async def _chunks(self, fid: FileID, fd: int, entry: Entry, start: int, end: int) -> AsyncIterator[bytes]:
        pos = start
        while pos < end:
            n = min(COPY_CHUNK, end - pos)
            try:
                chunk = await self.run(reads.read_chunk, fd, entry, pos, n)
            except CorruptNeedle:
                self._report_corrupt(fid)
                raise
            pos += n
            yield chunk

    # --- listing, status, compaction -------------------------------------------------------------

    def list_entries(self, after: int, limit: int) -> list[Entry]:
        """Entries (including tombstones) with key > `after`, in key order: what repair compares."""
        return self.index.entries_after(after, limit)

    async def status(self) -> dict[str, Any]:
        st = await self.run(os.statvfs, self.directory)
        volumes = []
        for vid in sorted(self.volumes):
            v = self.volumes[vid]
            volumes.append({
                "id": vid, "bytes": v.end, "live_bytes": v.live_bytes,
                "garbage_bytes": max(compaction.garbage(v), 0),
                "sealed": v.sealed, "revision": v.revision, "failed": v.failed,
            })
        return {
            "volumes": volumes,
            "needles": self.live_needles,
            "bytes": self.live_bytes,
            "disk_bytes": sum(v.end for v in self.volumes.values()),
            "free": st.f_bavail * st.f_frsize,
            "capacity": st.f_blocks * st.f_frsize,
            "reserve": self.reserve_bytes,
            "index_entries": len(self.index),
            "index_bytes": self.index.memory_bytes(),
            "load": self.load_stats,
        }

    async def compact(
        self, *, min_garbage_ratio: float = 0.0, min_active_fill: float = 0.0
    ) -> list[dict[str, Any]]:
        """Rewrite every volume whose dead bytes exceed `min_garbage_ratio` of its size, while
        reads and writes go on. The active volume is sealed first when it qualifies and is at
        least `min_active_fill` of volume_size (the periodic run passes 0.5: sealing small
        active volumes on every round would leave a trail of small volumes, two files each)."""
        async with self._compact_lock:
            return await compaction.compact(self, min_garbage_ratio, min_active_fill)


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    """Bytes already in memory as the chunk stream `put` and readers take."""
    if data:
        yield data


__all__ = ["NeedleStore", "SizeMismatch", "VolumeError", "VolumeFailed"]
