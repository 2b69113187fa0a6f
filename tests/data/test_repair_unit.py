"""In-process tests of the repairer's handling of corrupt needles, over a real `NeedleStore` and
in-memory peers that answer on cue (the real-process storm test is test_repair_storm.py). The trio
clock autojumps once nothing has happened for 50 ms (the store's worker threads get to finish), so
minutes of backoff take a second or two."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from trio.testing import MockClock

from arkor.checksum import crc32c
from arkor.data import needle as nd
from arkor.data.repair import LOST_AFTER, Repairer
from arkor.errors import CorruptNeedle, ServiceUnavailable
from arkor.fileid import FileID
from arkor.model import GroupInfo, NeedleInfo, ServerInfo
from tests.data.conftest import payload
from tests.data.test_store import open_store, put

FID = FileID(1, 77, 5)
DATA = payload(77, 3000)


class CuePeer:
    """A replica that is unreachable, serves a corrupt copy, or serves the good one."""

    def __init__(self, url: str, mode: str) -> None:
        self.url = url
        self.mode = mode
        self.calls = 0

    async def list_page(self, after: int, limit: int = 1000) -> tuple[list[dict[str, object]], int | None]:
        return [], None

    @asynccontextmanager
    async def stream_needle(self, fid: FileID) -> AsyncIterator[tuple[NeedleInfo, AsyncIterator[bytes]]]:
        self.calls += 1
        if self.mode == "down":
            raise ServiceUnavailable(f"{self.url}: connection refused")
        if self.mode == "corrupt":
            raise CorruptNeedle(f"needle {fid.key:x} failed its CRC32C check")

        async def chunks() -> AsyncIterator[bytes]:
            yield DATA

        yield NeedleInfo(fid=str(fid), size=len(DATA), crc32c=crc32c(DATA)), chunks()


class OneGroup:
    def __init__(self, peers: dict[str, CuePeer]) -> None:
        self.peers = peers

    async def groups(self) -> list[GroupInfo]:
        servers = [ServerInfo(server_id="me", url="http://me", group=1)]
        servers += [ServerInfo(server_id=url, url=url, group=1) for url in self.peers]
        return [GroupInfo(group=1, servers=servers, writable=True)]


async def test_corrupt_needle_backs_off_is_reported_lost_then_replaced(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    mock_clock.autojump_threshold = 0.05
    store = await open_store(tmp_path)
    assert await put(store, FID, DATA)
    entry = store.lookup(FID)
    fd = os.open(tmp_path / "00000001.dat", os.O_WRONLY)
    os.pwrite(fd, b"\x00\x01", entry.offset + nd.HEADER_SIZE + 10)
    os.close(fd)
    peers = {"http://a": CuePeer("http://a", "down"), "http://b": CuePeer("http://b", "down")}
    repairer = Repairer(store, group=1, server_id="me", url=lambda: "http://me",
                        registry=OneGroup(peers), replica=peers.__getitem__, rate=1e12)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(repairer._suspect_loop)
        for _ in range(5):  # reads keep finding it: one schedule, not one attempt per read
            try:
                await store.get(FID)
            except CorruptNeedle:
                pass
        assert repairer.progress.corrupt_pending == 1
        await trio.sleep(60)
        # peers unreachable for a minute: retried with backoff (not thousands of times), not "lost"
        assert 4 <= peers["http://a"].calls <= 10, peers["http://a"].calls
        assert repairer.progress.needles_lost == 0
        for peer in peers.values():
            peer.mode = "corrupt"
        await trio.sleep(600)
        assert repairer.progress.needles_lost == 1 and repairer.progress.lost == [str(FID)]
        calls = peers["http://a"].calls
        assert calls <= 10 + LOST_AFTER + 3, calls
        peers["http://b"].mode = "good"  # a good copy turns up: found at the capped backoff
        await trio.sleep(700)
        assert repairer.progress.needles_lost == 0 and repairer.progress.corrupt_pending == 0
        assert repairer.progress.corrupt_replaced == 1
        assert await store.get(FID) == DATA
        nursery.cancel_scope.cancel()
    await store.aclose()
