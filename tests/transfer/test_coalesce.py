"""The Coalescer without sockets: batching, per-member outcomes, cancellation and bounds.

The real exchanges (data server needle batches, registry lookups and commits) are exercised with
real processes in tests/object/test_coalescing.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import pytest
import trio
import trio.testing

from arkor import batchwire
from arkor.errors import ArkorError, BadRequest, ChecksumMismatch, NotFound, ServiceUnavailable
from arkor.fileid import FileID
from arkor.transfer.coalesce import Coalescer, each_alone


class Peer:
    """A batch sender that records every batch and can be held, failed or made to refuse items."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = trio.Event()
        self.gate.set()
        self.refuse: set[int] = set()
        self.fail_whole: BaseException | None = None
        self.in_flight = 0
        self.max_in_flight = 0

    async def send(self, items: list[int]) -> Sequence[int | BaseException]:
        self.batches.append(list(items))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            await trio.sleep(0.01)
            if self.fail_whole is not None:  # this batch only
                failure, self.fail_whole = self.fail_whole, None
                raise failure
            return [NotFound(f"item {i}") if i in self.refuse else i * 10 for i in items]
        finally:
            self.in_flight -= 1


def recorder(coalescer: Coalescer[int, int], outcomes: dict[int, object]) -> Callable[[int], Awaitable[None]]:
    """A caller that records its item's outcome: the result, or the ArkorError it raised."""
    async def call(i: int) -> None:
        try:
            outcomes[i] = await coalescer.submit(i)
        except ArkorError as exc:
            outcomes[i] = exc
    return call


async def test_concurrent_calls_share_a_request_and_each_gets_its_own_answer() -> None:
    peer = Peer()
    results: dict[int, object] = {}
    async with trio.open_nursery() as background:
        coalescer: Coalescer[int, int] = Coalescer(background, peer.send, kind="test", concurrency=1)
        call = recorder(coalescer, results)
        async with trio.open_nursery() as callers:
            for i in range(50):
                callers.start_soon(call, i)
        background.cancel_scope.cancel()
    assert results == {i: i * 10 for i in range(50)}
    assert sorted(i for batch in peer.batches for i in batch) == list(range(50))
    assert len(peer.batches) < 10, peer.batches  # 50 concurrent calls, one batch in flight at a time


async def test_a_failing_member_fails_alone() -> None:
    peer = Peer()
    peer.refuse = {3}
    outcomes: dict[int, object] = {}
    async with trio.open_nursery() as background:
        coalescer: Coalescer[int, int] = Coalescer(background, peer.send, kind="test", concurrency=1)
        call = recorder(coalescer, outcomes)

        async with trio.open_nursery() as callers:
            for i in range(8):
                callers.start_soon(call, i)
        background.cancel_scope.cancel()
    assert isinstance(outcomes[3], NotFound)
    assert all(outcomes[i] == i * 10 for i in range(8) if i != 3)
    assert any(3 in batch and len(batch) > 1 for batch in peer.batches)


@pytest.mark.parametrize("unavailable", [True, False])
async def test_a_failed_exchange_fails_its_batch_and_an_unavailable_peer_the_waiting_too(
    unavailable: bool,
) -> None:
    peer = Peer()
    peer.gate = trio.Event()
    outcomes: dict[int, object] = {}
    failure = ServiceUnavailable("peer gone") if unavailable else ArkorError("bad answer", status=502)
    async with trio.open_nursery() as background:
        coalescer: Coalescer[int, int] = Coalescer(background, peer.send, kind="test", concurrency=1)
        call = recorder(coalescer, outcomes)

        async with trio.open_nursery() as callers:
            callers.start_soon(call, 0)
            await trio.testing.wait_all_tasks_blocked()  # batch [0] is on the wire, held
            for i in range(1, 5):
                callers.start_soon(call, i)
            await trio.testing.wait_all_tasks_blocked()
            peer.fail_whole = failure  # the batch on the wire fails; a next one would go through
            peer.gate.set()
        background.cancel_scope.cancel()
    assert peer.batches[0] == [0]
    failed = {i for i, o in outcomes.items() if isinstance(o, ArkorError)}
    if unavailable:  # the waiting calls failed at once with it, without being sent
        assert failed == {0, 1, 2, 3, 4} and len(peer.batches) == 1
    else:  # only the batch it belonged to; the waiting calls went in the next batch
        assert failed == {0} and outcomes == {0: outcomes[0], 1: 10, 2: 20, 3: 30, 4: 40}
    # Each member raised its own copy (separate tracebacks), with the exchange's message.
    errors = [o for o in outcomes.values() if isinstance(o, ArkorError)]
    assert len({id(e) for e in errors}) == len(errors)
    assert all(str(failure) in str(e) for e in errors)


async def test_a_member_cancelled_before_sending_is_left_out_and_the_others_are_served() -> None:
    peer = Peer()
    peer.gate = trio.Event()
    results: dict[int, int] = {}
    async with trio.open_nursery() as background:
        coalescer: Coalescer[int, int] = Coalescer(background, peer.send, kind="test", concurrency=1)

        async def call(i: int) -> None:
            results[i] = await coalescer.submit(i)

        async with trio.open_nursery() as callers:
            callers.start_soon(call, 0)
            await trio.testing.wait_all_tasks_blocked()
            lonely = trio.CancelScope()

            async def cancelled_call() -> None:
                with lonely:
                    await coalescer.submit(7)

            callers.start_soon(cancelled_call)
            for i in range(1, 4):
                callers.start_soon(call, i)
            await trio.testing.wait_all_tasks_blocked()
            lonely.cancel()  # item 7 is still waiting for a slot: it must not be sent
            await trio.testing.wait_all_tasks_blocked()
            peer.gate.set()
        background.cancel_scope.cancel()
    assert all(7 not in batch for batch in peer.batches)
    assert results == {0: 0, 1: 10, 2: 20, 3: 30}


async def test_a_member_cancelled_in_flight_does_not_disturb_its_batch() -> None:
    peer = Peer()
    peer.gate = trio.Event()
    results: dict[int, int] = {}
    async with trio.open_nursery() as background:
        coalescer: Coalescer[int, int] = Coalescer(background, peer.send, kind="test", concurrency=1)
        scope = trio.CancelScope()

        first_done = trio.Event()

        async def call(i: int) -> None:
            results[i] = await coalescer.submit(i)
            if i == 0:
                first_done.set()

        async def cancelled_call() -> None:
            with scope:
                await coalescer.submit(5)

        async with trio.open_nursery() as callers:
            callers.start_soon(call, 0)
            await trio.testing.wait_all_tasks_blocked()
            peer.gate.set()
            await first_done.wait()  # batch [0] done, its slot free
            peer.gate = trio.Event()  # the next batch will be held
            callers.start_soon(cancelled_call)
            for i in (6, 7):
                callers.start_soon(call, i)
            await trio.testing.wait_all_tasks_blocked()
            assert any(5 in batch for batch in peer.batches)  # sent, held on the wire
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            peer.gate.set()
        background.cancel_scope.cancel()
    assert scope.cancelled_caught
    assert results == {0: 0, 6: 60, 7: 70}


async def test_bounds_items_bytes_and_batches_in_flight() -> None:
    peer = Peer()
    async with trio.open_nursery() as background:
        coalescer: Coalescer[int, int] = Coalescer(
            background, peer.send, kind="test", max_items=8, max_bytes=5 * 100,
            size_of=lambda _i: 100, concurrency=2, queue=16,
        )
        async with trio.open_nursery() as callers:
            for i in range(100):
                callers.start_soon(coalescer.submit, i)
        background.cancel_scope.cancel()
    assert max(len(b) for b in peer.batches) <= 5  # the byte bound is the tighter here
    assert peer.max_in_flight <= 2
    assert sorted(i for batch in peer.batches for i in batch) == list(range(100))


async def test_shutdown_fails_waiting_members_with_503() -> None:
    peer = Peer()
    peer.gate = trio.Event()
    outcomes: list[BaseException] = []
    async with trio.open_nursery() as callers:
        async with trio.open_nursery() as background:
            coalescer: Coalescer[int, int] = Coalescer(background, peer.send, kind="test", concurrency=1)

            async def call(i: int) -> None:
                try:
                    await coalescer.submit(i)
                except ServiceUnavailable as exc:
                    outcomes.append(exc)

            for i in range(4):
                callers.start_soon(call, i)
            await trio.testing.wait_all_tasks_blocked()
            background.cancel_scope.cancel()
    assert len(outcomes) == 4
    with pytest.raises(ServiceUnavailable):
        await coalescer.submit(9)


async def test_each_alone_keeps_per_item_errors() -> None:
    async def call(i: int) -> int:
        if i == 2:
            raise ChecksumMismatch("bad")
        return i

    outcomes = await each_alone([1, 2, 3], call)
    assert outcomes[0] == 1 and outcomes[2] == 3
    assert isinstance(outcomes[1], ChecksumMismatch)


def test_needle_batch_round_trip_and_malformed_bodies() -> None:
    items = [(FileID.new(1, k), bytes([k]) * (k * 100), k) for k in range(1, 5)]
    decoded = batchwire.decode_needles(batchwire.encode_needles(items), max_needle=1 << 20)
    assert [(f, bytes(v), c) for f, v, c in decoded] == items
    good = batchwire.encode_needles(items)
    bad_bodies = [
        b"",
        b"\x00\x00\x00",
        b"\xff\xff\xff\xff" + good[4:],          # header length out of range
        good + b"x",                              # sizes do not add up
        good[:-1],
        b"\x00\x00\x00\x02{}",                     # no needle list
        b"\x00\x00\x00\x0e" + b'{"needles":[]}',  # empty
        batchwire.encode_needles([(FileID.new(1, 1), b"x" * 10, 1)]),  # over max_needle below
    ]
    for body in bad_bodies:
        with pytest.raises(BadRequest) as caught:
            batchwire.decode_needles(body, max_needle=5)
        assert caught.value.code in ("invalid_batch", "invalid_file_id"), body[:40]


def test_outcomes_rebuild_the_single_calls_errors() -> None:
    wire = {"results": [batchwire.outcome_json({"a": 1}),
                        batchwire.outcome_json(NotFound("gone", code="no_such_key"))]}
    value, error = batchwire.outcomes_of(wire, 2)
    assert value == {"a": 1}
    assert isinstance(error, NotFound) and error.code == "no_such_key" and error.status == 404
    with pytest.raises(ArkorError):
        batchwire.outcomes_of({"results": [1]}, 2)
