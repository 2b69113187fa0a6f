"""What every S3 operation module shares: the request as S3 sees it, replies, and the mapping of
Arkor errors and objects onto S3's codes and headers.

Lives here: `S3Context` (service, registry, limits), `S3Call` (one parsed request: bucket, key,
principal, request id), XML replies, S3 object headers, `x-amz-meta-*` parsing, and the
ArkorError -> S3Error mapping. Not here: protocol logic (SigV4, aws-chunked, checksums: their own
modules), routing (`server`), operations (one module per group).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from arkor.errors import ArkorError
from arkor.model import ObjectRecord
from arkor.object.app import ObjectContext
from arkor.object.auth import Principal
from arkor.object.http import http_date, prefixed_metadata
from arkor.object.lfs.storage import LFS_BUCKET, lfs_repo_of_key
from arkor.object.s3.errors import S3Error
from arkor.object.s3.xmlutil import xml_document
from arkor.web.asgi import Request, Response

# Object metadata keys that are not user metadata start with this (not a valid header-name
# character, so neither `x-amz-meta-*` nor `x-arkor-meta-*` can produce or forge them).
SYSTEM_META = ":"
CHECKSUM_META = SYSTEM_META + "checksum-"
# Content headers S3 stores with an object and returns on GET/HEAD.
STORED_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language",
                  "expires")
AMZ_META = "x-amz-meta-"
_META_NAME = re.compile(r"[a-z0-9_.-]{1,128}")
OWNER_ID = "arkor"
CONTROL_BODY_LIMIT = 1024 * 1024
XML_TYPE = "application/xml"


@dataclass
class S3Context(ObjectContext):
    """The object server's context (config, service, registry, auth) with the limits S3 checks."""

    @property
    def max_object(self) -> int:
        return int(self.config.object.maxObjectSize)

    @property
    def max_meta(self) -> int:
        return int(self.config.object.maxMetadataBytes)


@dataclass
class S3Call:
    """One S3 request after routing and authentication."""

    request: Request
    bucket: str
    key: str
    principal: Principal
    request_id: str
    identity: Any = None  # the SigV4Identity, when signed
    headers: dict[str, str] = field(init=False)
    query: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.headers = self.request.headers
        self.query = self.request.query

    @property
    def resource(self) -> str:
        return f"/{self.bucket}/{self.key}" if self.key else f"/{self.bucket}" if self.bucket else "/"

    def allow(self, action: str, bucket: str | None = None, key: str | None = None) -> None:
        """403 AccessDenied unless the caller may `action` ("read" / "write") the bucket; the Git
        LFS bucket is read-only to S3 (its writes check every SHA-256 through the LFS API), and
        reading it needs the object's repository right, or admin for the whole bucket (the same
        rule as v1, arkor/object/auth.py)."""
        target = self.bucket if bucket is None else bucket
        key = self.key if bucket is None and key is None else key
        if target == LFS_BUCKET and action == "read":
            action, target = ("read", lfs_repo_of_key(key)) if key else ("admin", LFS_BUCKET)
        if not self.principal.may(action, target or "*"):
            raise S3Error("AccessDenied", f"{self.principal.name} may not {action} {target}", 403)
        if action == "write" and target == LFS_BUCKET:
            raise S3Error("AccessDenied", f"bucket {LFS_BUCKET} is written only through Git LFS", 403)

    async def read_control_body(self, ctx: S3Context, limit: int = CONTROL_BODY_LIMIT) -> bytes:
        """A small XML body, whole (after the aws-chunked decoding some clients apply)."""
        if self.request.content_length is not None and self.request.content_length > limit:
            raise S3Error("MaxMessageLengthExceeded", f"the request body exceeds {limit} bytes", 400)
        return await self.request.read_body(max_size=limit, chunk_timeout=ctx.body_timeout)

    def stored_metadata(self, ctx: S3Context) -> dict[str, str]:
        """What a write keeps from this request: its x-amz-meta-* and the stored content headers
        (PutObject, CreateMultipartUpload, CopyObject with REPLACE)."""
        return {**user_metadata(self.headers, ctx.max_meta), **stored_headers(self.headers)}


def xml_reply(root: str, children: Any, *, status: int = 200,
              headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status=status, headers=[("content-type", XML_TYPE), *(headers or [])],
                    body=xml_document(root, children))


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def quoted(etag: str) -> str:
    return f'"{etag}"'


def user_metadata(headers: dict[str, str], limit: int) -> dict[str, str]:
    """`x-amz-meta-*` headers as {name: value}; MetadataTooLarge past `limit` bytes."""
    return prefixed_metadata(
        headers, AMZ_META, _META_NAME, limit,
        bad_name=lambda name: S3Error("InvalidArgument",
                                      f"invalid metadata header name {name[:80]!r}", 400),
        too_large=lambda total: S3Error("MetadataTooLarge",
                                        f"metadata is {total} bytes, the limit is {limit}", 400),
    )


def stored_headers(headers: dict[str, str]) -> dict[str, str]:
    """The content headers S3 keeps with an object, as system metadata entries."""
    return {SYSTEM_META + h: headers[h] for h in STORED_HEADERS if h in headers}


def object_headers(record: ObjectRecord, *, checksums: bool = False) -> list[tuple[str, str]]:
    """ETag, Last-Modified, Content-Type, stored content headers, x-amz-meta-* and (asked for
    with x-amz-checksum-mode: ENABLED) the checksums verified at upload."""
    out = [
        ("etag", quoted(record.etag)),
        ("last-modified", http_date(record.modified)),
        ("content-type", record.content_type),
        ("accept-ranges", "bytes"),
    ]
    for name, value in sorted(record.metadata.items()):
        if name.startswith(CHECKSUM_META):
            if checksums:
                out.append(("x-amz-checksum-" + name[len(CHECKSUM_META):], value))
        elif name.startswith(SYSTEM_META):
            out.append((name[len(SYSTEM_META):], value))
        else:
            out.append((AMZ_META + name, value))
    return out


# Arkor's stable codes (docs/specs/API.md) -> S3's code and status.
_CODES: dict[str, tuple[str, int]] = {
    "no_such_bucket": ("NoSuchBucket", 404),
    "no_such_key": ("NoSuchKey", 404),
    "no_such_upload": ("NoSuchUpload", 404),
    "bucket_not_empty": ("BucketNotEmpty", 409),
    "precondition_failed": ("PreconditionFailed", 412),
    "invalid_range": ("InvalidRange", 416),
    "invalid_bucket_name": ("InvalidBucketName", 400),
    "invalid_object_name": ("InvalidArgument", 400),
    "metadata_too_large": ("MetadataTooLarge", 400),
    "payload_too_large": ("EntityTooLarge", 400),
    "incomplete_body": ("IncompleteBody", 400),
    "request_timeout": ("RequestTimeout", 400),
    "invalid_part": ("InvalidPart", 400),
    "invalid_part_order": ("InvalidPartOrder", 400),
    "invalid_part_number": ("InvalidArgument", 400),
    "bad_digest": ("BadDigest", 400),
    "checksum_mismatch": ("XAmzContentSHA256Mismatch", 400),
    "length_required": ("MissingContentLength", 411),
    "method_not_allowed": ("MethodNotAllowed", 405),
    "forbidden": ("AccessDenied", 403),
    "unauthorized": ("AccessDenied", 403),
    "insufficient_storage": ("ServiceUnavailable", 503),
    "slow_down": ("SlowDown", 503),  # upload buffers full (object.uploadBufferBudget)
}
_BY_STATUS: dict[int, str] = {400: "InvalidRequest", 403: "AccessDenied", 404: "NoSuchKey",
                              409: "OperationAborted", 412: "PreconditionFailed",
                              422: "InvalidRequest", 503: "ServiceUnavailable"}


def to_s3_error(exc: ArkorError) -> S3Error:
    """The S3 form of an Arkor error (same meaning, S3's code; 5xx stays 5xx)."""
    code, status = _CODES.get(exc.code, (None, exc.status))
    if code is None:
        code = _BY_STATUS.get(exc.status, "InternalError" if exc.status >= 500 else "InvalidRequest")
        if status == 422:
            status = 400
    headers = {k: v for k, v in exc.headers.items() if k.lower() != "www-authenticate"}
    return S3Error(code, exc.message, status, headers=headers)
