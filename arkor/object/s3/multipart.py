"""S3 multipart uploads: Create, UploadPart, Complete (with If-None-Match / If-Match), Abort,
ListParts, ListMultipartUploads. UploadPartCopy lives in `copy`.

Parts are stored by `ObjectService.upload_part` through the same verified body pipeline as
PutObject; Complete commits the listed parts as one object in one registry transaction.
"""

from __future__ import annotations

from typing import Any

from arkor.model import MultipartUpload
from arkor.object.s3.buckets import check_canned_acl
from arkor.object.s3.context import OWNER_ID, S3Call, S3Context, iso_time, quoted, xml_reply
from arkor.object.s3.errors import S3Error
from arkor.object.s3.objects import UploadBody, write_conditions
from arkor.object.s3.xmlutil import parse_xml
from arkor.web.asgi import Response

MAX_PARTS = 10_000
COMPLETE_XML_LIMIT = 2 * 1024 * 1024  # 10,000 parts of ~150 bytes each
OWNER = [("ID", OWNER_ID), ("DisplayName", OWNER_ID)]


def part_number(call: S3Call) -> int:
    raw = call.query.get("partNumber", "")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PARTS:
        raise S3Error("InvalidArgument", f"partNumber must be an integer 1-{MAX_PARTS}", 400)
    return int(raw)


async def upload_for(ctx: S3Context, call: S3Call) -> MultipartUpload:
    """The upload named by ?uploadId=, which must be for this bucket and key."""
    upload = await ctx.registry.get_multipart(call.query["uploadId"])
    if (upload.bucket, upload.key) != (call.bucket, call.key):
        raise S3Error("NoSuchUpload", "the upload does not exist for this bucket and key", 404)
    return upload


async def create(ctx: S3Context, call: S3Call) -> Response:
    call.allow("write")
    check_canned_acl(call)
    metadata = call.stored_metadata(ctx)
    await ctx.registry.list_objects(call.bucket, limit=1)  # NoSuchBucket when absent
    upload = await ctx.registry.create_multipart(
        call.bucket, call.key, call.headers.get("content-type", "binary/octet-stream"), metadata
    )
    return xml_reply("InitiateMultipartUploadResult", [
        ("Bucket", call.bucket), ("Key", call.key), ("UploadId", upload.upload_id),
    ])


async def upload_part(ctx: S3Context, call: S3Call) -> Response:
    call.allow("write")
    number = part_number(call)
    body = UploadBody(ctx, call)
    part = await ctx.service.upload_part(
        call.bucket, call.key, call.query["uploadId"], number, body.stream(), size=body.size,
        content_md5=body.content_md5, sha256=body.sha256,
    )
    return Response(status=200, headers=[("etag", quoted(part.etag)), *body.checksum_headers()])


async def list_parts(ctx: S3Context, call: S3Call) -> Response:
    call.allow("read")
    upload = await upload_for(ctx, call)
    q = call.query
    marker_raw, max_raw = q.get("part-number-marker", "0"), q.get("max-parts", "1000")
    if not marker_raw.isdigit() or not max_raw.isdigit():
        raise S3Error("InvalidArgument", "part-number-marker and max-parts must be integers", 400)
    marker, limit = int(marker_raw), min(int(max_raw), 1000)
    parts = [p for p in await ctx.registry.list_parts(upload.upload_id) if p.part_number > marker]
    parts.sort(key=lambda p: p.part_number)
    shown, truncated = parts[:limit], len(parts) > limit
    children: list[Any] = [
        ("Bucket", call.bucket), ("Key", call.key), ("UploadId", upload.upload_id),
        ("Initiator", OWNER), ("Owner", OWNER), ("StorageClass", "STANDARD"),
        ("PartNumberMarker", marker),
        ("NextPartNumberMarker", shown[-1].part_number if shown else marker),
        ("MaxParts", limit), ("IsTruncated", truncated),
    ]
    children += [("Part", [("PartNumber", p.part_number), ("LastModified", iso_time(p.modified)),
                           ("ETag", quoted(p.etag)), ("Size", p.size)]) for p in shown]
    return xml_reply("ListPartsResult", children)


async def list_uploads(ctx: S3Context, call: S3Call) -> Response:
    call.allow("read")
    q = call.query
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    key_marker, id_marker = q.get("key-marker", ""), q.get("upload-id-marker", "")
    max_raw = q.get("max-uploads", "1000")
    if not max_raw.isdigit():
        raise S3Error("InvalidArgument", "max-uploads must be an integer", 400)
    limit = min(int(max_raw), 1000)
    await ctx.registry.list_objects(call.bucket, limit=1)  # NoSuchBucket when absent
    uploads = sorted(await ctx.registry.list_multipart(call.bucket),
                     key=lambda u: (u.key, u.created, u.upload_id))
    entries: list[Any] = []
    prefixes: list[str] = []
    truncated = False
    last: MultipartUpload | None = None
    for u in uploads:
        if not u.key.startswith(prefix):
            continue
        if key_marker and (u.key < key_marker or (u.key == key_marker and (
                not id_marker or u.upload_id <= id_marker))):
            continue
        if delimiter:
            at = u.key.find(delimiter, len(prefix))
            if at >= 0:
                common = u.key[: at + len(delimiter)]
                if common not in prefixes:
                    prefixes.append(common)
                continue
        if len(entries) >= limit:
            truncated = True
            break
        last = u
        entries.append(("Upload", [
            ("Key", u.key), ("UploadId", u.upload_id), ("Initiator", OWNER), ("Owner", OWNER),
            ("StorageClass", "STANDARD"), ("Initiated", iso_time(u.created)),
        ]))
    children: list[Any] = [
        ("Bucket", call.bucket), ("KeyMarker", key_marker), ("UploadIdMarker", id_marker),
        ("NextKeyMarker", last.key if last and truncated else ""),
        ("NextUploadIdMarker", last.upload_id if last and truncated else ""),
        ("Prefix", prefix), ("MaxUploads", limit), ("IsTruncated", truncated),
    ]
    if delimiter:
        children.append(("Delimiter", delimiter))
    children += entries
    children += [("CommonPrefixes", [("Prefix", p)]) for p in prefixes]
    return xml_reply("ListMultipartUploadsResult", children)


async def abort(ctx: S3Context, call: S3Call) -> Response:
    call.allow("write")
    upload = await upload_for(ctx, call)
    await ctx.registry.abort_multipart(upload.upload_id)
    return Response(status=204)


def parse_complete(body: bytes) -> list[tuple[int, str]]:
    """The (PartNumber, ETag) list of a CompleteMultipartUpload body, in ascending order."""
    root = parse_xml(body, max_bytes=COMPLETE_XML_LIMIT)
    if root.tag != "CompleteMultipartUpload":
        raise S3Error("MalformedXML", "expected a CompleteMultipartUpload document", 400)
    parts: list[tuple[int, str]] = []
    for el in root.findall("Part"):
        number, etag = (el.findtext("PartNumber") or "").strip(), (el.findtext("ETag") or "").strip()
        if not number.isdigit() or not etag or not 1 <= int(number) <= MAX_PARTS:
            raise S3Error("MalformedXML", "each Part needs a PartNumber 1-10000 and an ETag", 400)
        parts.append((int(number), etag))
    if not parts:
        raise S3Error("MalformedXML", "a CompleteMultipartUpload needs at least one Part", 400)
    numbers = [n for n, _ in parts]
    if numbers != sorted(set(numbers)):
        raise S3Error("InvalidPartOrder", "parts must be listed in ascending order, once each", 400)
    return parts


async def complete(ctx: S3Context, call: S3Call) -> Response:
    call.allow("write")
    if_match, if_none_match = write_conditions(call)
    parts = parse_complete(await call.read_control_body(ctx, COMPLETE_XML_LIMIT))
    await upload_for(ctx, call)
    await ctx.registry.list_objects(call.bucket, limit=1)  # deleted meanwhile: NoSuchBucket
    record = await ctx.service.complete_multipart(
        call.bucket, call.key, call.query["uploadId"], parts,
        if_match=if_match, if_none_match=if_none_match,
    )
    host = call.headers.get("host", "")
    return xml_reply("CompleteMultipartUploadResult", [
        ("Location", f"http://{host}/{call.bucket}/{call.key}"), ("Bucket", call.bucket),
        ("Key", call.key), ("ETag", quoted(record.etag)),
    ])
