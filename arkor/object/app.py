"""The object server's ASGI app: public API v1 (docs/specs/API.md) on the raw-ASGI `StreamRouter`,
health and readiness on its QuartTrio control app, wired by `arkor.web.role.role_app`.

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
from arkor.web.asgi import ASGIApp, Request, Response, StreamRouter
from arkor.web.role import DRAIN_CHUNK_SECONDS, answer_lifespan, control_app, guard_early_answers, role_app
from arkor.web.semantics import loads_json, parse_uint

log = logging.getLogger(__name__)

MAX_LIST_LIMIT = 1000
CONTROL_BODY_LIMIT = 1024 * 1024


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
        router.add(r"/v1/?", ["GET", "HEAD"], self.list_buckets)
        router.add(r"/v1/(?P<bucket>[^/]+)/?", ["GET", "HEAD", "DELETE"], self.bucket)
        router.add(
            r"/v1/(?P<bucket>[^/]+)/(?P<key>.+)",
            ["GET", "HEAD", "PUT", "DELETE", "POST"],
            self.object,
        )

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
            listed = [(_part_number(p["part_number"]), str(p["etag"])) for p in doc["parts"]]
        except (ValueError, KeyError, TypeError):
            raise BadRequest(
                'body must be {"parts": [{"part_number": N, "etag": "..."}]}', code="malformed_json"
            ) from None
        record = await self.service.complete_multipart(bucket, key, upload_id, listed)
        return _put_reply(record)


def build_object_app(ctx: ObjectContext) -> ASGIApp:
    """The object server app (`arkor.web.role.role_app`): v1 and Git LFS routes on the raw router,
    health and readiness on the QuartTrio control app, early answers drained, metrics."""
    router = StreamRouter()
    V1Routes(ctx).register(router)
    lfs_routes.register(router, ctx)
    return role_app("object", router, _control(ctx), early_answers=ctx.body_timeout)


def request_lifecycle(handler: ASGIApp, body_timeout: float) -> ASGIApp:
    """A streaming handler without a control app (the S3 listener): lifespan answered and the
    bounded drain of a body answered early."""
    return guard_early_answers(answer_lifespan(handler), min(body_timeout, DRAIN_CHUNK_SECONDS))


def _control(ctx: ObjectContext) -> Any:
    """The QuartTrio app of the object role: liveness and readiness."""
    from quart import jsonify

    app = control_app("arkor.object", health={"role": "object"})

    @app.get("/readyz")
    async def readyz() -> Any:
        """Ready when the registry answers and at least one group is writable."""
        try:
            with trio.fail_after(5):
                groups = await ctx.registry.groups()
        except (Exception, trio.TooSlowError) as exc:  # noqa: BLE001 - reported, not raised
            reason = f"registry: {exc!r}"
            return jsonify({"ready": False, "reason": reason,
                            "error": {"code": "not_ready", "message": reason}}), 503
        writable = [g.group for g in groups if g.writable]
        if writable:
            return jsonify({"ready": True, "writable_groups": writable})
        message = "no data group is writable"
        return jsonify({"ready": False, "writable_groups": [],
                        "error": {"code": "not_ready", "message": message}}), 503

    return app
