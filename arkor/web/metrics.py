"""Prometheus metrics shared by every role, and an ASGI wrapper that records and serves them.

`instrument(app, role)` counts requests by method and status, observes latency, counts body bytes,
and answers ``GET /metrics`` itself, so every role exposes the same families. Role-specific families
(fsync latency, replica health, repair/scrub progress, reclaim backlog) are defined here too, so one
`arkor allinone` process exports one coherent set, labelled by role.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from arkor.web.asgi import ASGIApp, Receive, Scope, Send

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

HTTP_REQUESTS = Counter(
    "arkor_http_requests_total", "HTTP requests answered", ["role", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "arkor_http_request_seconds",
    "Time from request start to the end of the response",
    ["role", "method"],
    buckets=_LATENCY_BUCKETS,
)
HTTP_BYTES = Counter(
    "arkor_http_body_bytes_total", "Request and response body bytes", ["role", "direction"]
)
FSYNC_SECONDS = Histogram(
    "arkor_data_fsync_seconds", "Duration of one (grouped) fsync", ["server"], buckets=_LATENCY_BUCKETS
)
FSYNC_GROUP_SIZE = Histogram(
    "arkor_data_fsync_group_writes", "Writes acknowledged by one fsync", ["server"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
REPLICA_UP = Gauge("arkor_replica_up", "1 when a data server is up, by group", ["group", "server"])
REPAIR_NEEDLES = Counter(
    "arkor_repair_needles_total", "Needles copied to a replica by repair", ["server"]
)
REPAIR_BYTES = Counter("arkor_repair_bytes_total", "Bytes copied by repair", ["server"])
REPAIR_PENDING = Gauge("arkor_repair_pending_needles", "Needles still to copy", ["server"])
SCRUB_NEEDLES = Counter("arkor_scrub_needles_total", "Needles verified by the scrubber", ["server"])
SCRUB_ERRORS = Counter(
    "arkor_scrub_corrupt_total", "Needles found corrupt (by scrub or read)", ["server"]
)
RECLAIM_BACKLOG = Gauge(
    "arkor_reclaim_backlog_fragments", "Fragments queued for deletion from data servers"
)
RECLAIMED = Counter("arkor_reclaimed_fragments_total", "Fragments deleted by the reaper", ["reason"])


def metrics_body() -> bytes:
    return generate_latest()


def instrument(app: ASGIApp, role: str) -> ASGIApp:
    """Wrap `app`: record every HTTP request and serve ``GET /metrics``."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        method = scope["method"]
        if scope["path"] == "/metrics" and method in ("GET", "HEAD"):
            body = metrics_body()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        [b"content-type", CONTENT_TYPE_LATEST.encode()],
                        [b"content-length", str(len(body)).encode()],
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
            return
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "out": 0, "in": 0}

        async def counting_receive() -> dict[str, Any]:
            message = await receive()
            state["in"] += len(message.get("body", b""))
            return message

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                state["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await app(scope, counting_receive, counting_send)
        finally:
            HTTP_REQUESTS.labels(role, method, str(state["status"])).inc()
            HTTP_LATENCY.labels(role, method).observe(time.perf_counter() - started)
            if state["in"]:
                HTTP_BYTES.labels(role, "in").inc(state["in"])
            if state["out"]:
                HTTP_BYTES.labels(role, "out").inc(state["out"])

    return wrapped
