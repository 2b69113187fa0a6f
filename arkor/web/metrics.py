"""The HTTP side of metrics: an ASGI wrapper that records requests and serves ``GET /metrics``.

`instrument(app, role)` counts requests by method and status, observes latency, counts body bytes,
and answers ``GET /metrics`` itself, so every role exposes the same families. The families of the
engines (fsync latency, replica health, repair/scrub progress, reclaim backlog) live in the
ground-floor `arkor.metrics`, which the engines import without pulling in the web.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from arkor.metrics import LATENCY_BUCKETS
from arkor.web.asgi import ASGIApp, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "arkor_http_requests_total", "HTTP requests answered", ["role", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "arkor_http_request_seconds",
    "Time from request start to the end of the response",
    ["role", "method"],
    buckets=LATENCY_BUCKETS,
)
HTTP_BYTES = Counter(
    "arkor_http_body_bytes_total", "Request and response body bytes", ["role", "direction"]
)


def metrics_body() -> bytes:
    return generate_latest()


# Methods recorded by name; any other (a client may send any token) counts as OTHER, so the
# label sets, and the memory they take, stay bounded.
KNOWN_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"})


def instrument(app: ASGIApp, role: str, *, serve_metrics: bool = True) -> ASGIApp:
    """Wrap `app`: record every HTTP request and serve ``GET /metrics`` (not with
    `serve_metrics=False`: on the S3 listener `/metrics` is a bucket)."""
    # The labelled children, looked up once per (method, status): `labels()` takes a lock and
    # builds its key on every call.
    counters: dict[tuple[str, int], Any] = {}
    latencies: dict[str, Any] = {}
    bytes_in, bytes_out = HTTP_BYTES.labels(role, "in"), HTTP_BYTES.labels(role, "out")

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        method = scope["method"]
        if serve_metrics and scope["path"] == "/metrics" and method in ("GET", "HEAD"):
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
            status = state["status"]
            if method not in KNOWN_METHODS:
                method = "OTHER"
            counter = counters.get((method, status))
            if counter is None:
                counter = counters[(method, status)] = HTTP_REQUESTS.labels(role, method, str(status))
            counter.inc()
            latency = latencies.get(method)
            if latency is None:
                latency = latencies[method] = HTTP_LATENCY.labels(role, method)
            latency.observe(time.perf_counter() - started)
            if state["in"]:
                bytes_in.inc(state["in"])
            if state["out"]:
                bytes_out.inc(state["out"])

    return wrapped
