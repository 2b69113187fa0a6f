"""A thin synchronous wrapper over `ArkorClient` for scripts that do not run trio.

Why `trio.run` per call: each call gets a real trio run, so Ctrl-C cancels the operation inside
trio and its cleanup (aborting a multipart upload, deleting a partial download) still runs. The
price is a fresh connection pool per call; use the async client for many small operations.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import trio

from arkor.client.sdk import ArkorClient, ObjectListing
from arkor.client.types import BucketSummary, ObjectInfo

T = TypeVar("T")


class SyncClient:
    """Same constructor arguments and methods as `ArkorClient`, blocking."""

    def __init__(self, endpoint: str | None = None, **options: Any) -> None:
        self._endpoint = endpoint
        self._options = options
        ArkorClient(endpoint, **options)  # validate the arguments now, not at the first call

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _run(self, call: Callable[[ArkorClient], Awaitable[T]]) -> T:
        async def main() -> T:
            async with ArkorClient(self._endpoint, **self._options) as client:
                return await call(client)

        return trio.run(main)

    def put(self, bucket: str, key: str, data: bytes | os.PathLike[str], **options: Any) -> ObjectInfo:
        return self._run(lambda c: c.put(bucket, key, data, **options))

    def put_file(self, bucket: str, key: str, path: str | os.PathLike[str], **options: Any) -> ObjectInfo:
        return self._run(lambda c: c.put_file(bucket, key, path, **options))

    def get(self, bucket: str, key: str) -> bytes:
        return self._run(lambda c: c.get(bucket, key))

    def get_file(self, bucket: str, key: str, path: str | os.PathLike[str], **options: Any) -> ObjectInfo:
        return self._run(lambda c: c.get_file(bucket, key, path, **options))

    def head(self, bucket: str, key: str) -> ObjectInfo:
        return self._run(lambda c: c.head(bucket, key))

    def exists(self, bucket: str, key: str) -> bool:
        return self._run(lambda c: c.exists(bucket, key))

    def delete(self, bucket: str, key: str) -> None:
        self._run(lambda c: c.delete(bucket, key))

    def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str,
             **options: Any) -> ObjectInfo:
        return self._run(lambda c: c.copy(src_bucket, src_key, dst_bucket, dst_key, **options))

    def list(self, bucket: str, prefix: str = "", *, delimiter: str | None = None,
             page_size: int = 1000) -> Iterator[ObjectInfo]:
        """Iterate over all entries; each page is fetched when the previous one is used up."""
        state: dict[str, Any] = {"marker": None, "done": False}
        while not state["done"]:

            async def page(client: ArkorClient) -> builtins.list[ObjectInfo]:
                listing = ObjectListing(client.transport, bucket, prefix, delimiter, page_size)
                listing._marker = state["marker"]
                await listing._fetch()
                state["marker"], state["done"] = listing._marker, listing._done
                return listing._buffer

            yield from self._run(page)

    def list_buckets(self) -> builtins.list[BucketSummary]:
        return self._run(lambda c: c.list_buckets())

    def make_bucket(self, bucket: str) -> None:
        self._run(lambda c: c.make_bucket(bucket))

    def remove_bucket(self, bucket: str) -> None:
        self._run(lambda c: c.remove_bucket(bucket))

    def list_uploads(self, bucket: str) -> builtins.list[dict[str, Any]]:
        return self._run(lambda c: c.list_uploads(bucket))
