"""`ArkorClient`: the async Python SDK for Arkor's public API (docs/specs/API.md), on trio + httpx.

Usage::

    async with ArkorClient("http://127.0.0.1:8125") as arkor:
        await arkor.put("photos", "cat.jpg", b"...")
        data = await arkor.get("photos", "cat.jpg")

The client owns one connection pool (bounded by `connections`), a small thread limiter for hashing
and one for disk I/O. Large transfers are split into parts that travel concurrently; see
`arkor.client.upload` and `arkor.client.download` for why and how.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from arkor.client.download import Downloader, ObjectReader, Progress
from arkor.client.errors import ConnectionFailed
from arkor.client.http import Transport
from arkor.client.settings import resolve
from arkor.client.types import BucketSummary, ObjectInfo, bucket_path, object_path
from arkor.client.upload import Uploader, UploadPlan, request_headers
from arkor.errors import ArkorError, MethodNotAllowed, NotFound
from arkor.names import check_bucket
from arkor.transfer.retry import Backoff

MiB = 1024 * 1024
Body = bytes | bytearray | memoryview | AsyncIterable[bytes]


class ArkorClient:
    """Async client. Endpoint and credentials: arguments, else ARKOR_ENDPOINT / ARKOR_ACCESS_KEY /
    ARKOR_SECRET_KEY, else ~/.config/arkor/client.yaml.

    `concurrency` is how many parts/ranges of one large transfer are in flight (1 = one connection);
    `part_size` is the multipart part size and the ranged-download range size; bodies up to
    `multipart_threshold` go up in a single PUT. `connect_timeout` bounds each connection set-up;
    `timeout` every read/write on a connection (so the wait for an answer and the gap between body
    chunks) and the wait for a free pooled connection; `retries` is the number of attempts.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        concurrency: int = 4,
        part_size: int = 8 * MiB,
        multipart_threshold: int = 16 * MiB,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        retries: int = 6,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
    ) -> None:
        if concurrency < 1 or part_size < 1 or multipart_threshold < 0:
            raise ValueError("concurrency and part_size must be positive")
        self.settings = resolve(endpoint, access_key, secret_key)
        self.concurrency = concurrency
        self.part_size = part_size
        self.multipart_threshold = max(multipart_threshold, 0)
        self._pool = max(16, concurrency)
        self.transport = Transport(
            self.settings, timeout=timeout, connect_timeout=connect_timeout,
            connections=self._pool,
            backoff=Backoff(attempts=max(1, retries), base=backoff_base, cap=backoff_cap),
        )
        self._cpu = trio.CapacityLimiter(max(2, os.cpu_count() or 2))
        self._disk = trio.CapacityLimiter(8)
        self._uploader = Uploader(self.transport, self._cpu, self._disk)
        self._downloader = Downloader(self.transport, self._disk)

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint

    async def __aenter__(self) -> ArkorClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    def _plan(self, concurrency: int | None, part_size: int | None) -> UploadPlan:
        conc = min(self._pool, concurrency or self.concurrency)
        return UploadPlan(
            part_size=part_size or self.part_size, concurrency=max(1, conc),
            multipart_threshold=max(self.multipart_threshold, 0),
        )

    # --- objects ---------------------------------------------------------------------------

    async def put(
        self,
        bucket: str,
        key: str,
        data: Body | os.PathLike[str],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        concurrency: int | None = None,
        part_size: int | None = None,
        progress: Progress | None = None,
    ) -> ObjectInfo:
        """Store `data` (bytes, a path, or an async iterable of byte chunks) as bucket/key."""
        headers = request_headers(content_type, metadata)
        plan = self._plan(concurrency, part_size)
        if isinstance(data, (bytes, bytearray, memoryview)):
            return await self._uploader.put_bytes(bucket, key, bytes(data), headers, plan, progress)
        if isinstance(data, os.PathLike):
            return await self._uploader.put_file(bucket, key, Path(data), headers, plan, progress)
        if isinstance(data, AsyncIterable):
            return await self._uploader.put_stream(bucket, key, data, headers, plan, progress)
        raise TypeError(f"cannot upload {type(data).__name__}: pass bytes, a Path or an async iterable")

    async def put_file(
        self, bucket: str, key: str, path: str | os.PathLike[str], **options: Any
    ) -> ObjectInfo:
        """Upload a local file (multipart, `concurrency` parts at once, when it is large)."""
        return await self.put(bucket, key, Path(path), **options)

    async def get(self, bucket: str, key: str) -> bytes:
        """The whole object in memory, verified against its ETag and size."""
        async with self.open_read(bucket, key) as reader:
            return await reader.read_all()

    @asynccontextmanager
    async def open_read(
        self, bucket: str, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[ObjectReader]:
        """Stream an object (or `length` bytes from `offset`): ``async for chunk in reader``.

        `reader.info` describes the object. A whole-object read is verified at its end.
        """
        reader = ObjectReader(self.transport, bucket, key, offset, length)
        try:
            await reader.open()
            yield reader
        finally:
            await reader.aclose()

    async def get_file(
        self,
        bucket: str,
        key: str,
        path: str | os.PathLike[str],
        *,
        concurrency: int | None = None,
        part_size: int | None = None,
        progress: Progress | None = None,
    ) -> ObjectInfo:
        """Download to `path` with concurrent ranged GETs; the file appears only when verified."""
        info = await self.head(bucket, key)
        plan = self._plan(concurrency, part_size)
        return await self._downloader.to_file(
            info, Path(path), concurrency=plan.concurrency, range_size=plan.part_size, progress=progress
        )

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        """Size, ETag, type and metadata without the body."""
        path = object_path(bucket, key)
        try:
            response = await self.transport.request("HEAD", path, ok=(200,))
        except ArkorError as exc:
            if exc.status >= 500:
                raise
            # A HEAD answer has no body, so no error code: ask with a one-byte GET, which
            # raises the server's typed error (no_such_key, no_such_bucket, ...).
            response = await self.transport.request("GET", path, headers={"Range": "bytes=0-0"},
                                                    ok=(200, 206))
        return ObjectInfo.from_headers(bucket, key, response.headers)

    async def exists(self, bucket: str, key: str) -> bool:
        try:
            await self.head(bucket, key)
        except NotFound:
            return False
        return True

    async def delete(self, bucket: str, key: str) -> None:
        """Delete an object; NotFound if it does not exist."""
        attempts = 0

        async def once() -> None:
            nonlocal attempts
            attempts += 1
            try:
                await self.transport.request("DELETE", object_path(bucket, key), ok=(200, 204), retries=False)
            except NotFound:
                if attempts == 1:
                    raise  # on a retry, a 404 means an earlier attempt did delete it

        await self.transport.retrying(once)

    async def copy(
        self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str,
        *, content_type: str | None = None, metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Server-side copy: no data passes through the client."""
        headers = request_headers(content_type, metadata)
        headers["X-Arkor-Copy-Source"] = object_path(src_bucket, src_key)[len("/v1") :]
        response = await self.transport.request(
            "PUT", object_path(dst_bucket, dst_key), headers=headers, ok=(200, 201)
        )
        return ObjectInfo.from_json(dst_bucket, response.json())

    def list(
        self, bucket: str, prefix: str = "", *, delimiter: str | None = None, page_size: int = 1000
    ) -> ObjectListing:
        """Every object (and, with a delimiter, common prefix) under `prefix`, across all pages."""
        return ObjectListing(self.transport, bucket, prefix, delimiter, page_size)

    # --- buckets ---------------------------------------------------------------------------

    async def list_buckets(self) -> builtins.list[BucketSummary]:
        response = await self.transport.request("GET", "/v1/", ok=(200,))
        return [BucketSummary.from_json(b) for b in response.json().get("buckets") or []]

    async def make_bucket(self, bucket: str) -> bool:
        """Create an empty bucket; True if the server created it.

        The v1 API creates buckets implicitly on their first upload. When the server has no
        explicit bucket creation (405), the name is validated locally and False is returned: the
        bucket will appear with its first object.
        """
        try:
            await self.transport.request("PUT", bucket_path(bucket), ok=(200, 201, 204))
        except MethodNotAllowed:
            check_bucket(bucket)
            return False
        return True

    async def remove_bucket(self, bucket: str) -> None:
        """Delete an empty bucket; Conflict (bucket_not_empty) otherwise."""
        await self.transport.request("DELETE", bucket_path(bucket), ok=(200, 204))

    async def list_uploads(self, bucket: str) -> builtins.list[dict[str, Any]]:
        """Multipart uploads that are open (neither completed nor aborted) in `bucket`."""
        response = await self.transport.request("GET", bucket_path(bucket) + "?uploads", ok=(200,))
        return list(response.json().get("uploads") or [])


class ObjectListing:
    """Async iterator over a bucket listing, fetching one page at a time (no async generator, so
    an abandoned loop leaves nothing to finalize)."""

    def __init__(self, transport: Transport, bucket: str, prefix: str, delimiter: str | None,
                 page_size: int) -> None:
        self.transport = transport
        self.bucket = bucket
        self.prefix = prefix
        self.delimiter = delimiter
        self.page_size = page_size
        self._marker: str | None = None
        self._buffer: builtins.list[ObjectInfo] = []
        self._done = False

    def __aiter__(self) -> ObjectListing:
        return self

    async def __anext__(self) -> ObjectInfo:
        while not self._buffer:
            if self._done:
                raise StopAsyncIteration
            await self._fetch()
        return self._buffer.pop(0)

    async def _fetch(self) -> None:
        params = {"prefix": self.prefix, "limit": str(self.page_size)}
        if self.delimiter:
            params["delimiter"] = self.delimiter
        if self._marker:
            params["marker"] = self._marker
        response = await self.transport.request("GET", bucket_path(self.bucket), params=params, ok=(200,))
        page = response.json()
        entries = [ObjectInfo.from_json(self.bucket, o) for o in page.get("objects") or []]
        entries += [ObjectInfo(self.bucket, p, is_prefix=True) for p in page.get("common_prefixes") or []]
        entries.sort(key=lambda e: e.key)
        self._buffer = entries
        marker = page.get("next_marker")
        if not page.get("truncated") or not marker or marker == self._marker:
            self._done = True
        self._marker = marker

    async def collect(self) -> builtins.list[ObjectInfo]:
        return [entry async for entry in self]


__all__ = ["ArkorClient", "BucketSummary", "ConnectionFailed", "ObjectInfo", "ObjectListing", "ObjectReader"]
