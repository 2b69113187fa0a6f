"""Group append: small needles written by the group commit itself, many in one pwrite and one
fsync (`volume.Append`, `NeedleStore._append_durably`). Real files, a real store; fdatasync held
at a gate or failed on cue (`CueOps`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from arkor.data.commit import VolumeFailed
from arkor.errors import NotFound
from arkor.fileid import FileID
from tests.data.conftest import payload
from tests.data.test_store import CueOps, open_store, put, wait_for


class CountingOps(CueOps):
    def __init__(self) -> None:
        super().__init__()
        self.pwrites = 0

    def pwrite_all(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
        self.pwrites += 1
        super().pwrite_all(fd, data, offset)


async def survives_restart(
    path: Path, expected: dict[FileID, bytes], absent: tuple[FileID, ...] = ()
) -> None:
    """Reopen the store (a rescan of what is on disk) and check what it serves."""
    store = await open_store(path)
    try:
        for fid, data in expected.items():
            assert await store.get(fid) == data
        for fid in absent:
            with pytest.raises(NotFound):
                store.lookup(fid)
    finally:
        await store.aclose()


async def test_concurrent_small_writes_share_one_pwrite_and_fsync_and_all_survive_a_restart(
    tmp_path: Path,
) -> None:
    ops = CountingOps()
    store = await open_store(tmp_path, ops)
    ops.gate.clear()  # the first writer's fsync is held: the others pile up behind it
    fids = [FileID(1, key, key) for key in range(1, 41)]
    before = ops.pwrites
    async with trio.open_nursery() as nursery:
        for fid in fids:
            nursery.start_soon(put, store, fid, payload(fid.key, 1000 + fid.key))
        await wait_for(lambda: store.active is not None and len(store.active.pending_appends) == 39)
        ops.gate.set()
    assert ops.pwrites - before <= 3, ops.pwrites - before  # 40 needles, a couple of writes
    assert ops.ok_syncs() <= 3
    expected = {fid: payload(fid.key, 1000 + fid.key) for fid in fids}
    for fid, data in expected.items():
        assert await store.get(fid) == data
    await store.aclose()
    await survives_restart(tmp_path, expected)


async def test_a_writer_cancelled_while_waiting_takes_its_needle_back_and_the_others_are_stored(
    tmp_path: Path,
) -> None:
    ops = CueOps()
    store = await open_store(tmp_path, ops)
    ops.gate.clear()
    doomed = FileID(1, 7, 7)
    scope = trio.CancelScope()

    async def cancelled_writer() -> None:
        with scope:
            await put(store, doomed, payload(7, 500))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(put, store, FileID(1, 1, 1), payload(1, 500))  # becomes the syncer
        await wait_for(lambda: store.active is not None and store.active.syncing is not None)
        nursery.start_soon(cancelled_writer)
        for key in (2, 3):
            nursery.start_soon(put, store, FileID(1, key, key), payload(key, 500))
        await wait_for(lambda: store.active is not None and len(store.active.pending_appends) == 3)
        scope.cancel()
        await wait_for(lambda: store.active is not None and len(store.active.pending_appends) == 2)
        ops.gate.set()
    assert scope.cancelled_caught
    for key in (1, 2, 3):
        assert await store.get(FileID(1, key, key)) == payload(key, 500)
    with pytest.raises(NotFound):
        store.lookup(doomed)
    volume = store.active
    assert volume is not None and volume.inflight == 0
    await store.aclose()
    # it was never written: a rescan does not find it either
    await survives_restart(tmp_path, {FileID(1, k, k): payload(k, 500) for k in (1, 2, 3)}, (doomed,))


async def test_a_failed_group_fsync_fails_every_member_and_their_retries_land_elsewhere(
    tmp_path: Path,
) -> None:
    ops = CueOps()
    store = await open_store(tmp_path, ops)
    assert await put(store, FileID(1, 1, 1), payload(1, 300))
    failed = store.active
    assert failed is not None
    ops.gate.clear()
    outcomes: dict[int, object] = {}

    async def writer(key: int) -> None:
        try:
            outcomes[key] = await put(store, FileID(1, key, key), payload(key, 300))
        except VolumeFailed as exc:
            outcomes[key] = exc

    async with trio.open_nursery() as nursery:
        for key in range(2, 12):
            nursery.start_soon(writer, key)
        await wait_for(lambda: failed.syncing is not None)
        ops.fail_next = True
        ops.gate.set()
    assert all(isinstance(o, VolumeFailed) for o in outcomes.values()), outcomes
    for key in range(2, 12):  # the engine's retry: a fresh volume, acknowledged, durable
        assert await put(store, FileID(1, key, key), payload(key, 300)) is True
        assert store.lookup(FileID(1, key, key)).volume != failed.volume_id
    await store.aclose()
    await survives_restart(tmp_path, {FileID(1, k, k): payload(k, 300) for k in range(1, 12)})


async def test_small_needles_rotate_volumes_when_the_active_one_is_full(tmp_path: Path) -> None:
    store = await open_store(tmp_path, volume_size=64 * 1024)
    try:
        fids = [FileID(1, key, key) for key in range(1, 101)]
        async with trio.open_nursery() as nursery:
            for fid in fids:
                nursery.start_soon(put, store, fid, payload(fid.key, 3000))
        assert len(store.volumes) >= 4
        for fid in fids:
            assert await store.get(fid) == payload(fid.key, 3000)
    finally:
        await store.aclose()
