"""Client-side errors: the server's typed errors plus what only a client can observe.

Server errors are rebuilt with `arkor.errors.from_response` (the one decoder of every role's
clients) so that callers catch the same classes the server raised (and `exc.code` is always the
server's stable code). A code without a class of its own gets the class of its HTTP status, so
``except NotFound`` works for ``no_such_key``.
"""

from __future__ import annotations

from typing import Any

from arkor import errors
from arkor.errors import ArkorError, ChecksumMismatch


class ConnectionFailed(ArkorError):
    """The server could not be reached or the connection broke (after all retries)."""

    status = 503
    code = "connection_failed"


class IntegrityError(ChecksumMismatch):
    """Downloaded or uploaded data does not match its ETag or size; it was not kept."""

    code = "integrity_error"


def error_from_response(status: int, body: Any, headers: Any = None) -> ArkorError:
    """The typed exception for an error response (JSON body or not): `arkor.errors.from_response`."""
    return errors.from_response(status, body, headers)


def is_retryable(exc: Exception) -> bool:
    """Connection trouble and 5xx are worth another try; 4xx and integrity failures never."""
    if isinstance(exc, ConnectionFailed):
        return True
    if isinstance(exc, IntegrityError):
        return False
    if isinstance(exc, ArkorError):
        return exc.status >= 500
    return False
