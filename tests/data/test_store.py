"""In-process tests of `NeedleStore` (no server, seconds each): torn tail, cancellation mid-write,
group commit, fsync failure (through a `FileOps` that fails or blocks on cue) and compaction
under concurrent reads. Each checks the acknowledgement rule: a write that returned was fsynced,
and nothing that did not return is ever in the index."""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from arkor.checksum import crc32c
from arkor.data import needle as nd
from arkor.data import reads
from arkor.data.fileops import FileOps
from arkor.data.store import NeedleStore, VolumeFailed
from arkor.errors import CorruptNeedle, NotFound
from arkor.fileid import FileID
from tests.data.conftest import payload


class CueOps(FileOps):
    """Real system calls, except that fdatasync can be held at a gate or fail once, on cue."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next = False
        self.syncs: list[tuple[int, bool]] = []  # (fd, succeeded), in completion order
        self.lock = threading.Lock()

    def fdatasync(self, fd: int) -> None:
        assert self.gate.wait(30), "test gate never opened"
        with self.lock:
            fail, self.fail_next = self.fail_next, False
        if fail:
            self.syncs.append((fd, False))
            raise OSError(errno.EIO, "injected fsync failure")
        super().fdatasync(fd)
        self.syncs.append((fd, True))

    def ok_syncs(self) -> int:
        return sum(1 for _fd, ok in self.syncs if ok)


async def open_store(path: Path, ops: FileOps | None = None, **kw: Any) -> NeedleStore:
    opts: dict[str, Any] = {"volume_size": 64 << 20, "reserve_bytes": 0, "max_needle_size": 16 << 20,
                            "disk_threads": 4, **kw}
    if ops is not None:
        opts["file_ops"] = ops
    return await NeedleStore.open(path, **opts)


async def body(data: bytes, pieces: int = 1) -> AsyncIterator[bytes]:
    step = max(1, -(-len(data) // pieces))
    for i in range(0, len(data), step):
        yield data[i : i + step]


async def put(store: NeedleStore, fid: FileID, data: bytes) -> bool:
    return await store.put(fid, body(data), len(data), crc32c(data))


async def wait_for(predicate: Any) -> None:
    """Poll engine state the test cannot be signalled about (it lives behind worker threads)."""
    with trio.fail_after(10):
        while not predicate():  # noqa: ASYNC110 - nobody signals these fields
            await trio.sleep(0.002)


async def test_torn_tail_is_cut_and_acknowledged_needles_survive(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    fids = [FileID(1, k, 7) for k in range(1, 11)]
    for fid in fids:
        assert await put(store, fid, payload(fid.key, 3000))
    await store.aclose()
    dat = tmp_path / "00000001.dat"
    with open(dat, "ab") as f:  # noqa: ASYNC230 - a crash mid-append: a valid header, half the data
        f.write(nd.pack_header(nd.Header(99, 7, 3000, 1)) + payload(99, 1500))
    store = await open_store(tmp_path)
    try:
        assert store.load_stats["truncated_bytes"] == nd.HEADER_SIZE + 1500
        with pytest.raises(NotFound):
            await store.get(FileID(1, 99, 7))
        for fid in fids:
            assert await store.get(fid) == payload(fid.key, 3000)
        assert await put(store, FileID(1, 99, 7), b"fresh")  # the key was never acknowledged
    finally:
        await store.aclose()


async def test_cancel_mid_body_acknowledges_nothing_and_the_store_stays_usable(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    big = payload(5, 3 << 20)  # streamed: reserved first, then written chunk by chunk
    reached = trio.Event()

    async def stalling() -> AsyncIterator[bytes]:
        yield big[: 2 << 20]
        reached.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.put, FileID(1, 5, 1), stalling(), len(big), crc32c(big))
        await reached.wait()
        await trio.sleep(0.05)  # let the first 2 MiB reach the file
        nursery.cancel_scope.cancel()
    with pytest.raises(NotFound):
        store.lookup(FileID(1, 5, 1))
    assert await put(store, FileID(1, 6, 1), b"after")  # usable, and the key is free to retry
    assert await put(store, FileID(1, 5, 1), big)
    await store.aclose()
    store = await open_store(tmp_path)
    try:
        assert await store.get(FileID(1, 5, 1)) == big
        assert await store.get(FileID(1, 6, 1)) == b"after"
        assert store.live_needles == 2
    finally:
        await store.aclose()


async def test_writer_cancelled_in_commit_is_not_acknowledged_on_retry_without_fsync(tmp_path: Path) -> None:
    """The writer whose bytes missed the fsync in progress is cancelled while waiting: its needle
    must not be published, so a retry writes and fsyncs again instead of answering "already
    there" for bytes no fsync covered."""
    ops = CueOps()
    store = await open_store(tmp_path, ops)
    volume = store.active
    assert volume is not None
    ops.gate.clear()
    late = FileID(1, 2, 2)
    late_scope = trio.CancelScope()
    late_ended = trio.Event()

    async def late_writer() -> None:
        with late_scope:
            await put(store, late, b"second")
        late_ended.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(put, store, FileID(1, 1, 1), b"first")
        await wait_for(lambda: volume.syncing is not None)  # first writer's fsync is held
        nursery.start_soon(late_writer)
        await wait_for(lambda: volume.write_gen == 2)  # late's bytes written, waiting on commit
        late_scope.cancel()
        await late_ended.wait()
        ops.gate.set()
    assert late_scope.cancelled_caught
    with pytest.raises(NotFound):
        store.lookup(late)
    before = ops.ok_syncs()
    assert await put(store, late, b"second") is True  # written again, not "already there"
    assert ops.ok_syncs() > before
    assert await store.get(late) == b"second"
    await store.aclose()


async def test_group_commit_one_fsync_for_many_writers(tmp_path: Path) -> None:
    ops = CueOps()
    store = await open_store(tmp_path, ops, disk_threads=8)
    volume = store.active
    assert volume is not None
    ops.gate.clear()
    fids = [FileID(1, k, k) for k in range(1, 33)]
    async with trio.open_nursery() as nursery:
        for fid in fids:
            nursery.start_soon(put, store, fid, payload(fid.key, 1000 + fid.key))
        await wait_for(lambda: volume.write_gen == len(fids))  # all bytes written, all waiting
        assert ops.syncs == []
        ops.gate.set()
    # the fsync held at the gate covered what was complete when it started; one more covers the rest
    assert 1 <= ops.ok_syncs() <= 2
    await store.aclose()
    store = await open_store(tmp_path)
    try:
        for fid in fids:
            assert await store.get(fid) == payload(fid.key, 1000 + fid.key)
    finally:
        await store.aclose()


async def test_failed_fsync_fails_every_waiter_and_the_volume_turns_read_only(tmp_path: Path) -> None:
    ops = CueOps()
    store = await open_store(tmp_path, ops)
    assert await put(store, FileID(1, 1, 1), b"durable before")
    failed = store.active
    assert failed is not None
    ops.gate.clear()
    outcomes: dict[int, object] = {}

    async def writer(fid: FileID) -> None:
        try:
            outcomes[fid.key] = await put(store, fid, payload(fid.key, 2000))
        except VolumeFailed as exc:
            outcomes[fid.key] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer, FileID(1, 2, 2))
        await wait_for(lambda: failed.syncing is not None)
        nursery.start_soon(writer, FileID(1, 3, 3))  # waits for the fsync in progress
        await wait_for(lambda: failed.write_gen == 3)
        ops.fail_next = True
        ops.gate.set()
    # neither the syncer nor the waiter may be told "stored" (the waiter must not fsync again)
    assert all(isinstance(v, VolumeFailed) for v in outcomes.values()), outcomes
    assert [ok for fd, ok in ops.syncs if fd == failed.file.fd] == [True, False]
    status = await store.status()
    assert status["volumes"][0]["failed"] and status["volumes"][0]["sealed"]
    for key in (2, 3):
        with pytest.raises(NotFound):
            store.lookup(FileID(1, key, key))
    # reads of what was durable go on; writes (and the retries) go to a fresh volume
    assert await store.get(FileID(1, 1, 1)) == b"durable before"
    assert await put(store, FileID(1, 2, 2), payload(2, 2000)) is True
    assert store.lookup(FileID(1, 2, 2)).volume != failed.volume_id
    assert ops.syncs[-1][1] and ops.syncs[-1][0] != failed.file.fd
    assert [ok for fd, ok in ops.syncs if fd == failed.file.fd] == [True, False]  # never again
    await store.aclose()
    store = await open_store(tmp_path)  # the restart rescans: the check
    try:
        assert await store.get(FileID(1, 1, 1)) == b"durable before"
        assert await store.get(FileID(1, 2, 2)) == payload(2, 2000)
        assert not any(v["failed"] for v in (await store.status())["volumes"])
    finally:
        await store.aclose()


async def test_compaction_during_reads_never_serves_wrong_bytes(tmp_path: Path) -> None:
    store = await open_store(tmp_path, volume_size=256 << 10)  # many small volumes
    rng = random.Random(7)
    sizes = {k: rng.choice([10, 900, 5000, 20000]) for k in range(1, 301)}
    for k, size in sizes.items():
        assert await put(store, FileID(1, k, k), payload(k, size))
    deleted = set(rng.sample(sorted(sizes), 150))
    for k in deleted:
        assert await store.delete(FileID(1, k, k))
    live = sorted(set(sizes) - deleted)
    reads = 0
    done = False

    async def reader(seed: int) -> None:
        nonlocal reads
        r = random.Random(seed)
        while not done:
            k = r.choice(live)
            start = r.randrange(sizes[k])
            got = await store.get(FileID(1, k, k), start, 3000)
            assert got == payload(k, sizes[k])[start : start + 3000]
            reads += 1

    async with trio.open_nursery() as nursery:
        for seed in range(4):
            nursery.start_soon(reader, seed)
        compacted = await store.compact(min_garbage_ratio=0.0)
        compacted += await store.compact(min_garbage_ratio=0.0)
        done = True
    assert compacted and reads > 0
    assert all(v["garbage_bytes"] == 0 for v in (await store.status())["volumes"][:-1])
    for k in live:
        assert await store.get(FileID(1, k, k)) == payload(k, sizes[k])
    await store.aclose()


async def test_corruption_reaches_the_hook_and_is_never_served(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    reported: list[FileID] = []
    store.on_corruption(reported.append)
    fid = FileID(1, 42, 9)
    data = payload(42, 4000)
    assert await put(store, fid, data)
    entry = store.lookup(fid)
    fd = os.open(tmp_path / "00000001.dat", os.O_WRONLY)
    try:
        os.pwrite(fd, b"\xff", entry.offset + nd.HEADER_SIZE + 100)
    finally:
        os.close(fd)
    with pytest.raises(CorruptNeedle):
        await store.get(fid)
    with pytest.raises(CorruptNeedle):
        await store.open_stream(fid, 0, 10)
    assert reported == [fid, fid]
    await store.aclose()


async def test_small_reads_from_the_page_cache_and_from_disk_give_the_same_verdicts(tmp_path: Path) -> None:
    """A small needle is read on the loop only when all its pages are cached (RWF_NOWAIT); with
    its pages dropped the worker-thread read serves it. Both paths check header and CRC32C."""
    store = await open_store(tmp_path)
    fid = FileID(1, 7, 3)
    data = payload(7, 20_000)
    assert await put(store, fid, data)
    entry = store.lookup(fid)
    path = tmp_path / "00000001.dat"
    fd = os.open(path, os.O_RDWR)
    try:
        assert reads.verify_cached(fd, entry) == data  # just written: cached
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages leave the cache
        if reads.verify_cached(fd, entry) is None:  # the kernel dropped them: the thread path serves
            assert await store.get(fid) == data
        assert reads.verify_cached(fd, entry) == data  # read once more: cached again
        os.pwrite(fd, b"\xff", entry.offset + nd.HEADER_SIZE + 5)  # the payload has no 0xff byte
        with pytest.raises(CorruptNeedle):
            reads.verify_cached(fd, entry)
        with pytest.raises(CorruptNeedle):
            await store.get(fid)
    finally:
        os.close(fd)
    await store.aclose()
