"""A thin raw-ASGI layer for the data path, in front of a Quart app for everything else.

Why: Quart reads request bodies into an unbounded buffer (STACK-NOTES), so a PUT forwarded to slower
replicas piles up in RAM. Raw ASGI `receive()` only pulls the next chunk when we ask for it, which is
real back-pressure all the way to the client's TCP window. Routes registered on `StreamRouter` get a
`Request` and must return a `Response`; anything unmatched falls through to the Quart app.

Errors raised as `ArkorError` (and body timeouts, size mismatches) become the JSON error body of
the contract; anything else is logged and answered 500 without leaking details.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import trio

from arkor.errors import ArkorError, LengthRequired, PayloadTooLarge, RequestTimeout
from arkor.web.semantics import BodySizeMismatch, declared_length, loads_json

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientDisconnected(Exception):
    """The client went away before the request body was complete."""


@dataclass
class Request:
    scope: Scope
    receive: Receive
    method: str
    path: str  # decoded path
    raw_path: str  # as sent, percent-encoded, without query
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    params: dict[str, str] = field(default_factory=dict)  # route captures
    _body_consumed: bool = False

    @property
    def content_length(self) -> int | None:
        """The declared length; None for chunked bodies. BadRequest when malformed."""
        return declared_length(self.headers)

    @property
    def client_host(self) -> str:
        client = self.scope.get("client")
        return client[0] if client else ""

    async def body_chunks(
        self, *, max_size: int, chunk_timeout: float, require_length: bool = False
    ) -> AsyncIterator[bytes]:
        """Yield the body as it arrives, pulling each chunk only when the caller asks.

        Raises RequestTimeout when the client sends nothing for `chunk_timeout` seconds,
        BodySizeMismatch when the body ends short of (or runs past) Content-Length,
        PayloadTooLarge past `max_size`, ClientDisconnected when the client goes away.
        """
        if self._body_consumed:
            raise RuntimeError("request body already consumed")
        self._body_consumed = True
        declared = self.content_length
        if declared is None and require_length:
            raise LengthRequired("Content-Length is required")
        if declared is not None and declared > max_size:
            raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {max_size}")
        received = 0
        while True:
            with trio.move_on_after(chunk_timeout) as scope:
                message = await self.receive()
            if scope.cancelled_caught:
                raise RequestTimeout(
                    f"no request body data for {chunk_timeout:g} s; received {received} of "
                    f"{declared if declared is not None else 'unknown'} bytes"
                )
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            chunk = message.get("body", b"")
            if chunk:
                received += len(chunk)
                if declared is not None and received > declared:
                    raise BodySizeMismatch(f"body is longer than Content-Length {declared}")
                if received > max_size:
                    raise PayloadTooLarge(f"body exceeds the limit of {max_size} bytes")
                yield chunk
            if not message.get("more_body", False):
                break
        if declared is not None and received != declared:
            raise BodySizeMismatch(
                f"body ended after {received} bytes, Content-Length said {declared}"
            )

    async def read_body(self, *, max_size: int, chunk_timeout: float) -> bytes:
        """The whole (bounded) body, for small requests such as JSON."""
        parts = [c async for c in self.body_chunks(max_size=max_size, chunk_timeout=chunk_timeout)]
        return b"".join(parts)

    async def read_json(self, *, max_size: int = 1024 * 1024, chunk_timeout: float = 30.0) -> Any:
        return loads_json(await self.read_body(max_size=max_size, chunk_timeout=chunk_timeout))


@dataclass
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    # A body that can still fail before anything is answered is an async context manager yielding
    # the chunks (the transfer engine's RangeReader): the router enters it BEFORE the status line,
    # so an ArkorError while opening becomes the error response (a GET's 503), and leaves it after.
    body: bytes | AsyncIterable[bytes] | AbstractAsyncContextManager[AsyncIterable[bytes]] = b""
    # Called (shielded, after the response ends or fails) to release what `body` holds.
    on_close: Callable[[], Awaitable[None]] | None = None
    # The answer when entering a context-manager `body` fails, in the handler's own error shape
    # (Git LFS, S3); None: whatever the router that sends it uses.
    open_error: Callable[[ArkorError], Response] | None = None

    @classmethod
    def json(
        cls, data: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()
    ) -> Response:
        payload = json.dumps(data, separators=(",", ":")).encode()
        hdrs = [("content-type", "application/json"), *headers]
        return cls(status=status, headers=hdrs, body=payload)

    @classmethod
    def error(cls, exc: ArkorError, content_type: str = "application/json") -> Response:
        payload = json.dumps(exc.to_json(), separators=(",", ":")).encode()
        hdrs = [("content-type", content_type), *exc.headers.items()]
        return cls(status=exc.status, headers=hdrs, body=payload)


def _encode_headers(headers: Iterable[tuple[str, str]], length: int | None) -> list[list[bytes]]:
    out = [[k.lower().encode("latin-1"), v.encode("latin-1")] for k, v in headers]
    if length is not None and not any(k == b"content-length" for k, _ in out):
        out.append([b"content-length", str(length).encode()])
    return out


def _declared_length(headers: Iterable[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length":
            return int(value) if value.isdigit() else None
    return None


async def send_response(
    send: Send,
    response: Response,
    *,
    head: bool = False,
    open_error: Callable[[ArkorError], Response] | None = None,
) -> None:
    """Send status, headers and body; a streamed body is sent chunk by chunk (back-pressured by
    hypercorn's flow control). A context-manager body is entered first: an ArkorError while
    entering it is answered with the response's own `open_error`, else the `open_error` given,
    else the JSON error."""
    open_error = response.open_error or open_error
    if isinstance(response.body, AbstractAsyncContextManager):
        async with AsyncExitStack() as stack:
            try:
                chunks = await stack.enter_async_context(response.body)
            except ArkorError as exc:
                fallback = Response.error(exc) if open_error is None else open_error(exc)
            except Exception:
                log.exception("could not open a response body")
                internal = ArkorError("internal server error", code="internal_error", status=500)
                fallback = Response.error(internal) if open_error is None else open_error(internal)
            else:
                opened = Response(response.status, response.headers, chunks, response.on_close)
                await send_response(send, opened, head=head)
                return
        if response.on_close is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await response.on_close()
        await send_response(send, fallback, head=head)
        return
    try:
        if isinstance(response.body, (bytes, bytearray, memoryview)):
            body = bytes(response.body)
            has_length = any(k.lower() == "content-length" for k, _ in response.headers)
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": _encode_headers(
                        response.headers, None if has_length else len(body)
                    ),
                }
            )
            await send({"type": "http.response.body", "body": b"" if head else body})
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": _encode_headers(response.headers, None),
            }
        )
        # The chunk that completes a declared Content-Length ends the message itself: one send
        # through every layer below instead of two (most GETs are one chunk).
        remaining = None if head else _declared_length(response.headers)
        ended = False
        if not head:
            async for chunk in response.body:
                if not chunk:
                    continue
                if remaining is not None:
                    remaining -= len(chunk)
                    if remaining == 0 and not ended:
                        ended = True
                        await send({"type": "http.response.body", "body": chunk})
                        continue
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if not ended:
            await send({"type": "http.response.body", "body": b""})
    finally:
        if response.on_close is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await response.on_close()


Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class _Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Handler


class StreamRouter:
    """ASGI app: raw handlers for registered (method, path-regex) routes, else `fallback`.

    Patterns match the decoded path and use named groups for `Request.params`.
    """

    def __init__(
        self,
        fallback: ASGIApp | None = None,
        *,
        error_content_type: Callable[[Request], str] | None = None,
    ) -> None:
        self.fallback = fallback
        self.routes: list[_Route] = []
        self.error_content_type = error_content_type

    def route(self, pattern: str, methods: Iterable[str]) -> Callable[[Handler], Handler]:
        def decorator(handler: Handler) -> Handler:
            self.add(pattern, methods, handler)
            return handler

        return decorator

    def add(self, pattern: str, methods: Iterable[str], handler: Handler) -> None:
        self.routes.append(
            _Route(frozenset(m.upper() for m in methods), re.compile(pattern), handler)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if self.fallback is not None:
                await self.fallback(scope, receive, send)
            return
        path = scope["path"]
        matched_path = False
        for route in self.routes:
            match = route.pattern.fullmatch(path)
            if match is None:
                continue
            matched_path = True
            if scope["method"] not in route.methods:
                continue
            request = make_request(scope, receive)
            request.params = {k: v for k, v in match.groupdict().items() if v is not None}
            await self._run(route.handler, request, send)
            return
        if self.fallback is not None and not matched_path:
            await self.fallback(scope, receive, send)
            return
        request = make_request(scope, receive)
        if matched_path:
            exc: ArkorError = ArkorError(
                f"{scope['method']} is not allowed on this path",
                code="method_not_allowed",
                status=405,
            )
        else:
            exc = ArkorError("no such endpoint", code="not_found", status=404)
        await send_response(send, Response.error(exc), head=scope["method"] == "HEAD")
        _ = request

    async def _run(self, handler: Handler, request: Request, send: Send) -> None:
        head = request.method == "HEAD"
        try:
            response = await handler(request)
        except ArkorError as exc:
            response = Response.error(exc, self._error_type(request))
        except ClientDisconnected:
            return
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            response = Response.error(
                ArkorError("internal server error", code="internal_error", status=500),
                self._error_type(request),
            )
        await send_response(
            send, response, head=head,
            open_error=lambda exc: Response.error(exc, self._error_type(request)),
        )

    def _error_type(self, request: Request) -> str:
        if self.error_content_type is None:
            return "application/json"
        return self.error_content_type(request)


def make_request(scope: Scope, receive: Receive) -> Request:
    raw = scope.get("raw_path") or scope["path"].encode()
    raw_path = raw.decode("latin-1").split("?", 1)[0]
    query_string = scope.get("query_string", b"").decode("latin-1")
    query = dict(parse_qsl(query_string, keep_blank_values=True))
    headers: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return Request(
        scope=scope,
        receive=receive,
        method=scope["method"],
        path=scope["path"],
        raw_path=raw_path,
        query=query,
        headers=headers,
    )


def decoded(raw: str) -> str:
    """Percent-decode a path segment captured from `raw_path`."""
    return unquote(raw, errors="strict")
