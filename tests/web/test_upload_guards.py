"""Upload guards (issue 11 item 6) against a real `arkor allinone`: the buffered-bytes budget
(503 slow_down before the body is read), RSS bounded and given back (psutil), and a trickled body
cut off with 408; `paced` itself over fake bodies."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio

from arkor.errors import RequestTimeout
from arkor.object.guards import paced
from tests.object.cluster import start_allinone
from tests.procs import ArkorProcess
from tests.web.rawhttp import exchange

MIB = 1024 * 1024
BUDGET = 48 * MIB  # six 8 MiB fragments


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArkorProcess]:
    tmp: Path = tmp_path_factory.mktemp("guards")
    proc = start_allinone(tmp, object={
        "uploadBufferBudget": BUDGET, "bodyMinRate": 1000, "bodyRateGrace": "1s",
        "bodyTimeout": "20s",
    })
    yield proc
    proc.stop()


def put_head(key: str, length: int, *extra: str) -> bytes:
    lines = [f"PUT /v1/guard/{key} HTTP/1.1", "Host: a", f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_budget_bounds_and_returns_memory(server: ArkorProcess) -> None:
    baseline = server.rss_bytes()
    stalled: list[socket.socket] = []
    try:
        for i in range(6):  # each declares 16 MiB, sends 7.5 MiB and stalls
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            sock.sendall(put_head(f"stall{i}", 16 * MIB) + b"x" * (15 * MIB // 2))
            stalled.append(sock)
        time.sleep(1.0)  # the server has read what was sent
        # Refused before the body is read: no 100 Continue, the answer at once.
        refused = exchange(server.port, put_head("one-more", 16 * MIB, "Expect: 100-continue"))
        assert refused.statuses == [503] and refused.closed, refused
        head, _, body = refused.data.partition(b"\r\n\r\n")
        assert b"retry-after: 1" in head.lower()
        assert json.loads(body)["error"]["code"] == "slow_down"
        held = server.rss_bytes() - baseline
        print(f"RSS with 6 stalled 7.5 MiB uploads: +{held / MIB:.0f} MiB")
        assert held < BUDGET + 48 * MIB
    finally:
        for sock in stalled:
            sock.close()
    deadline = time.monotonic() + 8  # at once, not when the cyclic GC happens to run
    while server.rss_bytes() - baseline > 24 * MIB and time.monotonic() < deadline:
        time.sleep(0.5)
    after = server.rss_bytes() - baseline
    print(f"RSS after they closed: +{after / MIB:.0f} MiB")
    assert after <= 24 * MIB
    ok = httpx.put(server.url + "/v1/guard/after", content=b"x" * MIB, timeout=30)
    assert ok.status_code == 201, ok.text  # the budget was released


def test_trickled_body_is_cut_off(server: ArkorProcess) -> None:
    """One byte every 0.3 s (each within bodyTimeout) falls under bodyMinRate once the grace
    has passed: 408 request_timeout, connection closed, nothing stored."""
    parts = [put_head("trickle", 100)] + [b"x"] * 30
    got = exchange(server.port, *parts, pause=0.3, timeout=15)
    assert got.statuses == [408], got
    assert b"bodyMinRate" in got.data and got.closed
    assert got.seconds < 8
    assert httpx.get(server.url + "/v1/guard/trickle").status_code == 404


async def chunks(count: int, every: float, size: int = 1) -> AsyncIterator[bytes]:
    for _ in range(count):
        await trio.sleep(every)
        yield b"x" * size


async def test_paced_rate_and_deadline() -> None:
    fast = [c async for c in paced(chunks(10, 0.01, 1000), min_rate=1000, grace=0.2, deadline=0)]
    assert len(fast) == 10
    for horizon in (0.0, 5.0):  # a cut-off nearer than the source's own timeout still applies
        with pytest.raises(RequestTimeout, match="bodyMinRate"):
            async for _ in paced(chunks(100, 0.1), min_rate=100, grace=0.3, deadline=0,
                                 horizon=horizon):
                pass
    with pytest.raises(RequestTimeout, match="bodyDeadline"):
        async for _ in paced(chunks(100, 0.05, 10_000), min_rate=0, grace=0, deadline=0.4):
            pass
