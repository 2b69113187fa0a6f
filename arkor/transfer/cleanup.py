"""Background deletion of needles a failed fragment write left on a group: off the request's path.

What lives here: `CleanupService`, one per process (one per `TransferEngine`). When a fragment
write fails on a group (a replica errors, times out or lags), the fragment is retried on another
group AT ONCE and the needle copies already written on the failed group are handed here
(`submit`, never blocks). Workers running in a nursery that outlives every request delete them,
each job shielded from cancellation and bounded by a deadline; what they cannot delete (a replica
still unreachable) goes to the registry's durable reclaim queue; if that fails too, or the bounded
queue here is full (`submit` returns False), the registry's orphan sweep reclaims the needle later
(it is referenced by no manifest). Nothing here decides what to clean: the engine does.

`run()` must be started in a long-lived nursery (the object server does it); without it, jobs
wait in the bounded queue and the overflow is left to the orphan sweep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from arkor.fileid import FileID
from arkor.metrics import TRANSFER_CLEANUP
from arkor.model import Fragment, GroupInfo, ServerInfo
from arkor.transfer.contracts import Registry
from arkor.transfer.placement import ReplicaFactory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Job:
    group: GroupInfo
    fragment: Fragment


class CleanupService:
    def __init__(
        self,
        registry: Registry,
        replica_factory: ReplicaFactory,
        *,
        queue_size: int = 1024,
        workers: int = 4,
        deadline: float = 10.0,
    ) -> None:
        self._registry = registry
        self._replicas = replica_factory
        self._workers = workers
        self.deadline = deadline
        self._send, self._recv = trio.open_memory_channel[_Job](queue_size)
        self.submitted = 0
        self.dropped = 0
        self.deleted = 0  # jobs whose needle is gone from every replica
        self.discarded = 0  # jobs handed to the registry's reclaim queue
        self._idle = trio.Event()
        self._busy = 0

    def submit(self, group: GroupInfo, fragment: Fragment) -> bool:
        """Queue the deletion of `fragment` from every replica of `group`; False when the queue is
        full (the orphan sweep will reclaim it)."""
        try:
            self._send.send_nowait(_Job(group, fragment))
        except trio.WouldBlock:
            self.dropped += 1
            TRANSFER_CLEANUP.labels("dropped").inc()
            log.warning("cleanup queue full: %s left to the orphan sweep", fragment.fid)
            return False
        self.submitted += 1
        self._busy += 1
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self._workers):
                nursery.start_soon(self._worker, self._recv.clone())
            task_status.started()

    async def drained(self) -> None:
        """Wait until every submitted job has been handled (tests, orderly shutdown)."""
        while self._busy:
            self._idle = trio.Event()
            await self._idle.wait()

    async def _worker(self, recv: trio.MemoryReceiveChannel[_Job]) -> None:
        async with recv:
            async for job in recv:
                try:
                    with trio.CancelScope(shield=True), trio.move_on_after(self.deadline):
                        await self._clean(job)
                finally:
                    self._busy -= 1
                    if not self._busy:
                        self._idle.set()

    async def _clean(self, job: _Job) -> None:
        fid = FileID.parse(job.fragment.fid)
        failures: list[str] = []

        async def delete(server: ServerInfo) -> None:
            try:
                with trio.fail_after(self.deadline / 2):
                    await self._replicas(server).delete_needle(fid)
            except (Exception, trio.TooSlowError) as exc:  # noqa: BLE001 - reclaim queue retries
                failures.append(server.url)
                log.info("cleanup of %s on %s failed: %r", fid, server.url, exc)

        async with trio.open_nursery() as nursery:
            for server in job.group.servers:
                nursery.start_soon(delete, server)
        if not failures:
            self.deleted += 1
            TRANSFER_CLEANUP.labels("deleted").inc()
            return
        try:
            await self._registry.discard_fragments([job.fragment])
            self.discarded += 1
            TRANSFER_CLEANUP.labels("queued").inc()
        except Exception as exc:  # noqa: BLE001 - the orphan sweep is the last resort
            TRANSFER_CLEANUP.labels("left_to_sweep").inc()
            log.warning("could not queue %s for reclaim: %r", job.fragment.fid, exc)
