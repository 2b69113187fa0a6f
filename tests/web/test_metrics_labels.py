"""The request metrics keep bounded label sets: a client may send any method token, and only the
known methods are recorded by name (anything else as OTHER)."""

from __future__ import annotations

from typing import Any

from arkor.web.metrics import HTTP_REQUESTS, instrument


async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 405, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def count(method: str) -> float:
    return HTTP_REQUESTS.labels("labels-test", method, "405")._value.get()


async def test_an_unknown_method_is_counted_as_other() -> None:
    app = instrument(answer, "labels-test", serve_metrics=False)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    before_other, before_delete = count("OTHER"), count("DELETE")
    for method in ("XYZZY", "BREW", "DELETE"):
        await app({"type": "http", "method": method, "path": "/x", "headers": []}, receive, send)
    assert count("OTHER") == before_other + 2
    assert count("DELETE") == before_delete + 1
    families = {s.labels["method"] for m in HTTP_REQUESTS.collect() for s in m.samples
                if s.labels.get("role") == "labels-test"}
    assert "XYZZY" not in families and "BREW" not in families
