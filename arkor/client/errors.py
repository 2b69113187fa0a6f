"""Client-side errors: the server's typed errors plus what only a client can observe.

Server errors are rebuilt with `arkor.errors.from_response` so that callers catch the same classes
the server raised (and `exc.code` is always the server's stable code). A code the shared module does
not know still gets the class of its HTTP status, so ``except NotFound`` works for ``no_such_key``.
"""

from __future__ import annotations

from typing import Any

from arkor import errors
from arkor.errors import ArkorError, ChecksumMismatch

_BY_STATUS: dict[int, type[ArkorError]] = {
    400: errors.BadRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    408: errors.RequestTimeout,
    409: errors.Conflict,
    411: errors.LengthRequired,
    412: errors.PreconditionFailed,
    413: errors.PayloadTooLarge,
    416: errors.RangeNotSatisfiable,
    422: errors.Unprocessable,
    503: errors.ServiceUnavailable,
    507: errors.InsufficientStorage,
}


class ConnectionFailed(ArkorError):
    """The server could not be reached or the connection broke (after all retries)."""

    status = 503
    code = "connection_failed"


class IntegrityError(ChecksumMismatch):
    """Downloaded or uploaded data does not match its ETag or size; it was not kept."""

    code = "integrity_error"


def error_from_response(status: int, body: Any) -> ArkorError:
    """The typed exception for an error response (JSON body or not)."""
    exc = errors.from_response(status, body)
    if type(exc) is ArkorError:
        cls = _BY_STATUS.get(status)
        if cls is None and status >= 500:
            cls = ArkorError
        if cls is not None and cls is not ArkorError:
            exc = cls(exc.message, code=exc.code if exc.code != "internal_error" else None, status=status)
    if not isinstance(body, dict) or "error" not in body:
        # Not our JSON (a proxy, an empty 404 for HEAD): keep a stable code from the status.
        exc.code = _BY_STATUS.get(status, ArkorError).code if status < 500 or status == 503 else exc.code
    return exc


def is_retryable(exc: Exception) -> bool:
    """Connection trouble and 5xx are worth another try; 4xx and integrity failures never."""
    if isinstance(exc, ConnectionFailed):
        return True
    if isinstance(exc, IntegrityError):
        return False
    if isinstance(exc, ArkorError):
        return exc.status >= 500
    return False
