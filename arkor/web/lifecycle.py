"""The life of one HTTP/1.1 request as the app sees it: body finished, answered early, drain, close.

What lives here: `RequestCycle`, a pure state machine in the manner of h11 (feed it the ASGI
messages that pass, ask it what to do); no I/O, no trio, so it is tested without a server
(tests/unit/test_lifecycle.py). What must not: the reading and sending itself (`arkor.web.role`).

Why it exists: an HTTP/1.1 client such as httpx or curl reads the response only once it has sent
its whole body. A server that answers early (an error before or while reading a PUT body) and
stops reading leaves that client blocked until its own timeout, never seeing the answer. So an
early answer carries ``Connection: close`` (the connection cannot be reused), the rest of the
body is drained within bounds before the answer ends, and past those bounds whatever hypercorn
still queues is discarded until the stream closes (else its bounded queue blocks our `send`).
Not after a 408: a client that stopped sending would only make the drain wait.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

CLOSE_HEADER = (b"connection", b"close")


def declares_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """True when raw ASGI request headers announce a body (a non-zero Content-Length, or any
    Transfer-Encoding)."""
    for name, value in headers:
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


class RequestCycle:
    """What has happened to one request so far, and what its answer must therefore do."""

    __slots__ = ("answered", "body_done", "status")

    def __init__(self, has_body: bool) -> None:
        self.body_done = not has_body  # the client has sent its whole body (or had none)
        self.answered = False  # the last byte of the response has been handed to the server
        self.status = 0

    @classmethod
    def for_scope(cls, scope: Mapping[str, Any]) -> RequestCycle:
        return cls(declares_body(scope.get("headers", ())))

    # --- events in ----------------------------------------------------------------------------
    def received(self, message: Mapping[str, Any]) -> None:
        """An ASGI receive message: the body is over at its last chunk or a disconnect."""
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.body_done = True

    def starting(self, status: int) -> bool:
        """The response starts; True when it must carry ``Connection: close`` (answered early)."""
        self.status = status
        return not self.body_done

    def finishing(self) -> bool:
        """The response's last body message is about to go: True when the rest of the request
        body should be drained first (answered early, and not because the client stopped)."""
        return not self.body_done and self.status != 408

    def finished(self) -> bool:
        """The response's last message went out; True when the server may still queue body
        messages nobody reads (then they must be discarded until the stream closes)."""
        self.answered = True
        return not self.body_done

    # --- questions -------------------------------------------------------------------------------
    def abandoned(self) -> bool:
        """The app returned without answering while the body was still coming (the client went
        away or the handler gave up): drain it so the connection ends cleanly."""
        return not self.body_done and not self.answered

    @staticmethod
    def with_close(message: dict[str, Any]) -> dict[str, Any]:
        """`message` (an ``http.response.start``) with ``Connection: close`` added."""
        return {**message, "headers": [*message.get("headers", []), list(CLOSE_HEADER)]}
