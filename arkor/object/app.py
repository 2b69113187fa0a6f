"""The object server's ASGI app: public API v1 (docs/specs/API.md) on the raw-ASGI `StreamRouter`.

Every route streams: PUT bodies are pulled chunk by chunk (back-pressure to the client's TCP window)
and GET bodies are the transfer engine's `RangeReader` (an async context manager owning its
read-ahead nursery), which the router opens before the status line: a GET whose first fragment no
replica can serve is a 503, not a 200 cut short. Each request runs inside its own nursery (for the
bounded drain of a body answered early). The Git LFS routes are
registered on the same router (`arkor.object.lfs.routes.register(router, ctx)`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_to_bytes

import trio

from arkor.config import Config
from arkor.errors import ArkorError, BadRequest, Forbidden, LengthRequired
from arkor.model import ObjectRecord
from arkor.names import InvalidBucketName, InvalidObjectName, check_bucket, check_object_key
from arkor.object.auth import Authenticator
from arkor.object.http import (
    NotModified,
    check_read_conditions,
    content_md5,
    object_headers,
    parse_range,
    user_metadata,
)
from arkor.object.lfs import routes as lfs_routes
from arkor.object.lfs.storage import LFS_BUCKET
from arkor.object.service import ObjectService
from arkor.transfer.contracts import Registry
from arkor.web.asgi import ASGIApp, Receive, Request, Response, Scope, Send, StreamRouter
from arkor.web.metrics import instrument
from arkor.web.semantics import loads_json, parse_uint

log = logging.getLogger(__name__)

MAX_LIST_LIMIT = 1000
CONTROL_BODY_LIMIT = 1024 * 1024
DRAIN_BYTES = 1024**3
DRAIN_SECONDS = 120.0
DRAIN_CHUNK_SECONDS = 5.0  # a client still sending its body sends more often than this


@dataclass
class ObjectContext:
    """What route handlers (v1 and LFS) need: config, the object service, registry and auth."""

    config: Config
    service: ObjectService
    registry: Registry
    auth: Authenticator

    @property
    def body_timeout(self) -> float:
        return float(self.config.object.bodyTimeout)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _put_reply(record: ObjectRecord, status: int = 201) -> Response:
    return Response.json(
        {
            "bucket": record.bucket,
            "key": record.key,
            "size": record.size,
            "etag": record.etag,
            "version": record.version,
        },
        status=status,
        headers=[("etag", f'"{record.etag}"')],
    )


def _check_writable_bucket(bucket: str) -> None:
    """The Git LFS bucket is written only through the LFS API, which checks every SHA-256."""
    if bucket == LFS_BUCKET:
        raise Forbidden(f"bucket {LFS_BUCKET!r} is written only through the Git LFS API",
                        code="reserved_bucket")


def _names(request: Request) -> tuple[str, str]:
    """Bucket and key from the raw path: hypercorn's decoded path turns ``%2F`` into a separator
    (``/v1/a%2Fb/k`` would be bucket ``a``) and invalid UTF-8 into U+FFFD (``%FF`` = ``%FE``)."""
    parts = request.raw_path.split("/", 3)  # "", "v1", bucket, key
    if len(parts) < 4 or not parts[3]:
        raise InvalidBucketName(f"bucket name {parts[2][:80]!r} is not allowed")
    raw_bucket, raw_key = parts[2], parts[3]
    bucket = check_bucket(_strict_utf8(raw_bucket) if "%" in raw_bucket else raw_bucket)
    return bucket, check_object_key(_strict_utf8(raw_key) if "%" in raw_key else raw_key)


def _strict_utf8(raw: str) -> str:
    """Percent-decode `raw`; 400 invalid_object_name when the bytes are not UTF-8."""
    try:
        return unquote_to_bytes(raw.encode("latin-1")).decode("utf-8")
    except UnicodeError:
        raise InvalidObjectName("object name must be valid UTF-8 once percent-decoded") from None


def _part_number(value: object) -> int:
    """A part number of a completion body: a JSON integer (or a string of ASCII digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        return parse_uint(value, "part_number", code="malformed_json")
    raise TypeError("part_number must be an integer")


class V1Routes:
    """Handlers of the public API v1."""

    def __init__(self, ctx: ObjectContext) -> None:
        self.ctx = ctx
        self.service = ctx.service
        self.registry = ctx.registry
        self.max_object = int(ctx.config.object.maxObjectSize)
        self.max_meta = int(ctx.config.object.maxMetadataBytes)

    def register(self, router: StreamRouter) -> None:
        router.add(r"/healthz", ["GET", "HEAD"], self.healthz)
        router.add(r"/readyz", ["GET", "HEAD"], self.readyz)
        router.add(r"/v1/?", ["GET", "HEAD"], self.list_buckets)
        router.add(r"/v1/(?P<bucket>[^/]+)/?", ["GET", "HEAD", "DELETE"], self.bucket)
        router.add(
            r"/v1/(?P<bucket>[^/]+)/(?P<key>.+)",
            ["GET", "HEAD", "PUT", "DELETE", "POST"],
            self.object,
        )

    # --- health -------------------------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        return Response.json({"status": "ok", "role": "object"})

    async def readyz(self, request: Request) -> Response:
        """Ready when the registry answers and at least one group is writable."""
        try:
            with trio.fail_after(5):
                groups = await self.registry.groups()
        except (Exception, trio.TooSlowError) as exc:  # noqa: BLE001 - reported, not raised
            reason = f"registry: {exc!r}"
            return Response.json({"ready": False, "reason": reason,
                                  "error": {"code": "not_ready", "message": reason}}, status=503)
        writable = [g.group for g in groups if g.writable]
        if writable:
            return Response.json({"ready": True, "writable_groups": writable})
        message = "no data group is writable"
        return Response.json({"ready": False, "writable_groups": [],
                              "error": {"code": "not_ready", "message": message}}, status=503)

    # --- buckets ------------------------------------------------------------------------------
    async def list_buckets(self, request: Request) -> Response:
        self.ctx.auth.authorize(request, "read", "*")
        buckets = await self.registry.list_buckets()
        return Response.json({"buckets": [b.to_json() for b in buckets]})

    async def bucket(self, request: Request) -> Response:
        bucket = check_bucket(request.params["bucket"])
        if request.method == "DELETE":
            self.ctx.auth.authorize(request, "write", bucket)
            _check_writable_bucket(bucket)
            await self.registry.delete_bucket(bucket)
            return Response(status=204)
        self.ctx.auth.authorize_listing(request, bucket)
        q = request.query
        if "uploads" in q:
            uploads = await self.registry.list_multipart(bucket)
            return Response.json(
                {
                    "bucket": bucket,
                    "uploads": [
                        {"upload_id": u.upload_id, "key": u.key, "created": u.created}
                        for u in uploads
                    ],
                }
            )
        limit = parse_uint(q.get("limit"), "limit", default=MAX_LIST_LIMIT, minimum=1,
                           maximum=MAX_LIST_LIMIT)
        prefix, delimiter, marker = q.get("prefix", ""), q.get("delimiter", ""), q.get("marker", "")
        page = await self.registry.list_objects(
            bucket, prefix=prefix, delimiter=delimiter, marker=marker, limit=limit
        )
        return Response.json(
            {
                "bucket": bucket,
                "prefix": prefix,
                "delimiter": delimiter,
                "marker": marker,
                "limit": limit,
                "objects": [
                    {
                        "key": o.key,
                        "size": o.size,
                        "etag": o.etag,
                        "content_type": o.content_type,
                        "last_modified": _iso(o.modified),
                    }
                    for o in page.objects
                ],
                "common_prefixes": page.common_prefixes,
                "truncated": page.truncated,
                "next_marker": page.next_marker,
            }
        )

    # --- objects ------------------------------------------------------------------------------
    async def object(self, request: Request) -> Response:
        bucket, key = _names(request)
        q = request.query
        method = request.method
        action = "read" if method in ("GET", "HEAD") else "write"
        self.ctx.auth.authorize_object(request, action, bucket, key)
        if action == "write":
            _check_writable_bucket(bucket)
        if "uploadId" in q:
            return await self._multipart(request, bucket, key, q["uploadId"])
        if method == "POST":
            if "uploads" in q:
                return await self._initiate(request, bucket, key)
            raise BadRequest("POST needs ?uploads or ?uploadId=", code="invalid_argument")
        if method == "PUT":
            return await self._put(request, bucket, key)
        if method == "DELETE":
            await self.service.delete(bucket, key)
            return Response(status=204)
        return await self._get(request, bucket, key)

    def _body(self, request: Request) -> Any:
        if request.content_length is None:
            te = request.headers.get("transfer-encoding", "").lower()
            if "chunked" not in te:
                raise LengthRequired("send Content-Length or Transfer-Encoding: chunked")
        return request.body_chunks(max_size=self.max_object, chunk_timeout=self.ctx.body_timeout)

    async def _put(self, request: Request, bucket: str, key: str) -> Response:
        headers = request.headers
        inm = headers.get("if-none-match")
        if inm is not None and inm.strip() != "*":
            raise BadRequest("PUT supports only If-None-Match: *", code="invalid_argument")
        metadata = user_metadata(headers, self.max_meta)
        source = headers.get("x-arkor-copy-source")
        if source is not None:
            return await self._copy(request, source, bucket, key, metadata, inm is not None)
        record = await self.service.put(
            bucket,
            key,
            self._body(request),
            size=request.content_length,
            content_type=headers.get("content-type", "application/octet-stream"),
            metadata=metadata,
            content_md5=content_md5(headers),
            if_match=headers.get("if-match"),
            if_none_match=inm is not None,
        )
        return _put_reply(record)

    async def _copy(
        self,
        request: Request,
        source: str,
        bucket: str,
        key: str,
        metadata: dict[str, str],
        if_none_match: bool,
    ) -> Response:
        if (request.content_length or 0) > 0:
            raise BadRequest("a copy request has no body", code="invalid_argument")
        src_bucket, sep, src_key = source.lstrip("/").partition("/")
        if not sep:
            raise BadRequest("X-Arkor-Copy-Source must be /bucket/key", code="invalid_argument")
        src_bucket, src_key = check_bucket(_strict_utf8(src_bucket)), check_object_key(_strict_utf8(src_key))
        self.ctx.auth.authorize_object(request, "read", src_bucket, src_key)
        record = await self.service.copy(
            src_bucket,
            src_key,
            bucket,
            key,
            content_type=request.headers.get("content-type"),
            metadata=metadata or None,
            if_none_match=if_none_match,
        )
        return _put_reply(record)

    async def _get(self, request: Request, bucket: str, key: str) -> Response:
        record = await self.service.head(bucket, key)
        try:
            check_read_conditions(request.headers, record)
        except NotModified as exc:
            return Response(status=304, headers=list(exc.headers.items()))
        headers = object_headers(record)
        span = parse_range(request.headers.get("range"), record.size)
        status = 200
        start, end = 0, record.size - 1
        if span is not None:
            status = 206
            start, end = span
            headers.append(("content-range", f"bytes {start}-{end}/{record.size}"))
        length = end - start + 1 if record.size else 0
        headers.append(("content-length", str(length)))
        if request.method == "HEAD" or length == 0:
            return Response(status=status, headers=headers, body=b"")
        return Response(status=status, headers=headers, body=self.service.open_read(record, start, end))

    # --- multipart ------------------------------------------------------------------------------
    async def _initiate(self, request: Request, bucket: str, key: str) -> Response:
        upload = await self.registry.create_multipart(
            bucket,
            key,
            request.headers.get("content-type", "application/octet-stream"),
            user_metadata(request.headers, self.max_meta),
        )
        return Response.json({"upload_id": upload.upload_id, "bucket": bucket, "key": key})

    async def _multipart(self, request: Request, bucket: str, key: str, upload_id: str) -> Response:
        method = request.method
        if method == "PUT":
            number = parse_uint(request.query.get("partNumber"), "partNumber", code="invalid_part")
            part = await self.service.upload_part(
                bucket,
                key,
                upload_id,
                number,
                self._body(request),
                size=request.content_length,
                content_md5=content_md5(request.headers),
            )
            return Response.json(
                {"part_number": part.part_number, "size": part.size, "etag": part.etag},
                headers=[("etag", f'"{part.etag}"')],
            )
        upload = await self.registry.get_multipart(upload_id)
        if (upload.bucket, upload.key) != (bucket, key):
            raise ArkorError(f"no upload {upload_id} for {bucket}/{key}", code="no_such_upload", status=404)
        if method in ("GET", "HEAD"):
            parts = await self.registry.list_parts(upload_id)
            return Response.json(
                {"upload_id": upload_id, "parts": [p.to_json(with_fragments=False) for p in parts]}
            )
        if method == "DELETE":
            await self.registry.abort_multipart(upload_id)
            return Response(status=204)
        # POST: complete
        raw = await request.read_body(max_size=CONTROL_BODY_LIMIT, chunk_timeout=self.ctx.body_timeout)
        doc = loads_json(raw)
        try:
            parts = [(_part_number(p["part_number"]), str(p["etag"])) for p in doc["parts"]]
        except (ValueError, KeyError, TypeError):
            raise BadRequest(
                'body must be {"parts": [{"part_number": N, "etag": "..."}]}', code="malformed_json"
            ) from None
        record = await self.service.complete_multipart(bucket, key, upload_id, parts)
        return _put_reply(record)


async def _drain(receive: Receive, done: Any, chunk_timeout: float) -> None:
    """Read and drop the rest of a request body we answered early (an error), within bounds.

    Why: HTTP/1.1 clients such as httpx and curl only read the response once they have sent the
    whole body; a server that stops reading leaves them blocked until their own timeout, never
    seeing the error. Past the bounds we give up and the connection is closed."""
    dropped = 0
    with trio.move_on_after(DRAIN_SECONDS):
        while not done() and dropped < DRAIN_BYTES:
            with trio.move_on_after(chunk_timeout) as scope:
                message = await receive()
            if scope.cancelled_caught or message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))


async def _discard_until_closed(receive: Receive) -> None:
    """Keep taking body messages until hypercorn says the stream is closed.

    Why: when a response completes, hypercorn pushes `http.disconnect` into the request's bounded
    queue from inside our `send`; if the queue is full of body chunks nobody reads, that `send`
    never returns (a deadlock that leaves the client hanging). Runs only past `_drain`'s bounds."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


def build_object_app(ctx: ObjectContext) -> ASGIApp:
    """The object server app: v1 routes, Git LFS routes, metrics, per-request nursery."""
    router = StreamRouter()
    V1Routes(ctx).register(router)
    lfs_routes.register(router, ctx)
    return instrument(request_lifecycle(router, ctx.body_timeout), "object")


def request_lifecycle(handler: ASGIApp, body_timeout: float) -> ASGIApp:
    """Wrap a streaming handler (the v1 router, the S3 app): lifespan, a nursery per request,
    and the bounded drain of a body answered early (see `_drain`)."""
    drain_timeout = min(body_timeout, DRAIN_CHUNK_SECONDS)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body_done = not _has_body(scope)
        answered = False  # the response is complete (then nothing but _discard_until_closed reads)
        status = 0

        async def tracking_receive() -> dict[str, Any]:
            nonlocal body_done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def closing_send(message: dict[str, Any]) -> None:
            nonlocal answered, status
            # Answered before the whole body was read (an error): the connection cannot be reused,
            # so say so; otherwise a client may send its next request into a closing socket.
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if not body_done:
                    message = {**message, "headers": [*message.get("headers", []), [b"connection", b"close"]]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # Let the client finish sending, so that it reads our answer (not when the answer
                # is that it stopped sending: 408 after the body timeout).
                if not body_done and status != 408:
                    await _drain(tracking_receive, lambda: body_done, drain_timeout)
                if not body_done:
                    nursery.start_soon(_discard_until_closed, tracking_receive)
                answered = True
            await send(message)

        async with trio.open_nursery() as nursery:
            try:
                await handler(scope, tracking_receive, closing_send)
                if not body_done and not answered:  # no response at all (client gone): drain
                    await _drain(tracking_receive, lambda: body_done, drain_timeout)
            finally:
                nursery.cancel_scope.cancel()  # the discard of an abandoned body

    return app
