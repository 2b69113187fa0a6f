"""HTTP details of the v1 API: conditional requests, object headers, user metadata.

Range, ETag and date parsing live in `arkor.web.semantics` (shared by every role)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

from arkor.errors import ArkorError, BadRequest, PreconditionFailed
from arkor.model import ObjectRecord
from arkor.web.semantics import etag_matches, http_date, parse_http_date, parse_range, quote_etag

__all__ = ["NotModified", "check_read_conditions", "content_md5", "object_headers", "parse_range",
           "prefixed_metadata", "user_metadata"]

META_PREFIX = "x-arkor-meta-"
_META_NAME = re.compile(r"[a-z0-9-]{1,128}")


class NotModified(ArkorError):
    """The client's copy is current (304, no body)."""

    status = 304
    code = "not_modified"


def object_headers(record: ObjectRecord) -> list[tuple[str, str]]:
    headers = [
        ("etag", quote_etag(record.etag)),
        ("last-modified", http_date(record.modified)),
        ("content-type", record.content_type),
        ("accept-ranges", "bytes"),
    ]
    # Keys starting with ":" are system metadata of the S3 API (checksums, content headers).
    headers += [(META_PREFIX + k, v) for k, v in sorted(record.metadata.items()) if k[:1] != ":"]
    return headers


def check_read_conditions(headers: dict[str, str], record: ObjectRecord) -> None:
    """RFC 9110 order: If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since."""
    cond_headers = object_headers(record)[:2]
    if_match = headers.get("if-match")
    if if_match is not None and not etag_matches(if_match, record.etag, weak=False):
        raise PreconditionFailed(f"ETag is not {if_match}")
    ius = headers.get("if-unmodified-since")
    if if_match is None and ius is not None:
        when = parse_http_date(ius)
        if when is not None and int(record.modified) > when:
            raise PreconditionFailed("modified since If-Unmodified-Since")
    inm = headers.get("if-none-match")
    if inm is not None:
        if etag_matches(inm, record.etag):
            raise NotModified("not modified", headers=dict(cond_headers))
        return
    ims = headers.get("if-modified-since")
    if ims is not None:
        when = parse_http_date(ims)
        if when is not None and int(record.modified) <= when:
            raise NotModified("not modified", headers=dict(cond_headers))


def user_metadata(headers: dict[str, str], limit: int) -> dict[str, str]:
    """`X-Arkor-Meta-<name>` headers as {name: value}; 400 metadata_too_large past `limit` bytes."""
    return prefixed_metadata(
        headers, META_PREFIX, _META_NAME, limit,
        bad_name=lambda name: BadRequest(f"invalid metadata header name {name[:80]!r}",
                                         code="invalid_metadata"),
        too_large=lambda total: BadRequest(f"user metadata is {total} bytes, the limit is {limit}",
                                           code="metadata_too_large"),
    )


def prefixed_metadata(
    headers: dict[str, str],
    prefix: str,
    valid_name: re.Pattern[str],
    limit: int,
    *,
    bad_name: Callable[[str], Exception],
    too_large: Callable[[int], Exception],
) -> dict[str, str]:
    """The metadata of the headers named `prefix` + name, as {name: value}, for the v1 and the S3
    API (each with its own prefix, names and errors): a name `valid_name` refuses raises
    bad_name(header name); names and values over `limit` bytes in all raise too_large(total)."""
    meta: dict[str, str] = {}
    total = 0
    for name, value in headers.items():
        if not name.startswith(prefix):
            continue
        key = name[len(prefix) :]
        if not valid_name.fullmatch(key):
            raise bad_name(name)
        meta[key] = value
        total += len(key) + len(value)
    if total > limit:
        raise too_large(total)
    return meta


def content_md5(headers: dict[str, str]) -> bytes | None:
    value = headers.get("content-md5")
    if value is None:
        return None
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        raise BadRequest("Content-MD5 must be the base64 of a 16-byte MD5 digest", code="bad_digest")
    return digest
