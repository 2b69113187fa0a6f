"""How many connections a server holds at once: `http.maxConnections`.

Why: every open connection may hold body bytes waiting for its handler (hypercorn's app queue and
one read, about 1.25 MiB, `arkor.web.hyper`), so the sum over connections is bounded only if the
number of connections is. Past the limit the server stops accepting: new connections wait in the
kernel's listen backlog (and their clients' connect or first-byte timeouts) until one closes,
instead of being taken in and buffered for.

Lives here: the count (a `trio.CapacityLimiter` shared by all listeners of one server) and the
listener wrapper that takes a token before each accept. The connection handler gives the token
back when the connection ends (`Admission.release`), whatever ended it.
"""

from __future__ import annotations

from typing import Any

import trio
from prometheus_client import Gauge

OPEN_CONNECTIONS = Gauge(
    "arkor_http_open_connections", "Connections being served (at most http.maxConnections)"
)


class Admission:
    """One server's connection count; `listener(inner)` wraps each of its listeners."""

    def __init__(self, limit: int) -> None:
        self.limiter = trio.CapacityLimiter(max(1, limit))
        self._tokens: dict[int, object] = {}

    def listener(self, inner: trio.abc.Listener[Any]) -> trio.abc.Listener[Any]:
        return _AdmittingListener(inner, self)

    async def _admit(self, inner: trio.abc.Listener[Any]) -> Any:
        token = object()
        await self.limiter.acquire_on_behalf_of(token)
        try:
            stream = await inner.accept()
        except BaseException:
            self.limiter.release_on_behalf_of(token)
            raise
        self._tokens[id(stream)] = token
        OPEN_CONNECTIONS.inc()
        return stream

    def release(self, stream: Any) -> None:
        """The connection of `stream` has ended: its place is free."""
        token = self._tokens.pop(id(stream), None)
        if token is not None:
            self.limiter.release_on_behalf_of(token)
            OPEN_CONNECTIONS.dec()


class _AdmittingListener(trio.abc.Listener[Any]):
    def __init__(self, inner: trio.abc.Listener[Any], admission: Admission) -> None:
        self.inner = inner
        self.admission = admission

    async def accept(self) -> Any:
        return await self.admission._admit(self.inner)

    async def aclose(self) -> None:
        await self.inner.aclose()
