"""Socket-free tests of how `StrictH11Protocol` writes a response: the head waits for the first
body bytes and goes out with them, so a small answer is one write (h11 style: events in, bytes out)."""

from __future__ import annotations

from typing import Any

import h11
from hypercorn.config import Config
from hypercorn.events import RawData
from hypercorn.protocol.events import Body, EndBody, Response, StreamClosed
from hypercorn.trio.worker_context import WorkerContext

from arkor.web.hyper import COALESCE_MAX, StrictH11Protocol


def protocol_after_a_request(writes: list[bytes]) -> StrictH11Protocol:
    async def send(event: Any) -> None:
        if isinstance(event, RawData):
            writes.append(event.data)

    proto = StrictH11Protocol(None, Config(), WorkerContext(None), None, None, False,
                              ("127.0.0.1", 1), ("127.0.0.1", 2), send, max_head_bytes=16384)
    proto.connection.receive_data(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(proto.connection.next_event(), h11.Request)
    assert isinstance(proto.connection.next_event(), h11.EndOfMessage)
    return proto


async def test_a_small_answer_is_one_write_with_head_and_body() -> None:
    writes: list[bytes] = []
    proto = protocol_after_a_request(writes)
    await proto.stream_send(Response(stream_id=1, status_code=200, headers=[(b"content-length", b"5")]))
    assert writes == []  # held for the body
    await proto.stream_send(Body(stream_id=1, data=b"hello"))
    await proto.stream_send(EndBody(stream_id=1))
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"\r\n\r\nhello")


async def test_a_bodiless_answer_goes_out_at_its_end_and_a_large_chunk_is_not_copied() -> None:
    writes: list[bytes] = []
    proto = protocol_after_a_request(writes)
    await proto.stream_send(Response(stream_id=1, status_code=204, headers=[]))
    await proto.stream_send(EndBody(stream_id=1))
    assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 204 No Content\r\n")

    writes.clear()
    proto = protocol_after_a_request(writes)
    big = b"x" * (COALESCE_MAX + 1)
    await proto.stream_send(Response(stream_id=1, status_code=200,
                                     headers=[(b"content-length", str(len(big)).encode())]))
    await proto.stream_send(Body(stream_id=1, data=big))
    assert len(writes) == 2 and writes[0].endswith(b"\r\n\r\n") and writes[1] == big


async def test_a_head_whose_body_never_comes_is_still_written_when_the_stream_closes() -> None:
    writes: list[bytes] = []
    proto = protocol_after_a_request(writes)
    await proto.stream_send(Response(stream_id=1, status_code=200, headers=[(b"content-length", b"9")]))
    await proto.stream_send(StreamClosed(stream_id=1))
    assert writes and writes[0].startswith(b"HTTP/1.1 200 OK\r\n")


# `send_response`: the ASGI messages a streamed body becomes.

async def _messages(response: Any, *, head: bool = False) -> list[dict[str, Any]]:
    from arkor.web.asgi import send_response

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await send_response(send, response, head=head)
    return sent


def _streamed(chunks: list[bytes], headers: list[tuple[str, str]]) -> Any:
    from arkor.web.asgi import Response

    async def body() -> Any:
        for chunk in chunks:
            yield chunk

    return Response(200, headers, body())


async def test_the_chunk_that_completes_the_declared_length_ends_the_message() -> None:
    sent = await _messages(_streamed([b"abc", b"", b"de"], [("content-length", "5")]))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body", "http.response.body"]
    assert sent[1] == {"type": "http.response.body", "body": b"abc", "more_body": True}
    assert sent[2] == {"type": "http.response.body", "body": b"de"}  # the end, no empty message


async def test_without_a_declared_length_or_with_an_empty_body_an_empty_message_ends_it() -> None:
    sent = await _messages(_streamed([b"abc"], []))
    assert sent[-2:] == [{"type": "http.response.body", "body": b"abc", "more_body": True},
                         {"type": "http.response.body", "body": b""}]
    sent = await _messages(_streamed([], [("content-length", "0")]))
    assert sent[-1] == {"type": "http.response.body", "body": b""} and len(sent) == 2
    sent = await _messages(_streamed([b"abc"], [("content-length", "3")]), head=True)
    assert sent[-1] == {"type": "http.response.body", "body": b""} and len(sent) == 2
