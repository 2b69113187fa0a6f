"""HTTP/1.1 framing of every role's server (arkor.web.hyper), over raw sockets against a real
`arkor allinone`: CL+TE, heads in one read, a late `100 Continue`, pipelining (issue 11 item 9)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.object.cluster import start_allinone
from tests.procs import ArkorProcess
from tests.web.rawhttp import exchange


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArkorProcess]:
    tmp: Path = tmp_path_factory.mktemp("framing")
    proc = start_allinone(
        tmp, http={"maxHeaderBytes": "16KiB"},
        object={"fragmentSize": "64KiB", "bodyTimeout": "3s", "maxObjectSize": "1MiB"},
    )
    yield proc
    proc.stop()


def head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: arkor", *headers, "", ""]
    return "\r\n".join(lines).encode()


def test_content_length_with_chunked_is_rejected_and_closed(server: ArkorProcess) -> None:
    request = head("PUT", "/v1/frame/smuggle", "Content-Length: 5", "Transfer-Encoding: chunked")
    got = exchange(server.port, request + b"5\r\nhello\r\n0\r\n\r\n")
    assert got.statuses == [400] and got.closed, got
    assert httpx.get(server.url + "/v1/frame/smuggle").status_code == 404


@pytest.mark.parametrize("kib", [40, 60])
def test_head_over_max_header_bytes_in_one_read(server: ArkorProcess, kib: int) -> None:
    request = head("GET", "/healthz", "X-Pad: " + "a" * kib * 1024)
    got = exchange(server.port, request)  # one sendall: h11 sees the whole head in one read
    assert got.statuses == [431] and got.closed, got
    fine = exchange(server.port, head("GET", "/healthz", "X-Pad: " + "a" * 8 * 1024, "Connection: close"))
    assert fine.statuses == [200], fine


@pytest.mark.parametrize(
    ("path", "extra", "status"),
    [
        ("/v1/frame/cond", 'If-Match: "no-such-etag"', 412),  # precondition
        ("/v1/Bad!Bucket/x", "X-Note: bad name", 400),  # validation
        ("/v1/frame/huge", "X-Note: over maxObjectSize", 413),  # size
    ],
)
def test_no_100_continue_before_the_checks_pass(
    server: ArkorProcess, path: str, extra: str, status: int
) -> None:
    length = 2 * 1024 * 1024 if status == 413 else 5
    request = head("PUT", path, f"Content-Length: {length}", "Expect: 100-continue", extra)
    got = exchange(server.port, request, timeout=10)
    assert got.statuses == [status], got  # no "100" before the final answer
    assert got.closed and got.seconds < 3, got  # and no wait for a body that must not come


def test_100_continue_then_body_stores_the_object(server: ArkorProcess) -> None:
    request = head("PUT", "/v1/frame/expect", "Content-Length: 5", "Expect: 100-continue",
                   "Connection: close")
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 "), "no 100 Continue for a valid PUT"
        sock.sendall(b"hello")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 201 "), answer
    assert httpx.get(server.url + "/v1/frame/expect").content == b"hello"


def test_pipelined_requests_are_answered(server: ArkorProcess) -> None:
    put = head("PUT", "/v1/frame/pipe", "Content-Length: 5") + b"hello"
    get = head("GET", "/v1/frame/pipe")
    last = head("GET", "/healthz", "Connection: close")
    got = exchange(server.port, put + get + last, timeout=10)
    assert got.statuses == [201, 200, 200] and got.closed, got
    # The same, the second request arriving while the first is being answered.
    got = exchange(server.port, get, get + last, pause=0.05, timeout=10)
    assert got.statuses == [200, 200, 200] and got.closed, got
    # Behind a streamed 900 KiB response (h11 pauses reading until it is sent).
    big = b"b" * (900 * 1024)
    assert httpx.put(server.url + "/v1/frame/big", content=big, timeout=30).status_code == 201
    got = exchange(server.port, head("GET", "/v1/frame/big") + last, timeout=15)
    assert got.statuses == [200, 200] and got.closed and big in got.data, got.statuses


def test_pipelined_after_an_early_answer_is_answered_or_closed(server: ArkorProcess) -> None:
    """A PUT refused before its body was read, a GET behind it: never a hang."""
    refused = head("PUT", "/v1/frame/cond2", "Content-Length: 5", 'If-Match: "x"') + b"hello"
    unknown = head("GET", "/no/such/route")
    last = head("GET", "/healthz", "Connection: close")
    got = exchange(server.port, refused + unknown + last, timeout=15)
    assert got.statuses[:1] == [412] and got.closed and got.seconds < 10, got
    assert got.statuses in ([412], [412, 404, 200]), got
