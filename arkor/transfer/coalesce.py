"""Coalescer: concurrent calls of one kind to one peer go as one request.

Why: in a cluster every small PUT writes a needle to three data servers and commits to the
registry, every GET looks its manifest up; each of those exchanges costs a whole HTTP request on
both sides (about 0.3-1 ms of CPU), far more than the work it carries. Calls that arrive while an
earlier batch is on the wire wait for the next one, so under load a request carries many calls
and an idle system pays only a task hop.

Semantics, for the callers (trio's cancellation rules, docs/reliability.md "Coalescing"):
- `submit` returns the item's own result or raises the item's own error: one member failing does
  not fail the others. A failure of the whole exchange is raised to every member of that batch,
  exactly as a single call would have raised it; when it says the peer is unavailable
  (unreachable, timed out: ServiceUnavailable), the calls waiting for the next batch get it too,
  at once, rather than each waiting for the same failure.
- A caller cancelled before its batch is sent is left out of it. A caller cancelled after that is
  not waited for, but its item may still take effect (as a cancelled single request may): callers
  must already treat "cancelled" as "unknown outcome" (the engine reclaims every fid it created).
- Bounded: at most `queue` items wait (`submit` blocks beyond: back-pressure), a batch holds at
  most `max_items` items and `max_bytes` bytes, at most `concurrency` batches are in flight.
- The dispatcher runs in the nursery given at construction (the process's long-lived one); when
  that nursery is cancelled, unsent and in-flight members get ServiceUnavailable.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import trio

from arkor.errors import ArkorError, ServiceUnavailable
from arkor.metrics import COALESCED_BATCH_ITEMS

T = TypeVar("T")
R = TypeVar("R")


class _Pending(Generic[T, R]):
    __slots__ = ("item", "size", "done", "result", "error", "abandoned")

    def __init__(self, item: T, size: int) -> None:
        self.item = item
        self.size = size
        self.done = trio.Event()
        self.result: R | None = None
        self.error: BaseException | None = None
        self.abandoned = False

    def settle(self, outcome: R | BaseException) -> None:
        if self.done.is_set():
            return
        if isinstance(outcome, BaseException):
            self.error = copy.copy(outcome)  # each member raises its own (tracebacks differ)
        else:
            self.result = outcome
        self.done.set()


class Coalescer(Generic[T, R]):
    """Batches concurrent `submit(item)` calls into `send(items)` calls (see the module doc)."""

    def __init__(
        self,
        nursery: trio.Nursery,
        send: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        kind: str,
        max_items: int = 64,
        max_bytes: int = 1 << 20,
        size_of: Callable[[T], int] = lambda _item: 0,
        concurrency: int = 2,
        queue: int = 1024,
    ) -> None:
        self._nursery = nursery
        self._send = send
        self.kind = kind
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._slots = trio.Semaphore(concurrency)
        self._in, self._out = trio.open_memory_channel[_Pending[T, R]](queue)
        self._carry: _Pending[T, R] | None = None  # did not fit the last batch: first of the next
        self._started = False
        self._closed = False
        self._metric = COALESCED_BATCH_ITEMS.labels(kind)

    async def submit(self, item: T) -> R:
        if self._closed:
            raise ServiceUnavailable(f"{self.kind}: shutting down")
        if not self._started:
            self._started = True
            self._nursery.start_soon(self._dispatch)
        pending: _Pending[T, R] = _Pending(item, self._size_of(item))
        await self._in.send(pending)
        try:
            await pending.done.wait()
        except BaseException:
            pending.abandoned = True
            raise
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]

    async def _next_batch(self) -> list[_Pending[T, R]]:
        """Wait for one item, then take whatever else is already waiting, within the bounds."""
        first = self._carry if self._carry is not None else await self._out.receive()
        self._carry = None
        batch, size = [first], first.size
        while len(batch) < self.max_items:
            try:
                pending = self._out.receive_nowait()
            except trio.WouldBlock:
                break
            if size + pending.size > self.max_bytes:
                self._carry = pending
                break
            batch.append(pending)
            size += pending.size
        return [p for p in batch if not p.abandoned]

    async def _dispatch(self) -> None:
        try:
            while True:
                await self._slots.acquire()  # while every slot is busy, callers pile up
                batch: list[_Pending[T, R]] = []
                while not batch:
                    batch = await self._next_batch()
                self._nursery.start_soon(self._run, batch)
        finally:
            self._closed = True
            gone = ServiceUnavailable(f"{self.kind}: shutting down")
            if self._carry is not None:
                self._carry.settle(gone)
            while True:
                try:
                    self._out.receive_nowait().settle(gone)
                except trio.WouldBlock:
                    break

    def _fail_waiting(self, exc: BaseException) -> None:
        """The peer is unreachable (or timed out): the calls waiting for the next batch would only
        wait for the same failure, so they get it now and their callers fail over at once."""
        if self._carry is not None:
            self._carry.settle(exc)
            self._carry = None
        while True:
            try:
                self._out.receive_nowait().settle(exc)
            except trio.WouldBlock:
                return

    async def _run(self, batch: list[_Pending[T, R]]) -> None:
        self._metric.observe(len(batch))
        outcomes: Sequence[R | BaseException] = []
        try:
            outcomes = await self._send([p.item for p in batch])
            if len(outcomes) != len(batch):
                raise ServiceUnavailable(
                    f"{self.kind}: {len(outcomes)} answers for a batch of {len(batch)}"
                )
        except Exception as exc:  # noqa: BLE001 - the exchange failed: every member gets it
            outcomes = [exc] * len(batch)
            if isinstance(exc, ServiceUnavailable):
                self._fail_waiting(exc)
        finally:
            self._slots.release()
            gone = ServiceUnavailable(f"{self.kind}: the batch was cancelled")
            for pending, outcome in zip(batch, outcomes or [gone] * len(batch), strict=True):
                pending.settle(outcome)


async def each_alone(
    items: Sequence[T], call: Callable[[T], Awaitable[R]]
) -> list[R | BaseException]:
    """`call` on every item concurrently; each outcome is the item's result or the ArkorError it
    raised, so one item failing fails alone. What a batch sender returns for items sent one by
    one (a batch of one, a peer without the batch route), and how the servers run a batch."""
    outcomes: list[R | BaseException] = [ServiceUnavailable("not sent")] * len(items)

    async def one(index: int, item: T) -> None:
        try:
            outcomes[index] = await call(item)
        except ArkorError as exc:
            outcomes[index] = exc

    async with trio.open_nursery() as nursery:
        for index, item in enumerate(items):
            nursery.start_soon(one, index, item)
    return outcomes
