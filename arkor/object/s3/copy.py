"""S3 server-side copies: CopyObject (metadata directive, x-amz-copy-source-if-*) and
UploadPartCopy (with x-amz-copy-source-range). The bytes are re-stored as new fragments by the
object service, so the copy and its source never share needles.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from arkor.errors import ArkorError
from arkor.model import PARTS_META, ObjectRecord
from arkor.names import check_bucket, check_object_key
from arkor.object.http import NotModified, check_read_conditions
from arkor.object.s3.buckets import check_canned_acl
from arkor.object.s3.context import CHECKSUM_META, S3Call, S3Context, iso_time, quoted, xml_reply
from arkor.object.s3.errors import S3Error
from arkor.object.s3.multipart import part_number
from arkor.object.s3.objects import write_conditions
from arkor.web.asgi import Response

_RANGE = re.compile(r"bytes=(\d+)-(\d+)")
_CONDITIONS = {
    "x-amz-copy-source-if-match": "if-match",
    "x-amz-copy-source-if-none-match": "if-none-match",
    "x-amz-copy-source-if-unmodified-since": "if-unmodified-since",
    "x-amz-copy-source-if-modified-since": "if-modified-since",
}


async def copy_source(ctx: S3Context, call: S3Call) -> ObjectRecord:
    """The source object named by x-amz-copy-source, after access and x-amz-copy-source-if-*
    checks (a failed condition is 412 PreconditionFailed, as S3 answers)."""
    raw = call.headers["x-amz-copy-source"]
    path, _, query = raw.partition("?")
    if query and query not in ("versionId=null",):
        raise S3Error("NotImplemented", "Arkor buckets are unversioned: only versionId=null", 501)
    try:
        bucket, sep, key = unquote(path, errors="strict").lstrip("/").partition("/")
        if not sep:
            raise ValueError
        check_bucket(bucket)
        check_object_key(key)
    except (ValueError, UnicodeDecodeError, ArkorError):
        raise S3Error("InvalidArgument", "x-amz-copy-source must be /bucket/key", 400) from None
    call.allow("read", bucket, key)
    source = await ctx.service.head(bucket, key)
    conditions = {std: call.headers[h] for h, std in _CONDITIONS.items() if h in call.headers}
    try:
        check_read_conditions(conditions, source)
    except NotModified:
        raise S3Error("PreconditionFailed", "x-amz-copy-source-if-* did not hold", 412) from None
    return source


async def copy_object(ctx: S3Context, call: S3Call) -> Response:
    call.allow("write")
    check_canned_acl(call)
    if (call.request.content_length or 0) > 0:
        raise S3Error("InvalidRequest", "a copy request has no body", 400)
    _, if_none_match = write_conditions(call)
    source = await copy_source(ctx, call)
    directive = call.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "x-amz-metadata-directive must be COPY or REPLACE", 400)
    # The bytes are the same: checksums verified at upload stay true. A copy is one part.
    kept = {k: v for k, v in source.metadata.items() if k.startswith(CHECKSUM_META)}
    if directive == "REPLACE":
        metadata = {**call.stored_metadata(ctx), **kept}
        content_type = call.headers.get("content-type", "binary/octet-stream")
    else:
        if (source.bucket, source.key) == (call.bucket, call.key):
            raise S3Error("InvalidRequest", "copying an object to itself needs "
                          "x-amz-metadata-directive: REPLACE", 400)
        metadata = {k: v for k, v in source.metadata.items() if k != PARTS_META}
        content_type = source.content_type
    record = await ctx.service.copy(
        source.bucket, source.key, call.bucket, call.key,
        content_type=content_type, metadata=metadata, if_none_match=if_none_match,
        create_bucket=False, source=source,
    )
    return xml_reply("CopyObjectResult", [
        ("LastModified", iso_time(record.modified)), ("ETag", quoted(record.etag)),
    ])


async def upload_part_copy(ctx: S3Context, call: S3Call) -> Response:
    call.allow("write")
    number = part_number(call)
    source = await copy_source(ctx, call)
    start, end = 0, source.size - 1
    spec = call.headers.get("x-amz-copy-source-range")
    if spec is not None:
        match = _RANGE.fullmatch(spec.strip())
        if not match:
            raise S3Error("InvalidArgument", "x-amz-copy-source-range must be bytes=first-last", 400)
        start, end = int(match.group(1)), int(match.group(2))
        if end < start or end >= source.size:
            raise S3Error("InvalidRange", f"the range is outside the source's {source.size} bytes",
                          416, headers={"content-range": f"bytes */{source.size}"})
    async with ctx.service.open_read(source, start, end) as chunks:
        part = await ctx.service.upload_part(
            call.bucket, call.key, call.query["uploadId"], number, chunks,
            size=end - start + 1 if source.size else 0,
        )
    return xml_reply("CopyPartResult", [
        ("LastModified", iso_time(part.modified)), ("ETag", quoted(part.etag)),
    ])
