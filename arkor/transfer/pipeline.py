"""A bounded, ordered, concurrent map: the shape of both the PUT fan-out and the GET read-ahead.

`run_ordered(source, fn, limit=N, sink=...)` calls `fn(index, item)` for up to N items at once and
hands the results to `sink` strictly in source order. A slot is taken BEFORE the next item is pulled
from `source` and given back only after `sink` has consumed the result, so at most N items (pulled,
in progress or finished-but-waiting) exist at any time: memory is bounded by N x item size.

Everything runs in one nursery inside the call (no tasks outlive it); the first failure cancels the
rest and is re-raised as itself (not wrapped in an ExceptionGroup), so callers can `except` it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from contextlib import aclosing
from typing import Any, Generic, TypeVar

import trio

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[R]):
    __slots__ = ("done", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None


def first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The most meaningful leaf of an exception group: the first that is not `trio.Cancelled`."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            stack[:0] = list(exc.exceptions)
        else:
            leaves.append(exc)
    for leaf in leaves:
        if not isinstance(leaf, trio.Cancelled):
            return leaf
    return leaves[0]


async def run_ordered(
    source: AsyncIterable[T],
    fn: Callable[[int, T], Awaitable[R]],
    *,
    limit: int,
    sink: Callable[[R], Awaitable[None]],
    shared: trio.CapacityLimiter | None = None,
) -> int:
    """Map `fn` over `source` with at most `limit` items alive; returns the number of items.

    `shared` bounds the sum over many concurrent calls: every item after a call's first also
    takes a token of it (waiting, not failing, when none is free) from before it is pulled until
    it is sunk, so the calls together hold at most (calls + tokens) items. A call always gets its
    first item without a token, so it can finish and give its tokens back: no deadlock."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if limit == 1:
        return await _in_turn(source, fn, sink)
    slots = trio.Semaphore(limit)
    send, recv = trio.open_memory_channel[_Slot[R]](limit)
    count = 0
    held: set[_Slot[R]] = set()  # slots holding a `shared` token: all given back in the end

    def give_back(slot: _Slot[R]) -> None:
        if shared is not None and slot in held:
            held.discard(slot)
            shared.release_on_behalf_of(slot)

    async def run_one(slot: _Slot[R], index: int, item: T) -> None:
        slot.value = await fn(index, item)
        slot.done.set()

    async def produce(nursery: trio.Nursery) -> None:
        nonlocal count
        async with send:
            iterator = source.__aiter__()
            closer = aclosing(iterator) if hasattr(iterator, "aclose") else None  # type: ignore[type-var]
            if closer is not None:
                await closer.__aenter__()
            try:
                while True:
                    await slots.acquire()
                    slot: _Slot[R] = _Slot()
                    if shared is not None and count > 0:
                        await shared.acquire_on_behalf_of(slot)
                        held.add(slot)
                    try:
                        item = await iterator.__anext__()
                    except StopAsyncIteration:
                        give_back(slot)
                        slots.release()
                        return
                    nursery.start_soon(run_one, slot, count, item)
                    count += 1
                    await send.send(slot)
            finally:
                if closer is not None:
                    with trio.CancelScope(shield=True):
                        await closer.__aexit__(None, None, None)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce, nursery)
            async with recv:
                async for slot in recv:
                    await slot.done.wait()
                    value, slot.value = slot.value, None
                    await sink(value)
                    give_back(slot)
                    slots.release()
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    finally:
        for slot in list(held):  # failed or cancelled: tokens of items never sunk
            give_back(slot)
    return count


async def _in_turn(
    source: AsyncIterable[T], fn: Callable[[int, T], Awaitable[R]], sink: Callable[[R], Awaitable[None]],
) -> int:
    """`run_ordered` with a limit of 1: nothing to overlap, so no nursery, tasks or channel (most
    uploads are one fragment). One item is alive at a time, which is within any `shared` bound
    without a token (a call's first item never needs one)."""
    count = 0
    iterator = source.__aiter__()
    try:
        while True:
            try:
                item = await iterator.__anext__()
            except StopAsyncIteration:
                return count
            await sink(await fn(count, item))
            count += 1
    finally:
        if hasattr(iterator, "aclose"):
            with trio.CancelScope(shield=True):
                await iterator.aclose()
