"""Downloads: a resumable verified stream, and concurrent ranged GETs written in place into a file.

Why: one stream is what `cp ... -` and `get()` need; a big file comes down faster over several
connections, each fetching one range and writing it with pwrite in a worker thread. Every request
after the first carries ``If-Match`` with the ETag first seen, so an object replaced mid-download
fails (412) instead of mixing two versions. The result is checked against the ETag (plain MD5, or
per part for SDK multipart uploads) and the size; a file is written to a temporary name and renamed
only when complete and verified, so a failed or cancelled download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import trio

from arkor.client.errors import ConnectionFailed, IntegrityError
from arkor.client.http import Transport
from arkor.client.integrity import (
    PART_SIZE_META,
    StreamVerifier,
    check_etag,
    check_size,
    etag_parts,
    is_plain_md5,
    multipart_etag,
)
from arkor.client.types import ObjectInfo, object_path
from arkor.transfer.pipeline import run_ordered

Progress = Callable[[int], None]
WRITE_BATCH = 4 * 1024 * 1024  # bytes gathered before one pwrite in a worker thread


def _pwrite_all(fd: int, data: bytes, offset: int, md5: hashlib._Hash | None) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
    if md5 is not None:
        md5.update(data)


def _hash_range(fd: int, offset: int, length: int, md5: hashlib._Hash) -> None:
    end = offset + length
    while offset < end:
        block = os.pread(fd, min(WRITE_BATCH, end - offset), offset)
        if not block:
            raise IntegrityError("the file being written was truncated")
        md5.update(block)
        offset += len(block)


def recorded_part_size(info: ObjectInfo) -> int | None:
    value = info.metadata.get(PART_SIZE_META, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


class ObjectReader:
    """An object's bytes as an async iterator; resumes after a broken connection.

    Use through `ArkorClient.open_read`. A whole-object read is verified against the ETag and
    size when the last chunk has been read (IntegrityError instead of StopAsyncIteration).
    """

    def __init__(self, transport: Transport, bucket: str, key: str, offset: int, length: int | None) -> None:
        self.transport = transport
        self.bucket = bucket
        self.key = key
        self.info: ObjectInfo | None = None
        self._start = offset
        self._length = length
        self._pos = offset
        self._end = -1  # exclusive end, known after the first response
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._verifier: StreamVerifier | None = None
        self._failures = 0

    @property
    def path(self) -> str:
        return object_path(self.bucket, self.key)

    async def open(self) -> ObjectReader:
        headers: dict[str, str] = {}
        whole = self._start == 0 and self._length is None
        if self.info is not None:
            headers["If-Match"] = f'"{self.info.etag}"'
        if self.info is not None or not whole:
            if self._length == 0 or (self.info is not None and self._pos >= self._end):
                self._chunks = None
                return self
            last = "" if self._length is None else str(self._start + self._length - 1)
            if self.info is not None:
                last = str(self._end - 1)
            headers["Range"] = f"bytes={self._pos}-{last}"
        response = await self.transport.open_stream("GET", self.path, headers=headers, ok=(200, 206))
        if self.info is None:
            info = ObjectInfo.from_headers(self.bucket, self.key, response.headers)
            self.info = info
            if whole:
                self._end = info.size
                self._verifier = StreamVerifier(info.etag, info.size, recorded_part_size(info))
            else:
                body = int(response.headers.get("content-length", "0"))
                self._end = self._start + body
        self._response = response
        self._chunks = response.aiter_bytes()
        return self

    def __aiter__(self) -> ObjectReader:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._chunks is None:
                raise StopAsyncIteration
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                if self._pos < self._end:
                    await self._resume(ConnectionFailed(f"GET {self.path}: body ended early"))
                    continue
                await self.aclose()
                if self._verifier is not None:
                    self._verifier.finish(f"download of {self.bucket}/{self.key}")
                self._chunks = None
                raise
            except httpx.TransportError as exc:
                await self._resume(ConnectionFailed(f"GET {self.path}: {type(exc).__name__}: {exc}"))
                continue
            if not chunk:
                continue
            self._pos += len(chunk)
            if self._pos > self._end:
                raise IntegrityError(f"download of {self.bucket}/{self.key}: more bytes than announced")
            if self._verifier is not None:
                self._verifier.update(chunk)
            return chunk

    async def _resume(self, exc: ConnectionFailed) -> None:
        """Reopen at the current position with If-Match, after a backoff; give up after the
        transport's number of attempts."""
        await self.aclose()
        self._failures += 1
        if self._failures >= self.transport.attempts:
            raise exc
        await trio.sleep(self.transport.backoff_delay(self._failures))
        await self.open()

    async def read_all(self) -> bytes:
        buf = bytearray()
        async for chunk in self:
            buf += chunk
        return bytes(buf)

    async def aclose(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            await self.transport.close_stream(response)


class Downloader:
    def __init__(self, transport: Transport, disk: trio.CapacityLimiter) -> None:
        self.transport = transport
        self.disk = disk

    async def to_file(
        self, info: ObjectInfo, path: Path, *, concurrency: int, range_size: int,
        progress: Progress | None,
    ) -> ObjectInfo:
        """Write the object described by `info` (from a HEAD) to `path`, verified, atomically."""
        tmp = path.with_name(f".{path.name}.arkor-{secrets.token_hex(4)}")
        fd = await trio.to_thread.run_sync(
            lambda: os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644), limiter=self.disk
        )
        try:
            try:
                if concurrency <= 1 or info.size <= range_size:
                    await self._sequential(info, fd, progress)
                else:
                    await self._ranged(info, fd, concurrency, range_size, progress)
            finally:
                os.close(fd)
            await trio.to_thread.run_sync(os.replace, tmp, path, limiter=self.disk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return info

    async def _sequential(self, info: ObjectInfo, fd: int, progress: Progress | None) -> None:
        reader = ObjectReader(self.transport, info.bucket, info.key, 0, None)
        reader.info = info  # so the GET carries If-Match and is verified against this version
        reader._end = info.size
        reader._verifier = StreamVerifier(info.etag, info.size, recorded_part_size(info))
        if info.size == 0:
            reader._verifier.finish(f"download of {info.bucket}/{info.key}")
            return
        await reader.open()
        offset = 0
        buf = bytearray()
        try:
            async for chunk in reader:
                buf += chunk
                if len(buf) >= WRITE_BATCH:
                    data = bytes(buf)
                    buf.clear()
                    await trio.to_thread.run_sync(_pwrite_all, fd, data, offset, None, limiter=self.disk)
                    offset += len(data)
                    if progress is not None:
                        progress(len(data))
        finally:
            await reader.aclose()
        if buf:
            await trio.to_thread.run_sync(_pwrite_all, fd, bytes(buf), offset, None, limiter=self.disk)
            if progress is not None:
                progress(len(buf))

    async def _ranged(
        self, info: ObjectInfo, fd: int, concurrency: int, range_size: int, progress: Progress | None,
    ) -> None:
        await trio.to_thread.run_sync(os.ftruncate, fd, info.size, limiter=self.disk)
        part_size = recorded_part_size(info)
        parts = etag_parts(info.etag)
        per_part = parts is not None and part_size is not None and -(-info.size // part_size) == parts
        if per_part:
            assert part_size is not None
            range_size = part_size  # one range per uploaded part: each part's MD5 is checkable
        whole = hashlib.md5() if is_plain_md5(info.etag) else None
        path = object_path(info.bucket, info.key)
        what = f"download of {info.bucket}/{info.key}"

        async def ranges() -> AsyncIterator[tuple[int, int]]:
            for start in range(0, info.size, range_size):
                yield start, min(range_size, info.size - start)

        async def fetch(index: int, item: tuple[int, int]) -> tuple[int, int, bytes | None]:
            start, length = item

            async def once() -> tuple[int, int, bytes | None]:
                md5 = hashlib.md5() if per_part else None
                pos = start
                buf = bytearray()

                async def flush() -> None:
                    nonlocal pos
                    data = bytes(buf)
                    buf.clear()
                    await trio.to_thread.run_sync(_pwrite_all, fd, data, pos, md5, limiter=self.disk)
                    pos += len(data)

                headers = {"Range": f"bytes={start}-{start + length - 1}", "If-Match": f'"{info.etag}"'}
                response = await self.transport.open_stream("GET", path, headers=headers, ok=(206,))
                try:
                    async for chunk in response.aiter_bytes():
                        buf += chunk
                        if len(buf) >= WRITE_BATCH:
                            await flush()
                except httpx.TransportError as exc:
                    raise ConnectionFailed(f"GET {path} range {start}: {exc}") from exc
                finally:
                    await self.transport.close_stream(response)
                if buf:
                    await flush()
                if pos != start + length:
                    raise ConnectionFailed(f"GET {path}: range at {start} ended after {pos - start} bytes")
                return start, length, md5.digest() if md5 is not None else None

            result = await self.transport.retrying(once)
            if progress is not None:
                progress(length)
            return result

        digests: list[bytes] = []

        async def in_order(result: tuple[int, int, bytes | None]) -> None:
            start, length, digest = result
            if digest is not None:
                digests.append(digest)
            if whole is not None:
                await trio.to_thread.run_sync(_hash_range, fd, start, length, whole, limiter=self.disk)

        await run_ordered(ranges(), fetch, limit=concurrency, sink=in_order)
        if whole is not None:
            check_etag(info.etag, whole.hexdigest(), what)
        elif per_part:
            check_etag(info.etag, multipart_etag(digests), what)
        size = (await trio.to_thread.run_sync(os.fstat, fd, limiter=self.disk)).st_size
        check_size(info.size, size, what)
