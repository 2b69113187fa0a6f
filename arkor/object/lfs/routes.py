"""Git LFS HTTP endpoints on the object server's `StreamRouter` (the I/O layer).

Under ``/{namespace}/{repo}.git/info/lfs`` (and ``/{namespace}/{repo}/info/lfs``):

| method + path              | what                                                            |
|----------------------------|-----------------------------------------------------------------|
| POST objects/batch         | Batch API (upload / download, basic transfer)                   |
| PUT  objects/{oid}         | basic upload: streamed into ObjectService.put(sha256=oid)       |
| GET  objects/{oid}         | basic download, Range -> 206                                    |
| POST verify                | verify action: the object is stored with this size              |
| POST locks, GET locks      | create / list locks                                             |
| POST locks/verify          | ours / theirs for a push                                        |
| POST locks/{id}/unlock     | delete a lock (force for someone else's)                        |

Anything else under ``info/lfs`` is 404 (or 405 for a known path) without authentication.
Every response is `application/vnd.git-lfs+json` except download bodies.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio

from arkor.config import Config
from arkor.errors import (
    ArkorError,
    BodySizeMismatch,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
)
from arkor.model import ObjectRecord
from arkor.object.auth import Authenticator
from arkor.object.lfs import auth, protocol
from arkor.object.lfs.storage import LFS_BUCKET, LFS_PREFIX, Repo, repo_from_params
from arkor.transfer.contracts import Registry
from arkor.web import semantics
from arkor.web.asgi import ClientDisconnected, Request, Response, StreamRouter
from arkor.web.request_id import new_request_id

log = logging.getLogger(__name__)

JSON_TIMEOUT = 30.0
# Metadata look-ups of one batch running at once (each is one registry round trip).
BATCH_LOOKUP_CONCURRENCY = 16
_HOST = re.compile(r"[A-Za-z0-9.\-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

Handler = Callable[[Request], Awaitable[Response]]


class LfsRoutes:
    """The handlers, bound to the object server's service, registry, config and authenticator."""

    def __init__(
        self, service: Any, registry: Registry, config: Config, authenticator: Authenticator
    ) -> None:
        self.service = service
        self.registry = registry
        self.config = config
        self.authenticator = authenticator
        self.max_object_size = int(config.object.maxObjectSize)
        self.body_timeout = float(config.object.bodyTimeout)

    # --- plumbing -------------------------------------------------------------------------------
    def _json(self, data: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
        response = Response.json(data, status=status, headers=headers or [])
        response.headers[0] = ("content-type", protocol.MEDIA_TYPE)
        return response

    def _error(self, exc: ArkorError, request_id: str, **extra: Any) -> Response:
        headers = [*exc.headers.items(), ("x-request-id", request_id)]
        return self._json(protocol.error_body(exc, request_id, **extra), exc.status, headers)

    def _lock_page(self, out: dict[str, Any], cursor: str | None) -> Response:
        """A page of a lock listing; `next_cursor` only when more locks follow."""
        if cursor:
            out["next_cursor"] = cursor
        return self._json(out)

    def wrap(self, handler: Handler) -> Handler:
        """LFS-shaped errors (message + request_id, LFS media type) for everything `handler` raises."""

        async def run(request: Request) -> Response:
            request_id = new_request_id()
            try:
                return await handler(request)
            except ArkorError as exc:
                if exc.status >= 500:
                    log.warning("lfs %s %s: %r (request %s)", request.method, request.path, exc,
                                request_id)
                return self._error(exc, request_id)
            except ClientDisconnected:
                raise
            except Exception:
                log.exception("lfs %s %s failed (request %s)", request.method, request.path, request_id)
                return self._error(ArkorError("internal server error"), request_id)

        return run

    async def _body_json(self, request: Request, *, optional: bool = False) -> Any:
        """The decoded JSON body (bounded); None for an empty body when `optional`."""
        protocol.check_content_type(request.headers.get("content-type"))
        body = await request.read_body(max_size=protocol.MAX_JSON_BYTES, chunk_timeout=JSON_TIMEOUT)
        if optional and not body.strip():
            return None
        return semantics.loads_json(body)

    def _principal(self, request: Request) -> auth.Principal:
        header = request.headers.get("authorization")
        return auth.authenticate(self.authenticator, header, request.client_host)

    def _authorized(self, request: Request, repo: Repo, *, write: bool) -> auth.Principal:
        principal = self._principal(request)
        auth.authorize(principal, repo.full_name, write=write)
        return principal

    def _transfer_allowed(self, request: Request, repo: Repo, oid: str, *, write: bool) -> None:
        """A transfer action's own token, or the API's credentials with the right access."""
        token = request.headers.get(auth.TOKEN_HEADER)
        method = "GET" if request.method == "HEAD" else request.method
        if auth.check_token(self.config, method, repo.full_name, oid, token):
            return
        self._authorized(request, repo, write=write)

    def _base_url(self, request: Request) -> str:
        """Where the client reached us, so action hrefs come back to this object server."""
        scheme = request.scope.get("scheme", "http")
        host = request.headers.get("host", "").strip()
        if not _HOST.fullmatch(host):
            server = request.scope.get("server") or ("127.0.0.1", self.config.object.port)
            host = f"{server[0]}:{server[1]}" if ":" not in str(server[0]) else f"[{server[0]}]:{server[1]}"
        return f"{scheme}://{host}"

    async def _stored(self, repo: Repo, oid: str) -> ObjectRecord | None:
        try:
            return await self.service.head(LFS_BUCKET, repo.object_key(oid))
        except ArkorError as exc:
            if exc.status == 404:
                return None
            raise

    @staticmethod
    def _repo(request: Request) -> Repo:
        return repo_from_params(request.params["ns"], request.params["repo"])

    # --- Batch API ------------------------------------------------------------------------------
    async def batch(self, request: Request) -> Response:
        repo = self._repo(request)
        principal = self._principal(request)
        batch = protocol.parse_batch(await self._body_json(request))
        upload = batch.operation == "upload"
        auth.authorize(principal, repo.full_name, write=upload)
        records: list[ObjectRecord | None] = [None] * len(batch.objects)
        limit = trio.Semaphore(BATCH_LOOKUP_CONCURRENCY)

        async def look_up(index: int, oid: str) -> None:
            async with limit:
                records[index] = await self._stored(repo, oid)

        async with trio.open_nursery() as nursery:
            for index, obj in enumerate(batch.objects):
                nursery.start_soon(look_up, index, obj.oid)
        base = self._base_url(request) + repo.base_path()
        results = [
            self._batch_result(base, repo, obj, record, upload)
            for obj, record in zip(batch.objects, records, strict=True)
        ]
        return self._json(protocol.batch_response(results))

    def _batch_result(
        self, base: str, repo: Repo, obj: protocol.BatchObject, record: ObjectRecord | None, upload: bool
    ) -> dict[str, Any]:
        href = f"{base}/objects/{obj.oid}"
        if record is not None and record.size != obj.size:
            return protocol.object_error(
                obj, 422, f"object {obj.oid} is stored with size {record.size}, not {obj.size}"
            )
        if upload:
            if record is not None:
                return protocol.object_ok(obj, None)  # already stored: nothing to upload
            if obj.size > self.max_object_size:
                return protocol.object_error(
                    obj, 422, f"object of {obj.size} bytes exceeds the limit of {self.max_object_size}"
                )
            verify_href = f"{base}/verify"
            return protocol.object_ok(obj, {
                "upload": self._action(href, "PUT", repo, obj.oid),
                "verify": self._action(verify_href, "POST", repo, obj.oid),
            })
        if record is None:
            return protocol.object_error(obj, 404, f"object {obj.oid} does not exist")
        return protocol.object_ok(obj, {"download": self._action(href, "GET", repo, obj.oid)})

    def _action(self, href: str, method: str, repo: Repo, oid: str) -> dict[str, Any]:
        token = auth.make_token(self.config, method, repo.full_name, oid)
        return protocol.action(href, {auth.TOKEN_HEADER: token}, auth.TOKEN_VALIDITY - 60)

    # --- basic transfer -------------------------------------------------------------------------
    async def upload(self, request: Request) -> Response:
        repo = self._repo(request)
        oid = protocol.check_oid(request.params["oid"])
        self._transfer_allowed(request, repo, oid, write=True)
        length = request.content_length
        if length is not None and length > self.max_object_size:
            raise PayloadTooLarge(f"object of {length} bytes exceeds the limit of {self.max_object_size}")
        body = request.body_chunks(max_size=self.max_object_size, chunk_timeout=self.body_timeout)
        try:
            record = await self.service.put(
                LFS_BUCKET,
                repo.object_key(oid),
                body,
                size=length,
                content_type="application/octet-stream",
                metadata={"lfs-repo": repo.full_name},
                sha256=oid,
            )
        except ArkorError as exc:
            if isinstance(exc, BodySizeMismatch) and length is not None:
                # The declared length and the bytes sent disagree: the oid's object is not this.
                raise Unprocessable(exc.message, code="size_mismatch") from None
            raise
        finally:
            await _close(body)
        return self._json({"oid": oid, "size": record.size})

    async def download(self, request: Request) -> Response:
        repo = self._repo(request)
        oid = protocol.check_oid(request.params["oid"])
        self._transfer_allowed(request, repo, oid, write=False)
        record = await self._stored(repo, oid)
        if record is None:
            raise NotFound(f"object {oid} does not exist", code="no_such_object")
        headers = [
            ("content-type", "application/octet-stream"),
            ("accept-ranges", "bytes"),
            ("etag", f'"{oid}"'),
        ]
        span = protocol.parse_range(request.headers.get("range"), record.size)
        status = 200
        start, end = 0, record.size - 1
        if span is not None:
            start, end = span
            status = 206
            headers.append(("content-range", f"bytes {start}-{end}/{record.size}"))
        headers.append(("content-length", str(end - start + 1 if record.size else 0)))
        if request.method == "HEAD" or record.size == 0:
            return Response(status=status, headers=headers, body=b"")
        request_id = new_request_id()
        return Response(status=status, headers=headers, body=self.service.open_read(record, start, end),
                        open_error=lambda exc: self._error(exc, request_id))  # LFS-shaped 503

    async def verify(self, request: Request) -> Response:
        repo = self._repo(request)
        obj = protocol.parse_verify(await self._body_json(request))  # the token names the oid
        self._transfer_allowed(request, repo, obj.oid, write=True)
        record = await self._stored(repo, obj.oid)
        if record is None:
            raise NotFound(f"object {obj.oid} does not exist", code="no_such_object")
        if record.size != obj.size:
            raise Unprocessable(
                f"object {obj.oid} is stored with size {record.size}, not {obj.size}",
                code="size_mismatch",
            )
        return self._json({"oid": obj.oid, "size": record.size})

    # --- locking --------------------------------------------------------------------------------
    async def create_lock(self, request: Request) -> Response:
        repo = self._repo(request)
        principal = self._authorized(request, repo, write=True)
        path, ref = protocol.parse_lock_create(await self._body_json(request))
        try:
            lock = await self.registry.create_lock(repo.full_name, path, principal.name, ref)
        except ArkorError as exc:
            if exc.status != 409:
                raise
            existing, _ = await self.registry.list_locks(repo.full_name, path=path, limit=1)
            request_id = new_request_id()
            extra = {"lock": protocol.lock_json(existing[0])} if existing else {}
            return self._error(
                Conflict(f"already created lock for {path}", code=exc.code), request_id, **extra
            )
        return self._json({"lock": protocol.lock_json(lock)}, 201)

    async def list_locks(self, request: Request) -> Response:
        repo = self._repo(request)
        self._authorized(request, repo, write=False)
        query = protocol.parse_lock_list(request.query)
        locks, cursor = await self.registry.list_locks(
            repo.full_name, path=query.path, lock_id=query.lock_id, cursor=query.cursor,
            limit=query.limit, ref=query.ref,
        )
        return self._lock_page({"locks": [protocol.lock_json(lk) for lk in locks]}, cursor)

    async def verify_locks(self, request: Request) -> Response:
        repo = self._repo(request)
        principal = self._authorized(request, repo, write=True)
        query = protocol.parse_lock_verify(await self._body_json(request, optional=True))
        locks, cursor = await self.registry.list_locks(
            repo.full_name, cursor=query.cursor, limit=query.limit, ref=query.ref
        )
        ours, theirs = protocol.split_locks(locks, principal.name)
        return self._lock_page({"ours": ours, "theirs": theirs}, cursor)

    async def unlock(self, request: Request) -> Response:
        repo = self._repo(request)
        principal = self._authorized(request, repo, write=True)
        force, _ref = protocol.parse_unlock(await self._body_json(request, optional=True))
        # Only an admin may break someone else's lock; anyone may force-release their own.
        admin = principal.may("admin", repo.full_name)
        try:
            lock = await self.registry.delete_lock(
                repo.full_name, request.params["lock_id"], principal.name, force=force and admin
            )
        except Forbidden as exc:
            if force and not admin:
                raise Forbidden(f"{principal.name} may not force-unlock another user's lock: that needs "
                                "the admin right (auth.users[].admin)", code="admin_required") from exc
            raise
        return self._json({"lock": protocol.lock_json(lock)})

    # --- everything else under info/lfs ---------------------------------------------------------
    async def unsupported(self, request: Request) -> Response:
        """404 for unknown endpoints, 405 for known ones with another method; never 401."""
        rest = request.params.get("rest", "")
        for pattern, _methods, _handler in self._table():
            if re.fullmatch(pattern, rest):
                raise ArkorError(f"{request.method} is not allowed on this Git LFS endpoint",
                                 code="method_not_allowed", status=405)
        raise NotFound("no such Git LFS endpoint", code="not_found")

    def _table(self) -> list[tuple[str, tuple[str, ...], Handler]]:
        oid = r"(?P<oid>(?!batch$)[^/]+)"
        return [
            (r"/objects/batch", ("POST",), self.batch),
            (rf"/objects/{oid}", ("PUT",), self.upload),
            (rf"/objects/{oid}", ("GET", "HEAD"), self.download),
            (r"/verify", ("POST",), self.verify),
            (r"/locks", ("POST",), self.create_lock),
            (r"/locks", ("GET",), self.list_locks),
            (r"/locks/verify", ("POST",), self.verify_locks),
            (r"/locks/(?P<lock_id>[^/]+)/unlock", ("POST",), self.unlock),
        ]

    def register(self, router: StreamRouter) -> None:
        for pattern, methods, handler in self._table():
            router.add(LFS_PREFIX + pattern, methods, self.wrap(handler))
        router.add(LFS_PREFIX + r"(?P<rest>/.*)?", ALL_METHODS, self.wrap(self.unsupported))


async def _close(stream: AsyncIterator[bytes] | Any) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def register(router: StreamRouter, ctx: Any) -> LfsRoutes:
    """Called by the object app: `ctx` provides `service` (ObjectService), `config` and optionally
    `registry` (defaults to the service's)."""
    service = ctx.service
    registry = getattr(ctx, "registry", None) or service.registry
    config = getattr(ctx, "config", None) or service.config
    authenticator = getattr(ctx, "auth", None) or Authenticator(config)
    routes = LfsRoutes(service, registry, config, authenticator)
    routes.register(router)
    return routes
