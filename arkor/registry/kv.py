"""The registry's KV: only state that may be lost (caches, heartbeat last-seen, leader lease).

Two implementations: in-process (default; each registry process has its own) and Redis through
coredis. Why coredis: it runs natively on trio (anyio) and cancels on time, while redis-py's asyncio
client does not run on trio and its sync client in worker threads makes cancellation wait for the
blocked call (STACK-NOTES: 1.06 s for a 0.2 s deadline). Nothing that must survive a restart is
kept only here: the metadata DB is the source of truth.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

# Renew or release a lease only when we still hold it (value is the holder's token).
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class KV(Protocol):
    async def get(self, key: str) -> bytes | None:
        ...

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        ...

    async def set_nx(self, key: str, value: bytes, ttl: float) -> bool:
        """Set only if absent; True when set (a lease acquired)."""

    async def renew(self, key: str, value: bytes, ttl: float) -> bool:
        """Extend the lease if `value` still holds it."""

    async def release(self, key: str, value: bytes) -> None:
        ...

    async def aclose(self) -> None:
        ...


class MemoryKV:
    """A dict with expiry; bounded by `max_entries` (oldest-expiring entries dropped first)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._data: dict[str, tuple[bytes, float]] = {}
        self._max = max_entries

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            del self._data[key]
            return None
        return item[0]

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [self._live(k) for k in keys]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if key not in self._data and len(self._data) >= self._max:
            now = time.monotonic()
            self._data = {k: v for k, v in self._data.items() if v[1] > now}
            if len(self._data) >= self._max:
                del self._data[min(self._data, key=lambda k: self._data[k][1])]
        self._data[key] = (value, time.monotonic() + ttl)

    async def set_nx(self, key: str, value: bytes, ttl: float) -> bool:
        if self._live(key) is not None:
            return False
        await self.set(key, value, ttl)
        return True

    async def renew(self, key: str, value: bytes, ttl: float) -> bool:
        if self._live(key) != value:
            return False
        self._data[key] = (value, time.monotonic() + ttl)
        return True

    async def release(self, key: str, value: bytes) -> None:
        if self._live(key) == value:
            del self._data[key]

    async def aclose(self) -> None:
        self._data.clear()


class RedisKV:
    """Redis through coredis; every key is prefixed so several clusters or tests share a server.

    Open it with `open_redis_kv` (coredis runs its connection tasks in a nursery that must nest
    properly with the caller's)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self.prefix = prefix

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(self.prefix + key)
        return value if value is None or isinstance(value, bytes) else str(value).encode()

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        values = await self._client.mget([self.prefix + k for k in keys])
        return [v if v is None or isinstance(v, bytes) else str(v).encode() for v in values]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._client.set(self.prefix + key, value, px=max(1, int(ttl * 1000)))

    async def set_nx(self, key: str, value: bytes, ttl: float) -> bool:
        from coredis.tokens import PureToken

        return bool(
            await self._client.set(
                self.prefix + key, value, px=max(1, int(ttl * 1000)), condition=PureToken.NX
            )
        )

    async def renew(self, key: str, value: bytes, ttl: float) -> bool:
        result = await self._client.eval(
            _RENEW, keys=[self.prefix + key], args=[value, max(1, int(ttl * 1000))]
        )
        return bool(result)

    async def release(self, key: str, value: bytes) -> None:
        await self._client.eval(_RELEASE, keys=[self.prefix + key], args=[value])

    async def aclose(self) -> None:
        """Closed by `open_redis_kv` on exit."""


@asynccontextmanager
async def open_redis_kv(
    *,
    host: str,
    port: int,
    db: int = 0,
    username: str = "",
    password: str = "",
    prefix: str = "arkor:",
    io_timeout: float = 5.0,
) -> AsyncIterator[RedisKV]:
    import coredis

    kwargs: dict[str, Any] = {
        "host": host, "port": port, "db": db, "stream_timeout": io_timeout,
        "connect_timeout": io_timeout, "max_connections": 32,
    }
    if username:
        kwargs["username"] = username
    if password:
        kwargs["password"] = password
    async with coredis.Redis(**kwargs) as client:
        await client.ping()
        yield RedisKV(client, prefix)
