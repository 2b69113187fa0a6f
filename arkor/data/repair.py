"""Self-repair of a data server from the other replicas of its group (anti-entropy, pull model).

Every data server repairs itself: it pages through its own key listing and its peers' listings
(signed, tombstones included) in key order, a bounded window at a time, and
- copies a needle it lacks from a peer that has it (original file ID, so key and cookie; the
  CRC32C from the listing is verified while writing, and the peer verified it before sending);
- applies tombstones: a key deleted on any replica is deleted here too, and a live copy elsewhere
  is never copied over a tombstone (keys are never reused, so a tombstone always wins).

A server starts with ``repair_needed`` set and reports it in its heartbeats; the registry then
calls it "repairing" and its group is not writable. The flag clears after a pass that compared
with every peer the registry does not consider down. Later passes run every `interval` to catch
anything missed (a peer that was down, a write in flight during a crash), without the flag.

Bad copies: the store reports every read that finds a needle corrupt (a GET, the scrubber) to its
corruption hook; the repairer schedules the needle and replaces it with a fresh copy from a peer
whose copy verifies. Attempts are bounded and back off (a needle corrupt on every replica must not
make the replicas re-queue each other forever): after `LOST_AFTER` attempts in which peers
answered but none had a good copy, the needle is reported lost (``GET /repair``, `arkor admin
status`, the ``arkor_needles_lost`` gauge) and only retried every `RETRY_MAX` seconds, in case a
good copy turns up. Logs stay quiet: one line per needle (replaced, or lost), never one per
attempt. Copies are throttled to data.repairRate bytes
per second so foreground traffic keeps working.

Peers are reached through the same replica client as the object server's (`HttpReplica`, handed
in as a factory), so this module knows nothing of HTTP.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import trio

from arkor.data.index import Entry
from arkor.data.store import NeedleStore
from arkor.errors import ArkorError, Conflict, CorruptNeedle, NotFound, ServiceUnavailable
from arkor.fileid import FileID
from arkor.metrics import NEEDLES_LOST, REPAIR_BYTES, REPAIR_NEEDLES, REPAIR_PENDING, REPLICA_UP
from arkor.model import GroupInfo, NeedleInfo, ServerInfo
from arkor.transfer.contracts import Registry

log = logging.getLogger(__name__)

PAGE = 1000
# Needles younger than this are left alone by a pass: they may still be in flight from an object
# server (copying them would race the engine's own write and fail it with a Conflict).
MIN_AGE = 15.0
RETRY_BASE = 0.5  # seconds before the first retry of a corrupt needle; doubles on each failure
RETRY_MAX = 600.0  # the backoff's cap: how often a lost needle is still tried
LOST_AFTER = 4  # failed replacement attempts (over about 4 s) before a needle is reported lost
SUSPECTS_MAX = 4096  # corrupt needles tracked at once; more are left for the scrubber to find again
LOST_LISTED = 100  # lost file IDs shown in the progress (all are counted)


class Peer(Protocol):
    """What repair needs of a replica client (`arkor.transfer.data_client.HttpReplica`)."""

    url: str

    async def list_page(self, after: int, limit: int = ...) -> tuple[list[dict[str, Any]], int | None]: ...

    def stream_needle(
        self, fid: FileID
    ) -> AbstractAsyncContextManager[tuple[NeedleInfo, AsyncIterator[bytes]]]: ...


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
    state: str = "starting"  # starting | syncing | idle | waiting | waiting-for-registry
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
    corrupt_pending: int = 0  # corrupt needles here still scheduled for replacement (lost included)
    needles_lost: int = 0  # corrupt here, and no replica supplied a good copy after bounded retries
    lost: list[str] = field(default_factory=list)  # their file IDs (the first LOST_LISTED)
    pending_estimate: int = 0
    errors: int = 0
    last_error: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Suspect:
    attempts: int = 0  # failed attempts where some peer answered (they count towards "lost")
    retries: int = 0  # every failed attempt (they set the backoff)
    due: float = 0.0
    lost: bool = False


class Repairer:
    """Owns the repair loops of one data server; `run` lives in the server's nursery."""

    def __init__(
        self,
        store: NeedleStore,
        *,
        group: int,
        server_id: str,
        url: Callable[[], str],
        registry: Registry | None,
        replica: Callable[[str], Peer],
        rate: float,
        interval: float = 30.0,
        min_age: float = MIN_AGE,
    ) -> None:
        self.store = store
        self.group = group
        self.server_id = server_id
        self._url = url
        self.registry = registry
        self._replica = replica
        self.throttle = Throttle(rate)
        self.interval = max(float(interval), 0.5)
        self.min_age = min_age
        self.progress = RepairProgress()
        self.first_pass_done = trio.Event()
        self._wake = trio.Event()
        self._suspects: dict[FileID, _Suspect] = {}
        self._suspect_wake = trio.Event()
        self._peers: list[ServerInfo] = []
        self._peers_at = 0.0
        self._failed_passes = 0
        self._label = store.label
        store.on_corruption(self.report_corrupt)

    # --- hooks ---------------------------------------------------------------------------------

    def report_corrupt(self, fid: FileID) -> None:
        """The store found `fid` corrupt here: schedule its replacement (the store's corruption
        hook). A needle already scheduled keeps its backoff: peers reading our bad copy while
        we read theirs must not reset it. Dropped when SUSPECTS_MAX are tracked."""
        if fid in self._suspects or len(self._suspects) >= SUSPECTS_MAX:
            return
        self._suspects[fid] = _Suspect(due=trio.current_time())
        self.progress.corrupt_pending = len(self._suspects)
        self._suspect_wake.set()

    def trigger(self) -> None:
        """Start a pass now instead of at the next interval."""
        self._wake.set()

    # --- main loops ----------------------------------------------------------------------------

    async def run(self) -> None:
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
                self._failed_passes = 0
            else:
                self._failed_passes += 1
                if self._failed_passes & (self._failed_passes - 1) == 0:  # 1st, 2nd, 4th, 8th...
                    log.warning("repair pass incomplete (%d in a row): %s", self._failed_passes,
                                self.progress.last_error)
            self.progress.state = "idle" if complete else "waiting"
            # an incomplete pass is retried soon, backing off a little: 2, 4, then every 8 s
            backoff = 2.0 * 2 ** min(self._failed_passes - 1, 2)
            wait = self.interval if complete else min(self.interval, backoff)
            with trio.move_on_after(wait):
                await self._wake.wait()
            self._wake = trio.Event()

    def _error(self, message: str) -> None:
        """Count an error and keep it for the progress; logging is the caller's (once per needle
        or per run of failed passes, never per attempt)."""
        self.progress.errors += 1
        self.progress.last_error = message[:500]

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
                    page, next_after = await self._replica(url).list_page(after, PAGE)
                except ArkorError as exc:
                    self._error(f"listing {url} failed: {exc}")
                    active.remove(url)
                    ok = False
                    continue
                pages[url] = page
                if next_after is not None:
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
        fid = FileID(self.group, key, int(holders[0][1]["cookie"]))
        error, _answered = await self._copy(fid, int(holders[0][1]["size"]), int(holders[0][1]["crc32c"]),
                                            [url for url, _ in holders], replace=False)
        if error:
            self._error(error)
        return not error

    async def _copy(
        self, fid: FileID, size: int, crc: int, urls: list[str], *, replace: bool
    ) -> tuple[str, bool]:
        """Stream the needle from the first peer that serves a verified copy. Returns ("", True)
        when done (or nothing left to do), else what went wrong with the last peer tried and
        whether any peer answered at all (False: all unreachable, which proves nothing lost)."""
        error = f"no peer to copy {fid} from"
        answered = False
        for url in urls:
            try:
                async with self._replica(url).stream_needle(fid) as (info, chunks):
                    if info.crc32c != crc:
                        raise CorruptNeedle(f"{url} holds other content for {fid}")
                    body = self._throttled(chunks)
                    if replace:
                        await self.store.rewrite(fid, body, size, crc)
                    elif not await self.store.put(fid, body, size, crc):
                        return "", True
            except Conflict:
                return "", True  # deleted or written meanwhile: nothing to copy
            except ArkorError as exc:
                answered = answered or not isinstance(exc, ServiceUnavailable)
                error = f"copying {fid} from {url} failed: {exc!r}"
                continue
            self.progress.needles_copied += 1
            self.progress.bytes_copied += size
            REPAIR_NEEDLES.labels(self._label).inc()
            REPAIR_BYTES.labels(self._label).inc(size)
            if self.progress.pending_estimate:
                self.progress.pending_estimate -= 1
                REPAIR_PENDING.labels(self._label).set(self.progress.pending_estimate)
            return "", True
        return error, answered

    async def _throttled(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            await self.throttle.consume(len(chunk))
            yield chunk

    # --- bad copies ----------------------------------------------------------------------------

    async def _suspect_loop(self) -> None:
        """Replace scheduled corrupt needles when due; sleeps until the next one is due."""
        while True:
            now = trio.current_time()
            for fid in [f for f, s in self._suspects.items() if s.due <= now]:
                await self._attempt(fid)
            next_due = min((s.due for s in self._suspects.values()), default=None)
            wait = RETRY_MAX if next_due is None else max(next_due - trio.current_time(), 0.0)
            with trio.move_on_after(wait):
                await self._suspect_wake.wait()
            self._suspect_wake = trio.Event()

    async def _attempt(self, fid: FileID) -> None:
        suspect = self._suspects[fid]
        try:
            outcome, error = await self.replace_if_corrupt(fid)
        except Exception as exc:  # noqa: BLE001 - one bad needle must not stop the loop
            outcome, error = "unreachable", f"replacing corrupt {fid} failed: {exc!r}"
        if outcome not in ("failed", "unreachable"):
            del self._suspects[fid]
            if suspect.lost:
                self._set_lost(fid, False)
                log.warning("needle %s, reported lost, is whole again (%s)", fid, outcome)
            elif outcome == "replaced":
                log.warning("corrupt copy of %s replaced from a peer", fid)
            self.progress.corrupt_pending = len(self._suspects)
            return
        self._error(error)
        suspect.retries += 1
        suspect.due = trio.current_time() + min(RETRY_BASE * 2 ** (suspect.retries - 1), RETRY_MAX)
        if outcome == "failed":  # peers answered, none with a good copy (unreachable ones: no proof)
            suspect.attempts += 1
        if suspect.attempts >= LOST_AFTER and not suspect.lost:
            suspect.lost = True
            self._set_lost(fid, True)
            log.error("needle %s is LOST: corrupt here and no replica supplied a good copy in %d "
                      "attempts (last: %s); retrying every %.0f s at most", fid, suspect.attempts,
                      error, RETRY_MAX)

    def _set_lost(self, fid: FileID, lost: bool) -> None:
        p = self.progress
        p.needles_lost += 1 if lost else -1
        if lost and len(p.lost) < LOST_LISTED:
            p.lost.append(str(fid))
        elif not lost and str(fid) in p.lost:
            p.lost.remove(str(fid))
        NEEDLES_LOST.labels(self._label).set(p.needles_lost)

    async def replace_if_corrupt(self, fid: FileID) -> tuple[str, str]:
        """Verify the local copy; when it is bad, rewrite it from a peer. Returns (outcome, error):
        "replaced", "fine" (verifies now), "gone" (deleted meanwhile), or with why: "failed" (peers
        answered, none with a good copy) or "unreachable" (no peer answered)."""
        try:
            _entry, _chunks, close = await self.store.open_stream(fid, 0, 0)
        except NotFound:
            return "gone", ""
        except CorruptNeedle:
            pass  # (the store reported it again: ignored, it is scheduled already)
        else:
            await close()
            return "fine", ""
        entry = self.store.lookup(fid)
        peers = await self.peers() or await self.peers(max_age=0)  # none known yet: ask again
        urls = [s.url for s in peers if s.state != "down"]
        error, answered = await self._copy(fid, entry.size, entry.crc32c, urls, replace=True)
        if error:
            return ("failed" if answered else "unreachable"), error
        self.progress.corrupt_replaced += 1
        return "replaced", ""
