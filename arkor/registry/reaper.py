"""The reaper: deletes queued needles from every replica of their group, and sweeps orphans.

Only one registry process reaps at a time when the KV is shared (a leader lease in Redis); with an
in-process KV each process reaps on its own, which is still safe because deleting a needle twice
succeeds and the queue is only emptied after a delete succeeded on every replica. Before deleting,
each needle is re-checked in the DB: only keys in state 'reclaimed' (no manifest or part references
them, and no commit can ever reference them again) are deleted, so nothing committed is ever lost.

Multipart uploads idle for `multipart_expiry` (created that long ago, no part stored since) are
aborted: their parts' needles go through the same queue.

The orphan sweep pages through each data server's needle listing and queues needles older than
registry.orphanGrace whose key the DB has never seen: what an object server killed mid-upload left.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import KW_ONLY, dataclass, field

import trio

from arkor.errors import ArkorError
from arkor.fileid import FileID
from arkor.metrics import RECLAIM_BACKLOG, RECLAIMED
from arkor.model import NeedleInfo, ServerInfo
from arkor.registry.kv import KV
from arkor.registry.service import RegistryService
from arkor.transfer.contracts import Replica

log = logging.getLogger(__name__)

ReplicaFactory = Callable[[ServerInfo], Replica]
NeedleLister = Callable[[ServerInfo], AsyncIterator[NeedleInfo]]
LEADER_KEY = "reaper:leader"


@dataclass(eq=False)  # a service: compared and hashed by identity
class Reaper:
    """The registry's reaper (see above), configured as `Reaper(service, kv, replicas, interval=...)`;
    a dataclass because its constructor only stored its arguments."""

    service: RegistryService
    kv: KV
    replica_factory: ReplicaFactory
    _: KW_ONLY
    interval: float
    orphan_grace: float
    needle_lister: NeedleLister | None = None
    batch: int = 256
    concurrency: int = 16
    op_timeout: float = 30.0
    multipart_expiry: float = 0.0
    _token: bytes = field(init=False, repr=False, default_factory=lambda: uuid.uuid4().hex.encode())
    _last_sweep: float = field(init=False, repr=False, default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.interval = max(0.05, self.interval)

    async def _lead(self) -> bool:
        ttl = self.interval * 3 + 10
        if await self.kv.renew(LEADER_KEY, self._token, ttl):
            return True
        return await self.kv.set_nx(LEADER_KEY, self._token, ttl)

    async def run(self) -> None:
        """Reap every `interval` until cancelled; errors are logged and retried next round."""
        try:
            while True:
                try:
                    if await self._lead():
                        if self.multipart_expiry > 0:
                            await self.expire_multipart()
                        while await self.run_once() >= self.batch:
                            pass
                        if self.needle_lister is not None and (
                            time.monotonic() - self._last_sweep
                            >= max(self.interval, min(self.orphan_grace / 2, 600.0))
                        ):
                            self._last_sweep = time.monotonic()
                            await self.sweep_orphans()
                except Exception:
                    log.exception("reaper round failed; retrying in %.1f s", self.interval)
                await trio.sleep(self.interval)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await self.kv.release(LEADER_KEY, self._token)
                except Exception:
                    pass

    async def run_once(self) -> int:
        """One pass over the due part of the queue; returns how many entries it looked at."""
        due = await self.service.due_reclaims(self.batch)
        if not due:
            RECLAIM_BACKLOG.set(0)
            return 0
        allowed = await self.service.still_reclaimed([fid for _, fid in due])
        members: dict[int, list[ServerInfo]] = {}
        for server in await self.service.servers():
            members.setdefault(server.group, []).append(server)
        done: list[int] = []
        failed: list[int] = []
        limiter = trio.CapacityLimiter(self.concurrency)

        async def delete_one(entry_id: int, fid_text: str) -> None:
            async with limiter:
                if fid_text not in allowed:
                    log.warning("not deleting %s: it is referenced again", fid_text)
                    done.append(entry_id)
                    return
                fid = FileID.parse(fid_text)
                servers = members.get(fid.group, [])
                if not servers:
                    failed.append(entry_id)
                    return
                try:
                    for server in servers:
                        with trio.fail_after(self.op_timeout):
                            await self.replica_factory(server).delete_needle(fid)
                except Exception as exc:
                    log.info("reclaim of %s postponed: %r", fid_text, exc)
                    failed.append(entry_id)
                else:
                    done.append(entry_id)
                    RECLAIMED.labels("queue").inc()

        async with trio.open_nursery() as nursery:
            for entry_id, fid_text in due:
                nursery.start_soon(delete_one, entry_id, fid_text)
        await self.service.finish_reclaims(done)
        await self.service.postpone_reclaims(failed, max(self.interval * 4, 5.0))
        RECLAIM_BACKLOG.set(await self.service.reclaim_backlog())
        return len(due)

    async def expire_multipart(self) -> int:
        """Abort idle multipart uploads (their needles join the reclaim queue); returns how many."""
        expired = await self.service.idle_multipart(time.time() - self.multipart_expiry, self.batch)
        aborted = 0
        for upload_id in expired:
            try:
                await self.service.abort_multipart(upload_id)
                aborted += 1
            except ArkorError as exc:  # completed or aborted meanwhile
                log.debug("expiry of upload %s skipped: %r", upload_id, exc)
        if aborted:
            log.info("expired %d multipart uploads idle for %.0f s", aborted, self.multipart_expiry)
        return aborted

    async def sweep_orphans(self) -> int:
        """Queue old needles no commit ever referenced; returns how many were queued."""
        assert self.needle_lister is not None
        cutoff = time.time() - self.orphan_grace
        queued = 0
        for server in await self.service.servers():
            if server.state == "down":
                continue
            batch: list[str] = []
            try:
                async for info in self.needle_lister(server):
                    if info.timestamp and info.timestamp < cutoff:
                        batch.append(info.fid)
                    if len(batch) >= self.batch:
                        queued += len(await self.service.claim_orphans(batch))
                        batch = []
                if batch:
                    queued += len(await self.service.claim_orphans(batch))
            except Exception as exc:
                log.warning("orphan sweep of %s failed: %r", server.url, exc)
        if queued:
            log.info("orphan sweep queued %d needles for reclaim", queued)
        return queued
