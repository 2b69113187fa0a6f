"""Reading a byte range of an object: an async context manager that owns its read-ahead nursery.

What lives here: `RangeReader`, returned by `TransferEngine.open_read`. Entering it fetches the
first slice (so a caller learns that the range cannot be served BEFORE it commits to an answer: the
object server turns that into a 503 instead of a 200 cut short); iterating the value it yields gives
the bytes in order while up to `read_ahead` further slices are fetched concurrently in a nursery
that the context manager owns. Leaving it cancels whatever is still being fetched. Nothing here
knows about HTTP requests: any caller (object server, Git LFS, server-side copy, an embedding) gets
read-ahead the same way.

What must not live here: how one slice is fetched (replica order, hedging, checksums: engine.py).

A range of one slice (every small object) is fetched inline, with no task and no channel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType

import trio

from arkor.model import Fragment
from arkor.transfer.pipeline import first_error, run_ordered

Slice = tuple[Fragment, int, int]  # (fragment, offset in fragment, length)
Fetch = Callable[[Fragment, int, int], Awaitable[bytes]]


def plan_slices(fragments: list[Fragment], start: int, end_inclusive: int) -> list[Slice]:
    """(fragment, offset in fragment, length) for every fragment overlapping the byte range."""
    out: list[Slice] = []
    position = 0
    for fragment in fragments:
        lo, hi = position, position + fragment.size - 1
        position += fragment.size
        if fragment.size == 0 or hi < start:
            continue
        if lo > end_inclusive:
            break
        first = max(start, lo)
        last = min(end_inclusive, hi)
        out.append((fragment, first - lo, last - first + 1))
    return out


class RangeReader(AbstractAsyncContextManager["AsyncIterator[bytes]"]):
    """`async with engine.open_read(...) as chunks: async for chunk in chunks: ...`

    `__aenter__` raises what fetching the first slice raised (ServiceUnavailable when no replica
    can serve it); a later slice's error is raised by the iteration, in order."""

    def __init__(self, slices: list[Slice], fetch: Fetch, read_ahead: int) -> None:
        self._slices = slices
        self._fetch = fetch
        self._read_ahead = max(1, read_ahead)
        self._cm: AbstractAsyncContextManager[AsyncIterator[bytes]] | None = None
        self._entered = False

    async def __aenter__(self) -> AsyncIterator[bytes]:
        if self._entered:
            raise RuntimeError("a RangeReader can be entered only once")
        self._entered = True
        if len(self._slices) <= 1:  # the small-object path: no task, no channel, no generator
            first = await self._fetch(*self._slices[0]) if self._slices else None
            return _Chunks(first, _nothing)
        self._cm = _open(self._slices, self._fetch, self._read_ahead)
        return await self._cm.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._cm is None:
            return None
        return await self._cm.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Nothing to do (leaving the context releases everything); kept so that code written for
        the former iterator-with-aclose reader (`Response(on_close=reader.aclose)`) still works."""


class _Chunks:
    """The first slice (already fetched), then the rest: a plain iterator, no generator frames to
    finalize when a consumer stops early."""

    def __init__(self, first: bytes | None, rest: Callable[[], Awaitable[bytes | None]]) -> None:
        self._first = first
        self._rest = rest

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        item = await self._rest()
        if item is None:
            raise StopAsyncIteration
        return item


async def _nothing() -> bytes | None:
    return None


async def _next_item(recv: trio.MemoryReceiveChannel[bytes | BaseException]) -> bytes:
    item = await recv.receive()
    if isinstance(item, BaseException):
        raise item
    return item


def _from_list(items: list[bytes]) -> Callable[[], Awaitable[bytes | None]]:
    pending = iter(items)

    async def rest() -> bytes | None:
        return next(pending, None)

    return rest


def _receiver(
    recv: trio.MemoryReceiveChannel[bytes | BaseException],
) -> Callable[[], Awaitable[bytes | None]]:
    async def rest() -> bytes | None:
        try:
            item = await recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    return rest


@asynccontextmanager
async def _open(slices: list[Slice], fetch: Fetch, read_ahead: int) -> AsyncIterator[AsyncIterator[bytes]]:
    """Two or more slices: the first (all of them, when they fit in the read-ahead window) is
    fetched before entering completes, the rest read ahead."""
    send, recv = trio.open_memory_channel[bytes | BaseException](0)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_produce, slices, fetch, read_ahead, send)
            try:
                async with recv:
                    first_item = await recv.receive()
                    if isinstance(first_item, BaseException):
                        raise first_item
                    if len(slices) <= read_ahead + 1:
                        # The whole range fits in the read-ahead window (being fetched already):
                        # take all of it before the caller answers, so a failure of any slice is
                        # still a 503, never a body cut short after a 200.
                        rest = [await _next_item(recv) for _ in slices[1:]]
                        yield _Chunks(first_item, _from_list(rest))
                    else:
                        yield _Chunks(first_item, _receiver(recv))
            finally:
                nursery.cancel_scope.cancel()  # read-ahead the consumer no longer wants
    except BaseExceptionGroup as group:
        raise first_error(group) from None


async def _produce(
    slices: list[Slice],
    fetch: Fetch,
    read_ahead: int,
    send: trio.MemorySendChannel[bytes | BaseException],
) -> None:
    """Fetch slices `read_ahead` at a time and send them in order; a failure is sent as an item so
    the consumer raises it at the right position (and nothing is raised into the nursery)."""

    async def source() -> AsyncIterator[Slice]:
        for item in slices:
            yield item

    async def one(_index: int, item: Slice) -> bytes:
        return await fetch(*item)

    async with send:
        try:
            await run_ordered(source(), one, limit=read_ahead, sink=send.send)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the consumer went away
        except Exception as exc:  # noqa: BLE001 - delivered to the consumer in order
            try:
                await send.send(exc)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
