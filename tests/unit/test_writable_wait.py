"""A write in a short unwritable window waits for a writable group (`object.writableWait`), and
past the wait is 503 with Retry-After (git-lfs retries on it); over a fake registry."""

from __future__ import annotations

import pytest
import trio

from arkor.errors import ServiceUnavailable
from arkor.model import GroupInfo
from arkor.transfer.placement import GroupCache


class ResyncingRegistry:
    """Group 1 becomes writable at `writable_at` (trio clock)."""

    def __init__(self, writable_at: float) -> None:
        self.writable_at = writable_at
        self.calls = 0

    async def groups(self) -> list[GroupInfo]:
        self.calls += 1
        return [GroupInfo(1, [], writable=trio.current_time() >= self.writable_at, free=1)]


async def test_write_waits_for_the_group_to_become_writable() -> None:
    registry = ResyncingRegistry(trio.current_time() + 0.5)
    cache = GroupCache(registry, ttl=2.0, writable_wait=5.0)
    with trio.fail_after(3):
        group = await cache.pick_writable()
    assert group.group == 1 and registry.calls >= 2


async def test_past_the_wait_503_with_retry_after() -> None:
    registry = ResyncingRegistry(trio.current_time() + 60)
    cache = GroupCache(registry, ttl=2.0, writable_wait=0.3)
    started = trio.current_time()
    with pytest.raises(ServiceUnavailable) as caught:
        await cache.pick_writable()
    assert 0.3 <= trio.current_time() - started < 2
    assert caught.value.status == 503 and caught.value.headers.get("retry-after")
