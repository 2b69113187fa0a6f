"""The transfer engine: objects in and out of replica groups as fragments (needles).

PUT (`upload`): the stream is cut into `fragment_size` pieces; MD5 (and optionally SHA-256) is
computed in order on the way, CRC32C per fragment; each fragment is written to EVERY replica of one
writable group at once, `in_flight` fragments at a time (`run_ordered`, so memory stays below
(in_flight + 1) x fragment_size), and beyond each upload's first fragment at most
`shared_fragments` in flight over all uploads of the process. A replica failing, timing out, or
lagging its peers by more than `lag_limit` (when another group could take the fragment) abandons
that group: the needle copies already written there go to the background `CleanupService` (not
waited for) and the fragment is retried on another group at once; with no group left the upload
fails with 503. Whatever an upload wrote is handed to the registry's reclaim queue when the upload
fails or is cancelled (shielded, with a deadline), so nothing is left behind.

GET (`open_read`, reader.py): the slices a byte range covers are fetched `read_ahead` at a time;
each slice is read from one replica (`fetch`): healthy replicas first; if the first has not
answered after the hedging threshold, the same read starts on the next replicas and the first good
answer (length and CRC32C checked) wins, the others are cancelled; an error, timeout or checksum
mismatch fails over at once. The first attempt runs in the caller's task: a read that is not slow
starts no task.

Every outcome feeds the process's `HealthTracker` (health.py), which placement and read ordering
consult.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass, field
from typing import Any

import trio

from arkor.checksum import crc32c
from arkor.errors import ArkorError, CorruptNeedle, ServiceUnavailable
from arkor.fileid import FileID
from arkor.metrics import TRANSFER_ABANDONED_WRITES, TRANSFER_HEDGED_READS
from arkor.model import Fragment, GroupInfo, ServerInfo
from arkor.transfer.cleanup import CleanupService
from arkor.transfer.contracts import Registry, Replica
from arkor.transfer.health import HealthTracker
from arkor.transfer.pipeline import run_ordered
from arkor.transfer.placement import GroupCache, KeyLease, ReplicaFactory
from arkor.transfer.reader import RangeReader, plan_slices
from arkor.transfer.streams import rechunk
from arkor.transfer.timeouts import Timeouts

log = logging.getLogger(__name__)

# Below this size hashing inline is cheaper than a hop to a worker thread.
THREAD_HASH_THRESHOLD = 256 * 1024
CLEANUP_DEADLINE = 10.0
# The hedging threshold grows with the slice: a healthy replica delivers at least this many bytes
# per second on top of `hedge_delay` before a second replica is asked.
HEDGE_RATE = 64 * 1024**2

__all__ = ["TransferEngine", "UploadResult", "plan_slices"]


@dataclass
class UploadResult:
    fragments: list[Fragment]
    size: int
    md5: bytes
    sha256: str | None


@dataclass
class _UploadState:
    """Every needle an upload created, so a failure can hand all of them to the reclaim queue."""

    written: list[Fragment] = field(default_factory=list)
    size: int = 0


def _health_failure(exc: BaseException) -> bool:
    """Errors that say something about the replica's reachability (not a 4xx, not a bad copy)."""
    if isinstance(exc, trio.TooSlowError):
        return True
    if isinstance(exc, ArkorError):
        return exc.status in (500, 502, 503, 504)
    return True


class TransferEngine:
    """Fragments to replica groups and back, over any `Registry` and `Replica` implementation.

    One per process: its `health` and `cleanup` are shared by all requests. Run `cleanup.run()`
    in a long-lived nursery (`arkor.object.main.serve_object_server` does)."""

    def __init__(
        self,
        registry: Registry,
        replica_factory: ReplicaFactory,
        *,
        fragment_size: int = 8 * 1024**2,
        in_flight: int = 4,
        read_ahead: int = 2,
        replica_timeout: float | Timeouts = 30.0,
        fragment_retries: int = 3,
        lease_size: int = 256,
        group_ttl: float = 2.0,
        hash_threads: int = 2,
        writable_wait: float = 0.0,
        hedge_delay: float = 0.15,
        lag_limit: float = 1.0,
        slow_lag: float = 0.1,
        health: HealthTracker | None = None,
        shared_fragments: int = 0,
    ) -> None:
        self.registry = registry
        self.replica_factory = replica_factory
        self.fragment_size = fragment_size
        self.in_flight = in_flight
        self.read_ahead = read_ahead
        self.timeouts = Timeouts.of(replica_timeout)
        self.fragment_retries = fragment_retries
        self.hedge_delay = hedge_delay
        self.lag_limit = lag_limit
        self.health = health if health is not None else HealthTracker(slow_lag=slow_lag)
        self.groups = GroupCache(
            registry, ttl=group_ttl, health=self.health, writable_wait=writable_wait
        )
        self.keys = KeyLease(registry, lease_size=lease_size)
        self.cleanup = CleanupService(registry, replica_factory, deadline=CLEANUP_DEADLINE)
        self.hash_limiter = trio.CapacityLimiter(hash_threads)
        # Fragments in flight beyond each upload's first, summed over all uploads (0: no bound
        # but each upload's own `in_flight`): what keeps memory bounded under many uploads.
        self.fragment_pool = trio.CapacityLimiter(shared_fragments) if shared_fragments > 0 else None

    # --- hashing --------------------------------------------------------------------------------
    async def _run_hash(self, fn: Any, *args: Any) -> Any:
        if sum(len(a) for a in args if isinstance(a, (bytes, bytearray, memoryview))) < (
            THREAD_HASH_THRESHOLD
        ):
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args, limiter=self.hash_limiter)

    async def crc(self, data: bytes) -> int:
        return int(await self._run_hash(crc32c, data))

    # --- PUT ------------------------------------------------------------------------------------
    async def upload(
        self, body: AsyncIterable[bytes], *, want_sha256: bool = False, size: int | None = None
    ) -> UploadResult:
        """Store `body` as fragments on replica groups; on any failure or cancellation every
        needle written is deleted or queued for reclaim before the error propagates.

        `size`, when the caller knows it, only chooses how: a body of at most one fragment is
        stored in turn, without pipeline tasks; whatever the body really holds is stored."""
        md5 = hashlib.md5()
        sha = hashlib.sha256() if want_sha256 else None
        state = _UploadState()
        fragments: list[Fragment] = []

        def update(piece: bytes) -> None:
            md5.update(piece)
            if sha is not None:
                sha.update(piece)

        async def hashed() -> AsyncGenerator[bytes, None]:
            async for piece in rechunk(body, self.fragment_size):
                await self._run_hash(update, piece)
                state.size += len(piece)
                yield piece

        async def store(index: int, piece: bytes) -> Fragment:
            return await self.write_fragment(piece, state.written)

        async def collect(fragment: Fragment) -> None:
            fragments.append(fragment)

        # A body of at most one fragment has nothing to overlap: in turn (no pipeline tasks).
        limit = 1 if size is not None and size <= self.fragment_size else self.in_flight
        try:
            await run_ordered(hashed(), store, limit=limit, sink=collect, shared=self.fragment_pool)
        except BaseException:
            await self.discard(state.written)
            raise
        return UploadResult(
            fragments=fragments,
            size=state.size,
            md5=md5.digest(),
            sha256=sha.hexdigest() if sha is not None else None,
        )


    async def write_fragment(self, data: bytes, written: list[Fragment]) -> Fragment:
        """Write one fragment to all replicas of a writable group, retrying on other groups.

        Every needle created is appended to `written` (the caller's record for reclaim) unless its
        cleanup was handed to the background service."""
        checksum = await self.crc(data)
        tried: set[int] = set()
        last_error: BaseException | None = None
        for _attempt in range(self.fragment_retries + 1):
            try:
                group = await self.groups.pick_writable(exclude=tried)
            except ServiceUnavailable as exc:
                if last_error is not None:
                    raise ServiceUnavailable(
                        f"{exc.message}; last replica error: {last_error}"
                    ) from last_error
                raise
            fid = await self.keys.new_fid(group.group)
            fragment = Fragment(fid=str(fid), size=len(data), crc32c=checksum)
            written.append(fragment)
            can_abandon = self.groups.has_alternative(tried | {group.group})
            error = await self._write_to_group(group, fid, data, checksum, can_abandon=can_abandon)
            if error is None:
                return fragment
            last_error = error
            TRANSFER_ABANDONED_WRITES.labels(
                "lag" if "lagged its group" in str(error) else "timeout" if "timed out" in str(error)
                else "error").inc()
            tried.add(group.group)
            self.groups.mark_failed(group.group)
            log.warning("fragment %s failed on group %d: %r; retrying", fid, group.group, error)
            if self.cleanup.submit(group, fragment):
                written.remove(fragment)
        raise ServiceUnavailable(
            f"fragment could not be stored after {self.fragment_retries + 1} attempts: {last_error}"
        )

    async def _write_to_group(
        self, group: GroupInfo, fid: FileID, data: bytes, checksum: int, *, can_abandon: bool
    ) -> BaseException | None:
        """Write to every replica concurrently; the first failure cancels the others. Once one
        replica has acknowledged, the others get `lag_limit` (at least 3x the first's time) more
        when another group could take the fragment instead. One cancel scope (the nursery's)
        carries both the transfer deadline and the lag cutoff: nothing per replica."""
        failure: BaseException | None = None
        started = trio.current_time()
        first_done: float | None = None
        pending = {server.url for server in group.servers}
        async with trio.open_nursery() as nursery:
            nursery.cancel_scope.deadline = started + self.timeouts.transfer

            async def put(server: ServerInfo) -> None:
                nonlocal failure, first_done
                replica = self.replica_factory(server)
                try:
                    await replica.put_needle(fid, data, checksum)
                except Exception as exc:  # noqa: BLE001 - any replica failure means retry elsewhere
                    pending.discard(server.url)
                    if _health_failure(exc):
                        self.health.failure(server.url)
                    if failure is None:
                        failure = _describe(exc, replica)
                    nursery.cancel_scope.cancel()
                    return
                now = trio.current_time()
                pending.discard(server.url)
                if first_done is None:
                    first_done = now
                    if can_abandon and pending:
                        cutoff = now + max(self.lag_limit, 3 * (now - started))
                        nursery.cancel_scope.deadline = min(nursery.cancel_scope.deadline, cutoff)
                self.health.success(server.url, now - started)
                self.health.observe_lag(server.url, now - first_done)  # may re-open it

            for server in group.servers:
                nursery.start_soon(put, server)
        if failure is None and pending:  # the deadline passed: transfer timeout or lag cutoff
            waited = trio.current_time() - started
            for url in pending:
                self.health.failure(url)
            why = "lagged its group" if first_done is not None else "timed out"
            failure = ServiceUnavailable(
                f"replica {', '.join(sorted(pending))} {why} ({waited:.2f} s)"
            )
        return failure

    async def discard(self, fragments: list[Fragment]) -> None:
        """Hand needles of a failed upload to the registry's reclaim queue (shielded)."""
        if not fragments:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_DEADLINE):
            try:
                await self.registry.discard_fragments(list(fragments))
                return
            except Exception as exc:  # noqa: BLE001 - the orphan reaper is the last resort
                log.warning("could not queue %d fragments for reclaim: %r", len(fragments), exc)

    # --- GET ------------------------------------------------------------------------------------
    def open_read(self, fragments: list[Fragment], start: int, end_inclusive: int) -> RangeReader:
        """`async with engine.open_read(...) as chunks`: bytes [start, end_inclusive] of the
        object; entering fetches the first slice (and raises if it cannot be served)."""
        return RangeReader(plan_slices(fragments, start, end_inclusive), self.fetch, self.read_ahead)

    def hedge_after(self, length: int) -> float:
        return self.hedge_delay + length / HEDGE_RATE

    async def fetch(self, fragment: Fragment, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of one fragment from the first replica that serves them."""
        fid = FileID.parse(fragment.fid)
        errors: list[str] = []
        tried: set[str] = set()
        for refresh in (False, True):
            if refresh:  # membership may have changed (a replica replaced): ask again, once
                self.groups.invalidate()
            group = await self.groups.group(fid.group)
            if group is None:
                errors.append(f"group {fid.group} unknown to the registry")
                continue
            order = [s for s in self.health.read_order(group.servers) if s.url not in tried]
            tried.update(s.url for s in order)
            if not order:
                break
            data = await self._fetch_from(order, fid, fragment, offset, length, errors)
            if data is not None:
                return data
        raise ServiceUnavailable(
            f"no replica could serve fragment {fragment.fid}: " + "; ".join(errors[-6:])
        )

    async def _fetch_from(
        self, order: list[ServerInfo], fid: FileID, fragment: Fragment, offset: int, length: int,
        errors: list[str],
    ) -> bytes | None:
        """Try replicas in `order`: inline while they fail fast; once one is slower than the
        hedging threshold, race the rest (`_race`)."""
        threshold = self.hedge_after(length)
        remaining = list(order)
        while remaining:
            server = remaining.pop(0)
            started = trio.current_time()
            # One scope: the hedging threshold also bounds this attempt (far below the transfer
            # timeout), so the hot path enters no other.
            with trio.CancelScope(deadline=started + min(threshold, self.timeouts.transfer)):
                try:
                    return await self._read_one(server, fid, fragment, offset, length, bound=False)
                except Exception as exc:  # noqa: BLE001 - fail over to the next replica
                    errors.append(str(_describe(exc, self.replica_factory(server))))
                    log.warning("read of %s from %s failed: %r", fid, server.url, exc)
                    continue
            # No answer within the threshold: the slow one is asked again last, the others raced.
            self.health.observe_lag(server.url, trio.current_time() - started)
            TRANSFER_HEDGED_READS.inc()
            errors.append(f"replica {server.url} slower than {threshold:.3f} s")
            return await self._race([*remaining, server], fid, fragment, offset, length, errors,
                                    threshold)
        return None

    async def _race(
        self, order: list[ServerInfo], fid: FileID, fragment: Fragment, offset: int, length: int,
        errors: list[str], threshold: float,
    ) -> bytes | None:
        """Start the next replica now, another each time one fails or `threshold` passes without
        an answer; the first good answer cancels the rest."""
        result: bytes | None = None
        failed_send, failed_recv = trio.open_memory_channel[None](len(order))
        async with trio.open_nursery() as nursery:

            async def attempt(server: ServerInfo) -> None:
                nonlocal result
                started = trio.current_time()
                try:
                    data = await self._read_one(server, fid, fragment, offset, length)
                except trio.Cancelled:
                    self.health.observe_lag(server.url, trio.current_time() - started)
                    raise
                except Exception as exc:  # noqa: BLE001 - the next replica is started
                    errors.append(str(_describe(exc, self.replica_factory(server))))
                    failed_send.send_nowait(None)
                    return
                if result is None:
                    result = data
                    nursery.cancel_scope.cancel()

            for server in order:
                nursery.start_soon(attempt, server)
                with trio.move_on_after(threshold):
                    await failed_recv.receive()
        return result

    async def _read_one(
        self, server: ServerInfo, fid: FileID, fragment: Fragment, offset: int, length: int,
        *, bound: bool = True,
    ) -> bytes:
        """One replica's answer, length- and (whole needle) CRC-checked; feeds health. `bound`:
        apply the transfer timeout here (the caller's scope does not already bound it)."""
        replica = self.replica_factory(server)
        whole = offset == 0 and length == fragment.size
        started = trio.current_time()
        try:
            # A whole read is checked by the replica against the manifest's CRC32C (contracts).
            if bound:
                with trio.fail_after(self.timeouts.transfer):
                    data = await replica.get_needle(fid, offset, None if whole else length,
                                                    size=fragment.size, crc32c=fragment.crc32c)
            else:
                data = await replica.get_needle(fid, offset, None if whole else length,
                                                size=fragment.size, crc32c=fragment.crc32c)
            if len(data) != length:
                raise CorruptNeedle(f"got {len(data)} bytes, expected {length}")
        except Exception as exc:
            if _health_failure(exc):
                self.health.failure(server.url)
            raise
        self.health.observe_lag(server.url, 0.0)  # answered within the hedging threshold
        self.health.success(server.url, trio.current_time() - started)
        return data


def _describe(exc: BaseException, replica: Replica) -> BaseException:
    if isinstance(exc, trio.TooSlowError):
        return ServiceUnavailable(f"replica {replica.url} timed out")
    if isinstance(exc, ArkorError):
        return exc
    return ServiceUnavailable(f"replica {replica.url}: {type(exc).__name__}: {exc}")
