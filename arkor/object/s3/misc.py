"""The small S3 operations clients send around the main ones: Get/Put{Bucket,Object}Acl (the
owner has full control, nothing else can be expressed), GetBucketVersioning (never enabled) and
DeleteObjects (batch, quiet mode).
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

import trio

from arkor.errors import ArkorError
from arkor.object.s3.buckets import check_canned_acl
from arkor.object.s3.checksums import UploadChecksums
from arkor.object.s3.context import (
    OWNER_ID,
    XML_TYPE,
    S3Call,
    S3Context,
    to_s3_error,
    xml_reply,
)
from arkor.object.s3.errors import S3Error
from arkor.object.s3.xmlutil import parse_xml
from arkor.web.asgi import Response

MAX_DELETE_KEYS = 1000
DELETE_XML_LIMIT = 2 * 1024 * 1024
DELETE_CONCURRENCY = 8


async def _exists(ctx: S3Context, call: S3Call) -> None:
    if call.key:
        await ctx.service.head(call.bucket, call.key)
    else:
        await ctx.registry.list_objects(call.bucket, limit=1)


async def get_acl(ctx: S3Context, call: S3Call) -> Response:
    call.allow("read")
    await _exists(ctx, call)
    owner = escape(OWNER_ID)
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Owner><ID>{owner}</ID><DisplayName>{owner}</DisplayName></Owner><AccessControlList>"
        '<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:type="CanonicalUser"><ID>{owner}</ID><DisplayName>{owner}</DisplayName></Grantee>'
        "<Permission>FULL_CONTROL</Permission></Grant></AccessControlList></AccessControlPolicy>"
    )
    return Response(status=200, headers=[("content-type", XML_TYPE)], body=body.encode())


async def put_acl(ctx: S3Context, call: S3Call) -> Response:
    """Accepted when it says what Arkor does (owner full control only), else 501."""
    call.allow("write")
    check_canned_acl(call)
    body = await call.read_control_body(ctx, 64 * 1024)
    if body.strip():
        root = parse_xml(body, max_bytes=64 * 1024)
        for grant in root.iter("Grant"):
            if (grant.findtext("Permission") or "").strip() != "FULL_CONTROL":
                raise S3Error("NotImplemented", "only the owner's FULL_CONTROL grant is supported", 501)
            if grant.find("Grantee/URI") is not None or grant.find("Grantee/EmailAddress") is not None:
                raise S3Error("NotImplemented", "grants to groups or other users are not supported", 501)
    await _exists(ctx, call)
    return Response(status=200)


async def get_versioning(ctx: S3Context, call: S3Call) -> Response:
    call.allow("read")
    await _exists(ctx, call)
    return xml_reply("VersioningConfiguration", [])


def parse_delete(body: bytes) -> tuple[list[str], bool]:
    root = parse_xml(body, max_bytes=DELETE_XML_LIMIT)
    if root.tag != "Delete":
        raise S3Error("MalformedXML", "expected a Delete document", 400)
    quiet = (root.findtext("Quiet") or "").strip().lower() == "true"
    keys: list[str] = []
    for el in root.findall("Object"):
        key = el.findtext("Key")
        if not key:
            raise S3Error("MalformedXML", "each Object needs a Key", 400)
        version = el.findtext("VersionId")
        if version not in (None, "", "null"):
            raise S3Error("NotImplemented", "Arkor buckets are unversioned", 501)
        keys.append(key)
    if not keys:
        raise S3Error("MalformedXML", "a Delete needs at least one Object", 400)
    if len(keys) > MAX_DELETE_KEYS:
        raise S3Error("MalformedXML", f"at most {MAX_DELETE_KEYS} keys per DeleteObjects", 400)
    return keys, quiet


async def delete_objects(ctx: S3Context, call: S3Call) -> Response:
    call.allow("write")
    checks = UploadChecksums.from_headers(call.headers)
    body = await call.read_control_body(ctx, DELETE_XML_LIMIT)
    checks.update(body)
    checks.verify({})
    keys, quiet = parse_delete(body)
    await ctx.registry.list_objects(call.bucket, limit=1)  # NoSuchBucket when absent
    outcome: dict[str, S3Error | None] = {}
    limiter = trio.CapacityLimiter(DELETE_CONCURRENCY)

    async def delete_one(key: str) -> None:
        async with limiter:
            try:
                await ctx.service.delete(call.bucket, key)
                outcome[key] = None
            except ArkorError as exc:
                outcome[key] = None if exc.code == "no_such_key" else to_s3_error(exc)

    async with trio.open_nursery() as nursery:
        for key in dict.fromkeys(keys):
            nursery.start_soon(delete_one, key)
    children: list[Any] = []
    for key in dict.fromkeys(keys):
        err = outcome.get(key)
        if err is None:
            if not quiet:
                children.append(("Deleted", [("Key", key)]))
        else:
            children.append(("Error", [("Key", key), ("Code", err.code), ("Message", err.message)]))
    return xml_reply("DeleteResult", children)
