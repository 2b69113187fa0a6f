"""A lean HTTP/1.1 client for the roles' internal calls: keep-alive pool, timeouts, trio sockets.

Why not httpx here: profiled on a loaded cluster, the object server spent about 85 % of its CPU in
httpx/httpcore for small GETs (a registry lookup and a needle read per request), its auth,
redirect, cookie and URL layers included. This client does only what the internal API needs (one
request at a time per connection, bodies held in memory up to `max_body`), at a small fraction of
that cost. It speaks to Arkor's own servers; the SDK and tests keep httpx.

It mirrors the part of httpx's API the internal clients use (`request(...)` returning an object
with `status_code`, `headers`, `content`, `json()`), and raises httpx's exception classes, so a
caller's error handling is the same with either client.

Charter: pooling, sockets, TLS and timeouts; framing comes from `protocol.py`. Bounded: at most
`max_connections` sockets open (callers beyond wait up to the pool timeout), `max_idle_per_origin`
kept idle, heads of 64 KiB and bodies of `max_body` bytes at most. A connection that was not read
to a clean end (error, cancel, unread body) is closed, never reused.
"""

from __future__ import annotations

import json as jsonlib
import select
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import httpx
import trio

from arkor.httpclient.protocol import (
    MAX_HEAD,
    ChunkedDecoder,
    ProtocolError,
    ResponseHead,
    parse_head,
    request_head,
)

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
READ_SIZE = 256 * 1024


@dataclass(frozen=True)
class Timeouts:
    """Seconds for: opening a connection (TCP and TLS), each read of a body (the idle gap), each
    write, waiting for a free connection slot, and the answer's head after the request was sent
    (`first_byte`; the read timeout when not given)."""

    connect: float
    read: float
    write: float
    pool: float
    first_byte: float | None = None

    @property
    def head(self) -> float:
        return self.read if self.first_byte is None else self.first_byte

    @classmethod
    def of(cls, value: Any) -> Timeouts:
        """From a number (all the same), a `Timeouts`, or anything with httpx.Timeout's fields."""
        if isinstance(value, cls):
            return value
        if isinstance(value, int | float):
            return cls(float(value), float(value), float(value), float(value))
        return cls(*(float(getattr(value, name) or 3600.0) for name in ("connect", "read", "write", "pool")))


class LeanResponse:
    """A complete response: status, lower-case headers, the whole body."""

    __slots__ = ("content", "headers", "method", "status_code", "url")

    def __init__(self, method: str, url: str, status: int, headers: dict[str, str], content: bytes) -> None:
        self.method, self.url, self.status_code, self.headers, self.content = (
            method, url, status, headers, content)

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<LeanResponse [{self.status_code}] {self.method} {self.url}>"


class _Connection:
    __slots__ = ("buf", "fd", "finished", "idle_since", "stream")

    def __init__(self, stream: trio.abc.Stream, fd: int) -> None:
        self.stream = stream
        self.fd = fd
        self.buf = bytearray()
        self.idle_since = 0.0
        self.finished = False  # the current answer was read to its end

    def looks_alive(self) -> bool:
        """An idle connection with something to read has been closed (or spoken out of turn)."""
        try:
            readable, _, _ = select.select([self.fd], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable


class LeanClient:
    """Use as ``async with LeanClient(...) as client`` (or call `aclose`)."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True, max_connections: int = 256,
                 max_idle_per_origin: int = 32, idle_expiry: float = 20.0,
                 max_body: int = 1024**3, timeout: Any = 30.0) -> None:
        if isinstance(verify, ssl.SSLContext):
            self._ssl: ssl.SSLContext | None = verify
        elif verify:
            self._ssl = ssl.create_default_context()
        else:
            self._ssl = ssl.create_default_context()
            self._ssl.check_hostname = False
            self._ssl.verify_mode = ssl.CERT_NONE
        self._slots = trio.CapacityLimiter(max_connections)
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._max_idle = max_idle_per_origin
        self._idle_expiry = idle_expiry
        self._max_body = max_body
        self._timeout = Timeouts.of(timeout)
        self._closed = False

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                await trio.aclose_forcefully(conn.stream)

    async def request(self, method: str, url: str, *, content: bytes | bytearray | memoryview | None = None,
                      json: Any = None, params: Mapping[str, str] | None = None,
                      headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
                      auth: Signer | None = None,
                      timeout: Any = None) -> LeanResponse:  # noqa: ASYNC109 - per-phase limits, as httpx
        """Send one request and read the whole answer (any status: the caller decides)."""
        async with self._open(method, url, content, json, params, headers, auth, timeout) as (
                conn, head, target, timeouts):
            if head.framing == "length":
                content_out = await self._read_length(conn, head.length, target, timeouts)
            else:
                parts, size = [], 0
                async for piece in self._body(conn, head, target, timeouts):
                    size += len(piece)
                    if size > self._max_body:
                        raise ProtocolError(f"body over the limit of {self._max_body} bytes")
                    parts.append(piece)
                content_out = b"".join(parts)
            conn.finished = True
            return LeanResponse(method.upper(), target, head.status, head.headers, content_out)

    @asynccontextmanager
    async def stream(self, method: str, url: str, *, content: bytes | None = None,
                     params: Mapping[str, str] | None = None,
                     headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
                     auth: Signer | None = None,
                     timeout: Any = None) -> AsyncIterator[LeanStream]:  # noqa: ASYNC109 - as `request`
        """Send one request; the answer's body is read as the caller iterates `aiter_raw()`.
        The connection goes back to the pool only if the body was read to its end."""
        async with self._open(method, url, content, None, params, headers, auth, timeout) as (
                conn, head, target, timeouts):
            yield LeanStream(self, conn, head, target, timeouts)

    @asynccontextmanager
    async def _open(
        self, method: str, url: str, content: Any, json: Any, params: Any, headers: Any,
        auth: Signer | None, limits: Any,
    ) -> AsyncIterator[tuple[_Connection, ResponseHead, str, Timeouts]]:
        """Send the request and read the answer's head; on exit the connection is pooled when its
        answer was read to a clean end (`conn.finished`), else closed."""
        if self._closed:
            raise RuntimeError("the client is closed")
        method = method.upper()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise httpx.UnsupportedProtocol(f"not an http(s) URL: {url[:100]!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = (parts.scheme, parts.hostname, port)
        query = parts.query
        if params:
            query = (query + "&" if query else "") + urlencode(params)
        target = (parts.path or "/") + ("?" + query if query else "")
        head_items = list(headers.items() if isinstance(headers, Mapping) else headers or [])
        body = b""
        if json is not None:
            body = jsonlib.dumps(json, separators=(",", ":")).encode()
            head_items.append(("Content-Type", "application/json"))
        elif content is not None:
            body = bytes(content) if not isinstance(content, bytes) else content
        if auth is not None:
            head_items += auth.headers_for(method, parts.path or "/", query, body, dict(head_items)).items()
        host = parts.netloc.rpartition("@")[2]
        request = request_head(method, target, host, head_items, len(body))
        timeouts = Timeouts.of(limits) if limits is not None else self._timeout
        display = f"{parts.scheme}://{host}{target}"
        try:
            with trio.fail_after(timeouts.pool):
                await self._slots.acquire()
        except trio.TooSlowError:
            raise httpx.PoolTimeout(f"no free connection to {host} within {timeouts.pool} s") from None
        try:
            for attempt in (1, 2):
                conn, reused = await self._checkout(origin, timeouts)
                try:
                    head = await self._send(conn, method, display, request, body, timeouts)
                except _StaleConnection:
                    await trio.aclose_forcefully(conn.stream)
                    if not reused or attempt == 2 or method not in IDEMPOTENT:
                        raise httpx.RemoteProtocolError(
                            f"{host}: the server closed the connection without answering") from None
                    continue
                except BaseException:
                    await trio.aclose_forcefully(conn.stream)
                    raise
                try:
                    yield conn, head, display, timeouts
                except ProtocolError as exc:
                    conn.finished = False
                    raise httpx.RemoteProtocolError(f"{display}: {exc}") from None
                finally:
                    await self._checkin(origin, conn, head)
                return
        finally:
            self._slots.release()

    async def _checkin(self, origin: tuple[str, str, int], conn: _Connection, head: ResponseHead) -> None:
        idle = self._idle.setdefault(origin, [])
        reusable = conn.finished and head.keep_alive and head.framing != "close" and not conn.buf
        if reusable and not self._closed and len(idle) < self._max_idle:
            conn.finished = False
            conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            await trio.aclose_forcefully(conn.stream)

    async def _checkout(self, origin: tuple[str, str, int], timeouts: Timeouts) -> tuple[_Connection, bool]:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if now - conn.idle_since < self._idle_expiry and conn.looks_alive():
                return conn, True
            await trio.aclose_forcefully(conn.stream)
        return await self._connect(origin, timeouts), False

    async def _connect(self, origin: tuple[str, str, int], timeouts: Timeouts) -> _Connection:
        scheme, host, port = origin
        try:
            with trio.fail_after(timeouts.connect):
                sock_stream = await trio.open_tcp_stream(host, port)
                fd = sock_stream.socket.fileno()
                stream: trio.abc.Stream = sock_stream
                if scheme == "https":
                    assert self._ssl is not None
                    ssl_stream = trio.SSLStream(sock_stream, self._ssl, server_hostname=host,
                                                https_compatible=True)
                    try:
                        await ssl_stream.do_handshake()
                    except BaseException:
                        await trio.aclose_forcefully(sock_stream)
                        raise
                    stream = ssl_stream
        except trio.TooSlowError:
            raise httpx.ConnectTimeout(f"{host}:{port}: no connection within {timeouts.connect} s") from None
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{host}:{port}: {exc}") from None
        return _Connection(stream, fd)

    async def _send(self, conn: _Connection, method: str, url: str, head: bytes, body: bytes,
                    timeouts: Timeouts) -> ResponseHead:
        try:
            with trio.fail_after(timeouts.write):
                if len(body) <= 64 * 1024:
                    await conn.stream.send_all(head + body)
                else:
                    await conn.stream.send_all(head)
                    view = memoryview(body)
                    for start in range(0, len(view), 1024 * 1024):
                        await conn.stream.send_all(view[start:start + 1024 * 1024])
        except trio.TooSlowError:
            raise httpx.WriteTimeout(f"{url}: request not sent within {timeouts.write} s") from None
        except (trio.BrokenResourceError, OSError) as exc:
            raise _StaleConnection() from exc
        try:
            return await self._read_head(conn, method, url, timeouts)
        except ProtocolError as exc:
            raise httpx.RemoteProtocolError(f"{url}: {exc}") from None

    async def _receive(self, conn: _Connection, url: str, seconds: float) -> bytes:
        try:
            with trio.fail_after(seconds):
                return bytes(await conn.stream.receive_some(READ_SIZE))
        except trio.TooSlowError:
            raise httpx.ReadTimeout(f"{url}: nothing received within {seconds} s") from None
        except (trio.BrokenResourceError, OSError) as exc:
            raise httpx.ReadError(f"{url}: {exc}") from None

    async def _read_head(self, conn: _Connection, method: str, url: str, timeouts: Timeouts) -> ResponseHead:
        first = True
        while True:
            end = conn.buf.find(b"\r\n\r\n")
            if end >= 0:
                block = bytes(conn.buf[:end])
                del conn.buf[: end + 4]
                parsed = parse_head(block, method=method)
                if 100 <= parsed.status < 200:  # an interim answer: the real one follows
                    continue
                conn.finished = parsed.framing == "none"
                return parsed
            if len(conn.buf) > MAX_HEAD:
                raise ProtocolError("response head too large")
            try:
                data = await self._receive(conn, url, timeouts.head)
            except httpx.ReadError:
                if first:
                    raise _StaleConnection() from None
                raise
            if not data:
                if first and not conn.buf:
                    raise _StaleConnection()
                raise httpx.RemoteProtocolError(f"{url}: connection closed inside the response head")
            first = False
            conn.buf += data

    async def _read_length(self, conn: _Connection, length: int, url: str, timeouts: Timeouts) -> bytes:
        """A Content-Length body, whole (the common case: one copy out of the connection buffer)."""
        if length > self._max_body:
            raise ProtocolError(f"body of {length} bytes is over the limit of {self._max_body}")
        if len(conn.buf) >= length:
            content = bytes(conn.buf[:length])
            del conn.buf[:length]
            return content
        # Gathered as received and joined once: a fragment (MiBs) is copied once, not thrice.
        parts: list[bytes] = [bytes(conn.buf)]
        got = len(conn.buf)
        conn.buf.clear()
        while got < length:
            data = await self._receive(conn, url, timeouts.read)
            if not data:
                raise httpx.RemoteProtocolError(f"{url}: connection closed inside the body")
            parts.append(data)
            got += len(data)
        content = b"".join(parts)
        if got > length:  # bytes of whatever follows (never, without pipelining): keep them
            conn.buf += content[length:]
            content = content[:length]
        return content

    async def _body(self, conn: _Connection, head: ResponseHead, url: str,
                    timeouts: Timeouts) -> AsyncIterator[bytes]:
        """The answer's body in pieces as they arrive, whatever its framing; sets `conn.finished`
        once the end was read (the connection may then be reused)."""
        if head.framing == "none":
            conn.finished = True
            return
        if head.framing == "length":
            remaining = head.length
            while remaining:
                if not conn.buf:
                    data = await self._receive(conn, url, timeouts.read)
                    if not data:
                        raise httpx.RemoteProtocolError(f"{url}: connection closed inside the body")
                    conn.buf += data
                piece = bytes(conn.buf[:remaining])
                del conn.buf[: len(piece)]
                remaining -= len(piece)
                yield piece
        elif head.framing == "chunked":
            decoder = ChunkedDecoder()
            data, conn.buf = bytes(conn.buf), bytearray()
            while True:
                for piece in decoder.feed(data):
                    yield piece
                if decoder.done:
                    conn.buf += decoder.leftover
                    break
                data = await self._receive(conn, url, timeouts.read)
                if not data:
                    raise httpx.RemoteProtocolError(f"{url}: connection closed inside a chunked body")
        else:  # "close": everything until the peer closes
            if conn.buf:
                yield bytes(conn.buf)
                conn.buf.clear()
            while data := await self._receive(conn, url, timeouts.read):
                yield data
        conn.finished = True


class LeanStream:
    """An answer whose body is still on the wire: `status_code`, `headers`, then `aiter_raw()`."""

    def __init__(self, client: LeanClient, conn: _Connection, head: ResponseHead, url: str,
                 timeouts: Timeouts) -> None:
        self._client, self._conn, self._head, self.url, self._timeouts = client, conn, head, url, timeouts
        self.status_code = head.status
        self.headers = head.headers

        self.content = b""  # after `aread`

    def aiter_raw(self) -> AsyncIterator[bytes]:
        return self._client._body(self._conn, self._head, self.url, self._timeouts)

    async def aread(self) -> bytes:
        """The rest of the body (bounded by the client's `max_body`), kept as `content`."""
        parts, size = [], 0
        async for piece in self.aiter_raw():
            size += len(piece)
            if size > self._client._max_body:
                raise ProtocolError(f"body over the limit of {self._client._max_body} bytes")
            parts.append(piece)
        self.content = b"".join(parts)
        return self.content

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class Signer(Protocol):
    """What signs an internal request (arkor.security.ClusterAuth): extra headers computed over the
    method, the path and query as sent, the body and the other headers."""

    def headers_for(self, method: str, path: str, query: str, body: bytes,
                    headers: Mapping[str, str]) -> Mapping[str, str]: ...


class _StaleConnection(Exception):
    """A connection failed before any byte of the answer: on a reused one, try a new one once."""
