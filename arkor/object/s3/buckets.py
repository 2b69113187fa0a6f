"""S3 bucket operations: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation.

Buckets are explicit on S3 (an empty bucket exists; writes to a missing bucket are NoSuchBucket),
while the v1 API still creates a bucket on first write: both see the same registry buckets.
"""

from __future__ import annotations

import ipaddress
import re
from xml.sax.saxutils import escape

from arkor.object.s3.context import (
    OWNER_ID,
    XML_TYPE,
    S3Call,
    S3Context,
    iso_time,
    xml_reply,
)
from arkor.object.s3.errors import S3Error
from arkor.object.s3.xmlutil import parse_xml
from arkor.web.asgi import Response

_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Canned ACLs that describe what Arkor does (the owner has full control, nobody else has access).
PRIVATE_ACLS = frozenset({"private", "bucket-owner-full-control"})


def check_s3_bucket_name(name: str) -> None:
    """S3's naming rules for new buckets (existing v1 buckets keep working under their names)."""
    bad = (
        not _S3_BUCKET.fullmatch(name)
        or ".." in name or ".-" in name or "-." in name
        or name.startswith("xn--") or name.endswith("-s3alias")
    )
    if not bad:
        try:
            ipaddress.ip_address(name)
            bad = True
        except ValueError:
            pass
    if bad:
        raise S3Error("InvalidBucketName", f"{name[:80]!r} is not a valid S3 bucket name: 3-63 "
                      "characters of a-z 0-9 . -, starting and ending with a letter or digit", 400)


def check_canned_acl(call: S3Call) -> None:
    acl = call.headers.get("x-amz-acl")
    if acl is not None and acl.strip() not in PRIVATE_ACLS:
        raise S3Error("NotImplemented", f"canned ACL {acl[:40]!r}: Arkor objects are private to "
                      "their owner (only private and bucket-owner-full-control)", 501)
    for name in call.headers:
        if name.startswith("x-amz-grant-"):
            raise S3Error("NotImplemented", f"{name}: grants are not supported", 501)


async def list_buckets(ctx: S3Context, call: S3Call) -> Response:
    infos = await ctx.registry.list_buckets()
    visible = [b for b in infos if call.principal.may("read", b.name)]
    return xml_reply("ListAllMyBucketsResult", [
        ("Owner", [("ID", OWNER_ID), ("DisplayName", OWNER_ID)]),
        ("Buckets", [
            ("Bucket", [("Name", b.name), ("CreationDate", iso_time(b.created))]) for b in visible
        ]),
    ])


async def create_bucket(ctx: S3Context, call: S3Call) -> Response:
    call.allow("write")
    check_s3_bucket_name(call.bucket)
    check_canned_acl(call)
    body = await call.read_control_body(ctx)
    if body.strip():
        root = parse_xml(body, max_bytes=64 * 1024)
        wanted = (root.findtext("LocationConstraint") or "").strip()
        if wanted and wanted != ctx.config.s3.region:
            raise S3Error("InvalidLocationConstraint",
                          f"this endpoint serves region {ctx.config.s3.region}, not {wanted[:40]}", 400)
    if not await ctx.registry.create_bucket(call.bucket):
        raise S3Error("BucketAlreadyOwnedByYou", f"bucket {call.bucket} already exists", 409)
    return Response(status=200, headers=[("location", f"/{call.bucket}")])


async def head_bucket(ctx: S3Context, call: S3Call) -> Response:
    call.allow("read")
    await ctx.registry.list_objects(call.bucket, limit=1)  # NoSuchBucket when absent
    return Response(status=200, headers=[("x-amz-bucket-region", ctx.config.s3.region)])


async def delete_bucket(ctx: S3Context, call: S3Call) -> Response:
    call.allow("write")
    await ctx.registry.delete_bucket(call.bucket)
    return Response(status=204)


async def get_location(ctx: S3Context, call: S3Call) -> Response:
    call.allow("read")
    await ctx.registry.list_objects(call.bucket, limit=1)
    region = ctx.config.s3.region
    text = "" if region == "us-east-1" else escape(region)  # S3 answers us-east-1 as empty
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint '
            f'xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{text}</LocationConstraint>')
    return Response(status=200, headers=[("content-type", XML_TYPE)], body=body.encode())
