"""S3 listings: ListObjects (v1), ListObjectsV2 and ListObjectVersions (Arkor buckets are
unversioned: every object is its one, latest, "null" version).

All three are one registry page (prefix, delimiter, marker, limit) rendered three ways; the V2
continuation token is the opaque (base64url) form of the marker.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import quote

from arkor.model import ListPage, ObjectRecord
from arkor.object.s3.context import OWNER_ID, S3Call, S3Context, iso_time, quoted, xml_reply
from arkor.object.s3.errors import S3Error
from arkor.web.asgi import Response

MAX_KEYS = 1000
OWNER = ("Owner", [("ID", OWNER_ID), ("DisplayName", OWNER_ID)])


def max_keys(call: S3Call) -> int:
    raw = call.query.get("max-keys", str(MAX_KEYS))
    if not raw.isdigit():
        raise S3Error("InvalidArgument", "max-keys must be a non-negative integer", 400)
    return min(int(raw), MAX_KEYS)


def encoder(call: S3Call) -> Any:
    kind = call.query.get("encoding-type")
    if kind is None:
        return lambda s: s
    if kind != "url":
        raise S3Error("InvalidArgument", "encoding-type must be url", 400)
    return lambda s: quote(s, safe="/") if s else s


async def page(ctx: S3Context, call: S3Call, marker: str, limit: int) -> ListPage:
    call.allow("read")
    prefix, delimiter = call.query.get("prefix", ""), call.query.get("delimiter", "")
    if limit == 0:  # S3 answers max-keys=0 with an empty, untruncated page
        await ctx.registry.list_objects(call.bucket, limit=1)  # NoSuchBucket when absent
        return ListPage([], [], False, None)
    return await ctx.registry.list_objects(
        call.bucket, prefix=prefix, delimiter=delimiter, marker=marker, limit=limit
    )


def _content(o: ObjectRecord, enc: Any, owner: bool) -> tuple[str, list[Any]]:
    fields: list[Any] = [
        ("Key", enc(o.key)), ("LastModified", iso_time(o.modified)), ("ETag", quoted(o.etag)),
        ("Size", o.size),
    ]
    if owner:
        fields.append(OWNER)
    fields.append(("StorageClass", "STANDARD"))
    return ("Contents", fields)


def _common(result: ListPage, enc: Any) -> list[Any]:
    return [("CommonPrefixes", [("Prefix", enc(p))]) for p in result.common_prefixes]


def _next_marker(result: ListPage) -> str:
    if result.next_marker:
        return result.next_marker
    keys = [o.key for o in result.objects] + list(result.common_prefixes)
    return max(keys) if keys else ""


async def list_v1(ctx: S3Context, call: S3Call) -> Response:
    enc = encoder(call)
    limit = max_keys(call)
    marker = call.query.get("marker", "")
    result = await page(ctx, call, marker, limit)
    q = call.query
    children: list[Any] = [
        ("Name", call.bucket), ("Prefix", enc(q.get("prefix", ""))), ("Marker", enc(marker)),
        ("MaxKeys", limit), ("IsTruncated", result.truncated),
    ]
    if "delimiter" in q:
        children.insert(3, ("Delimiter", enc(q["delimiter"])))
    if result.truncated:
        children.append(("NextMarker", enc(_next_marker(result))))
    if "encoding-type" in q:
        children.append(("EncodingType", "url"))
    children += [_content(o, enc, True) for o in result.objects]
    children += _common(result, enc)
    return xml_reply("ListBucketResult", children)


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise S3Error("InvalidArgument", "the continuation token is not valid", 400) from None


async def list_v2(ctx: S3Context, call: S3Call) -> Response:
    enc = encoder(call)
    limit = max_keys(call)
    q = call.query
    token = q.get("continuation-token")
    start_after = q.get("start-after", "")
    marker = _decode_token(token) if token is not None else start_after
    result = await page(ctx, call, marker, limit)
    owner = q.get("fetch-owner", "").lower() == "true"
    children: list[Any] = [("Name", call.bucket), ("Prefix", enc(q.get("prefix", "")))]
    if "delimiter" in q:
        children.append(("Delimiter", enc(q["delimiter"])))
    children += [("MaxKeys", limit), ("KeyCount", len(result.objects) + len(result.common_prefixes)),
                 ("IsTruncated", result.truncated)]
    if token is not None:
        children.append(("ContinuationToken", token))
    if result.truncated:
        nxt = base64.urlsafe_b64encode(_next_marker(result).encode()).decode().rstrip("=")
        children.append(("NextContinuationToken", nxt))
    if "start-after" in q:
        children.append(("StartAfter", enc(start_after)))
    if "encoding-type" in q:
        children.append(("EncodingType", "url"))
    children += [_content(o, enc, owner) for o in result.objects]
    children += _common(result, enc)
    return xml_reply("ListBucketResult", children)


async def list_versions(ctx: S3Context, call: S3Call) -> Response:
    enc = encoder(call)
    limit = max_keys(call)
    q = call.query
    marker = q.get("key-marker", "")
    result = await page(ctx, call, marker, limit)
    children: list[Any] = [
        ("Name", call.bucket), ("Prefix", enc(q.get("prefix", ""))), ("KeyMarker", enc(marker)),
        ("VersionIdMarker", q.get("version-id-marker", "")), ("MaxKeys", limit),
    ]
    if "delimiter" in q:
        children.append(("Delimiter", enc(q["delimiter"])))
    children.append(("IsTruncated", result.truncated))
    if result.truncated:
        children += [("NextKeyMarker", enc(_next_marker(result))), ("NextVersionIdMarker", "null")]
    if "encoding-type" in q:
        children.append(("EncodingType", "url"))
    for o in result.objects:
        children.append(("Version", [
            ("Key", enc(o.key)), ("VersionId", "null"), ("IsLatest", True),
            ("LastModified", iso_time(o.modified)), ("ETag", quoted(o.etag)), ("Size", o.size),
            OWNER, ("StorageClass", "STANDARD"),
        ]))
    children += _common(result, enc)
    return xml_reply("ListVersionsResult", children)
