"""The client's framing with no socket: heads, chunked bodies split at every byte, bad input."""

from __future__ import annotations

import pytest

from arkor.httpclient.protocol import ChunkedDecoder, ProtocolError, chunk, parse_head, request_head


def test_request_head_has_host_length_and_refuses_line_breaks() -> None:
    head = request_head("PUT", "/needles/1,2", "h:1", [("X-A", "b")], 5)
    assert head == b"PUT /needles/1,2 HTTP/1.1\r\nHost: h:1\r\nX-A: b\r\nContent-Length: 5\r\n\r\n"
    assert b"Content-Length" not in request_head("GET", "/", "h", [], 0)
    assert b"Transfer-Encoding: chunked" in request_head("PUT", "/", "h", [], None)
    with pytest.raises(ValueError):
        request_head("GET", "/", "h", [("X", "a\r\nEvil: 1")], 0)


def test_parse_head_framing() -> None:
    h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: 1\r\nx-a: 2", method="GET")
    assert (h.status, h.framing, h.length, h.keep_alive) == (200, "length", 12, True)
    assert h.headers["x-a"] == "1, 2"
    assert parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12", method="HEAD").framing == "none"
    assert parse_head(b"HTTP/1.1 204 No Content", method="DELETE").framing == "none"
    chunked = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", method="GET")
    assert chunked.framing == "chunked"
    close = parse_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1", method="GET")
    assert not close.keep_alive
    assert parse_head(b"HTTP/1.1 200 OK", method="GET").framing == "close"


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 2000 OK", b"HTTP/2 200 OK", b"HTTP/1.1 2\xb2 OK", b"HTTP/1.1 200 OK\r\nbad line",
    b"HTTP/1.1 200 OK\r\nContent-Length: \xb2",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip", b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 30,
])
def test_parse_head_refuses_what_it_cannot_trust(head: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_head(head, method="GET")


def test_chunked_decoder_any_split() -> None:
    payload = [b"hello", b" ", b"world" * 100]
    wire = b"".join(chunk(p) for p in payload) + chunk(b"")[:-2] + b"X-Trailer: 1\r\n\r\nNEXT"
    for cut in range(len(wire) + 1):
        decoder = ChunkedDecoder()
        out = decoder.feed(wire[:cut]) + decoder.feed(wire[cut:])
        assert b"".join(out) == b"".join(payload)
        assert decoder.done and decoder.leftover == b"NEXT"


@pytest.mark.parametrize("wire", [b"zz\r\n", b"5\r\nhelloXX", b"1" * 2000, b"-1\r\n"])
def test_chunked_decoder_refuses_bad_framing(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        ChunkedDecoder().feed(wire)
