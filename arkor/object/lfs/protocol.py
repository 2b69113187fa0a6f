"""Git LFS wire format, free of I/O: request validation and response bodies.

Follows the git-lfs API docs (docs/api/batch.md, basic-transfers.md, locking.md). Every response
body, errors included, is `application/vnd.git-lfs+json`. Error bodies carry the LFS fields
(`message`, `request_id`) that the git-lfs client shows, plus Arkor's usual
``{"error": {"code", "message"}}`` with a stable code, which the client ignores.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from arkor.errors import (
    ArkorError,
    BadRequest,
    Conflict,
    PayloadTooLarge,
    Unprocessable,
)
from arkor.model import LfsLock
from arkor.web import semantics

MEDIA_TYPE = "application/vnd.git-lfs+json"
# Media types a request body may declare (parameters such as charset are ignored).
ACCEPTED_REQUEST_TYPES = frozenset({MEDIA_TYPE, "application/json"})
# git-lfs sends 100 objects per batch by default (lfs.transfer.batchSize); bounded server side.
MAX_BATCH_OBJECTS = 1000
MAX_JSON_BYTES = 1024 * 1024
DEFAULT_LOCK_LIMIT = 100
MAX_LOCK_LIMIT = 1000
MAX_LOCK_PATH_BYTES = 4096
_OID = re.compile(r"[0-9a-f]{64}")


class UnsupportedMediaType(ArkorError):
    """The request body is not JSON of the Git LFS media type."""

    status = 415
    code = "unsupported_media_type"


class InvalidObject(Unprocessable):
    """An oid or size in the request is not valid."""

    code = "invalid_object"


class TooManyObjects(PayloadTooLarge):
    """More objects in one batch than the server accepts."""

    code = "too_many_objects"


# --- requests ----------------------------------------------------------------------------------


def check_content_type(header: str | None) -> None:
    """Accept the LFS media type (and plain JSON) with any parameters, e.g. ``; charset=utf-8``.

    A missing Content-Type is tolerated: the body is still parsed as JSON.
    """
    if not header:
        return
    media = header.split(";", 1)[0].strip().lower()
    if media not in ACCEPTED_REQUEST_TYPES:
        raise UnsupportedMediaType(f"Content-Type must be {MEDIA_TYPE}, got {media[:80]!r}")


def valid_oid(oid: Any) -> bool:
    return isinstance(oid, str) and _OID.fullmatch(oid) is not None


def check_oid(oid: Any) -> str:
    if not valid_oid(oid):
        raise InvalidObject(f"invalid oid {str(oid)[:80]!r}: expected 64 lowercase hex digits")
    return oid


def check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidObject(f"invalid size {str(size)[:40]!r}: expected an integer >= 0")
    return size


def _mapping(raw: Any, what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadRequest(f"{what} must be a JSON object", code="malformed_json")
    return raw


def _ref_name(raw: Any) -> str | None:
    """The optional ``{"ref": {"name": ...}}`` of batch and lock requests."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("name", ""), str):
        raise Unprocessable("ref must be an object with a string name", code="invalid_ref")
    return raw.get("name") or None


@dataclass(frozen=True, slots=True)
class BatchObject:
    oid: str
    size: int


@dataclass(frozen=True, slots=True)
class BatchRequest:
    operation: str  # "upload" | "download"
    objects: list[BatchObject]
    ref: str | None = None


def parse_batch(raw: Any) -> BatchRequest:
    """Validate a Batch API request body (already decoded JSON)."""
    body = _mapping(raw, "batch request")
    operation = body.get("operation")
    if operation not in ("upload", "download"):
        raise Unprocessable(
            f"operation must be 'upload' or 'download', got {str(operation)[:40]!r}",
            code="invalid_operation",
        )
    transfers = body.get("transfers")
    if transfers is not None:
        if not isinstance(transfers, list) or not all(isinstance(t, str) for t in transfers):
            raise Unprocessable("transfers must be a list of strings", code="invalid_transfers")
        if transfers and "basic" not in transfers:
            raise Unprocessable(
                "only the 'basic' transfer adapter is supported", code="unsupported_transfer"
            )
    hash_algo = body.get("hash_algo", "sha256")
    if hash_algo != "sha256":
        # batch.md: a server that does not support the requested hash algorithm answers 409.
        raise Conflict(
            f"hash algorithm {str(hash_algo)[:40]!r} is not supported (only sha256)",
            code="unsupported_hash_algo",
        )
    objects = body.get("objects")
    if not isinstance(objects, list):
        raise Unprocessable("objects must be a list", code="invalid_object")
    if len(objects) > MAX_BATCH_OBJECTS:
        raise TooManyObjects(
            f"{len(objects)} objects in one batch; at most {MAX_BATCH_OBJECTS} are accepted"
        )
    parsed: list[BatchObject] = []
    for item in objects:
        if not isinstance(item, dict):
            raise InvalidObject("each object must be a JSON object with oid and size")
        parsed.append(BatchObject(check_oid(item.get("oid")), check_size(item.get("size"))))
    return BatchRequest(operation=operation, objects=parsed, ref=_ref_name(body.get("ref")))


def parse_verify(raw: Any) -> BatchObject:
    body = _mapping(raw, "verify request")
    return BatchObject(check_oid(body.get("oid")), check_size(body.get("size")))


def parse_lock_create(raw: Any) -> tuple[str, str | None]:
    """(path, ref) of a create-lock request."""
    body = _mapping(raw, "lock request")
    path = body.get("path")
    if not isinstance(path, str) or not path:
        raise Unprocessable("path must be a non-empty string", code="invalid_path")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_LOCK_PATH_BYTES:
        raise Unprocessable(f"path is longer than {MAX_LOCK_PATH_BYTES} bytes", code="invalid_path")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise Unprocessable("path must not contain control characters", code="invalid_path")
    return path, _ref_name(body.get("ref"))


def parse_unlock(raw: Any) -> tuple[bool, str | None]:
    """(force, ref) of an unlock request; an empty body means no force."""
    body = _mapping(raw if raw is not None else {}, "unlock request")
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise Unprocessable("force must be true or false", code="invalid_force")
    return force, _ref_name(body.get("ref"))


def _limit(value: Any) -> int:
    if value is None or value == "":
        return DEFAULT_LOCK_LIMIT
    number = semantics.ascii_uint(value) if isinstance(value, str) else value
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise BadRequest(f"limit must be a positive integer, got {str(value)[:20]!r}",
                         code="invalid_limit")
    return min(number, MAX_LOCK_LIMIT)


@dataclass(frozen=True, slots=True)
class LockQuery:
    path: str | None = None
    lock_id: str | None = None
    cursor: str | None = None
    limit: int = DEFAULT_LOCK_LIMIT
    ref: str | None = None


def parse_lock_list(query: dict[str, str]) -> LockQuery:
    """GET /locks?path=&id=&cursor=&limit=&refspec= (empty values mean "no filter")."""
    return LockQuery(
        path=query.get("path") or None,
        lock_id=query.get("id") or None,
        cursor=query.get("cursor") or None,
        limit=_limit(query.get("limit")),
        ref=query.get("refspec") or None,
    )


def parse_lock_verify(raw: Any) -> LockQuery:
    body = _mapping(raw if raw is not None else {}, "lock verify request")
    cursor = body.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise BadRequest("cursor must be a string", code="invalid_cursor")
    return LockQuery(cursor=cursor or None, limit=_limit(body.get("limit")),
                     ref=_ref_name(body.get("ref")))


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The download's Range, as every role reads it (`arkor.web.semantics.parse_range`)."""
    return semantics.parse_range(header, size)


# --- responses ---------------------------------------------------------------------------------


def action(href: str, headers: dict[str, str], expires_in: int) -> dict[str, Any]:
    return {"href": href, "header": headers, "expires_in": expires_in}


def object_ok(obj: BatchObject, actions: dict[str, Any] | None) -> dict[str, Any]:
    """A batch result; `actions` None means "nothing to do" (upload of an object already stored)."""
    out: dict[str, Any] = {"oid": obj.oid, "size": obj.size, "authenticated": True}
    if actions:
        out["actions"] = actions
    return out


def object_error(obj: BatchObject, code: int, message: str) -> dict[str, Any]:
    return {"oid": obj.oid, "size": obj.size, "error": {"code": code, "message": message}}


def batch_response(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}


def iso8601(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def lock_json(lock: LfsLock) -> dict[str, Any]:
    return {
        "id": lock.id,
        "path": lock.path,
        "locked_at": iso8601(lock.locked_at),
        "owner": {"name": lock.owner},
    }


def error_body(exc: ArkorError, request_id: str, **extra: Any) -> dict[str, Any]:
    """The LFS error shape (message, request_id) plus Arkor's stable code."""
    return {
        "message": exc.message,
        "request_id": request_id,
        "error": {"code": exc.code, "message": exc.message},
        **extra,
    }


def split_locks(locks: list[LfsLock], owner: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(ours, theirs) for /locks/verify."""
    ours = [lock_json(lk) for lk in locks if lk.owner == owner]
    theirs = [lock_json(lk) for lk in locks if lk.owner != owner]
    return ours, theirs
