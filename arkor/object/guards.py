"""Upload guards of an object server process: the buffered-bytes budget and the body rate.

What lives here: `UploadBudget` (admission of uploads against `object.uploadBufferBudget`, before
any body byte is read; over it 503 `slow_down` with Retry-After), `paced` (a body must keep
`object.bodyMinRate` on average after `object.bodyRateGrace`, and end within
`object.bodyDeadline` when set; else 408 `request_timeout`). What must not: HTTP parsing, the
transfer engine's fragmenting (whose buffer a failed upload frees at once: `rechunk`).

Why: each upload holds up to one partial fragment (8 MiB by default) while its client sends; 48
stalled uploads held 7.6 MiB each (RSS 66 -> 429 MiB, kept after they closed), and a body
trickled at one byte every 3 s never hit the per-chunk `bodyTimeout` and held a PUT forever.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import contextmanager

import trio

from arkor.errors import ArkorError, RequestTimeout

log = logging.getLogger(__name__)


class SlowDown(ArkorError):
    """The server holds as many upload bytes as its budget allows; retry shortly."""

    status = 503
    code = "slow_down"


class UploadBudget:
    """Bytes of upload bodies this process may buffer at once (`object.uploadBufferBudget`).

    An upload reserves what it can pin in memory while its client sends: one partial fragment,
    or its whole declared length when that is smaller. Admission is a counter, no lock or await
    (trio runs this on one thread), so a small PUT pays nothing measurable."""

    def __init__(self, limit: int, fragment_size: int) -> None:
        self.limit = limit
        self.fragment_size = fragment_size
        self.reserved = 0

    @contextmanager
    def reserve(self, declared: int | None) -> Iterator[int]:
        need = self.fragment_size if declared is None else min(declared, self.fragment_size)
        if self.limit and self.reserved + need > self.limit:
            raise SlowDown(
                f"upload buffers are full ({self.reserved} of {self.limit} bytes reserved); "
                "retry shortly", headers={"retry-after": "1"},
            )
        self.reserved += need
        try:
            yield need
        finally:
            self.reserved -= need


async def paced(
    body: AsyncIterable[bytes], *, min_rate: float, grace: float, deadline: float,
    horizon: float = 0.0,
) -> AsyncIterator[bytes]:
    """`body`, cut off with 408 when it falls under `min_rate` bytes/s on average once `grace`
    seconds have passed, or is not complete after `deadline` seconds (0: no deadline).

    The cut-off is a deadline on each wait for the next chunk, so a client that trickles (one
    byte every few seconds, each within the per-chunk timeout) is cut off on time too. `horizon`
    is the source's own per-chunk timeout: a cut-off at least that far away cannot be reached
    within one wait, so that wait needs no cancel scope (a fast body pays about 1 us a chunk
    instead of 12)."""
    start = trio.current_time()
    end_by = start + deadline if deadline > 0 else float("inf")
    received = 0
    iterator = aiter(body)
    while True:
        rate_line = start + max(grace, received / min_rate) if min_rate > 0 else float("inf")
        cutoff = min(end_by, rate_line)
        if horizon > 0 and cutoff - trio.current_time() >= horizon:
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return
            received += len(chunk)
            yield chunk
            continue
        with trio.move_on_at(cutoff) as scope:
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return
        if scope.cancelled_caught:
            elapsed = trio.current_time() - start
            if cutoff == end_by:
                why = f"the body was not complete within object.bodyDeadline ({deadline:g} s)"
            else:
                why = f"the body arrives slower than object.bodyMinRate ({min_rate:g} B/s)"
            raise RequestTimeout(f"{why}: {received} bytes in {elapsed:.1f} s")
        received += len(chunk)
        yield chunk
