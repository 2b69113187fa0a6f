"""The fragment pool: fragments in flight summed over many uploads stay bounded, every upload
still finishes (its first fragment needs no token), and tokens come back on failure and
cancellation. Socket-free: `run_ordered` directly, then the engine over in-memory replicas."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import trio
import trio.lowlevel
import trio.testing

from arkor.errors import ServiceUnavailable
from arkor.transfer.pipeline import run_ordered
from arkor.transfer.streams import iter_bytes
from tests.transfer.fakes import MemoryRegistry
from tests.transfer.test_engine import FRAG, make_engine, read_all


async def numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


async def test_many_calls_share_the_pool_and_all_finish(autojump_clock: trio.testing.MockClock) -> None:
    pool = trio.CapacityLimiter(3)
    alive = peak = 0
    results: dict[int, list[int]] = {}

    async def work(index: int, item: int) -> int:
        nonlocal alive, peak
        alive += 1
        peak = max(peak, alive)
        await trio.sleep(0.01 * (1 + item % 3))
        alive -= 1
        return item

    async def one_call(call: int) -> None:
        out: list[int] = []

        async def sink(value: int) -> None:
            out.append(value)

        assert await run_ordered(numbers(10), work, limit=4, sink=sink, shared=pool) == 10
        results[call] = out

    async with trio.open_nursery() as nursery:
        for call in range(8):
            nursery.start_soon(one_call, call)
    assert results == {call: list(range(10)) for call in range(8)}
    assert peak <= 8 + 3, peak  # each call's first item, plus the pool (unbounded: 8 x 4 = 32)
    assert pool.borrowed_tokens == 0


async def test_tokens_come_back_when_a_call_fails_or_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool = trio.CapacityLimiter(2)

    async def slow(index: int, item: int) -> int:
        await trio.sleep(1)
        if item == 3:
            raise ValueError("item 3")
        return item

    async def sink(value: int) -> None:
        await trio.lowlevel.checkpoint()

    with pytest.raises(ValueError, match="item 3"):
        await run_ordered(numbers(10), slow, limit=4, sink=sink, shared=pool)
    assert pool.borrowed_tokens == 0
    with trio.move_on_after(1.5):
        await run_ordered(numbers(10), slow, limit=4, sink=sink, shared=pool)
    assert pool.borrowed_tokens == 0
    # and the pool is whole again: a full run still goes through
    async def fine(index: int, item: int) -> int:
        await trio.sleep(0.1)
        return item

    assert await run_ordered(numbers(6), fine, limit=4, sink=sink, shared=pool) == 6


async def test_engine_uploads_share_the_pool(autojump_clock: trio.testing.MockClock) -> None:
    registry = MemoryRegistry(groups=2)
    for replica in registry.replicas.values():
        replica.delay = 0.01
    engine = make_engine(registry, in_flight=4, shared_fragments=2)
    assert engine.fragment_pool is not None
    bodies = {i: os.urandom(FRAG * 5 + i) for i in range(6)}
    results = {}

    async def upload(i: int) -> None:
        results[i] = await engine.upload(iter_bytes(bodies[i], 10_000))

    async with trio.open_nursery() as nursery:
        for i in bodies:
            nursery.start_soon(upload, i)
    assert engine.fragment_pool.borrowed_tokens == 0
    for i, body in bodies.items():
        assert await read_all(engine, results[i].fragments, 0, len(body) - 1) == body
    for replica in registry.replicas.values():
        replica.mode = "fail"
    with pytest.raises(ServiceUnavailable):
        await engine.upload(iter_bytes(os.urandom(FRAG * 3), 10_000))
    assert engine.fragment_pool.borrowed_tokens == 0
