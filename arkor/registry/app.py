"""The registry center's HTTP app: one signed JSON endpoint per `Registry` method.

The internal calls are raw ASGI on `StreamRouter`: every request here is small JSON, and the raw
layer costs less CPU per request than Quart on hypercorn (STACK-NOTES), which is what bounds registry
throughput. Health and readiness are on the role's QuartTrio control app (`arkor.web.role`).
Every endpoint except /healthz, /readyz and /metrics requires the cluster signature. Bad input is
a 4xx JSON error with a stable code; a metadata store that is down is 503.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from arkor import batchwire
from arkor.errors import BadRequest, ServiceUnavailable
from arkor.model import Fragment, PartInfo, ServerInfo
from arkor.registry.service import RegistryService
from arkor.security import CONTENT_SHA256_HEADER, SIGNATURE_HEADER, Verifier, check_body, declared_digest
from arkor.transfer.coalesce import each_alone
from arkor.transfer.registry_calls import (
    DEFAULT_LIST_LIMIT,
    DEFAULT_LOCK_LIMIT,
    ListQuery,
    LockQuery,
    MultipartCommit,
    ObjectCommit,
)
from arkor.web.asgi import ASGIApp, Request, Response, StreamRouter, decoded
from arkor.web.role import control_app, role_app
from arkor.web.semantics import loads_json, parse_uint

log = logging.getLogger(__name__)

PREFIX = "/internal/v1"
MAX_JSON = 1024 * 1024
MAX_MANIFEST_JSON = 64 * 1024 * 1024  # a manifest of a multi-TiB object
BODY_TIMEOUT = 30.0

Handler = Callable[[Request], Awaitable[Response]]


def _db_errors() -> tuple[type[BaseException], ...]:
    import trio_mysql.err

    return (trio_mysql.err.OperationalError, trio_mysql.err.InterfaceError, sqlite3.OperationalError,
            OSError)


def _parse(build: Callable[[Any], Any], raw: Any) -> Any:
    """Turn a JSON value into a model object; any shape problem is 400 invalid_request."""
    try:
        if not isinstance(raw, dict):
            raise TypeError("expected a JSON object")
        return build(raw)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise BadRequest(f"invalid request body: {type(exc).__name__}: {exc}",
                         code="invalid_request") from None


def _int_param(request: Request, name: str, default: int) -> int:
    return parse_uint(request.query.get(name), name, default=default)


def _split_object_path(request: Request) -> tuple[str, str]:
    rest = request.raw_path[len(PREFIX + "/objects/"):]
    bucket_raw, sep, key_raw = rest.partition("/")
    if not sep or not key_raw:
        raise BadRequest("expected /internal/v1/objects/{bucket}/{key}", code="invalid_object_name")
    try:
        return decoded(bucket_raw), decoded(key_raw)
    except UnicodeDecodeError:
        raise BadRequest("bucket and key must be valid UTF-8", code="invalid_object_name") from None


def _batch_items(raw: Any, name: str) -> list[Any]:
    """The item list of a batch body ``{name: [...]}``, 1 to MAX_BATCH_ITEMS long."""
    items = raw.get(name) if isinstance(raw, dict) else None
    if not isinstance(items, list) or not 0 < len(items) <= batchwire.MAX_BATCH_ITEMS:
        raise BadRequest(f"expected {{{name!r}: [1 to {batchwire.MAX_BATCH_ITEMS} items]}}",
                         code="invalid_batch")
    return items


def _names(raw: Any) -> tuple[str, str]:
    if not (isinstance(raw, list) and len(raw) == 2 and all(isinstance(x, str) and x for x in raw)):
        raise TypeError("an object is [bucket, key]")
    return raw[0], raw[1]


def _listed(name: str, items: Iterable[Any]) -> Response:
    """A list answer, {name: [wire forms]}, as HttpRegistry reads it back."""
    return Response.json({name: [item.to_json() for item in items]})


def _query(request: Request) -> str:
    return request.scope.get("query_string", b"").decode("latin-1")


def build_app(service: RegistryService, secret: bytes) -> ASGIApp:
    router = StreamRouter()
    errors = _db_errors()
    verifier = Verifier(secret)

    def route(pattern: str, methods: list[str], *, signed: bool = True) -> Callable[[Handler], Handler]:
        def decorator(handler: Handler) -> Handler:
            async def wrapped(request: Request) -> Response:
                if signed:
                    verifier.check(request.method, request.raw_path, _query(request),
                                   request.headers.get(SIGNATURE_HEADER), declared_digest(request.headers))
                try:
                    return await handler(request)
                except errors as exc:
                    log.warning("metadata store error on %s %s: %r", request.method, request.path, exc)
                    raise ServiceUnavailable(
                        f"metadata store unavailable: {type(exc).__name__}", code="metadata_unavailable"
                    ) from None

            router.add(pattern, methods, wrapped)
            return handler

        return decorator

    async def body_json(request: Request, limit: int = MAX_JSON) -> Any:
        body = await request.read_body(max_size=limit, chunk_timeout=BODY_TIMEOUT)
        check_body(body, request.headers.get(CONTENT_SHA256_HEADER))  # the body that was signed
        return loads_json(body)

    @route(f"{PREFIX}/heartbeat", ["POST"])
    async def heartbeat(request: Request) -> Response:
        await service.heartbeat(_parse(ServerInfo.from_json, await body_json(request)))
        return Response.json({})

    @route(f"{PREFIX}/groups", ["GET"])
    async def groups(request: Request) -> Response:
        return _listed("groups", await service.groups())

    @route(f"{PREFIX}/servers/(?P<server>[^/]+)", ["DELETE"])
    async def remove_server(request: Request) -> Response:
        force = request.query.get("force", "") in ("1", "true")
        removed = await service.remove_server(request.params["server"], force=force)
        return Response.json(removed.to_json())

    @route(f"{PREFIX}/leases", ["POST"])
    async def leases(request: Request) -> Response:
        count = _parse(lambda raw: int(raw["count"]), await body_json(request))
        return Response.json((await service.lease_keys(count)).to_json())

    @route(f"{PREFIX}/objects/.+", ["PUT"])
    async def put_object(request: Request) -> Response:
        bucket, key = _split_object_path(request)
        raw = await body_json(request, MAX_MANIFEST_JSON)
        commit = _parse(lambda raw: ObjectCommit.from_json(raw, bucket, key), raw)
        return Response.json((await service.commit_object(commit)).to_json())

    async def each(items: list[Any], call: Callable[[Any], Awaitable[Any]]) -> Response:
        """Run `call` on every item concurrently (the store groups them: one SQLite transaction
        or thread hop for many); one outcome each, a failing item fails alone."""
        async def one(item: Any) -> Any:
            try:
                return (await call(item)).to_json()
            except errors as exc:
                log.warning("metadata store error in a batch: %r", exc)
                raise ServiceUnavailable(
                    f"metadata store unavailable: {type(exc).__name__}", code="metadata_unavailable"
                ) from None

        outcomes = await each_alone(items, one)
        return Response.json({"results": [batchwire.outcome_json(o) for o in outcomes]})

    @route(f"{PREFIX}/lookups", ["POST"])
    async def lookups(request: Request) -> Response:
        """Many `get_object` in one request (coalesced by the object server)."""
        names = _parse(lambda raw: [_names(x) for x in _batch_items(raw, "objects")],
                       await body_json(request))
        return await each(names, lambda name: service.get_object(*name))

    @route(f"{PREFIX}/commits", ["POST"])
    async def commits(request: Request) -> Response:
        """Many `commit_object` in one request (coalesced by the object server)."""
        def build(raw: Any) -> list[ObjectCommit]:
            return [ObjectCommit.from_json(c, *_names([c["bucket"], c["key"]]))
                    for c in _batch_items(raw, "commits")]

        batch = _parse(build, await body_json(request, MAX_MANIFEST_JSON))
        return await each(batch, service.commit_object)

    @route(f"{PREFIX}/objects/.+", ["GET"])
    async def get_object(request: Request) -> Response:
        bucket, key = _split_object_path(request)
        return Response.json((await service.get_object(bucket, key)).to_json())

    @route(f"{PREFIX}/objects/.+", ["DELETE"])
    async def delete_object(request: Request) -> Response:
        bucket, key = _split_object_path(request)
        return Response.json((await service.delete_object(bucket, key)).to_json())

    @route(f"{PREFIX}/buckets", ["GET"])
    async def list_buckets(request: Request) -> Response:
        return _listed("buckets", await service.list_buckets())

    @route(f"{PREFIX}/buckets/(?P<bucket>[^/]+)", ["GET"])
    async def list_objects(request: Request) -> Response:
        limit = _int_param(request, "limit", DEFAULT_LIST_LIMIT)
        options = ListQuery.options_from_params(request.query, limit)
        page = await service.list_objects(request.params["bucket"], **options)
        return Response.json(page.to_json())

    @route(f"{PREFIX}/buckets/(?P<bucket>[^/]+)", ["PUT"])
    async def create_bucket(request: Request) -> Response:
        return Response.json({"created": await service.create_bucket(request.params["bucket"])})

    @route(f"{PREFIX}/buckets/(?P<bucket>[^/]+)", ["DELETE"])
    async def delete_bucket(request: Request) -> Response:
        await service.delete_bucket(request.params["bucket"])
        return Response.json({})

    @route(f"{PREFIX}/buckets/(?P<bucket>[^/]+)/uploads", ["GET"])
    async def list_uploads(request: Request) -> Response:
        return _listed("uploads", await service.list_multipart(request.params["bucket"]))

    @route(f"{PREFIX}/discard", ["POST"])
    async def discard(request: Request) -> Response:
        fragments = _parse(
            lambda raw: [Fragment.from_json(f) for f in raw["fragments"]], await body_json(request)
        )
        await service.discard_fragments(fragments)
        return Response.json({})

    @route(f"{PREFIX}/uploads", ["POST"])
    async def create_upload(request: Request) -> Response:
        def build(raw: dict[str, Any]) -> tuple[str, str, str, dict[str, str]]:
            metadata = raw.get("metadata") or {}
            return (str(raw["bucket"]), str(raw["key"]),
                    str(raw.get("content_type") or "application/octet-stream"),
                    {str(k): str(v) for k, v in metadata.items()})

        bucket, key, content_type, metadata = _parse(build, await body_json(request))
        upload = await service.create_multipart(bucket, key, content_type, metadata)
        return Response.json(upload.to_json())

    @route(f"{PREFIX}/uploads/(?P<upload>[^/]+)", ["GET"])
    async def get_upload(request: Request) -> Response:
        return Response.json((await service.get_multipart(request.params["upload"])).to_json())

    @route(f"{PREFIX}/uploads/(?P<upload>[^/]+)", ["DELETE"])
    async def abort_upload(request: Request) -> Response:
        await service.abort_multipart(request.params["upload"])
        return Response.json({})

    @route(f"{PREFIX}/uploads/(?P<upload>[^/]+)/parts/(?P<number>[0-9]+)", ["PUT"])
    async def put_part(request: Request) -> Response:
        number = parse_uint(request.params["number"], "part number", code="invalid_part")

        def build(raw: dict[str, Any]) -> PartInfo:
            return PartInfo.from_json({**raw, "part_number": number})

        part = _parse(build, await body_json(request, MAX_MANIFEST_JSON))
        await service.put_part(request.params["upload"], part)
        return Response.json({})

    @route(f"{PREFIX}/uploads/(?P<upload>[^/]+)/parts", ["GET"])
    async def list_parts(request: Request) -> Response:
        return _listed("parts", await service.list_parts(request.params["upload"]))

    @route(f"{PREFIX}/uploads/(?P<upload>[^/]+)/complete", ["POST"])
    async def complete_upload(request: Request) -> Response:
        upload_id = request.params["upload"]
        commit = _parse(lambda raw: MultipartCommit.from_json(raw, upload_id), await body_json(request))
        return Response.json((await service.complete_multipart(commit)).to_json())

    @route(f"{PREFIX}/locks", ["POST"])
    async def create_lock(request: Request) -> Response:
        def build(raw: dict[str, Any]) -> tuple[str, str, str, str | None]:
            ref = raw.get("ref")
            return str(raw["repo"]), str(raw["path"]), str(raw["owner"]), None if ref is None else str(ref)

        repo, path, owner, ref = _parse(build, await body_json(request))
        return Response.json((await service.create_lock(repo, path, owner, ref)).to_json())

    @route(f"{PREFIX}/locks", ["GET"])
    async def list_locks(request: Request) -> Response:
        limit = _int_param(request, "limit", DEFAULT_LOCK_LIMIT)
        options = LockQuery.options_from_params(request.query, limit)
        locks, cursor = await service.list_locks(request.query.get("repo", ""), **options)
        return Response.json({"locks": [lock.to_json() for lock in locks], "next_cursor": cursor})

    @route(f"{PREFIX}/locks/(?P<lock>[^/]+)/unlock", ["POST"])
    async def delete_lock(request: Request) -> Response:
        def build(raw: dict[str, Any]) -> tuple[str, str, bool]:
            return str(raw["repo"]), str(raw["owner"]), bool(raw.get("force"))

        repo, owner, force = _parse(build, await body_json(request))
        lock = await service.delete_lock(repo, request.params["lock"], owner, force=force)
        return Response.json(lock.to_json())

    @route(f"{PREFIX}/reclaim", ["GET"])
    async def reclaim_status(request: Request) -> Response:
        return Response.json({"backlog": await service.reclaim_backlog()})

    return role_app("registry", router, _control(service))


def _control(service: RegistryService) -> Any:
    """The QuartTrio app of the registry role: liveness and readiness (unsigned)."""
    from quart import jsonify

    app = control_app("arkor.registry", health={"role": "registry"})

    @app.get("/readyz")
    async def readyz() -> Any:
        with trio.move_on_after(5) as scope:
            await service.reclaim_backlog()
        if scope.cancelled_caught:
            raise ServiceUnavailable("metadata store did not answer in 5 s", code="not_ready")
        return jsonify({"status": "ready"})

    return app
