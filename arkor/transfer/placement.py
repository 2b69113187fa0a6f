"""Where fragments go: a briefly cached view of the groups, and needle keys leased in ranges.

Why: asking the registry for the group list or a key on every fragment would put a registry round
trip on the hot path of every small PUT. Groups are refreshed every `ttl` seconds and at once after
a failure (`invalidate`); keys come from ranges of `lease_size` leased in one call. When a refresh
fails (registry unreachable) the last list keeps being used for up to `STALE_LIMIT` seconds, with
one refresh attempt per `RETRY_PAUSE`, so reads of objects whose manifest is already known do not
each wait for the registry timeout.

Placement asks the process's `HealthTracker`: a group whose replicas are all healthy is preferred;
a group with an open circuit is skipped while another writable group exists; a group due for a
probe gets one write (the probe) per backoff.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection

import trio

from arkor.errors import ServiceUnavailable
from arkor.fileid import FileID
from arkor.model import GroupInfo, ServerInfo
from arkor.transfer.contracts import Registry, Replica
from arkor.transfer.health import HealthTracker

log = logging.getLogger(__name__)

ReplicaFactory = Callable[[ServerInfo], Replica]

STALE_LIMIT = 30.0
RETRY_PAUSE = 1.0


class GroupCache:
    """The registry's group list, at most `ttl` seconds old."""

    def __init__(
        self,
        registry: Registry,
        *,
        ttl: float = 2.0,
        health: HealthTracker | None = None,
        writable_wait: float = 0.0,
    ) -> None:
        self._registry = registry
        self._ttl = ttl
        self.health = health if health is not None else HealthTracker()
        self._failed_at = -1e18
        # How long a write waits for a writable group (a group resyncing after a restart, a
        # replica rejoining) before 503: a short window should delay writes, not fail them.
        self._writable_wait = writable_wait
        self._groups: dict[int, GroupInfo] = {}
        self._fetched = -1e18
        self._lock = trio.Lock()
        self._suspect: dict[int, float] = {}  # group -> until when writes should avoid it

    def invalidate(self) -> None:
        self._fetched = -1e18

    def mark_failed(self, group: int, *, seconds: float = 5.0) -> None:
        """A write to `group` just failed: prefer other groups for a while (the registry only
        notices a dead server after its heartbeat timeout)."""
        self._suspect[group] = trio.current_time() + seconds
        self.invalidate()

    async def groups(self) -> dict[int, GroupInfo]:
        if trio.current_time() - self._fetched < self._ttl:
            return self._groups
        async with self._lock:  # one refresh at a time; the others reuse its result
            now = trio.current_time()
            if now - self._fetched >= self._ttl:
                stale_ok = bool(self._groups) and now - self._fetched < STALE_LIMIT
                if stale_ok and now - self._failed_at < RETRY_PAUSE:
                    return self._groups
                try:
                    groups = await self._registry.groups()
                except ServiceUnavailable as exc:
                    if not stale_ok:
                        raise
                    self._failed_at = trio.current_time()
                    log.warning("registry unreachable, using the group list of %.0f s ago: %s",
                                now - self._fetched, exc)
                    return self._groups
                self._groups = {g.group: g for g in groups}
                self._fetched = trio.current_time()
        return self._groups

    async def group(self, number: int) -> GroupInfo | None:
        found = (await self.groups()).get(number)
        if found is None and trio.current_time() - self._fetched > 0.2:
            self.invalidate()  # a group we have not heard of yet: ask again once
            found = (await self.groups()).get(number)
        return found

    async def pick_writable(self, exclude: Collection[int] = ()) -> GroupInfo:
        """A writable group not in `exclude`: a group due for a probe (one write per backoff),
        else one whose replicas are all healthy, else one not recently failed, else any; at random
        weighted by free space. With none writable, waits up to `writable_wait` for one."""
        deadline = trio.current_time() + (0.0 if exclude else self._writable_wait)
        while True:
            candidates = [
                g for g in (await self.groups()).values() if g.writable and g.group not in exclude
            ]
            if candidates:
                break
            if trio.current_time() >= deadline:
                raise ServiceUnavailable(
                    "no writable data group is available"
                    + (f" (tried groups {sorted(exclude)})" if exclude else ""),
                    headers={"retry-after": "2"},
                )
            self.invalidate()
            await trio.sleep(min(0.2, max(deadline - trio.current_time(), 0.0)))
        now = trio.current_time()
        calm = [g for g in candidates if self._suspect.get(g.group, 0.0) <= now]
        due = [g for g in calm if self.health.group_probe_due(g)]
        if due:
            chosen = random.choice(due)
            self.health.claim_probe(chosen)
            return chosen
        healthy = [g for g in calm if self.health.group_healthy(g)]
        pool = healthy or calm or candidates
        weights = [max(g.free, 1) for g in pool]
        return random.choices(pool, weights=weights, k=1)[0]

    def has_alternative(self, exclude: Collection[int]) -> bool:
        """Another writable group (from the cached list) outside `exclude`: whether abandoning a
        lagging group for a retry elsewhere can help."""
        return any(g.writable and g.group not in exclude for g in self._groups.values())


class KeyLease:
    """Needle keys from leased ranges: one registry call per `lease_size` fragments."""

    def __init__(self, registry: Registry, *, lease_size: int = 256) -> None:
        self._registry = registry
        self._lease_size = lease_size
        self._next = 0
        self._end = 0
        self._lock = trio.Lock()

    async def next_key(self) -> int:
        if self._next >= self._end:
            async with self._lock:
                if self._next >= self._end:
                    leased = await self._registry.lease_keys(self._lease_size)
                    self._next, self._end = leased.start, leased.start + leased.count
        key = self._next
        self._next += 1
        return key

    async def new_fid(self, group: int) -> FileID:
        return FileID.new(group, await self.next_key())


def read_order(group: GroupInfo, health: HealthTracker | None = None) -> list[ServerInfo]:
    """Replicas to try for a read: healthy live ones first (shuffled to spread load), then the
    rest, open circuits last."""
    return (health or HealthTracker()).read_order(group.servers)
