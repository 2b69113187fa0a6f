"""Object operations on top of the transfer engine and the registry: what the HTTP routes, the Git
LFS routes and the SDK share.

An object becomes visible only through `registry.commit_object`, after every fragment is durable on
every replica and the digests have been checked; any failure before that hands the fragments to the
reclaim queue, so a failed PUT leaves nothing visible and nothing that is not reclaimed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterable
from dataclasses import replace

from arkor.config import Config
from arkor.errors import (
    ArkorError,
    BadRequest,
    BodySizeMismatch,
    PayloadTooLarge,
    PreconditionFailed,
    Unprocessable,
)
from arkor.model import ObjectRecord, PartInfo
from arkor.names import check_bucket, check_object_key
from arkor.object.guards import UploadBudget, paced
from arkor.transfer.contracts import Registry
from arkor.transfer.engine import TransferEngine, UploadResult
from arkor.transfer.placement import ReplicaFactory
from arkor.transfer.reader import RangeReader
from arkor.transfer.registry_calls import MultipartCommit, ObjectCommit, Preconditions
from arkor.transfer.timeouts import Timeouts
from arkor.web.semantics import etag_matches, unquote_etag

log = logging.getLogger(__name__)

MAX_PART_NUMBER = 10_000


class BadDigest(BadRequest):
    """The Content-MD5 does not match the body."""

    code = "bad_digest"


def multipart_etag(part_etags: list[str]) -> str:
    """S3-style ETag of a multipart object: md5(concat(binary part md5s)) + "-N"."""
    digest = hashlib.md5(b"".join(bytes.fromhex(e) for e in part_etags)).hexdigest()
    return f"{digest}-{len(part_etags)}"


class ObjectService:
    """PUT / GET / HEAD / DELETE / copy / multipart, independent of HTTP."""

    def __init__(self, config: Config, registry: Registry, replica_factory: ReplicaFactory) -> None:
        self.config = config
        self.registry = registry
        oc = config.object
        self.engine = TransferEngine(
            registry,
            replica_factory,
            fragment_size=int(oc.fragmentSize),
            in_flight=oc.inFlightFragments,
            read_ahead=oc.readAhead,
            replica_timeout=Timeouts.from_config(oc, "replica"),
            fragment_retries=oc.fragmentRetries,
            lease_size=config.registry.leaseSize,
            writable_wait=float(oc.writableWait),
            hedge_delay=float(oc.hedgeDelay),
            lag_limit=float(oc.replicaLagLimit),
            slow_lag=float(oc.replicaSlowLag),
            # Beyond each upload's first fragment (which the upload budget below admits), the
            # fragments in flight of all uploads share a pool of the same size.
            shared_fragments=int(oc.uploadBufferBudget) // int(oc.fragmentSize),
        )
        self.max_object_size = int(oc.maxObjectSize)
        self.budget = UploadBudget(int(oc.uploadBufferBudget), int(oc.fragmentSize))
        self.min_rate = float(oc.bodyMinRate)
        self.rate_grace = float(oc.bodyRateGrace)
        self.body_deadline = float(oc.bodyDeadline)
        self.body_timeout = float(oc.bodyTimeout)  # the per-chunk timeout of request bodies

    # --- writes ---------------------------------------------------------------------------------
    async def _upload(
        self,
        body: AsyncIterable[bytes],
        *,
        size: int | None,
        content_md5: bytes | None,
        sha256: str | None,
    ) -> UploadResult:
        """Upload and check length and digests; on a mismatch the fragments are discarded."""
        if size is not None and size > self.max_object_size:
            raise PayloadTooLarge(f"object of {size} bytes exceeds the limit of {self.max_object_size}")
        with self.budget.reserve(size):  # 503 slow_down before any body byte is read
            body = paced(body, min_rate=self.min_rate, grace=self.rate_grace,
                         deadline=self.body_deadline, horizon=self.body_timeout)
            result = await self.engine.upload(body, want_sha256=sha256 is not None, size=size)
        problem: ArkorError | None = None
        if size is not None and result.size != size:
            problem = BodySizeMismatch(f"body has {result.size} bytes, the declared size is {size}")
        elif content_md5 is not None and result.md5 != content_md5:
            problem = BadDigest("Content-MD5 does not match the body; nothing was stored")
        elif sha256 is not None and result.sha256 != sha256.lower():
            problem = Unprocessable(
                f"SHA-256 of the body is {result.sha256}, expected {sha256.lower()}",
                code="checksum_mismatch",
            )
        if problem is not None:
            await self.engine.discard(result.fragments)
            raise problem
        return result

    async def put(
        self,
        bucket: str,
        key: str,
        body: AsyncIterable[bytes],
        *,
        size: int | None,
        content_type: str,
        metadata: dict[str, str],
        content_md5: bytes | None = None,
        sha256: str | None = None,
        if_match: str | None = None,
        if_none_match: bool = False,
        create_bucket: bool = True,
    ) -> ObjectRecord:
        """Store an object; visible only after all fragments are durable and the commit succeeds.

        `create_bucket=False` (S3): NotFound no_such_bucket unless the bucket exists."""
        check_bucket(bucket)
        check_object_key(key)
        when = Preconditions(if_match, if_none_match)
        await self._precheck(bucket, key, when)
        result = await self._upload(body, size=size, content_md5=content_md5, sha256=sha256)
        now = time.time()
        record = ObjectRecord(
            bucket=bucket,
            key=key,
            size=result.size,
            etag=result.md5.hex(),
            content_type=content_type or "application/octet-stream",
            metadata=dict(metadata),
            created=now,
            modified=now,
            fragments=result.fragments,
        )
        return await self._commit(ObjectCommit(record, when, create_bucket))

    async def _precheck(self, bucket: str, key: str, when: Preconditions) -> None:
        """Fail fast before reading a body that could not be committed (the commit re-checks).
        `when.if_match` may be a list of ETags here, as the If-Match header allows."""
        if not when.conditional:
            return
        if_match = when.if_match
        try:
            current: ObjectRecord | None = await self.registry.get_object(bucket, key)
        except ArkorError as exc:
            if exc.status != 404:
                raise
            current = None
        if when.if_none_match and current is not None:
            raise PreconditionFailed(f"{bucket}/{key} already exists (If-None-Match: *)")
        if if_match is not None and (current is None or not etag_matches(if_match, current.etag, weak=False)):
            raise PreconditionFailed(f"{bucket}/{key} does not match If-Match {if_match}")

    async def _commit(self, commit: ObjectCommit) -> ObjectRecord:
        try:
            return await self.registry.commit_object(replace(commit, when=_unquoted(commit.when)))
        except ArkorError as exc:
            # A definite refusal: the fragments will never be referenced. (412 is queued for
            # reclaim by the registry itself; an unknown outcome is left to the orphan reaper, since
            # the commit may have happened.)
            if exc.status < 500 and exc.status != 412:
                await self.engine.discard(commit.record.fragments)
            raise

    async def copy(
        self,
        src_bucket: str,
        src_key: str,
        bucket: str,
        key: str,
        *,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        if_none_match: bool = False,
        create_bucket: bool = True,
        source: ObjectRecord | None = None,
    ) -> ObjectRecord:
        """Server-side copy: the data is re-stored as new fragments (no shared needles, so the
        reclaim of one object never touches the other). `source`: the record already looked up."""
        check_bucket(bucket)
        check_object_key(key)
        if source is None:
            source = await self.head(src_bucket, src_key)
        when = Preconditions(if_none_match=if_none_match)
        await self._precheck(bucket, key, when)
        async with self.open_read(source, 0, source.size - 1) as chunks:
            result = await self._upload(chunks, size=source.size, content_md5=None, sha256=None)
        if result.md5.hex() != source.etag.split("-")[0] and "-" not in source.etag:
            await self.engine.discard(result.fragments)
            raise ArkorError("copy produced different content", code="internal_error")
        now = time.time()
        record = ObjectRecord(
            bucket=bucket,
            key=key,
            size=result.size,
            etag=source.etag,
            content_type=content_type or source.content_type,
            metadata=dict(source.metadata if metadata is None else metadata),
            created=now,
            modified=now,
            fragments=result.fragments,
        )
        return await self._commit(ObjectCommit(record, when, create_bucket))

    # --- reads ----------------------------------------------------------------------------------
    async def head(self, bucket: str, key: str) -> ObjectRecord:
        check_bucket(bucket)
        check_object_key(key)
        return await self.registry.get_object(bucket, key)

    def open_read(self, record: ObjectRecord, start: int, end_inclusive: int) -> RangeReader:
        """Bytes [start, end_inclusive] with read-ahead, hedging and replica failover:
        `async with service.open_read(...) as chunks`. Entering fetches the first slice, so a
        range that cannot be served raises (503) before anything is answered; a `Response` may
        take it as its body (the router enters it before the status line)."""
        if record.size == 0 or end_inclusive < start:
            return self.engine.open_read([], 0, -1)
        return self.engine.open_read(record.fragments, start, end_inclusive)

    async def delete(self, bucket: str, key: str) -> ObjectRecord:
        check_bucket(bucket)
        check_object_key(key)
        return await self.registry.delete_object(bucket, key)

    # --- multipart ------------------------------------------------------------------------------
    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        body: AsyncIterable[bytes],
        *,
        size: int | None,
        content_md5: bytes | None = None,
        sha256: str | None = None,
    ) -> PartInfo:
        if not 1 <= part_number <= MAX_PART_NUMBER:
            raise BadRequest(f"partNumber must be 1-{MAX_PART_NUMBER}", code="invalid_part")
        upload = await self.registry.get_multipart(upload_id)
        if (upload.bucket, upload.key) != (bucket, key):
            raise ArkorError(
                f"upload {upload_id} is not for {bucket}/{key}", code="no_such_upload", status=404
            )
        result = await self._upload(body, size=size, content_md5=content_md5, sha256=sha256)
        part = PartInfo(
            part_number=part_number,
            size=result.size,
            etag=result.md5.hex(),
            fragments=result.fragments,
            modified=time.time(),
        )
        try:
            await self.registry.put_part(upload_id, part)
        except ArkorError as exc:
            if exc.status < 500:
                await self.engine.discard(result.fragments)
            raise
        return part

    async def complete_multipart(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: list[tuple[int, str]],
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> ObjectRecord:
        if not parts:
            raise BadRequest("a multipart upload needs at least one part", code="invalid_part")
        numbers = [n for n, _ in parts]
        if numbers != sorted(set(numbers)):
            raise BadRequest("parts must be listed in ascending order, once each", code="invalid_part")
        upload = await self.registry.get_multipart(upload_id)
        if (upload.bucket, upload.key) != (bucket, key):
            raise ArkorError(
                f"upload {upload_id} is not for {bucket}/{key}", code="no_such_upload", status=404
            )
        etags = [_strip_etag(e) or "" for _, e in parts]
        try:
            etag = multipart_etag(etags)
        except ValueError:
            raise BadRequest("part ETags must be hex MD5 digests", code="invalid_part") from None
        when = Preconditions(if_match, if_none_match)
        await self._precheck(bucket, key, when)
        listed = [(n, e) for (n, _), e in zip(parts, etags, strict=True)]
        return await self.registry.complete_multipart(
            MultipartCommit(upload_id, listed, etag, _unquoted(when))
        )


def _strip_etag(value: str | None) -> str | None:
    return None if value is None else unquote_etag(value)


def _unquoted(when: Preconditions) -> Preconditions:
    """The registry compares bare ETags: `"abc"` and `W/"abc"` are sent as `abc`."""
    return replace(when, if_match=_strip_etag(when.if_match))
