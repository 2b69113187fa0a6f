"""The S3 listener: a raw-ASGI app that addresses (path or virtual-hosted style), authenticates,
routes by method + query sub-resource to one operation, and answers every error as S3 XML with
`RequestId` equal to the `x-amz-request-id` header.

Lives here: addressing, routing, error rendering, `serve_s3`. Not here: the operations (one module
per group), protocol logic (sigv4, chunked, checksums, xmlutil). Bodies stream exactly as on the
v1 listener (`request_lifecycle`: a nursery per request, bounded drain of a body answered early).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from arkor.config import Config
from arkor.errors import ArkorError
from arkor.object.app import ObjectContext, request_lifecycle
from arkor.object.s3 import buckets, copy, listing, misc, multipart, objects
from arkor.object.s3.access import authenticate
from arkor.object.s3.context import XML_TYPE, S3Call, S3Context, to_s3_error
from arkor.object.s3.errors import S3Error, error_xml
from arkor.web.asgi import (
    ASGIApp,
    ClientDisconnected,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    decoded,
    make_request,
    send_response,
)
from arkor.web.metrics import instrument
from arkor.web.request_id import new_request_id
from arkor.web.serve import serve_app

log = logging.getLogger(__name__)

Operation = Callable[[S3Context, S3Call], Awaitable[Response]]

# Sub-resources S3 has and Arkor does not implement: 501 NotImplemented, never a wrong success.
UNSUPPORTED_BUCKET = frozenset({
    "accelerate", "analytics", "cors", "encryption", "intelligent-tiering", "inventory",
    "lifecycle", "logging", "metrics", "notification", "object-lock", "ownershipControls",
    "metadataTable", "policy", "policyStatus", "publicAccessBlock", "replication",
    "requestPayment", "session", "tagging", "website",
})
UNSUPPORTED_OBJECT = frozenset({
    "attributes", "legal-hold", "restore", "retention", "select", "tagging", "torrent",
})


def _not_implemented(what: str) -> Operation:
    async def op(ctx: S3Context, call: S3Call) -> Response:
        raise S3Error("NotImplemented", f"{what} is not implemented by Arkor", 501)

    return op


# GET on a bucket with one of these sub-resources (the first present wins), else a listing.
_BUCKET_GETS: tuple[tuple[str, Operation], ...] = (
    ("location", buckets.get_location),
    ("acl", misc.get_acl),
    ("versioning", misc.get_versioning),
    ("uploads", multipart.list_uploads),
    ("versions", listing.list_versions),
)


def _first_in(names: frozenset[str], query: dict[str, str]) -> str | None:
    return next((name for name in names if name in query), None)


def route(method: str, bucket: str, key: str, query: dict[str, str],
          headers: dict[str, str]) -> Operation:
    """The operation for a request (S3 dispatches on method, path shape and sub-resources)."""
    if not bucket:
        if method in ("GET", "HEAD"):
            return buckets.list_buckets
        return _not_implemented(f"{method} on the service")
    if not key:
        unsupported = _first_in(UNSUPPORTED_BUCKET, query)
        if unsupported is not None:
            return _not_implemented(f"the bucket sub-resource ?{unsupported}")
        if method == "GET":
            for name, operation in _BUCKET_GETS:
                if name in query:
                    return operation
            if query.get("list-type") == "2":
                return listing.list_v2
            return listing.list_v1
        if method == "HEAD":
            return buckets.head_bucket
        if method == "PUT":
            if "acl" in query:
                return misc.put_acl
            if "versioning" in query:
                return _not_implemented("bucket versioning")
            return buckets.create_bucket
        if method == "DELETE":
            return buckets.delete_bucket
        if method == "POST" and "delete" in query:
            return misc.delete_objects
        return _not_implemented(f"{method} on a bucket")
    unsupported = _first_in(UNSUPPORTED_OBJECT, query)
    if unsupported is not None:
        return _not_implemented(f"the object sub-resource ?{unsupported}")
    if method == "PUT":
        if "acl" in query:
            return misc.put_acl
        if "uploadId" in query:
            if "x-amz-copy-source" in headers:
                return copy.upload_part_copy
            return multipart.upload_part
        if "x-amz-copy-source" in headers:
            return copy.copy_object
        return objects.put_object
    if method in ("GET", "HEAD"):
        if "uploadId" in query:
            return multipart.list_parts
        if "acl" in query:
            return misc.get_acl
        return objects.get_object
    if method == "DELETE":
        if "uploadId" in query:
            return multipart.abort
        return objects.delete_object
    if method == "POST":
        if "uploads" in query:
            return multipart.create
        if "uploadId" in query:
            return multipart.complete
    return _not_implemented(f"{method} on an object")


def address(request: Request, domain: str) -> tuple[str, str]:
    """(bucket, key) from the percent-encoded path, or from the Host for virtual-hosted style."""
    raw = request.raw_path
    if not raw.startswith("/"):
        raise S3Error("InvalidURI", "the request path must start with /", 400)
    try:
        path = decoded(raw[1:])
    except UnicodeDecodeError:
        raise S3Error("InvalidURI", "the path is not valid UTF-8 once decoded", 400) from None
    if domain:
        host = request.headers.get("host", "").rsplit(":", 1)[0].lower()
        suffix = "." + domain.lower()
        if host.endswith(suffix) and len(host) > len(suffix):
            return host[: -len(suffix)], path
    bucket, _, key = path.partition("/")
    return bucket, key


class S3App:
    """The ASGI callable of the S3 listener."""

    def __init__(self, ctx: S3Context) -> None:
        self.ctx = ctx
        self.region = ctx.config.s3.region
        self.domain = ctx.config.s3.domain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = make_request(scope, receive)
        request_id = new_request_id()
        resource = request.raw_path
        try:
            bucket, key = address(request, self.domain)
            resource = f"/{bucket}/{key}" if key else f"/{bucket}"
            principal, identity = authenticate(self.ctx.auth, request, self.region)
            operation = route(request.method, bucket, key, request.query, request.headers)
            call = S3Call(request, bucket, key, principal, request_id, identity)
            response = await operation(self.ctx, call)
        except ClientDisconnected:
            return
        except S3Error as exc:
            response = error_response(exc, resource, request_id)
        except ArkorError as exc:
            response = error_response(to_s3_error(exc), resource, request_id)
        except Exception:
            log.exception("S3 %s %s failed (request %s)", request.method, request.raw_path, request_id)
            response = error_response(S3Error("InternalError", "internal server error", 500),
                                      resource, request_id)
        response.headers.append(("x-amz-request-id", request_id))

        def open_error(exc: ArkorError) -> Response:  # a GET whose first fragment cannot be read
            failed = error_response(to_s3_error(exc), resource, request_id)
            failed.headers.append(("x-amz-request-id", request_id))
            return failed

        await send_response(send, response, head=request.method == "HEAD", open_error=open_error)


def error_response(exc: S3Error, resource: str, request_id: str) -> Response:
    body = error_xml(exc, resource=resource, request_id=request_id)
    headers = [("content-type", XML_TYPE), *exc.headers.items()]
    return Response(status=exc.status, headers=headers, body=body)


def build_s3_app(ctx: ObjectContext) -> ASGIApp:
    s3ctx = S3Context(config=ctx.config, service=ctx.service, registry=ctx.registry, auth=ctx.auth)
    app = request_lifecycle(S3App(s3ctx), ctx.body_timeout)
    return instrument(app, "s3", serve_metrics=False)  # counted as role "s3" on /metrics of v1


async def serve_s3(config: Config, ctx: ObjectContext, bind: str, *,
                   task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the S3 API on `bind` (``host:port`` or ``fd://N``) until cancelled."""
    await serve_app(build_s3_app(ctx), config.http, bind, task_status=task_status)
