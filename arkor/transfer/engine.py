"""The transfer engine: objects in and out of replica groups as fragments (needles).

PUT (`upload`): the stream is cut into `fragment_size` pieces; MD5 (and optionally SHA-256) is
computed in order on the way, CRC32C per fragment; each fragment is written to EVERY replica of one
writable group at once, `in_flight` fragments at a time (`run_ordered`, so memory stays below
(in_flight + 1) x fragment_size). A replica failing cancels that fragment's other writes, deletes
what was written (shielded, with a deadline) and retries the fragment on another group; with no
group left the upload fails with 503. Whatever an upload wrote is handed to the registry's reclaim
queue when the upload fails or is cancelled, so nothing is left behind.

GET (`FragmentReader`): the slices of the fragments a byte range covers are fetched `read_ahead` at
a time and yielded in order; each slice is read from one replica and fails over to the next on
error, timeout or checksum mismatch (CRC32C is verified here too for whole-needle reads).
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import trio

from arkor.checksum import crc32c
from arkor.errors import ArkorError, CorruptNeedle, ServiceUnavailable
from arkor.fileid import FileID
from arkor.model import Fragment, GroupInfo
from arkor.transfer.contracts import Registry, Replica
from arkor.transfer.pipeline import run_ordered
from arkor.transfer.placement import GroupCache, KeyLease, ReplicaFactory, read_order
from arkor.transfer.streams import rechunk

log = logging.getLogger(__name__)

# Below this size hashing inline is cheaper than a hop to a worker thread.
THREAD_HASH_THRESHOLD = 256 * 1024
CLEANUP_DEADLINE = 10.0

# The nursery of the HTTP request being served (set by the object app), so a streamed response body
# can run its read-ahead tasks there instead of inside an async generator.
REQUEST_NURSERY: contextvars.ContextVar[trio.Nursery | None] = contextvars.ContextVar(
    "arkor_request_nursery", default=None
)


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


class TransferEngine:
    """Fragments to replica groups and back, over any `Registry` and `Replica` implementation."""

    def __init__(
        self,
        registry: Registry,
        replica_factory: ReplicaFactory,
        *,
        fragment_size: int = 8 * 1024**2,
        in_flight: int = 4,
        read_ahead: int = 2,
        replica_timeout: float = 30.0,
        fragment_retries: int = 3,
        lease_size: int = 256,
        group_ttl: float = 2.0,
        hash_threads: int = 2,
        writable_wait: float = 0.0,
    ) -> None:
        self.registry = registry
        self.replica_factory = replica_factory
        self.fragment_size = fragment_size
        self.in_flight = in_flight
        self.read_ahead = read_ahead
        self.replica_timeout = replica_timeout
        self.fragment_retries = fragment_retries
        self.groups = GroupCache(registry, ttl=group_ttl, writable_wait=writable_wait)
        self.keys = KeyLease(registry, lease_size=lease_size)
        self.hash_limiter = trio.CapacityLimiter(hash_threads)

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
        self, body: AsyncIterable[bytes], *, want_sha256: bool = False
    ) -> UploadResult:
        """Store `body` as fragments on replica groups; on any failure or cancellation every
        needle written is deleted or queued for reclaim before the error propagates."""
        md5 = hashlib.md5()
        sha = hashlib.sha256() if want_sha256 else None
        state = _UploadState()
        fragments: list[Fragment] = []

        def update(piece: bytes) -> None:
            md5.update(piece)
            if sha is not None:
                sha.update(piece)

        async def hashed() -> AsyncIterator[bytes]:
            async for piece in rechunk(body, self.fragment_size):
                await self._run_hash(update, piece)
                state.size += len(piece)
                yield piece

        async def store(index: int, piece: bytes) -> Fragment:
            return await self.write_fragment(piece, state.written)

        async def collect(fragment: Fragment) -> None:
            fragments.append(fragment)

        try:
            await run_ordered(hashed(), store, limit=self.in_flight, sink=collect)
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

        Every needle created is appended to `written` (the caller's record for reclaim)."""
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
            error = await self._write_to_group(group, fid, data, checksum)
            if error is None:
                return fragment
            last_error = error
            tried.add(group.group)
            self.groups.mark_failed(group.group)
            log.warning("fragment %s failed on group %d: %r; retrying", fid, group.group, error)
            if await self._delete_everywhere(group, fid):
                written.remove(fragment)
        raise ServiceUnavailable(
            f"fragment could not be stored after {self.fragment_retries + 1} attempts: {last_error}"
        )

    async def _write_to_group(
        self, group: GroupInfo, fid: FileID, data: bytes, checksum: int
    ) -> BaseException | None:
        """Write to every replica concurrently; the first failure cancels the others."""
        failure: BaseException | None = None
        replicas = [self.replica_factory(s) for s in group.servers]
        async with trio.open_nursery() as nursery:

            async def put(replica: Replica) -> None:
                nonlocal failure
                try:
                    with trio.fail_after(self.replica_timeout):
                        await replica.put_needle(fid, data, checksum)
                except Exception as exc:  # noqa: BLE001 - any replica failure means retry elsewhere
                    if failure is None:
                        failure = _describe(exc, replica)
                    nursery.cancel_scope.cancel()

            for replica in replicas:
                nursery.start_soon(put, replica)
        return failure

    async def _delete_everywhere(self, group: GroupInfo, fid: FileID) -> bool:
        """Shielded best-effort delete of one needle on every replica; True if all succeeded."""
        ok = True
        with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_DEADLINE) as scope:
            async with trio.open_nursery() as nursery:

                async def delete(replica: Replica) -> None:
                    nonlocal ok
                    try:
                        with trio.fail_after(min(self.replica_timeout, CLEANUP_DEADLINE)):
                            await replica.delete_needle(fid)
                    except Exception as exc:  # noqa: BLE001 - the reclaim queue covers it
                        ok = False
                        log.info("cleanup of %s on %s failed: %r", fid, replica.url, exc)

                for server in group.servers:
                    nursery.start_soon(delete, self.replica_factory(server))
        return ok and not scope.cancelled_caught

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
    def read(self, fragments: list[Fragment], start: int, end_inclusive: int) -> FragmentReader:
        """An async iterator over bytes [start, end_inclusive] of the object."""
        return FragmentReader(self, fragments, start, end_inclusive)

    async def fetch(self, fragment: Fragment, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of one fragment from the first replica that serves them."""
        fid = FileID.parse(fragment.fid)
        whole = offset == 0 and length == fragment.size
        errors: list[str] = []
        for refresh in (False, True):
            if refresh:
                self.groups.invalidate()
            group = await self.groups.group(fid.group)
            if group is None:
                errors.append(f"group {fid.group} unknown to the registry")
                continue
            for server in read_order(group):
                replica = self.replica_factory(server)
                try:
                    with trio.fail_after(self.replica_timeout):
                        data = await replica.get_needle(
                            fid, offset, None if whole else length
                        )
                    if len(data) != length:
                        raise CorruptNeedle(f"got {len(data)} bytes, expected {length}")
                    if whole and await self.crc(data) != fragment.crc32c:
                        raise CorruptNeedle("CRC32C of the data does not match the manifest")
                    return data
                except Exception as exc:  # noqa: BLE001 - fail over to the next replica
                    errors.append(str(_describe(exc, replica)))
                    log.warning("read of %s from %s failed: %r", fid, server.url, exc)
            if not errors:
                break
        raise ServiceUnavailable(
            f"no replica could serve fragment {fragment.fid}: " + "; ".join(errors[-6:])
        )


def _describe(exc: BaseException, replica: Replica) -> BaseException:
    if isinstance(exc, trio.TooSlowError):
        return ServiceUnavailable(f"replica {replica.url} timed out")
    if isinstance(exc, ArkorError):
        return exc
    return ServiceUnavailable(f"replica {replica.url}: {type(exc).__name__}: {exc}")


def plan_slices(
    fragments: list[Fragment], start: int, end_inclusive: int
) -> list[tuple[Fragment, int, int]]:
    """(fragment, offset in fragment, length) for every fragment overlapping the byte range."""
    out: list[tuple[Fragment, int, int]] = []
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


class FragmentReader:
    """Async iterator over an object's byte range, with read-ahead.

    Inside an object-server request the read-ahead tasks run in the request's nursery
    (`REQUEST_NURSERY`), never inside a generator frame; elsewhere (no nursery) slices are fetched
    one after another. Always `aclose()` it (the object app does, via `Response.on_close`).
    """

    def __init__(
        self, engine: TransferEngine, fragments: list[Fragment], start: int, end_inclusive: int
    ) -> None:
        self._engine = engine
        self._slices = plan_slices(fragments, start, end_inclusive)
        self._index = 0
        self._recv: trio.MemoryReceiveChannel[bytes | BaseException] | None = None
        self._scope: trio.CancelScope | None = None
        self._started = False
        self._closed = False

    def __aiter__(self) -> FragmentReader:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        if not self._started:
            self._started = True
            nursery = REQUEST_NURSERY.get()
            if nursery is not None and len(self._slices) > 1 and self._engine.read_ahead > 0:
                send, self._recv = trio.open_memory_channel[bytes | BaseException](0)
                self._scope = trio.CancelScope()
                nursery.start_soon(self._produce, send, self._scope)
        if self._recv is None:
            if self._index >= len(self._slices):
                raise StopAsyncIteration
            fragment, offset, length = self._slices[self._index]
            self._index += 1
            return await self._engine.fetch(fragment, offset, length)
        try:
            item = await self._recv.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        if isinstance(item, BaseException):
            await self.aclose()
            raise item
        return item

    async def _produce(
        self, send: trio.MemorySendChannel[bytes | BaseException], scope: trio.CancelScope
    ) -> None:
        with scope:
            async with send:

                async def slices() -> AsyncIterator[tuple[Fragment, int, int]]:
                    for item in self._slices:
                        yield item

                async def fetch(_index: int, item: tuple[Fragment, int, int]) -> bytes:
                    return await self._engine.fetch(*item)

                try:
                    await run_ordered(slices(), fetch, limit=self._engine.read_ahead, sink=send.send)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the consumer went away
                except Exception as exc:  # noqa: BLE001 - delivered to the consumer in order
                    try:
                        await send.send(exc)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return

    async def aclose(self) -> None:
        self._closed = True
        if self._scope is not None:
            self._scope.cancel()
        if self._recv is not None:
            self._recv.close()
