"""Errors that cross a boundary: each has an HTTP status and a stable machine-readable code.

Every role answers errors as ``{"error": {"code": ..., "message": ...}}``; clients (the transfer
engine, the SDK) turn such a body back into the same exception class through `from_response`.
Codes are part of the public contract (docs/specs/API.md): add new ones, never rename.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class ArkorError(Exception):
    """Base class: `status` and `code` are the defaults for the subclass."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.message!r})"


class BadRequest(ArkorError):
    """The request is malformed."""

    status = 400
    code = "bad_request"


class BodySizeMismatch(BadRequest):
    """The body is shorter or longer than its declared size (Content-Length, X-Arkor-Size).

    One concept, three wire codes kept for compatibility: ``incomplete_body`` (public API v1),
    ``size_mismatch`` (the data server's internal API, subclass `arkor.data.writes.SizeMismatch`)
    and, for Git LFS uploads, 422 ``size_mismatch`` (the LFS routes translate this class)."""

    code = "incomplete_body"


class Unauthorized(ArkorError):
    """Credentials are missing or wrong."""

    status = 401
    code = "unauthorized"


class Forbidden(ArkorError):
    """The credentials do not allow this operation."""

    status = 403
    code = "forbidden"


class NotFound(ArkorError):
    """No such resource."""

    status = 404
    code = "not_found"


class MethodNotAllowed(ArkorError):
    """This method is not supported on this path."""

    status = 405
    code = "method_not_allowed"


class RequestTimeout(ArkorError):
    """The client did not send the body in time."""

    status = 408
    code = "request_timeout"


class Conflict(ArkorError):
    """The request conflicts with the current state."""

    status = 409
    code = "conflict"


class LengthRequired(ArkorError):
    """A Content-Length (or chunked encoding) is required."""

    status = 411
    code = "length_required"


class PreconditionFailed(ArkorError):
    """A conditional header did not hold."""

    status = 412
    code = "precondition_failed"


class PayloadTooLarge(ArkorError):
    """The body or metadata is larger than allowed."""

    status = 413
    code = "payload_too_large"


class RangeNotSatisfiable(ArkorError):
    """The requested range lies outside the object."""

    status = 416
    code = "invalid_range"


class Unprocessable(ArkorError):
    """The request is well formed but its content is invalid."""

    status = 422
    code = "unprocessable"


class ChecksumMismatch(ArkorError):
    """The data does not match its checksum; it is never served or stored."""

    status = 400
    code = "checksum_mismatch"


class CorruptNeedle(ArkorError):
    """A stored needle failed its checksum: read another replica."""

    status = 500
    code = "corrupt_needle"


class ServiceUnavailable(ArkorError):
    """Not enough healthy servers to complete the request."""

    status = 503
    code = "service_unavailable"


class InsufficientStorage(ArkorError):
    """No space left to store the data."""

    status = 507
    code = "insufficient_storage"


_BY_CODE: dict[str, type[ArkorError]] = {}


def _register(cls: type[ArkorError]) -> None:
    _BY_CODE.setdefault(cls.code, cls)
    for sub in cls.__subclasses__():
        _register(sub)


_register(ArkorError)


_BY_STATUS: dict[int, type[ArkorError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 405: MethodNotAllowed,
    408: RequestTimeout, 409: Conflict, 411: LengthRequired, 412: PreconditionFailed,
    413: PayloadTooLarge, 416: RangeNotSatisfiable, 422: Unprocessable, 503: ServiceUnavailable,
    507: InsufficientStorage,
}
ERROR_HEADER = "x-arkor-error"  # the code of an error answer without a body (HEAD)


def from_response(
    status: int, body: Any, headers: Mapping[str, str] | None = None
) -> ArkorError:
    """The one decoder of an error answer, for every role's clients and the SDK: the exception the
    server raised, rebuilt from its status and JSON error body (`body` parsed, or raw bytes).

    The class is the code's (``no_such_key`` has none of its own: then the status's, so
    ``except NotFound`` works); an answer that is not our JSON (a proxy's, a HEAD's empty body)
    takes its code from the ``X-Arkor-Error`` header, else from its status."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            body = json.loads(bytes(body)) if body else None
        except (ValueError, RecursionError):
            body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("code"):
        code, message = str(error["code"]), str(error.get("message") or "")
    else:
        fallback = _BY_STATUS.get(status)
        header = (headers or {}).get(ERROR_HEADER)
        code = header or (fallback.code if fallback is not None else "internal_error")
        message = ""
    cls = _BY_CODE.get(code)
    if cls is None or (cls is ArkorError and status != 500):
        cls = _BY_STATUS.get(status, ArkorError)
    return cls(message or f"HTTP {status}", code=code, status=status)
