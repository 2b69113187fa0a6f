"""LeanClient against real sockets: a hypercorn server for the happy paths and keep-alive reuse,
raw trio servers that misbehave on cue (close idle connections, never answer, chunk, trickle)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from arkor.httpclient import LeanClient, Timeouts

FAST = Timeouts(connect=5.0, read=10.0, write=10.0, pool=5.0)  # upper bounds on a loaded machine


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    reply = b"%s %s %s %d" % (scope["method"].encode(), scope["raw_path"], scope["query_string"], len(body))
    if scope["raw_path"] == b"/big":
        reply = body
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-length", str(len(reply)).encode())]})
    await send({"type": "http.response.body", "body": reply})


@pytest.fixture
async def hyper_url(nursery: trio.Nursery) -> AsyncIterator[str]:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    urls = await nursery.start(serve, echo_app, config)
    yield urls[0]


async def raw_server(nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]) -> str:
    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    port = listeners[0].socket.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def read_head(stream: trio.SocketStream) -> bytes:
    """What a raw test server received up to the end of the request head (and any bytes after)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some(4096)
    return data


async def test_requests_reuse_one_connection_and_carry_params_json_and_bodies(hyper_url: str) -> None:
    async with LeanClient(timeout=FAST) as client:
        first = await client.request("PUT", hyper_url + "/a/b%2Fc", content=b"x" * 10, params={"q": "1 2"})
        assert first.status_code == 201
        assert first.content == b"PUT /a/b%2Fc q=1+2 10"
        posted = await client.request("POST", hyper_url + "/j", json={"k": [1, 2]})
        assert posted.content.endswith(b" 11")
        big = bytes(range(256)) * 40_000  # 10 MB round trip, sent and read in pieces
        assert (await client.request("PUT", hyper_url + "/big", content=big)).content == big
        assert len(client._idle[("http", "127.0.0.1", int(hyper_url.rsplit(":", 1)[1]))]) == 1


async def test_a_connection_the_server_closed_while_idle_is_replaced(nursery: trio.Nursery) -> None:
    served = []

    async def one_request_then_close(stream: trio.SocketStream) -> None:
        served.append(await read_head(stream))
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await trio.sleep(0.05)
        await stream.aclose()  # a keep-alive timeout on the server side

    url = await raw_server(nursery, one_request_then_close)
    async with LeanClient(timeout=FAST) as client:
        for _ in range(3):
            assert (await client.request("GET", url + "/x")).content == b"ok"
            await trio.sleep(0.1)
    assert len(served) == 3


async def test_silent_server_is_a_read_timeout_and_chunked_bodies_decode(nursery: trio.Nursery) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep(10)

    async def chunked(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await trio.sleep(0.05)
        await stream.send_all(b"2\r\nde\r\n0\r\n\r\n")
        await trio.sleep(1)

    silent_url = await raw_server(nursery, silent)
    chunked_url = await raw_server(nursery, chunked)
    async with LeanClient() as client:
        started = trio.current_time()
        with pytest.raises(httpx.ReadTimeout):
            await client.request("GET", silent_url + "/", timeout=Timeouts(1.0, 0.3, 1.0, 1.0))
        assert trio.current_time() - started < 1.5
        assert (await client.request("GET", chunked_url + "/", timeout=FAST)).content == b"abcde"


async def test_refused_connection_and_garbage_are_transport_errors(nursery: trio.Nursery) -> None:
    async def garbage(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.send_all(b"SMTP ready\r\n\r\n")

    async def huge_head(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.send_all(b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * 100_000)
        await trio.sleep(1)

    garbage_url = await raw_server(nursery, garbage)
    huge_url = await raw_server(nursery, huge_head)
    async with LeanClient(timeout=FAST) as client:
        with pytest.raises(httpx.ConnectError):
            await client.request("GET", "http://127.0.0.1:9/")
        with pytest.raises(httpx.RemoteProtocolError):
            await client.request("GET", garbage_url + "/")
        with pytest.raises(httpx.RemoteProtocolError):
            await client.request("GET", huge_url + "/")


async def test_cancelled_request_closes_its_connection_and_the_pool_is_bounded(
        hyper_url: str, nursery: trio.Nursery) -> None:
    async def slow(stream: trio.SocketStream) -> None:
        await trio.sleep(5)

    slow_url = await raw_server(nursery, slow)
    async with LeanClient(timeout=FAST, max_connections=2) as client:
        with trio.move_on_after(0.2):
            await client.request("GET", slow_url + "/")
        assert not any(client._idle.values())
        async with trio.open_nursery() as inner:  # two slots held by slow requests ...
            for _ in range(2):
                inner.start_soon(lambda: client.request("GET", slow_url + "/", timeout=Timeouts(1, 5, 1, 1)))
            await trio.sleep(0.1)
            with pytest.raises(httpx.PoolTimeout):  # ... a third waits at most the pool timeout
                await client.request("GET", hyper_url + "/", timeout=Timeouts(1, 1, 1, 0.2))
            inner.cancel_scope.cancel()
        assert (await client.request("GET", hyper_url + "/ok")).status_code == 201


async def test_first_byte_and_idle_read_timeouts_are_separate(nursery: trio.Nursery) -> None:
    async def slow_head_then_trickle(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await trio.sleep(0.4)  # over a 0.2 s idle timeout, under the 1 s first-byte one
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        await trio.sleep(0.6)  # over the idle timeout inside the body
        await stream.send_all(b"cd")

    url = await raw_server(nursery, slow_head_then_trickle)
    async with LeanClient() as client:
        with pytest.raises(httpx.ReadTimeout, match="0.2 s"):
            await client.request("GET", url + "/", timeout=Timeouts(1, 0.2, 1, 1, first_byte=1.0))


class _HeaderSigner:
    def headers_for(self, method: str, path: str, query: str, body: bytes,
                    headers: dict[str, str]) -> dict[str, str]:
        return {"X-Signed": f"{method} {path} {query} {len(body)} {headers.get('x-a', '')}"}


async def test_signer_sees_what_goes_on_the_wire(nursery: trio.Nursery) -> None:
    seen: list[bytes] = []

    async def record(stream: trio.SocketStream) -> None:
        seen.append(await read_head(stream))
        await stream.send_all(b"HTTP/1.1 204 No Content\r\n\r\n")

    url = await raw_server(nursery, record)
    async with LeanClient(timeout=FAST) as client:
        reply = await client.request("POST", url + "/p%2Fq", content=b"abc", params={"k": "v"},
                                     headers={"x-a": "1"}, auth=_HeaderSigner())
    assert reply.status_code == 204 and reply.content == b""
    assert b"X-Signed: POST /p%2Fq k=v 3 1\r\n" in seen[0]


async def test_stream_reads_as_iterated_and_only_a_finished_body_is_pooled(hyper_url: str) -> None:
    big = bytes(range(256)) * 8_000
    async with LeanClient(timeout=FAST) as client:
        origin = ("http", "127.0.0.1", int(hyper_url.rsplit(":", 1)[1]))
        async with client.stream("PUT", hyper_url + "/big", content=big) as response:
            assert response.status_code == 201
            assert await response.aread() == big and response.content == big
        assert len(client._idle[origin]) == 1
        async with client.stream("PUT", hyper_url + "/big", content=big) as response:
            async for _piece in response.aiter_raw():
                break  # walked away from the body: that connection cannot be reused
        assert len(client._idle[origin]) == 0
