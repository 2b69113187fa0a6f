"""`TransferEngine` in-process, over in-memory replicas and a registry that fail on cue.

Time is trio's autojump clock where peers hang or lag, so "a PUT is not held up by a dead replica"
is measured in virtual seconds, exactly, and the tests run in well under a second each.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from arkor.errors import ServiceUnavailable
from arkor.fileid import FileID
from arkor.model import Fragment
from arkor.transfer.engine import CLEANUP_DEADLINE, TransferEngine
from arkor.transfer.pipeline import run_ordered
from arkor.transfer.reader import plan_slices
from arkor.transfer.streams import iter_bytes
from arkor.transfer.timeouts import Timeouts
from tests.transfer.fakes import MemoryRegistry

FRAG = 64 * 1024
TIMEOUTS = Timeouts(connect=1.0, first_byte=5.0, idle=5.0, transfer=10.0)


def make_engine(registry: MemoryRegistry, **kwargs: object) -> TransferEngine:
    options: dict[str, object] = {"fragment_size": FRAG, "in_flight": 2, "read_ahead": 2,
                                  "replica_timeout": TIMEOUTS, "fragment_retries": 3,
                                  "lease_size": 16}
    options.update(kwargs)
    return TransferEngine(registry, registry.replica, **options)  # type: ignore[arg-type]


async def read_all(engine: TransferEngine, fragments: list[Fragment], start: int, end: int) -> bytes:
    async with engine.open_read(fragments, start, end) as chunks:
        return b"".join([c async for c in chunks])


@asynccontextmanager
async def cleanup_running(engine: TransferEngine) -> AsyncIterator[None]:
    """The block runs with the engine's background cleanup task started; it is cancelled after."""
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.cleanup.run)
        yield
        nursery.cancel_scope.cancel()


def groups_of(fragments: list[Fragment]) -> set[int]:
    return {FileID.parse(f.fid).group for f in fragments}


async def test_round_trip_and_ranges() -> None:
    registry = MemoryRegistry()
    engine = make_engine(registry)
    data = os.urandom(5 * FRAG + 123)
    result = await engine.upload(iter_bytes(data, 10_000))
    assert result.size == len(data) and len(result.fragments) == 6
    for fragment in result.fragments:  # durable on every replica of its group
        group = FileID.parse(fragment.fid).group
        assert all(fragment.fid in r.needles for r in registry.group_replicas(group))
    assert await read_all(engine, result.fragments, 0, len(data) - 1) == data
    size = len(data)
    for start, end in [(0, 0), (FRAG - 1, FRAG), (FRAG, 2 * FRAG - 1), (100, 3 * FRAG + 7),
                       (size - 1, size - 1), (5 * FRAG, size - 1)]:
        assert await read_all(engine, result.fragments, start, end) == data[start:end + 1]


async def test_a_failing_replica_moves_the_fragment_to_another_group() -> None:
    registry = MemoryRegistry()
    registry.replicas["mem://g1r2"].mode = "fail"
    engine = make_engine(registry)
    async with cleanup_running(engine):
        data = os.urandom(4 * FRAG)
        result = await engine.upload(iter_bytes(data))
        assert groups_of(result.fragments) == {2}
        assert await read_all(engine, result.fragments, 0, len(data) - 1) == data
        await engine.cleanup.drained()
        # What the failed attempts wrote on group 1 was deleted in the background, or queued.
        referenced = {f.fid for f in result.fragments}
        leftovers = registry.stored() - referenced
        assert leftovers <= {f.fid for f in registry.discarded}
        assert not any(r.needles for r in registry.group_replicas(1))


async def test_a_hanging_replica_costs_one_write_the_lag_limit_then_is_avoided(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = MemoryRegistry()
    hung = registry.replicas["mem://g1r1"]
    hung.mode = "hang"
    engine = make_engine(registry, lag_limit=0.5)
    async with cleanup_running(engine):
        for _ in range(20):
            started = trio.current_time()
            result = await engine.upload(iter_bytes(os.urandom(1000)))
            # Never the 10 s transfer timeout: at worst the lag limit, then group 2 at once.
            assert trio.current_time() - started <= 0.5 + 0.01
            assert groups_of(result.fragments) <= {1, 2}
        # Once its circuit opened, writes stopped going to group 1 (a probe per backoff at most).
        assert hung.calls["put"] <= 3
        assert engine.health.is_open(hung.url) or not engine.health.is_closed(hung.url)
        # Healed: after the backoff a probe write reaches it and closes the circuit.
        hung.mode = "ok"
        await trio.sleep(60)
        for _ in range(5):
            await engine.upload(iter_bytes(os.urandom(1000)))
        assert engine.health.is_closed(hung.url)


async def test_a_slow_replica_steers_writes_to_the_healthy_group(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = MemoryRegistry()
    slow = registry.replicas["mem://g2r3"]
    slow.delay = 0.3
    engine = make_engine(registry)
    for _ in range(30):
        await engine.upload(iter_bytes(os.urandom(1000)))
    late = []
    for _ in range(20):
        started = trio.current_time()
        result = await engine.upload(iter_bytes(os.urandom(1000)))
        late.append(trio.current_time() - started)
        assert groups_of(result.fragments) <= {1, 2}
    # Most writes no longer wait for the slow replica (probes after each backoff still may).
    assert sum(1 for t in late if t >= 0.3) <= 3, late


async def test_cancelled_upload_leaves_nothing_behind(autojump_clock: trio.testing.MockClock) -> None:
    registry = MemoryRegistry()
    for replica in registry.replicas.values():
        replica.delay = 0.1
    engine = make_engine(registry)

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield os.urandom(FRAG)

    with trio.move_on_after(1.0) as scope:
        await engine.upload(endless())
    assert scope.cancelled_caught
    assert registry.stored(), "the upload had written fragments before it was cancelled"
    # Every needle written is in the registry's reclaim queue (handed over shielded).
    assert registry.stored() <= {f.fid for f in registry.discarded}


async def test_cleanup_after_cancel_is_shielded_and_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = MemoryRegistry()
    for replica in registry.replicas.values():
        replica.delay = 0.1
    engine = make_engine(registry)

    async def body() -> AsyncIterator[bytes]:
        yield os.urandom(FRAG)
        await trio.sleep(0.5)  # the first fragment is written (replicas take 0.1 s)
        assert registry.stored()
        registry.hang = True  # from now on the registry never answers (its reclaim queue too)
        while True:
            yield os.urandom(FRAG)

    with trio.move_on_after(1.0) as scope:
        await engine.upload(body())
    assert scope.cancelled_caught
    # The cancelled upload still tried to hand its needles over (shielded), and gave up after
    # the cleanup deadline instead of hanging: the orphan sweep is left with them.
    assert registry.calls["discard"] == 1
    assert 1.0 + CLEANUP_DEADLINE - 0.01 <= trio.current_time() <= 1.0 + CLEANUP_DEADLINE + 0.5


async def test_upload_fails_with_503_when_no_group_can_take_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = MemoryRegistry()
    for url in ("mem://g1r1", "mem://g2r2"):
        registry.replicas[url].mode = "fail"
    engine = make_engine(registry)
    async with cleanup_running(engine):
        with pytest.raises(ServiceUnavailable):
            await engine.upload(iter_bytes(os.urandom(3 * FRAG)))
        await engine.cleanup.drained()
    # Deleted where the replica answers; what the failing one may hold is in the reclaim queue.
    assert engine.cleanup.submitted >= 2 and registry.discarded
    assert registry.stored() <= {f.fid for f in registry.discarded}


async def test_reads_fail_over_past_failing_and_corrupt_copies() -> None:
    registry = MemoryRegistry(groups=1)
    engine = make_engine(registry)
    data = os.urandom(3 * FRAG)
    result = await engine.upload(iter_bytes(data))
    registry.replicas["mem://g1r1"].mode = "fail"
    registry.replicas["mem://g1r2"].mode = "corrupt"
    for _ in range(10):  # whatever order the replicas are tried in
        assert await read_all(engine, result.fragments, 0, len(data) - 1) == data
    registry.replicas["mem://g1r3"].mode = "corrupt"
    with pytest.raises(ServiceUnavailable):  # never a damaged copy served as data
        await read_all(engine, result.fragments, 0, len(data) - 1)


async def test_unavailable_window_raises_on_enter_later_slices_while_streaming(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = MemoryRegistry(groups=2)
    engine = make_engine(registry)
    registry.writable = {1}
    first = await engine.upload(iter_bytes(os.urandom(FRAG)))
    registry.writable = {2}
    engine.groups.invalidate()
    second = await engine.upload(iter_bytes(os.urandom(FRAG)))
    fragments = first.fragments + second.fragments
    assert groups_of(first.fragments) == {1} and groups_of(second.fragments) == {2}
    for replica in registry.group_replicas(1):
        replica.mode = "hang"
    started = trio.current_time()
    with pytest.raises(ServiceUnavailable):  # before any byte: the server answers 503
        async with engine.open_read(fragments, 0, 2 * FRAG - 1):
            pytest.fail("entered although the first fragment cannot be read")
    assert trio.current_time() - started <= 2 * TIMEOUTS.transfer + 0.01  # bounded, not hung
    for replica in registry.group_replicas(1):
        replica.mode = "ok"
    for replica in registry.group_replicas(2):
        replica.mode = "fail"
    # A range that fits in the read-ahead window (2 + 1 slices) is read whole before entering:
    # its later slice failing is still refused before any byte (a 503, not a body cut short).
    with pytest.raises(ServiceUnavailable):
        async with engine.open_read(fragments, 0, 2 * FRAG - 1):
            pytest.fail("entered although a slice of the window cannot be read")
    # A longer range streams: a slice past the window fails while streaming, after the bytes before it.
    longer = first.fragments * 3 + second.fragments
    got = []
    with pytest.raises(ServiceUnavailable):
        async with engine.open_read(longer, 0, 4 * FRAG - 1) as chunks:
            async for chunk in chunks:
                got.append(chunk)
    head = await read_all(engine, first.fragments, 0, FRAG - 1)
    assert b"".join(got) == head * 3


async def test_hedged_read_takes_the_first_good_answer(autojump_clock: trio.testing.MockClock) -> None:
    registry = MemoryRegistry(groups=1)
    engine = make_engine(registry, hedge_delay=0.1)
    data = os.urandom(1000)
    result = await engine.upload(iter_bytes(data))
    for replica in registry.group_replicas(1):
        replica.delay = 2.0  # all slow: the first answer wins, the others are cancelled
    registry.replicas["mem://g1r3"].delay = 0.15
    for _ in range(5):
        started = trio.current_time()
        assert await read_all(engine, result.fragments, 0, len(data) - 1) == data
        assert trio.current_time() - started < 0.5
    slow = [registry.replicas[u] for u in ("mem://g1r1", "mem://g1r2")]
    assert sum(r.cancelled["get"] for r in slow) >= 1
    # A silent replica: the read goes elsewhere after the threshold, not after a timeout.
    registry.replicas["mem://g1r3"].delay = 0.0
    registry.replicas["mem://g1r1"].mode = "hang"
    registry.replicas["mem://g1r1"].delay = 0.0
    registry.replicas["mem://g1r2"].delay = 0.0
    for _ in range(10):
        started = trio.current_time()
        assert await read_all(engine, result.fragments, 0, len(data) - 1) == data
        assert trio.current_time() - started <= 0.1 + 0.01


async def test_small_read_starts_no_task_when_nothing_is_slow() -> None:
    registry = MemoryRegistry(groups=1)
    engine = make_engine(registry)
    data = os.urandom(4000)
    result = await engine.upload(iter_bytes(data))
    spawned: list[str] = []

    class Count(trio.abc.Instrument):
        def task_spawned(self, task: trio.lowlevel.Task) -> None:
            spawned.append(task.name)

    instrument = Count()
    trio.lowlevel.add_instrument(instrument)
    try:
        assert await read_all(engine, result.fragments, 10, 3999) == data[10:]
    finally:
        trio.lowlevel.remove_instrument(instrument)
    assert spawned == []


async def test_groups_stay_usable_while_the_registry_hangs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = MemoryRegistry(groups=1)
    engine = make_engine(registry)
    data = os.urandom(2 * FRAG)
    result = await engine.upload(iter_bytes(data))
    await trio.sleep(5)  # the group list is now older than its TTL
    registry.hang = True

    async def refresh_fails() -> list[object]:
        raise ServiceUnavailable("registry unreachable", code="registry_unavailable")

    registry.groups = refresh_fails  # type: ignore[method-assign]
    assert await read_all(engine, result.fragments, 0, len(data) - 1) == data


def test_plan_slices_covers_exactly_the_range() -> None:
    fragments = [Fragment(fid=f"{i}", size=s, crc32c=0) for i, s in enumerate([10, 0, 10, 5])]
    assert plan_slices(fragments, 0, 24) == [(fragments[0], 0, 10), (fragments[2], 0, 10),
                                            (fragments[3], 0, 5)]
    assert plan_slices(fragments, 9, 10) == [(fragments[0], 9, 1), (fragments[2], 0, 1)]
    assert plan_slices(fragments, 22, 22) == [(fragments[3], 2, 1)]


async def test_run_ordered_keeps_order_and_bound(autojump_clock: trio.testing.MockClock) -> None:
    alive = peak = 0
    out: list[int] = []

    async def source() -> AsyncIterator[int]:
        for i in range(20):
            yield i

    async def work(index: int, item: int) -> int:
        nonlocal alive, peak
        alive += 1
        peak = max(peak, alive)
        await trio.sleep((20 - item) * 0.01)  # later items finish first
        alive -= 1
        return item * 2

    async def sink(value: int) -> None:
        out.append(value)

    assert await run_ordered(source(), work, limit=3, sink=sink) == 20
    assert out == [i * 2 for i in range(20)] and peak <= 3

    async def boom(index: int, item: int) -> int:
        if item == 5:
            raise ValueError("item 5")
        await trio.sleep(1)
        return item

    with pytest.raises(ValueError, match="item 5"):  # itself, not an ExceptionGroup
        await run_ordered(source(), boom, limit=3, sink=sink)


async def test_run_ordered_with_limit_one_runs_in_turn_and_closes_its_source() -> None:
    closed: list[bool] = []
    spawned: list[str] = []

    async def source() -> AsyncIterator[int]:
        try:
            for i in range(5):
                yield i
        finally:
            closed.append(True)

    class Count(trio.abc.Instrument):
        def task_spawned(self, task: trio.lowlevel.Task) -> None:
            spawned.append(task.name)

    out: list[int] = []

    async def sink(value: int) -> None:
        out.append(value)

    async def double(index: int, item: int) -> int:
        assert index == item
        return item * 2

    instrument = Count()
    trio.lowlevel.add_instrument(instrument)
    try:
        assert await run_ordered(source(), double, limit=1, sink=sink) == 5
    finally:
        trio.lowlevel.remove_instrument(instrument)
    assert out == [0, 2, 4, 6, 8] and spawned == [] and closed == [True]

    async def boom(index: int, item: int) -> int:
        if item == 2:
            raise ValueError("item 2")
        return item

    closed.clear()
    with pytest.raises(ValueError, match="item 2"):
        await run_ordered(source(), boom, limit=1, sink=sink)
    assert closed == [True]  # the source is closed at once, not left to the GC


async def test_a_one_fragment_upload_with_its_size_starts_no_pipeline_task() -> None:
    registry = MemoryRegistry(groups=1)
    engine = make_engine(registry)
    data = os.urandom(4000)
    spawned: list[str] = []

    class Count(trio.abc.Instrument):
        def task_spawned(self, task: trio.lowlevel.Task) -> None:
            spawned.append(task.name)

    instrument = Count()
    trio.lowlevel.add_instrument(instrument)
    try:
        result = await engine.upload(iter_bytes(data), size=len(data))
    finally:
        trio.lowlevel.remove_instrument(instrument)
    assert not [name for name in spawned if "run_ordered" in name or "produce" in name]
    assert await read_all(engine, result.fragments, 0, len(data) - 1) == data
    lying = await engine.upload(iter_bytes(data * 600), size=len(data))  # more than declared
    assert len(lying.fragments) > 1 and lying.size == len(data) * 600
