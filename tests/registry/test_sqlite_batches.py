"""SqliteStore batches concurrent reads into shared worker-thread calls; each read keeps its own
outcome, a read cancelled while queued never runs, and reads see every write committed before."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from arkor.registry.sqlite_store import SqliteStore
from arkor.registry.store import Tx


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = SqliteStore(tmp_path / "r.db", readers=2)
    await s.open()
    try:
        yield s
    finally:
        await s.aclose()


async def _bucket(store: SqliteStore, name: str) -> None:
    async def body(tx: Tx) -> None:
        await tx.execute("INSERT INTO buckets (name, created, objects, bytes) VALUES (?, 0, 0, 0)", (name,))

    await store.write(body)


async def test_concurrent_reads_share_thread_calls_and_keep_their_outcomes(store: SqliteStore) -> None:
    for i in range(0, 200, 2):
        await _bucket(store, f"b{i:03d}")
    results: dict[int, object] = {}

    async def one(i: int) -> None:
        async def body(tx: Tx) -> int:
            rows = await tx.query("SELECT name FROM buckets WHERE name = ?", (f"b{i:03d}",))
            if not rows:
                raise KeyError(i)
            return i

        try:
            results[i] = await store.read(body)
        except KeyError as exc:
            results[i] = exc

    before = store.read_calls
    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(one, i)
    assert all(results[i] == i for i in range(0, 200, 2))
    assert all(isinstance(results[i], KeyError) for i in range(1, 200, 2))
    calls = store.read_calls - before
    assert calls < 100, f"200 concurrent reads took {calls} thread calls: not batched"


async def test_a_read_cancelled_while_queued_never_runs_and_others_complete(store: SqliteStore) -> None:
    await _bucket(store, "x")
    ran: list[int] = []

    async def one(i: int) -> None:
        async def body(tx: Tx) -> int:
            await tx.query("SELECT 1 FROM buckets")
            ran.append(i)
            return i

        assert await store.read(body) == i

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(one, i)
        with trio.CancelScope() as doomed:
            doomed.cancel()
            await one(999)  # cancelled before it could be queued or taken
    assert sorted(ran) == list(range(40))


async def test_a_read_that_suspends_still_runs_and_sees_committed_writes(store: SqliteStore) -> None:
    await _bucket(store, "before")

    async def slow(tx: Tx) -> list[str]:
        first = await tx.query("SELECT name FROM buckets ORDER BY name")
        await trio.lowlevel.checkpoint()  # suspends on something else: run the slow way
        return [str(r[0]) for r in first]

    assert await store.read(slow) == ["before"]
    await _bucket(store, "after")

    async def fast(tx: Tx) -> list[str]:
        return [str(r[0]) for r in await tx.query("SELECT name FROM buckets ORDER BY name")]

    assert await store.read(fast) == ["after", "before"]
