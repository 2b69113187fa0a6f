"""Group commit: one fsync acknowledges every write whose bytes were complete when it started.

A small needle is not written by its writer: it waits in `pending_appends`, and the syncer writes
all waiting ones in the same worker-thread call as the fsync (`Volume.write_appends`).
A writer whose needle is fully written bumps its volume's `write_gen` and awaits `group_commit`
with that generation. The first waiter becomes the syncer: it appends the pending index records
(of needles already durable) and fdatasyncs the volume for everyone up to the current generation;
the others wait for it and look again.

Fsync honesty (fsyncgate): a failed fsync may have dropped the dirty pages it was asked to write,
and a second fsync would then report success for data that is gone. So the first failure marks
the volume failed, sealed and read-only: it is never synced again (until a restart rescans it),
every writer waiting on it gets `VolumeFailed` (never success), and the next write goes to a fresh
volume. A write is acknowledged only by a `group_commit` that returned normally, and nothing is
published in the index before that.

What lives here: the commit loop, its metrics and the failure policy. What must not: file layout
or system calls (`volume`, `fileops`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from arkor.data.volume import Volume
from arkor.errors import ServiceUnavailable
from arkor.metrics import FSYNC_FAILURES, FSYNC_GROUP_SIZE, FSYNC_SECONDS

log = logging.getLogger(__name__)

Runner = Callable[..., Awaitable[Any]]


class VolumeFailed(ServiceUnavailable):
    """The volume's fsync failed: it is read-only until checked, and this write is not durable."""


def _failed(volume: Volume) -> VolumeFailed:
    return VolumeFailed(f"volume {volume.volume_id} is read-only after a failed fsync ({volume.failed}); "
                        "the write was not acknowledged")


async def group_commit(volume: Volume, gen: int, run: Runner, label: str) -> None:
    """Return once writes up to `gen` of `volume` are durable; VolumeFailed if they cannot be."""
    while volume.synced_gen < gen:
        if volume.failed:
            raise _failed(volume)
        event: trio.Event | None = volume.syncing  # type: ignore[assignment]
        if event is not None:
            await event.wait()
            continue
        event = trio.Event()
        volume.syncing = event
        target = volume.write_gen
        records, volume.pending_idx = volume.pending_idx, []
        appends, volume.pending_appends = volume.pending_appends, []
        for append in appends:
            append.taken = True
        started = time.perf_counter()
        try:
            await run(volume.sync, records, appends)
        except OSError as exc:
            # The failure is recorded before the waiters wake (the finally below), so none of
            # them can take a turn and fsync again.
            volume.failed = f"{type(exc).__name__}: {exc}"
            with volume.lock:  # held by a worker for microseconds at most (a reservation)
                volume.sealed = True
            FSYNC_FAILURES.labels(label).inc()
            log.error("volume %d: fsync failed (%s); the volume is read-only until the store is "
                      "restarted and rescans it", volume.volume_id, volume.failed)
            raise _failed(volume) from exc
        except BaseException:
            volume.pending_idx[:0] = records  # cancelled before the sync ran: nothing was tried
            for append in appends:
                append.taken = False
            volume.pending_appends[:0] = appends
            raise
        else:
            FSYNC_SECONDS.labels(label).observe(time.perf_counter() - started)
            FSYNC_GROUP_SIZE.labels(label).observe(target - volume.synced_gen)
            volume.synced_gen = max(volume.synced_gen, target)
        finally:
            volume.syncing = None
            event.set()
