"""`http.maxConnections`, in-process on real sockets: past the limit a new connection is not
served (it waits in the listen backlog) until an open one closes; the gauge follows."""

from __future__ import annotations

import trio

from arkor.config import HttpConfig
from arkor.web.admission import OPEN_CONNECTIONS
from arkor.web.hyper import serve_listeners
from arkor.web.serve import hypercorn_config
from tests.web.test_keepalive import request, slow_or_hello


def open_connections() -> float:
    return OPEN_CONNECTIONS._value.get()


async def test_a_connection_past_the_limit_waits_until_one_closes() -> None:
    shutdown = trio.Event()
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    config = hypercorn_config(HttpConfig(), "127.0.0.1:0")
    before = open_connections()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: serve_listeners(
                slow_or_hello, config, [trio.SocketListener(sock)], max_head_bytes=16384,
                max_connections=2, shutdown_trigger=shutdown.wait, task_status=task_status))
            first = await trio.open_tcp_stream("127.0.0.1", port)
            second = await trio.open_tcp_stream("127.0.0.1", port)
            for stream in (first, second):
                assert (await request(stream, "/")).startswith(b"HTTP/1.1 200")
            assert open_connections() == before + 2

            third = await trio.open_tcp_stream("127.0.0.1", port)  # the kernel takes it in
            answer: list[bytes] = []
            answered = trio.Event()

            async def ask() -> None:
                answer.append(await request(third, "/"))
                answered.set()

            nursery.start_soon(ask)
            await trio.sleep(0.5)
            assert answer == []  # not accepted, so not answered
            await first.aclose()
            with trio.fail_after(5):
                await answered.wait()
            assert answer[0].startswith(b"HTTP/1.1 200")
            assert open_connections() == before + 2
            await second.aclose()
            await third.aclose()
            shutdown.set()
    assert open_connections() == before
