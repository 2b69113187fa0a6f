"""Uploads: one PUT for small bodies, concurrent multipart for large ones, nothing left half-done.

Why this shape: a single PUT of a large body rides one connection and must be resent whole on any
failure; parts go over several connections at once and each retries alone. Parts come from bytes,
a file (read with pread in worker threads) or an async stream (re-chunked by
`arkor.transfer.streams.rechunk`); they are sent through `arkor.transfer.pipeline.run_ordered`, so at
most `concurrency` parts are in memory whatever the object size. Every body carries Content-MD5 and
every returned ETag is compared with the one computed here. If the upload fails or is cancelled, the
multipart upload is aborted in a shielded cleanup with a deadline, so no upload stays open.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path

import trio

from arkor.client.errors import ConnectionFailed, IntegrityError
from arkor.client.http import Transport
from arkor.client.integrity import (
    PART_SIZE_META,
    check_etag,
    choose_part_size,
    content_md5,
    multipart_etag,
    unquote_etag,
)
from arkor.client.types import ObjectInfo, object_path
from arkor.errors import NotFound
from arkor.transfer.pipeline import run_ordered
from arkor.transfer.streams import rechunk

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
ABORT_DEADLINE = 15.0  # seconds the shielded abort of a failed multipart upload may take
_THREAD_HASH_MIN = 256 * 1024


@dataclass(frozen=True)
class UploadPlan:
    part_size: int
    concurrency: int
    multipart_threshold: int


@dataclass(frozen=True)
class _FileRange:
    fd: int
    offset: int
    length: int


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data).digest()


def _pread_exact(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise IntegrityError(f"the file changed while uploading (short read at offset {offset})")
    return data


def request_headers(content_type: str | None, metadata: Mapping[str, str] | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if content_type:
        headers["Content-Type"] = content_type
    for name, value in (metadata or {}).items():
        headers[f"X-Arkor-Meta-{name}"] = value
    return headers


class Uploader:
    def __init__(self, transport: Transport, cpu: trio.CapacityLimiter, disk: trio.CapacityLimiter) -> None:
        self.transport = transport
        self.cpu = cpu
        self.disk = disk

    async def digest(self, data: bytes) -> bytes:
        """MD5 in a worker thread for large buffers (hashlib releases the GIL), inline for small."""
        if len(data) < _THREAD_HASH_MIN:
            return _md5(data)
        return await trio.to_thread.run_sync(_md5, data, limiter=self.cpu)

    # --- entry points -----------------------------------------------------------------------

    async def put_bytes(
        self, bucket: str, key: str, data: bytes, headers: dict[str, str], plan: UploadPlan,
        progress: Progress | None,
    ) -> ObjectInfo:
        if len(data) <= plan.multipart_threshold:
            return await self.put_single(bucket, key, data, headers, progress)
        part = choose_part_size(len(data), plan.part_size)
        view = memoryview(data)

        async def slices() -> AsyncIterator[bytes | _FileRange]:
            for start in range(0, len(data), part):
                yield bytes(view[start : start + part])

        return await self.put_multipart(bucket, key, slices(), part, headers, plan, progress)

    async def put_file(
        self, bucket: str, key: str, path: Path, headers: dict[str, str], plan: UploadPlan,
        progress: Progress | None,
    ) -> ObjectInfo:
        fd = await trio.to_thread.run_sync(os.open, os.fspath(path), os.O_RDONLY, limiter=self.disk)
        try:
            size = (await trio.to_thread.run_sync(os.fstat, fd, limiter=self.disk)).st_size
            if size <= plan.multipart_threshold:
                data = await trio.to_thread.run_sync(_pread_exact, fd, size, 0, limiter=self.disk)
                return await self.put_single(bucket, key, data, headers, progress)
            part = choose_part_size(size, plan.part_size)

            async def ranges() -> AsyncIterator[bytes | _FileRange]:
                for start in range(0, size, part):
                    yield _FileRange(fd, start, min(part, size - start))

            return await self.put_multipart(bucket, key, ranges(), part, headers, plan, progress)
        finally:
            os.close(fd)

    async def put_stream(
        self, bucket: str, key: str, source: AsyncIterable[bytes], headers: dict[str, str],
        plan: UploadPlan, progress: Progress | None,
    ) -> ObjectInfo:
        """A stream of unknown length: one PUT if it fits in one part, else multipart."""
        part = plan.part_size
        async with aclosing(rechunk(source, part)) as pieces:  # type: ignore[type-var]
            iterator = pieces.__aiter__()
            first = await anext(iterator, None)
            if first is None:
                return await self.put_single(bucket, key, b"", headers, progress)
            second = await anext(iterator, None)
            if second is None:
                return await self.put_single(bucket, key, first, headers, progress)
            head = [first, second]
            del first, second

            async def chained() -> AsyncIterator[bytes | _FileRange]:
                while head:
                    yield head.pop(0)
                async for piece in iterator:
                    yield piece

            return await self.put_multipart(bucket, key, chained(), part, headers, plan, progress)

    # --- the two protocols ------------------------------------------------------------------

    async def put_single(
        self, bucket: str, key: str, data: bytes, headers: dict[str, str], progress: Progress | None,
    ) -> ObjectInfo:
        digest = await self.digest(data)
        response = await self.transport.request(
            "PUT", object_path(bucket, key), content=data, ok=(200, 201),
            headers={**headers, "Content-MD5": content_md5(digest)},
        )
        info = _put_result(bucket, key, response.json(), response.headers.get("etag"))
        check_etag(digest.hex(), info.etag, f"upload of {bucket}/{key}")
        if progress is not None:
            progress(len(data))
        return info

    async def put_multipart(
        self, bucket: str, key: str, parts: AsyncIterable[bytes | _FileRange], part_size: int,
        headers: dict[str, str], plan: UploadPlan, progress: Progress | None,
    ) -> ObjectInfo:
        path = object_path(bucket, key)
        created = await self.transport.request(
            "POST", path + "?uploads", ok=(200, 201),
            headers={**headers, f"X-Arkor-Meta-{PART_SIZE_META}": str(part_size)},
        )
        upload_id = str(created.json()["upload_id"])
        try:
            digests: list[bytes] = []

            async def send(index: int, item: bytes | _FileRange) -> bytes:
                if isinstance(item, _FileRange):
                    data = await trio.to_thread.run_sync(
                        _pread_exact, item.fd, item.length, item.offset, limiter=self.disk
                    )
                else:
                    data = item
                del item
                digest = await self.digest(data)
                number = index + 1
                response = await self.transport.request(
                    "PUT", path, params={"uploadId": upload_id, "partNumber": str(number)},
                    headers={"Content-MD5": content_md5(digest)}, content=data, ok=(200, 201),
                )
                etag = response.headers.get("etag") or _json_field(response, "etag")
                check_etag(digest.hex(), etag, f"part {number} of {bucket}/{key}")
                if progress is not None:
                    progress(len(data))
                return digest

            async def collect(digest: bytes) -> None:
                digests.append(digest)

            await run_ordered(parts, send, limit=plan.concurrency, sink=collect)
            info = await self._complete(bucket, key, upload_id, digests)
        except BaseException:
            await self.abort(bucket, key, upload_id)
            raise
        return info

    async def _complete(self, bucket: str, key: str, upload_id: str, digests: list[bytes]) -> ObjectInfo:
        path = object_path(bucket, key)
        expected = multipart_etag(digests)
        body = {"parts": [{"part_number": i + 1, "etag": d.hex()} for i, d in enumerate(digests)]}
        attempts = 0

        async def once() -> ObjectInfo:
            nonlocal attempts
            attempts += 1
            try:
                response = await self.transport.request(
                    "POST", path, params={"uploadId": upload_id}, json=body, ok=(200, 201), retries=False
                )
            except NotFound:
                if attempts == 1:
                    raise
                # An earlier attempt may have committed before its answer was lost.
                head = await self.transport.request("HEAD", path, ok=(200,))
                info = ObjectInfo.from_headers(bucket, key, head.headers)
                if info.etag != expected:
                    raise
                return info
            return _put_result(bucket, key, response.json(), response.headers.get("etag"))

        info = await self.transport.retrying(once)
        check_etag(expected, info.etag, f"multipart upload of {bucket}/{key}")
        return info

    async def abort(self, bucket: str, key: str, upload_id: str) -> None:
        """Abort in a shielded scope with a deadline: runs even when the upload was cancelled."""
        with trio.CancelScope(shield=True), trio.move_on_after(ABORT_DEADLINE) as scope:
            try:
                await self.transport.request(
                    "DELETE", object_path(bucket, key), params={"uploadId": upload_id}, ok=(200, 204)
                )
                return
            except NotFound:
                return  # already gone (completed or reaped)
            except (ConnectionFailed, Exception) as exc:  # noqa: BLE001 - cleanup must not mask
                log.warning("could not abort upload %s of %s/%s: %s", upload_id, bucket, key, exc)
        if scope.cancelled_caught:
            log.warning("abort of upload %s of %s/%s timed out", upload_id, bucket, key)


def _json_field(response: object, name: str) -> str:
    try:
        return str(response.json().get(name) or "")  # type: ignore[attr-defined]
    except ValueError:
        return ""


def _put_result(bucket: str, key: str, raw: object, etag_header: str | None) -> ObjectInfo:
    info = ObjectInfo.from_json(bucket, raw if isinstance(raw, dict) else {"key": key})
    if not info.etag and etag_header:
        info = ObjectInfo(**{**info.__dict__, "etag": unquote_etag(etag_header)})
    return info
