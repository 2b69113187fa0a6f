"""Where fragments go: a briefly cached view of the groups, and needle keys leased in ranges.

Why: asking the registry for the group list or a key on every fragment would put a registry round
trip on the hot path of every small PUT. Groups are refreshed every `ttl` seconds and at once after
a failure (`invalidate`); keys come from ranges of `lease_size` leased in one call.
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

log = logging.getLogger(__name__)

ReplicaFactory = Callable[[ServerInfo], Replica]


class GroupCache:
    """The registry's group list, at most `ttl` seconds old."""

    def __init__(self, registry: Registry, *, ttl: float = 2.0, writable_wait: float = 0.0) -> None:
        self._registry = registry
        self._ttl = ttl
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
            if trio.current_time() - self._fetched >= self._ttl:
                groups = await self._registry.groups()
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
        """A writable group not in `exclude`, chosen at random weighted by free space."""
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
        healthy = [g for g in candidates if self._suspect.get(g.group, 0.0) <= now]
        candidates = healthy or candidates
        weights = [max(g.free, 1) for g in candidates]
        return random.choices(candidates, weights=weights, k=1)[0]


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


def read_order(group: GroupInfo) -> list[ServerInfo]:
    """Replicas to try for a read: live ones first (shuffled to spread load), then the rest."""
    up = [s for s in group.servers if s.state == "up"]
    other = [s for s in group.servers if s.state != "up"]
    random.shuffle(up)
    return up + other
