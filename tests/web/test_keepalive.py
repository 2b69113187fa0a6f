"""Keep-alive of `GuardedTCPServer`, in-process on real sockets: one idle watcher per connection
(hypercorn restarts a task per request) closes an idle connection after `keepAliveTimeout`, never
one with a request in progress, at once when the client has gone, and idle ones at shutdown."""

from __future__ import annotations

import time
from typing import Any

import trio

from arkor.config import HttpConfig
from arkor.web.hyper import serve_listeners
from arkor.web.serve import hypercorn_config
from tests.web.test_guard import hello

KEEP_ALIVE = 0.5


async def slow_or_hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """`/slow?s` sleeps s seconds before answering; anything else is `hello`."""
    if scope["type"] != "http":
        await hello(scope, receive, send)
        return
    if scope["path"] == "/slow":
        await trio.sleep(float(scope["query_string"]))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def request(stream: trio.SocketStream, target: str) -> bytes:
    await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    reply = b""
    while not reply.endswith(b"ok"):
        chunk = await stream.receive_some(65536)
        assert chunk, f"closed mid-answer after {reply!r}"
        reply += chunk
    return reply


async def closed_after(stream: trio.SocketStream) -> float:
    """Seconds until the server closes `stream` (EOF)."""
    started = time.monotonic()
    assert await stream.receive_some(65536) == b""
    return time.monotonic() - started


async def serve(nursery: trio.Nursery, shutdown: trio.Event) -> int:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    config = hypercorn_config(HttpConfig(keepAliveTimeout=KEEP_ALIVE), "127.0.0.1:0")  # type: ignore[arg-type]
    await nursery.start(lambda task_status: serve_listeners(
        slow_or_hello, config, [trio.SocketListener(sock)], max_head_bytes=16384,
        shutdown_trigger=shutdown.wait, task_status=task_status))
    return int(sock.getsockname()[1])


async def test_an_idle_connection_closes_after_the_keep_alive_timeout_and_not_before() -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await serve(nursery, shutdown)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        for _ in range(3):  # each request moves the deadline
            assert (await request(stream, "/")).startswith(b"HTTP/1.1 200")
            await trio.sleep(KEEP_ALIVE * 0.6)
        assert (await request(stream, "/")).startswith(b"HTTP/1.1 200")
        waited = await closed_after(stream)
        assert KEEP_ALIVE * 0.8 <= waited <= KEEP_ALIVE + 1.0
        shutdown.set()


async def test_a_request_longer_than_the_timeout_is_answered_and_the_connection_kept() -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await serve(nursery, shutdown)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        assert (await request(stream, f"/slow?{KEEP_ALIVE * 3}")).startswith(b"HTTP/1.1 200")
        assert (await request(stream, "/")).startswith(b"HTTP/1.1 200")  # still open
        shutdown.set()


async def test_shutdown_closes_idle_connections_and_lets_a_busy_one_finish() -> None:
    shutdown = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await serve(nursery, shutdown)
            idle = await trio.open_tcp_stream("127.0.0.1", port)
            assert (await request(idle, "/")).startswith(b"HTTP/1.1 200")
            busy = await trio.open_tcp_stream("127.0.0.1", port)
            answer: list[bytes] = []

            async def slow() -> None:
                answer.append(await request(busy, "/slow?1.0"))

            nursery.start_soon(slow)
            await trio.sleep(0.2)
            shutdown.set()
            assert await closed_after(idle) < KEEP_ALIVE  # at once, not after its timeout
        assert answer and answer[0].startswith(b"HTTP/1.1 200")


def close_wait_sockets(port: int) -> int:
    """Server-side sockets on `port` whose peer has closed and that the server has not."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "08":
                    count += 1
    return count


async def test_a_client_that_goes_away_has_its_connection_closed_at_once() -> None:
    """Not after the keep-alive timeout: hypercorn's connection task waited for its idle task,
    and the server's socket sat in CLOSE_WAIT that long."""
    shutdown = trio.Event()
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    config = hypercorn_config(HttpConfig(keepAliveTimeout=30.0), "127.0.0.1:0")  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: serve_listeners(
            slow_or_hello, config, [trio.SocketListener(sock)], max_head_bytes=16384,
            shutdown_trigger=shutdown.wait, task_status=task_status))
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        assert (await request(stream, "/")).startswith(b"HTTP/1.1 200")
        await trio.sleep(0.2)  # the server is done with the request and waits for the next
        await stream.aclose()
        for _ in range(40):  # polling /proc: there is no event to wait on
            if not close_wait_sockets(port):
                break
            await trio.sleep(0.05)
        assert close_wait_sockets(port) == 0
        shutdown.set()
