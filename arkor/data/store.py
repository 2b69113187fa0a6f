"""`NeedleStore`: the HTTP-free volume engine of a data server (Haystack / SeaweedFS style).

Needles are appended to the active volume; a volume seals when the next needle would take it past
`volume_size` and a new one opens. A write is acknowledged only after its volume is fsynced, and
concurrent writers share one fsync (group commit): the first waiter syncs for everyone whose data
was complete when it started, the others wait for it. All file I/O runs in worker threads under
one bounded `CapacityLimiter` (data.diskThreads); the index and all bookkeeping live in the trio
thread, so they need no locks.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import trio
import trio.lowlevel

from arkor.checksum import crc32c
from arkor.data import needle as nd
from arkor.data.index import Entry, IndexBuilder, NeedleIndex
from arkor.data.volume import (
    COPY_CHUNK,
    IDX_HEADER,
    IDX_MAGIC,
    Record,
    Volume,
    VolumeError,
    VolumeFile,
    dat_path,
    fsync_dir,
    idx_path,
    pread_exact,
    pwrite_all,
)
from arkor.errors import BadRequest, ChecksumMismatch, Conflict, CorruptNeedle, NotFound, PayloadTooLarge
from arkor.fileid import FileID
from arkor.metrics import FSYNC_GROUP_SIZE, FSYNC_SECONDS, SCRUB_ERRORS

log = logging.getLogger(__name__)
T = TypeVar("T")

# Bodies up to this size are gathered and written in one thread call (one hop); larger ones stream.
WHOLE_WRITE_MAX = 1024 * 1024
_DAT_NAME = re.compile(r"([0-9]{8})\.dat")


class SizeMismatch(BadRequest):
    """The body is shorter or longer than the declared size."""

    code = "size_mismatch"


@dataclass(frozen=True, slots=True)
class NeedleMeta:
    key: int
    cookie: int
    size: int
    crc32c: int
    timestamp: int
    deleted: bool = False


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
    ) -> None:
        self.directory = directory
        self.volume_size = volume_size
        self.reserve_bytes = reserve_bytes
        self.max_needle_size = max_needle_size
        self.limiter = trio.CapacityLimiter(max(1, disk_threads))
        self.label = label or str(directory)
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

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    @classmethod
    async def open(cls, directory: str | Path, **kwargs: Any) -> NeedleStore:
        store = cls(Path(directory), **kwargs)
        await store._load()
        return store

    async def _load(self) -> None:
        started = time.perf_counter()
        self.directory.mkdir(parents=True, exist_ok=True)
        ids = await self._run(self._prepare_dir)
        builder = IndexBuilder()
        stats = {"volumes": 0, "indexed_needles": 0, "scanned_needles": 0, "torn_needles": 0,
                 "truncated_bytes": 0, "idx_dropped": 0}
        for vid in ids:
            volume, records, vstats = await self._run(Volume.load, self.directory, vid)
            for key in stats.keys() & vstats.keys():
                stats[key] += vstats[key]
            stats["volumes"] += 1
            await self._run(builder.add_records, vid, records)
            del records
            self.volumes[vid] = volume
            await trio.lowlevel.checkpoint()
        self.index = await self._run(NeedleIndex.build, builder)
        del builder
        await self._run(self._recount)
        await self._run(_release_free_memory)
        if self.volumes:
            last = self.volumes[max(self.volumes)]
            for volume in self.volumes.values():
                if volume is not last:
                    volume.sealed = True
            self.active = last
        else:
            self.active = await self._run(Volume.create, self.directory, 1)
            self.volumes[1] = self.active
        stats["seconds"] = round(time.perf_counter() - started, 3)
        self.load_stats = stats
        log.info("store %s opened: %s", self.directory, stats)

    def _prepare_dir(self) -> list[int]:
        """Drop leftovers of interrupted compactions and empty volume files; list volume ids."""
        for pattern in ("*.cpd", "*.cpx", "*.idx.tmp"):
            for path in self.directory.glob(pattern):
                path.unlink()
        ids = []
        for path in self.directory.iterdir():
            match = _DAT_NAME.fullmatch(path.name)
            if not match:
                continue
            if path.stat().st_size < nd.SUPERBLOCK_SIZE:  # crashed while being created
                path.unlink()
                idx_path(self.directory, int(match.group(1))).unlink(missing_ok=True)
                continue
            ids.append(int(match.group(1)))
        return sorted(ids)

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
                    await self._run(volume.close, records)
                except OSError:
                    log.exception("closing volume %d", volume.volume_id)

    # --- writes ----------------------------------------------------------------------------------

    async def put(self, fid: FileID, chunks: AsyncIterable[bytes], size: int, crc: int) -> bool:
        """Store a needle from `chunks` (exactly `size` bytes whose CRC32C is `crc`) and fsync.

        Returns True when stored, False when the identical needle was already there (idempotent
        retry, also after waiting for a concurrent write of the same needle). Raises ChecksumMismatch /
        SizeMismatch (nothing stored), Conflict (the key holds other content or was deleted),
        InsufficientStorage, PayloadTooLarge.
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
                await _drain_verified(chunks, size, crc)
                return False
            header = nd.Header(fid.key, fid.cookie, size, time.time_ns())
            if size <= WHOLE_WRITE_MAX:
                data = await _gather_verified(chunks, size, crc)
                volume, offset = await self._append(nd.encode(header, data), nd.padded_length(size), True)
                await self._finish_write(volume, offset, header, crc)
            else:
                await self._put_streaming(header, chunks, crc)
            return True

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
            header = nd.Header(fid.key, fid.cookie, size, time.time_ns())
            if size <= WHOLE_WRITE_MAX:
                data = await _gather_verified(chunks, size, crc)
                volume, offset = await self._append(nd.encode(header, data), nd.padded_length(size), False)
                await self._finish_write(volume, offset, header, crc)
            else:
                await self._put_streaming(header, chunks, crc)

    async def _put_streaming(self, header: nd.Header, chunks: AsyncIterable[bytes], crc: int) -> None:
        length = nd.padded_length(header.size)
        volume, offset = await self._append(nd.pack_header(header), length, True)
        done = False
        try:
            pos = offset + nd.HEADER_SIZE
            running = 0
            received = 0
            buffer = bytearray()
            async for chunk in chunks:
                received += len(chunk)
                if received > header.size:
                    raise SizeMismatch(f"body is longer than the declared {header.size} bytes")
                buffer += chunk
                if len(buffer) >= COPY_CHUNK:
                    running = await self._run(_write_crc, volume, bytes(buffer), pos, running)
                    pos += len(buffer)
                    buffer.clear()
            if received != header.size:
                raise SizeMismatch(f"body has {received} bytes, the declared size is {header.size}")
            running = crc32c(buffer, running)
            if running != crc:
                raise ChecksumMismatch(f"body CRC32C {running} does not match the declared {crc}")
            await self._run(volume.write_at, bytes(buffer) + nd.trailer(running, header.size), pos)
            done = True
        finally:
            if not done:
                with trio.CancelScope(shield=True), trio.move_on_after(30):
                    await self._run(volume.abort, offset, length, header)
                volume.inflight -= 1
        await self._finish_write(volume, offset, header, crc)

    async def _append(self, prefix: bytes, length: int, check_space: bool) -> tuple[Volume, int]:
        """Reserve `length` bytes in the active volume, writing `prefix` there; rotates volumes."""
        while True:
            volume = self.active
            assert volume is not None
            volume.inflight += 1  # before the await, so compaction never sees it idle meanwhile
            try:
                offset = await self._run(
                    volume.reserve, prefix, length, self.volume_size, self.reserve_bytes if check_space else 0
                )
            except BaseException:
                volume.inflight -= 1
                raise
            if offset is not None:
                return volume, offset
            volume.inflight -= 1
            async with self._rotate_lock:
                if self.active is volume:
                    await self._rotate()

    async def _rotate(self) -> None:
        old = self.active
        assert old is not None
        new_id = max(self.volumes) + 1
        new = await self._run(Volume.create, self.directory, new_id)
        await self._run(old.seal)
        self.volumes[new_id] = new
        self.active = new
        log.info("volume %d sealed at %d bytes; volume %d opened", old.volume_id, old.end, new_id)

    async def _finish_write(self, volume: Volume, offset: int, header: nd.Header, crc: int) -> None:
        """Group-commit the needle, then publish it in the index (even when cancelled meanwhile:
        the bytes are complete and a restart would find them anyway)."""
        volume.write_gen += 1
        gen = volume.write_gen
        try:
            await self._commit(volume, gen)
        finally:
            volume.inflight -= 1
            self._publish(volume, offset, header, crc)

    async def _commit(self, volume: Volume, gen: int) -> None:
        while volume.synced_gen < gen:
            event: trio.Event | None = volume.syncing  # type: ignore[assignment]
            if event is not None:
                await event.wait()
                continue
            event = trio.Event()
            volume.syncing = event
            target = volume.write_gen
            records, volume.pending_idx = volume.pending_idx, []
            started = time.perf_counter()
            try:
                await self._run(volume.sync, records)
            except BaseException:
                volume.pending_idx[:0] = records
                raise
            finally:
                volume.syncing = None
                event.set()
            FSYNC_SECONDS.labels(self.label).observe(time.perf_counter() - started)
            FSYNC_GROUP_SIZE.labels(self.label).observe(target - volume.synced_gen)
            volume.synced_gen = max(volume.synced_gen, target)

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
        self.index.set(Entry(header.key, volume.volume_id, offset, header.size, header.cookie, crc,
                             header.timestamp_ns // 1_000_000_000, deleted))
        volume.live_bytes += header.length
        if not deleted:
            self.live_needles += 1
            self.live_bytes += header.size
        volume.pending_idx.append(
            Record(offset, header.key, header.cookie, header.size, crc, header.timestamp_ns,
                   header.flags).pack()
        )

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

    # --- reads -----------------------------------------------------------------------------------

    def lookup(self, fid: FileID) -> Entry:
        """The live entry for `fid`; NotFound when unknown, deleted or the cookie differs."""
        entry = self.index.get(fid.key)
        if entry is None or entry.deleted or entry.cookie != fid.cookie:
            raise NotFound(f"no needle {fid}")
        return entry

    def head(self, fid: FileID) -> NeedleMeta:
        e = self.lookup(fid)
        return NeedleMeta(e.key, e.cookie, e.size, e.crc32c, e.timestamp)

    async def get(self, fid: FileID, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes [offset, offset+length) of a needle, after verifying the whole needle's CRC32C."""
        entry = self.lookup(fid)
        start, end = _clamp(entry.size, offset, length)
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

        Verification happens here, before any byte is handed out, so a needle failing its CRC
        raises CorruptNeedle while the caller can still answer with an error instead of data.
        Chunks are at most 1 MiB: memory stays bounded whatever the needle size. `close` must be
        awaited (it releases the volume file, which compaction may have swapped meanwhile).
        """
        entry = self.lookup(fid)
        vfile = self.volumes[entry.volume].file.acquire()
        try:
            if entry.size <= WHOLE_WRITE_MAX:
                data = await self._run(_read_whole, vfile, entry)
                chunks: AsyncIterator[bytes] = _one_chunk(data[start:end])
            else:
                await self._run(_verify_streaming, vfile, entry)
                chunks = self._chunks(fid, vfile, entry, start, end)
        except BaseException as exc:
            vfile.release()
            if isinstance(exc, CorruptNeedle):
                self._report_corrupt(fid)
            raise
        released = False

        async def close() -> None:
            nonlocal released
            if not released:
                released = True
                await chunks.aclose()  # type: ignore[attr-defined]
                vfile.release()

        return entry, chunks, close

    async def _chunks(
        self, fid: FileID, vfile: VolumeFile, entry: Entry, start: int, end: int
    ) -> AsyncIterator[bytes]:
        pos = start
        base = entry.offset + nd.HEADER_SIZE
        while pos < end:
            n = min(COPY_CHUNK, end - pos)
            chunk = await self._run(pread_exact, vfile.fd, n, base + pos)
            if len(chunk) != n:
                self._report_corrupt(fid)
                raise CorruptNeedle(f"needle {entry.key:x} is truncated")
            pos += n
            yield chunk

    # --- listing, status, compaction -------------------------------------------------------------

    def list_entries(self, after: int, limit: int) -> list[Entry]:
        """Entries (including tombstones) with key > `after`, in key order: what repair compares."""
        return self.index.entries_after(after, limit)

    async def status(self) -> dict[str, Any]:
        st = await self._run(os.statvfs, self.directory)
        volumes = []
        for vid in sorted(self.volumes):
            v = self.volumes[vid]
            volumes.append({
                "id": vid, "bytes": v.end, "live_bytes": v.live_bytes,
                "garbage_bytes": max(v.end - nd.SUPERBLOCK_SIZE - v.live_bytes, 0),
                "sealed": v.sealed, "revision": v.revision,
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
            active = self.active
            assert active is not None
            big_enough = active.end >= min_active_fill * self.volume_size
            if big_enough and _garbage(active) > 0 and _garbage(active) >= min_garbage_ratio * active.end:
                async with self._rotate_lock:
                    if self.active is active:
                        await self._rotate()
            done = []
            for vid in sorted(self.volumes):
                volume = self.volumes[vid]
                garbage = _garbage(volume)
                if not volume.sealed or garbage <= 0 or garbage < min_garbage_ratio * volume.end:
                    continue
                done.append(await self._compact_volume(volume))
            return done

    async def _compact_volume(self, volume: Volume) -> dict[str, Any]:
        # sealed: no new reservation can start; wait (bounded by the body timeout) for writes in flight
        while volume.inflight:  # noqa: ASYNC110 - a counter, not a condition anyone signals
            await trio.sleep(0.01)
        await self._commit(volume, volume.write_gen)
        records, volume.pending_idx = volume.pending_idx, []
        await self._run(volume.sync, records)
        vid = volume.volume_id
        plan = [e for e in self.index if e.volume == vid]
        plan.sort(key=lambda e: e.offset)
        before = volume.end
        started = time.perf_counter()
        volume.compacting = True
        try:
            new_fd, new_idx_fd, new_end, moved = await self._run(
                _compact_files, volume, plan
            )
        finally:
            volume.compacting = False
        # swap (no await from here on: readers and the index see old or new, never a mix)
        old_file = volume.file
        volume.file = VolumeFile(new_fd)
        old_file.retire()
        os.close(volume.idx_fd)
        volume.idx_fd = new_idx_fd
        volume.revision += 1
        volume.end = new_end
        live = 0
        for entry, new_offset in zip(plan, moved, strict=True):
            current = self.index.get(entry.key)
            if current is not None and current.volume == vid and current.offset == entry.offset:
                self.index.set(replace(current, offset=new_offset))
                live += nd.padded_length(0 if current.deleted else current.size)
        volume.live_bytes = live
        result = {"volume": vid, "before": before, "after": new_end, "needles": len(plan),
                  "seconds": round(time.perf_counter() - started, 3)}
        log.info("compacted %s", result)
        return result


def _release_free_memory() -> None:
    """Hand the heap freed after loading (a million transient index records) back to the OS.

    glibc keeps freed small blocks in its arenas, so without this the process RSS after a start
    stays about 40 B per needle above what the compact index really holds."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _garbage(volume: Volume) -> int:
    return volume.end - nd.SUPERBLOCK_SIZE - volume.live_bytes


def _clamp(size: int, offset: int, length: int | None) -> tuple[int, int]:
    start = min(max(offset, 0), size)
    end = size if length is None else min(size, start + max(length, 0))
    return start, end


def _write_crc(volume: Volume, data: bytes, offset: int, running: int) -> int:
    volume.write_at(data, offset)
    return crc32c(data, running)


def _check_header(raw: bytes, entry: Entry) -> None:
    header = nd.parse_header(raw)
    if header is None or (header.key, header.cookie, header.size) != (entry.key, entry.cookie, entry.size):
        raise CorruptNeedle(f"needle {entry.key:x}: header at {entry.offset} is damaged")


def _read_whole(vfile: VolumeFile, entry: Entry) -> bytes:
    total = nd.HEADER_SIZE + entry.size + nd.TRAILER_SIZE
    raw = pread_exact(vfile.fd, total, entry.offset)
    if len(raw) != total:
        raise CorruptNeedle(f"needle {entry.key:x} is truncated")
    _check_header(raw, entry)
    data = raw[nd.HEADER_SIZE : nd.HEADER_SIZE + entry.size]
    stored = int.from_bytes(raw[-4:], "little")
    actual = crc32c(data)
    if actual != stored or actual != entry.crc32c:
        raise CorruptNeedle(f"needle {entry.key:x} failed its CRC32C check")
    return data


def _verify_streaming(vfile: VolumeFile, entry: Entry) -> None:
    _check_header(pread_exact(vfile.fd, nd.HEADER_SIZE, entry.offset), entry)
    running = 0
    pos = 0
    base = entry.offset + nd.HEADER_SIZE
    while pos < entry.size:
        chunk = pread_exact(vfile.fd, min(COPY_CHUNK, entry.size - pos), base + pos)
        if not chunk:
            raise CorruptNeedle(f"needle {entry.key:x} is truncated")
        running = crc32c(chunk, running)
        pos += len(chunk)
    stored = int.from_bytes(pread_exact(vfile.fd, 4, base + entry.size), "little")
    if running != stored or running != entry.crc32c:
        raise CorruptNeedle(f"needle {entry.key:x} failed its CRC32C check")


def _compact_files(volume: Volume, plan: list[Entry]) -> tuple[int, int, int, list[int]]:
    """Copy the needles in `plan` into a new revision of the volume; crash-safe at every step.

    1. write ``.cpd`` (new data) and ``.cpx`` (its index), fsync both (a crash leaves the old
       volume intact; leftovers are deleted at the next start);
    2. rename ``.cpd`` over ``.dat`` and fsync the directory: the commit point (a crash after it
       leaves a stale ``.idx`` whose revision no longer matches, so the volume is rescanned);
    3. rename ``.cpx`` over ``.idx``.
    """
    directory, vid = volume.directory, volume.volume_id
    revision = volume.revision + 1
    cpd = dat_path(directory, vid).with_suffix(".cpd")
    cpx = idx_path(directory, vid).with_suffix(".cpx")
    src = volume.file.fd
    fd = os.open(cpd, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        pwrite_all(fd, nd.pack_superblock(vid, revision), 0)
        pos = nd.SUPERBLOCK_SIZE
        moved = []
        records = []
        for entry in plan:
            length = nd.padded_length(0 if entry.deleted else entry.size)
            header = nd.parse_header(pread_exact(src, nd.HEADER_SIZE, entry.offset))
            if header is not None:
                length = header.length
            done = 0
            while done < length:  # copied as is: a corrupt needle stays detectably corrupt
                chunk = pread_exact(src, min(COPY_CHUNK, length - done), entry.offset + done)
                if not chunk:
                    break
                pwrite_all(fd, chunk, pos + done)
                done += len(chunk)
            moved.append(pos)
            records.append(Record(pos, entry.key, entry.cookie, 0 if entry.deleted else entry.size,
                                  entry.crc32c, entry.timestamp * 1_000_000_000,
                                  nd.FLAG_TOMBSTONE if entry.deleted else 0).pack())
            pos += length
        os.fsync(fd)
        with open(cpx, "wb") as f:
            f.write(IDX_HEADER.pack(IDX_MAGIC, 1, 0, vid, revision) + b"".join(records))
            f.flush()
            os.fsync(f.fileno())
        os.replace(cpd, dat_path(directory, vid))
        fsync_dir(directory)
        os.replace(cpx, idx_path(directory, vid))
        fsync_dir(directory)
        idx_fd = os.open(idx_path(directory, vid), os.O_WRONLY | os.O_APPEND)
    except BaseException:
        os.close(fd)
        cpd.unlink(missing_ok=True)
        cpx.unlink(missing_ok=True)
        raise
    return fd, idx_fd, pos, moved


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data


async def _gather_verified(chunks: AsyncIterable[bytes], size: int, crc: int) -> bytes:
    parts = []
    received = 0
    running = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > size:
            raise SizeMismatch(f"body is longer than the declared {size} bytes")
        running = crc32c(chunk, running)
        parts.append(chunk)
    if received != size:
        raise SizeMismatch(f"body has {received} bytes, the declared size is {size}")
    if running != crc:
        raise ChecksumMismatch(f"body CRC32C {running} does not match the declared {crc}")
    return b"".join(parts)


async def _drain_verified(chunks: AsyncIterable[bytes], size: int, crc: int) -> None:
    received = 0
    running = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > size:
            raise SizeMismatch(f"body is longer than the declared {size} bytes")
        running = crc32c(chunk, running)
    if received != size:
        raise SizeMismatch(f"body has {received} bytes, the declared size is {size}")
    if running != crc:
        raise ChecksumMismatch(f"body CRC32C {running} does not match the declared {crc}")


__all__ = ["NeedleMeta", "NeedleStore", "SizeMismatch", "VolumeError"]
