"""`HttpReplica`: the `contracts.Replica` interface over a data server's internal HTTP API.

Errors come back as the server raised them (`errors.from_response`); a connection failure or a
timeout raises ServiceUnavailable, so the transfer engine fails over to another replica. Every call
is bounded by the four `Timeouts` (connect, first byte, idle, whole transfer): a replica that
accepts connections and never answers costs a reader the first-byte timeout at most (the engine
hedges much earlier), a trickling one the transfer deadline. Whole-needle
reads are verified against the CRC32C the server sends (X-Arkor-Crc32c), so a corrupted transfer is
a CorruptNeedle here too, never data.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from arkor import batchwire
from arkor.checksum import crc32c as compute_crc32c
from arkor.errors import ArkorError, CorruptNeedle, ServiceUnavailable, from_response
from arkor.fileid import FileID
from arkor.httpclient import LeanClient, LeanResponse
from arkor.httpclient.pool import LeanStream
from arkor.model import NeedleInfo
from arkor.security import ClusterAuth
from arkor.transfer.coalesce import Coalescer, each_alone
from arkor.transfer.timeouts import Timeouts

log = logging.getLogger(__name__)

CRC_HEADER = "x-arkor-crc32c"
# Needles up to this size are coalesced with concurrent writes to the same data server.
BATCH_NEEDLE_MAX = 64 * 1024
BATCH_MAX_BYTES = 1024 * 1024

NeedleItem = tuple[FileID, bytes, int]
# fid, offset, length (None: the whole needle), the CRC32C a whole read must have (or None)
ReadItem = tuple[FileID, int, int | None, int | None]
# Checksums of bodies at least this large run in a worker thread, off the event loop.
THREAD_CRC_THRESHOLD = 256 * 1024
_crc_threads = trio.CapacityLimiter(2)


async def _crc_of(data: bytes) -> int:
    if len(data) < THREAD_CRC_THRESHOLD:
        return compute_crc32c(data)
    return await trio.to_thread.run_sync(compute_crc32c, data, limiter=_crc_threads)


def _check_whole(url: str, fid: FileID, actual: int, sent: int, expected: int | None) -> None:
    """A whole needle's CRC32C against what the server says it stored and what the manifest says."""
    if actual != sent:
        raise CorruptNeedle(f"{url}: needle {fid} arrived damaged (CRC32C mismatch)")
    if expected is not None and actual != expected:
        raise CorruptNeedle(f"{url}: needle {fid} is not the one its manifest names (CRC32C differs)")


class HttpReplica:
    """One data server over HTTP. Given a long-lived `nursery`, concurrent writes of small needles
    are coalesced into `POST /needle-batch` requests (one exchange and one fsync for many)."""

    def __init__(
        self, base_url: str, secret: bytes, client: LeanClient | httpx.AsyncClient, timeout: float | Timeouts,
        *, nursery: trio.Nursery | None = None,
    ) -> None:
        self.url = base_url.rstrip("/")
        self.secret = secret
        self.client = client
        self.timeouts = Timeouts.of(timeout)
        self._prefix = urlsplit(self.url).path
        self._auth = ClusterAuth(secret)
        self._writes: Coalescer[NeedleItem, None] | None = None
        self._reads: Coalescer[ReadItem, bytes] | None = None
        if nursery is not None:
            self._writes = Coalescer(
                nursery, self._put_batch, kind="needle_write", max_items=64,
                max_bytes=BATCH_MAX_BYTES, size_of=lambda item: len(item[1]),
            )
            self._reads = Coalescer(nursery, self._get_batch, kind="needle_read", max_items=64)

    def __repr__(self) -> str:
        return f"HttpReplica({self.url})"

    def _path(self, fid: FileID) -> str:
        return f"{self._prefix}/needles/{fid}"

    async def _request(self, method: str, path: str, **kwargs: Any) -> LeanResponse | httpx.Response:
        """Send, wait for the head within the first-byte timeout (for a PUT: counted from the end
        of the body), then read the body (idle timeout between reads), all within the transfer
        deadline."""
        t = self.timeouts
        url = self.url + path[len(self._prefix):]
        try:
            with trio.fail_after(t.transfer):
                response = await self.client.request(method, url, timeout=t.for_client(self.client), **kwargs)
        except trio.TooSlowError:
            raise ServiceUnavailable(f"{self.url}: no answer within {t.transfer:g} s") from None
        except httpx.TimeoutException as exc:
            raise ServiceUnavailable(f"{self.url}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"{self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise _error(response)
        return response

    async def _post_batch(self, route: str, **kwargs: Any) -> LeanResponse | httpx.Response | None:
        """`POST /{route}`; None when the server has no such route (an older release during a
        rolling upgrade: the caller then sends its items one by one from now on)."""
        try:
            return await self._request("POST", f"{self._prefix}/{route}", **kwargs)
        except ArkorError as exc:
            if exc.status not in (404, 405):
                raise
            log.warning("%s has no %s route (%s): sending items one by one", self.url, route, exc)
            return None

    async def put_needle(self, fid: FileID, data: bytes, crc32c: int) -> None:
        if self._writes is not None and len(data) <= BATCH_NEEDLE_MAX:
            await self._writes.submit((fid, bytes(data), crc32c))
        else:
            await self._put_one(fid, data, crc32c)

    async def _put_batch(self, items: list[NeedleItem]) -> Sequence[None | BaseException]:
        """One request for `items`; a lone item (or a data server without the batch route, an
        older release during a rolling upgrade) goes as plain PUTs."""
        if len(items) == 1 or self._writes is None:
            return await each_alone(items, self._put_item)
        headers = {"content-type": batchwire.NEEDLE_BATCH_TYPE}
        response = await self._post_batch("needle-batch", content=batchwire.encode_needles(items),
                                           headers=headers, auth=self._auth)
        if response is None:
            self._writes = None
            return await each_alone(items, self._put_item)
        return [None if isinstance(o, dict) else o
                for o in batchwire.outcomes_of(response.json(), len(items))]

    async def _put_item(self, item: NeedleItem) -> None:
        await self._put_one(*item)

    async def _put_one(self, fid: FileID, data: bytes, crc32c: int) -> None:
        path = self._path(fid)
        # Signed over the CRC32C the engine computed (not a hash of the body): the data server
        # checks the body against that same header, so the signature covers the body for free.
        headers = {"x-arkor-crc32c": str(crc32c), "content-type": "application/octet-stream"}
        await self._request("PUT", path, content=bytes(data), headers=headers, auth=self._auth)

    async def get_needle(
        self, fid: FileID, offset: int = 0, length: int | None = None, *, size: int | None = None,
        crc32c: int | None = None,
    ) -> bytes:
        wanted = length if length is not None else None if size is None else size - offset
        expected = crc32c if offset == 0 and length is None else None
        if self._reads is not None and wanted is not None and 0 < wanted <= BATCH_NEEDLE_MAX:
            return await self._reads.submit((fid, offset, length, expected))
        return await self._get_one((fid, offset, length, expected))

    async def _get_batch(self, items: list[ReadItem]) -> Sequence[bytes | BaseException]:
        """One `POST /needle-reads` for `items` (a lone item, or a server without the route:
        plain GETs). Whole-needle reads are checked against the CRC32C the server reports."""
        if len(items) == 1 or self._reads is None:
            return await each_alone(items, self._get_one)
        reads = [[str(fid), offset, length if length is not None else BATCH_NEEDLE_MAX]
                 for fid, offset, length, _expected in items]
        response = await self._post_batch("needle-reads", json={"reads": reads})
        if response is None:
            self._reads = None
            return await each_alone(items, self._get_one)
        try:
            head, data = batchwire.decode_framed(response.content)
        except ValueError as exc:
            raise ServiceUnavailable(f"{self.url}: malformed read batch answer ({exc})") from None
        outcomes: list[bytes | BaseException] = []
        position = 0
        for (fid, offset, length, expected), outcome in zip(
            items, batchwire.outcomes_of(head, len(items)), strict=True
        ):
            if isinstance(outcome, ArkorError):
                outcomes.append(b"" if outcome.status == 416 else outcome)
                continue
            piece = bytes(data[position:position + int(outcome["length"])])
            position += len(piece)
            whole = offset == 0 and len(piece) == int(outcome["size"])
            try:
                if whole:
                    _check_whole(self.url, fid, compute_crc32c(piece), int(outcome["crc32c"]), expected)
                elif length is None:
                    raise CorruptNeedle(f"{self.url}: needle {fid} is larger than its manifest says")
            except CorruptNeedle as exc:
                outcomes.append(exc)
                continue
            outcomes.append(piece)
        return outcomes

    async def _get_one(self, item: ReadItem) -> bytes:
        fid, offset, length, expected = item
        headers = {}
        if offset or length is not None:
            if length is not None and length <= 0:
                return b""
            last = "" if length is None else str(offset + length - 1)
            headers["range"] = f"bytes={offset}-{last}"
        path = self._path(fid)
        try:
            response = await self._request("GET", path, headers=headers)
        except ArkorError as exc:
            if exc.status == 416:  # the range starts at or past the end: nothing to return
                return b""
            raise
        data = response.content
        if response.status_code == 200 and CRC_HEADER in response.headers:
            actual = await _crc_of(data)
            _check_whole(self.url, fid, actual, int(response.headers[CRC_HEADER]),
                         expected if not offset and length is None else None)
            if offset or length is not None:
                data = data[offset: None if length is None else offset + length]
        return data

    async def head_needle(self, fid: FileID) -> NeedleInfo:
        response = await self._request("HEAD", self._path(fid))
        return NeedleInfo(
            fid=str(fid),
            size=int(response.headers["x-arkor-size"]),
            crc32c=int(response.headers[CRC_HEADER]),
            timestamp=float(response.headers.get("x-arkor-timestamp", "0")),
        )

    async def delete_needle(self, fid: FileID) -> None:
        path = self._path(fid)
        await self._request("DELETE", path, auth=self._auth)

    async def list_needles(self) -> AsyncIterator[NeedleInfo]:
        """Every live needle, in key order, from the signed repair listing (GET /needles): what
        the registry's orphan sweep compares with the metadata DB. Tombstones are left out."""
        after: int | None = 0
        while after is not None:
            page, after = await self.list_page(after)
            for raw in page:
                if not raw["deleted"]:
                    yield NeedleInfo(fid=raw["fid"], size=int(raw["size"]), crc32c=int(raw["crc32c"]),
                                     timestamp=float(raw["timestamp"]))

    async def list_page(self, after: int, limit: int = 1000) -> tuple[list[dict[str, Any]], int | None]:
        """One page of the signed listing, tombstones included (what repair compares): the entries
        as the server sends them (fid, key in hex, cookie, size, crc32c, timestamp, deleted) and
        the key to continue after, None after the last page."""
        path = f"{self._prefix}/needles"
        params = {"after": f"{after:x}", "limit": str(limit)}
        response = await self._request("GET", path, params=params, auth=self._auth)
        body = response.json()
        next_after = body.get("next_after")
        return body["needles"], None if next_after is None else int(next_after, 16)

    @asynccontextmanager
    async def stream_needle(self, fid: FileID) -> AsyncIterator[tuple[NeedleInfo, AsyncIterator[bytes]]]:
        """The whole needle as a stream of chunks (memory stays bounded whatever its size), with
        its size and CRC32C from the answer's headers: the server verified the needle before the
        first byte, and the receiver checks the CRC32C as it writes (repair copies this way)."""
        path = self._path(fid)
        try:
            async with self.client.stream(
                "GET", self.url + path[len(self._prefix):], timeout=self.timeouts.for_client(self.client)
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error(response)
                info = NeedleInfo(fid=str(fid), size=int(response.headers["x-arkor-size"]),
                                  crc32c=int(response.headers[CRC_HEADER]),
                                  timestamp=float(response.headers.get("x-arkor-timestamp", "0")))
                yield info, response.aiter_raw()
        except httpx.TimeoutException as exc:
            raise ServiceUnavailable(f"{self.url}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"{self.url}: {type(exc).__name__}: {exc}") from None


def _error(response: LeanResponse | LeanStream | httpx.Response) -> ArkorError:
    """`errors.from_response`; a HEAD answer's code travels in its X-Arkor-Error header."""
    return from_response(response.status_code, response.content, response.headers)
