"""One connection's exception never ends a server (issue 11 item 1), in-process on real sockets.

hypercorn raised `trio.BusyResourceError` out of a connection (its error response racing its own
`send_eof`) and through `serve_listeners` out of the server. Here the accepted streams are wrapped
to fail on cue, in exactly those two ways, while other connections are served.
"""

from __future__ import annotations

from typing import Any

import httpx
import trio

from arkor.config import HttpConfig
from arkor.web.hyper import CONNECTION_ERRORS, serve_listeners
from arkor.web.serve import hypercorn_config


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


class FailingStream:
    """A real SocketStream that raises `error` from `method` (once) when told to."""

    def __init__(self, inner: trio.SocketStream, method: str, error: BaseException) -> None:
        self._inner, self._method, self._error = inner, method, error

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        async def failing(*args: Any) -> Any:
            raise self._error

        return failing


class FaultyListener(trio.abc.Listener[Any]):
    """Every accepted connection whose number is in `faults` fails as that entry says."""

    def __init__(self, inner: trio.SocketListener, faults: dict[int, tuple[str, BaseException]]):
        self.inner, self.faults, self.accepted = inner, faults, 0

    async def accept(self) -> Any:
        stream = await self.inner.accept()
        self.accepted += 1
        fault = self.faults.get(self.accepted)
        return FailingStream(stream, *fault) if fault else stream

    async def aclose(self) -> None:
        await self.inner.aclose()


def errors(kind: str) -> float:
    return CONNECTION_ERRORS.labels(kind)._value.get()


async def test_failing_connections_do_not_end_the_server() -> None:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    listener = FaultyListener(
        trio.SocketListener(sock),
        {1: ("receive_some", RuntimeError("injected")),  # escapes TCPServer.run
         2: ("send_all", trio.BusyResourceError("injected"))},  # the race of issue 11
    )
    before = errors("RuntimeError")
    config = hypercorn_config(HttpConfig(), "127.0.0.1:0")
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: serve_listeners(
            hello, config, [listener], max_head_bytes=16384, task_status=task_status))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(2):  # the two failing connections
                try:
                    await client.get("/", headers={"connection": "close"})
                except httpx.HTTPError:
                    pass
            for _ in range(3):  # and the server still serves
                response = await client.get("/", headers={"connection": "close"})
                assert response.status_code == 200 and response.text == "ok"
        nursery.cancel_scope.cancel()
    assert listener.accepted >= 5
    assert errors("RuntimeError") == before + 1


async def test_every_503_carries_retry_after() -> None:
    async def busy(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        own = [(b"retry-after", b"7")] if scope["path"] == "/own" else []
        await send({"type": "http.response.start", "status": 503, "headers": own})
        await send({"type": "http.response.body", "body": b"busy"})

    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    config = hypercorn_config(HttpConfig(), "127.0.0.1:0")
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: serve_listeners(
            busy, config, [trio.SocketListener(sock)], max_head_bytes=16384,
            task_status=task_status))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/")).headers.get("retry-after") == "2"
            own = await client.get("/own")
            assert own.headers.get_list("retry-after") == ["7"]
        nursery.cancel_scope.cancel()
