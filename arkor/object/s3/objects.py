"""S3 object operations: PutObject, GetObject / HeadObject, DeleteObject, and the upload body
pipeline that PutObject and UploadPart share.

The body pipeline is what keeps "nothing stored" true: the transfer engine pulls from a generator
that pulls from the aws-chunked decoder (framing never reaches storage), updates the checksums and
verifies them (and the trailers) after the last byte, before the engine finishes; a raised
S3Error fails the upload, so its fragments are discarded and no manifest is committed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import trio

from arkor.model import PARTS_META, ObjectRecord, parse_part_layout
from arkor.object.http import NotModified, check_read_conditions, parse_range
from arkor.object.s3.buckets import check_canned_acl
from arkor.object.s3.checksums import UploadChecksums
from arkor.object.s3.chunked import decoder_for
from arkor.object.s3.context import (
    CHECKSUM_META,
    S3Call,
    S3Context,
    object_headers,
    quoted,
    stored_headers,
    user_metadata,
)
from arkor.object.s3.errors import S3Error
from arkor.transfer.engine import THREAD_HASH_THRESHOLD
from arkor.web.asgi import Response

HASH_BATCH = 1024 * 1024
# aws-chunked framing adds a few dozen bytes per chunk: allow for it on top of the object limit.
FRAMING_ALLOWANCE = 1 / 64
OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}


class UploadBody:
    """The payload of an S3 upload: decoded, checksummed and verified as it streams.

    Content-MD5 and a signed payload's SHA-256 are left to the transfer engine (it computes the
    MD5 for the ETag anyway, and the SHA-256 beside it in a worker thread): `content_md5` and
    `sha256` go to the object service, which refuses a mismatch before committing."""

    def __init__(self, ctx: S3Context, call: S3Call, *,
                 record_checksums: dict[str, str] | None = None) -> None:
        """`record_checksums`: the metadata dict that receives the verified checksums (the
        service builds the object's record from it only after the body is consumed)."""
        headers = call.headers
        self.record_checksums = record_checksums
        self.checks = UploadChecksums.from_headers(headers, md5=False, sha256=False)
        self.content_md5 = self.checks.content_md5
        self.sha256 = self.checks.content_sha256
        self.verified: dict[str, str] = {}
        self.decoder = decoder_for(headers, call.identity)
        declared = call.request.content_length
        if self.decoder is not None:
            self.size: int | None = int(headers["x-amz-decoded-content-length"].strip())
            limit = ctx.max_object + int(ctx.max_object * FRAMING_ALLOWANCE) + 65536
        else:
            if declared is None and "chunked" not in headers.get("transfer-encoding", "").lower():
                raise S3Error("MissingContentLength", "send Content-Length", 411)
            self.size = declared
            limit = ctx.max_object
        if self.size is not None and self.size > ctx.max_object:
            raise S3Error("EntityTooLarge", f"{self.size} bytes exceeds the limit of "
                          f"{ctx.max_object}", 400)
        self._raw = call.request.body_chunks(max_size=limit, chunk_timeout=ctx.body_timeout)
        self._limiter = ctx.service.engine.hash_limiter

    async def stream(self) -> AsyncIterator[bytes]:
        source: Any = self._raw if self.decoder is None else self.decoder.decode(self._raw)
        if not self.checks.active:
            async for chunk in source:
                yield chunk
        else:
            # Checksums run in a worker thread over batches (beside the engine's MD5, off the
            # loop); at most HASH_BATCH bytes wait here, so memory stays bounded.
            batch: list[bytes] = []
            size = 0
            async for chunk in source:
                batch.append(chunk)
                size += len(chunk)
                if size >= HASH_BATCH:
                    await self._hash(batch, size)
                    for piece in batch:
                        yield piece
                    batch, size = [], 0
            if batch:
                await self._hash(batch, size)
                for piece in batch:
                    yield piece
        trailers = self.decoder.trailers if self.decoder is not None else {}
        self.verified = self.checks.verify(trailers)
        if self.record_checksums is not None:
            for name, value in self.verified.items():
                self.record_checksums[CHECKSUM_META + name] = value

    async def _hash(self, batch: list[bytes], size: int) -> None:
        def update() -> None:
            for piece in batch:
                self.checks.update(piece)

        if size < THREAD_HASH_THRESHOLD:
            update()
        else:
            await trio.to_thread.run_sync(update, limiter=self._limiter)

    def checksum_headers(self) -> list[tuple[str, str]]:
        return [(f"x-amz-checksum-{name}", value) for name, value in sorted(self.verified.items())]


def write_conditions(call: S3Call) -> tuple[str | None, bool]:
    """(If-Match, If-None-Match: *) of a conditional write (Terraform/OpenTofu state locks)."""
    inm = call.headers.get("if-none-match")
    if inm is not None and inm.strip() != "*":
        raise S3Error("NotImplemented", "writes support only If-None-Match: *", 501)
    return call.headers.get("if-match"), inm is not None


async def put_object(ctx: S3Context, call: S3Call) -> Response:
    call.allow("write")
    check_canned_acl(call)
    metadata = user_metadata(call.headers, ctx.max_meta)
    metadata.update(stored_headers(call.headers))
    if_match, if_none_match = write_conditions(call)
    upload = UploadBody(ctx, call, record_checksums=metadata)
    if upload.size is None or upload.size > ctx.config.object.fragmentSize:
        # A large body to a missing bucket: say so before it is sent (the commit checks again).
        await ctx.registry.list_objects(call.bucket, limit=1)
    record = await ctx.service.put(
        call.bucket, call.key, upload.stream(),
        size=upload.size,
        content_md5=upload.content_md5,
        sha256=upload.sha256,
        content_type=call.headers.get("content-type", "binary/octet-stream"),
        metadata=metadata,
        if_match=if_match,
        if_none_match=if_none_match,
        create_bucket=False,
    )
    return Response(status=200, headers=[("etag", quoted(record.etag)),
                                         *upload.checksum_headers()])


async def get_object(ctx: S3Context, call: S3Call) -> Response:
    call.allow("read")
    record = await ctx.service.head(call.bucket, call.key)
    try:
        check_read_conditions(call.headers, record)
    except NotModified as exc:
        return Response(status=304, headers=list(exc.headers.items()))
    start, end = 0, record.size - 1
    status = 200
    extra: list[tuple[str, str]] = []
    part = call.query.get("partNumber")
    span = parse_range(call.headers.get("range"), record.size)
    if part is not None:
        if span is not None:
            raise S3Error("InvalidRequest", "Range and partNumber cannot be combined", 400)
        span, count = part_span(record, part)
        if count > 1 or span != (0, record.size - 1):
            status = 206
        extra.append(("x-amz-mp-parts-count", str(count)))
    elif span is not None:
        status = 206
    if span is not None:
        start, end = span
        if status == 206:
            extra.append(("content-range", f"bytes {start}-{end}/{record.size}"))
    whole = status == 200
    checksum_mode = call.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED"
    headers = object_headers(record, checksums=checksum_mode and whole)
    headers += extra
    overrides = {OVERRIDES[k]: v for k, v in call.query.items() if k in OVERRIDES}
    for name, value in overrides.items():
        if not value.isprintable() or not value.isascii():
            raise S3Error("InvalidArgument", f"response-{name} must be printable ASCII", 400)
    if overrides:
        headers = [(k, v) for k, v in headers if k not in overrides] + list(overrides.items())
    length = end - start + 1 if record.size else 0
    headers.append(("content-length", str(length)))
    if call.request.method == "HEAD" or length == 0:
        return Response(status=status, headers=headers, body=b"")
    # Opened by send_response before the status line: no replica for the first fragment is a 503.
    return Response(status=status, headers=headers, body=ctx.service.open_read(record, start, end))


def part_span(record: ObjectRecord, raw: str) -> tuple[tuple[int, int], int]:
    """((start, end), parts count) of part `raw` of an object. Objects from a single PUT have
    one part; multipart objects keep their part sizes in the ":parts" system metadata."""
    if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
        raise S3Error("InvalidArgument", "partNumber must be an integer 1-10000", 400)
    number = int(raw)
    sizes = part_sizes(record)
    if number > len(sizes):
        raise S3Error("InvalidPartNumber", f"the object has {len(sizes)} parts", 416,
                      headers={"content-range": f"bytes */{record.size}"})
    start = sum(sizes[: number - 1])
    return (start, start + sizes[number - 1] - 1), len(sizes)


def part_sizes(record: ObjectRecord) -> list[int]:
    layout = record.metadata.get(PARTS_META)
    sizes = parse_part_layout(layout) if layout else None
    if sizes is None or sum(sizes) != record.size:
        if "-" in record.etag:
            raise S3Error("NotImplemented", "this multipart object has no part layout "
                          "(over 2048 characters): partNumber is not available", 501)
        return [record.size]
    return sizes


async def delete_object(ctx: S3Context, call: S3Call) -> Response:
    call.allow("write")
    from arkor.errors import NotFound

    try:
        await ctx.service.delete(call.bucket, call.key)
    except NotFound as exc:
        if exc.code != "no_such_key":
            raise
    return Response(status=204)
