"""Self-repair of a data server from the other replicas of its group (anti-entropy, pull model).

Every data server repairs itself: it pages through its own key listing and its peers' listings
(``GET /needles``, signed, tombstones included) in key order, a bounded window at a time, and
- copies a needle it lacks from a peer that has it (original file ID, so key and cookie; the
  CRC32C from the listing is verified while writing, and the peer verified it before sending);
- applies tombstones: a key deleted on any replica is deleted here too, and a live copy elsewhere
  is never copied over a tombstone (keys are never reused, so a tombstone always wins).

A server starts with ``repair_needed`` set and reports it in its heartbeats; the registry then
calls it "repairing" and its group is not writable. The flag clears after a pass that compared
with every peer the registry does not consider down. Later passes run every `interval` to catch
anything missed (a peer that was down, a write in flight during a crash), without the flag.

Bad copies (any read of the store failing its checks: a GET, the scrubber; the store reports them
through its corruption hook) are queued on a bounded channel and replaced by a fresh copy from a
peer whose copy verifies.
Copies are throttled to data.repairRate bytes per second so foreground traffic keeps working.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from arkor.data.index import Entry
from arkor.data.store import NeedleStore
from arkor.errors import ArkorError, Conflict, CorruptNeedle, NotFound, ServiceUnavailable, from_response
from arkor.fileid import FileID
from arkor.metrics import REPAIR_BYTES, REPAIR_NEEDLES, REPAIR_PENDING, REPLICA_UP
from arkor.model import GroupInfo, ServerInfo
from arkor.security import SIGNATURE_HEADER, sign
from arkor.transfer.contracts import Registry

log = logging.getLogger(__name__)

PAGE = 1000
# Needles younger than this are left alone by a pass: they may still be in flight from an object
# server (copying them would race the engine's own write and fail it with a Conflict).
MIN_AGE = 15.0
SUSPECT_QUEUE = 256


class Throttle:
    """A token bucket: `await consume(n)` sleeps so that the long-run rate stays at `rate` B/s."""

    def __init__(self, rate: float, burst: float = 0.25) -> None:
        self.rate = max(float(rate), 1.0)
        self.burst = burst
        self._next = time.monotonic()

    async def consume(self, n: int) -> None:
        now = time.monotonic()
        self._next = max(self._next, now - self.burst) + n / self.rate
        if self._next > now:
            await trio.sleep(self._next - now)


@dataclass
class RepairProgress:
    """What `GET /repair` and `arkor admin` show."""

    repair_needed: bool = True
    state: str = "starting"  # starting | syncing | idle | waiting-for-registry
    passes: int = 0
    last_pass_started: float = 0.0
    last_pass_finished: float = 0.0
    last_pass_seconds: float = 0.0
    peers_compared: list[str] = field(default_factory=list)
    keys_scanned: int = 0
    needles_copied: int = 0
    bytes_copied: int = 0
    tombstones_applied: int = 0
    corrupt_replaced: int = 0
    pending_estimate: int = 0
    errors: int = 0
    last_error: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _fid(group: int, raw: dict[str, Any]) -> FileID:
    return FileID(group, int(raw["key"], 16), int(raw["cookie"]))


class Repairer:
    """Owns the repair loop of one data server; `run` lives in the server's nursery."""

    def __init__(
        self,
        store: NeedleStore,
        *,
        group: int,
        server_id: str,
        url: Callable[[], str],
        registry: Registry | None,
        secret: bytes,
        rate: float,
        interval: float = 30.0,
        min_age: float = MIN_AGE,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._verify = verify  # for https peers: http.caFile or the system CAs
        self.store = store
        self.group = group
        self.server_id = server_id
        self._url = url
        self.registry = registry
        self.secret = secret
        self.throttle = Throttle(rate)
        self.interval = max(float(interval), 0.5)
        self.min_age = min_age
        self.progress = RepairProgress()
        self.first_pass_done = trio.Event()
        self._wake = trio.Event()
        self._suspects_send, self._suspects_recv = trio.open_memory_channel[FileID](SUSPECT_QUEUE)
        self._peers: list[ServerInfo] = []
        self._peers_at = 0.0
        self._client: httpx.AsyncClient | None = None
        self._label = store.label
        self._queued: set[FileID] = set()
        store.on_corruption(self.report_corrupt)

    # --- hooks for the app and the scrubber -----------------------------------------------------

    def report_corrupt(self, fid: FileID) -> None:
        """A read or the scrubber found `fid` corrupt here: replace it soon (dropped when the
        queue is full: the scrubber finds it again)."""
        if fid in self._queued:
            return
        try:
            self._suspects_send.send_nowait(fid)
        except trio.WouldBlock:
            return
        self._queued.add(fid)

    def trigger(self) -> None:
        """Start a pass now instead of at the next interval."""
        self._wake.set()

    # --- main loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        async with httpx.AsyncClient(
            verify=self._verify,
            timeout=httpx.Timeout(60.0, connect=5.0),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
        ) as client:
            self._client = client
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._suspect_loop)
                await self._pass_loop()

    async def _pass_loop(self) -> None:
        if self.registry is None:  # standalone: nobody to repair from
            self.progress.repair_needed = False
            self.progress.state = "idle"
            self.first_pass_done.set()
            return
        while True:
            try:
                complete = await self.repair_pass()
            except Exception as exc:  # noqa: BLE001 - retried next round, never fatal
                complete = False
                self._error(f"repair pass failed: {exc!r}")
            if complete and self.progress.repair_needed:
                log.info("repair complete: %s", self.progress.to_json())
                self.progress.repair_needed = False
            if complete:
                self.first_pass_done.set()
            self.progress.state = "idle" if complete else "waiting"
            wait = self.interval if complete else min(self.interval, 2.0)
            with trio.move_on_after(wait):
                await self._wake.wait()
            self._wake = trio.Event()

    def _error(self, message: str) -> None:
        self.progress.errors += 1
        self.progress.last_error = message[:500]
        log.warning("%s", message)

    async def peers(self, *, max_age: float = 5.0) -> list[ServerInfo]:
        """The other members of this group as the registry sees them (briefly cached)."""
        if self.registry is None:
            return []
        if time.monotonic() - self._peers_at > max_age:
            groups: list[GroupInfo] = await self.registry.groups()
            me = self._url().rstrip("/")
            members = next((g.servers for g in groups if g.group == self.group), [])
            for s in members:
                REPLICA_UP.labels(str(self.group), s.url).set(1 if s.state == "up" else 0)
            self._peers = [s for s in members if s.server_id != self.server_id and s.url.rstrip("/") != me]
            self._peers_at = time.monotonic()
        return self._peers

    async def repair_pass(self) -> bool:
        """One comparison with every live peer; True when it completed against all of them."""
        p = self.progress
        p.state = "syncing"
        started = time.time()
        p.last_pass_started = started
        try:
            peers = await self.peers(max_age=0)
        except ArkorError as exc:
            p.state = "waiting-for-registry"
            self._error(f"registry unreachable: {exc}")
            return False
        live = [s for s in peers if s.state != "down"]
        p.pending_estimate = max([s.needles for s in live] + [0]) - self.store.live_needles
        p.pending_estimate = max(p.pending_estimate, 0)
        REPAIR_PENDING.labels(self._label).set(p.pending_estimate)
        # While this server is not yet a full replica its group takes no writes, so a young needle
        # is no write in flight here: copy it too (a put of identical bytes is idempotent), or the
        # group would become writable while this copy still lacks the newest needles.
        cutoff = started if p.repair_needed else started - self.min_age
        complete = await self._merge([s.url for s in live], cutoff)
        p.passes += 1
        p.peers_compared = [s.url for s in live]
        p.last_pass_finished = time.time()
        p.last_pass_seconds = round(p.last_pass_finished - started, 3)
        REPAIR_PENDING.labels(self._label).set(0 if complete else p.pending_estimate)
        return complete

    async def _merge(self, peer_urls: list[str], cutoff: float) -> bool:
        """Walk the key space in windows; False if some peer could not be listed or a copy failed."""
        after = 0  # keys start at 1
        ok = True
        active = list(peer_urls)
        while True:
            local = self.store.list_entries(after, PAGE)
            pages: dict[str, list[dict[str, Any]]] = {}
            bound: int | None = None  # largest key every source has fully listed
            if len(local) == PAGE:
                bound = local[-1].key
            for url in list(active):
                try:
                    page, full = await self._list_page(url, after)
                except ArkorError as exc:
                    self._error(f"listing {url} failed: {exc}")
                    active.remove(url)
                    ok = False
                    continue
                pages[url] = page
                if full:
                    last = int(page[-1]["key"], 16)
                    bound = last if bound is None else min(bound, last)
            done = bound is None
            upto = bound if bound is not None else 1 << 64
            by_key: dict[int, dict[str, dict[str, Any]]] = {}
            for url, page in pages.items():
                for raw in page:
                    k = int(raw["key"], 16)
                    if k <= upto:
                        by_key.setdefault(k, {})[url] = raw
            mine = {e.key: e for e in local if e.key <= upto}
            for key in sorted(by_key.keys() | mine.keys()):
                self.progress.keys_scanned += 1
                if not await self._reconcile(key, mine.get(key), by_key.get(key, {}), cutoff):
                    ok = False
            if done:
                return ok
            after = upto

    async def _list_page(self, url: str, after: int) -> tuple[list[dict[str, Any]], bool]:
        assert self._client is not None
        base = url.rstrip("/")
        path = urlsplit(base).path + "/needles"
        params = {"after": f"{after:x}", "limit": str(PAGE)}
        try:
            response = await self._client.get(
                base + "/needles", params=params, headers={SIGNATURE_HEADER: sign(self.secret, "GET", path)}
            )
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"{url}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise _error(response)
        body = response.json()
        return body["needles"], body.get("next_after") is not None

    async def _reconcile(
        self, key: int, local: Entry | None, remote: dict[str, dict[str, Any]], cutoff: float
    ) -> bool:
        tomb = next((r for r in remote.values() if r["deleted"]), None)
        if tomb is not None:
            if local is not None and local.deleted:
                return True
            cookie = local.cookie if local is not None else int(tomb["cookie"])
            try:
                await self.store.delete(FileID(self.group, key, cookie))
            except Conflict:
                return False  # a write of the key is in progress: next pass
            except NotFound:
                return True
            self.progress.tombstones_applied += 1
            return True
        if local is not None or not remote:
            return True
        holders = [(url, r) for url, r in remote.items() if float(r["timestamp"]) < cutoff]
        if not holders:
            return True  # too young: maybe still being written by an object server
        return await self._copy(FileID(self.group, key, int(holders[0][1]["cookie"])),
                                int(holders[0][1]["size"]), int(holders[0][1]["crc32c"]),
                                [url for url, _ in holders], replace=False)

    async def _copy(self, fid: FileID, size: int, crc: int, urls: list[str], *, replace: bool) -> bool:
        """Stream the needle from the first peer that serves a verified copy."""
        assert self._client is not None
        for url in urls:
            base = url.rstrip("/")
            try:
                async with self._client.stream("GET", f"{base}/needles/{fid}") as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise _error(response)
                    if int(response.headers.get("x-arkor-crc32c", crc)) != crc:
                        raise CorruptNeedle(f"{url} holds other content for {fid}")
                    chunks = self._throttled(response.aiter_raw())
                    if replace:
                        await self.store.rewrite(fid, chunks, size, crc)
                    else:
                        created = await self.store.put(fid, chunks, size, crc)
                        if not created:
                            return True
            except Conflict:
                return True  # deleted or written meanwhile: nothing to copy
            except (ArkorError, httpx.HTTPError) as exc:
                self._error(f"copying {fid} from {url} failed: {exc!r}")
                continue
            self.progress.needles_copied += 1
            self.progress.bytes_copied += size
            REPAIR_NEEDLES.labels(self._label).inc()
            REPAIR_BYTES.labels(self._label).inc(size)
            if self.progress.pending_estimate:
                self.progress.pending_estimate -= 1
                REPAIR_PENDING.labels(self._label).set(self.progress.pending_estimate)
            return True
        return False

    async def _throttled(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            await self.throttle.consume(len(chunk))
            yield chunk

    # --- bad copies ----------------------------------------------------------------------------

    async def _suspect_loop(self) -> None:
        async for fid in self._suspects_recv:
            try:
                await self.replace_if_corrupt(fid)
            except Exception as exc:  # noqa: BLE001 - one bad needle must not stop the loop
                self._error(f"replacing corrupt {fid} failed: {exc!r}")
            finally:
                self._queued.discard(fid)

    async def replace_if_corrupt(self, fid: FileID) -> bool:
        """Verify the local copy; when it is bad, rewrite it from a peer. True when replaced."""
        try:
            _entry, chunks, close = await self.store.open_stream(fid, 0, 0)
        except NotFound:
            return False
        except CorruptNeedle:
            pass
        else:
            await close()
            return False
        entry = self.store.lookup(fid)
        urls = [s.url for s in await self.peers() if s.state != "down"]
        if await self._copy(fid, entry.size, entry.crc32c, urls, replace=True):
            self.progress.corrupt_replaced += 1
            log.warning("corrupt copy of %s replaced from a peer", fid)
            return True
        self._error(f"no peer could supply a good copy of {fid}")
        return False


def _error(response: httpx.Response) -> ArkorError:
    try:
        body = response.json()
    except ValueError:
        body = None
    return from_response(response.status_code, body)
