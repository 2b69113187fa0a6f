"""HttpRegistry: the `Registry` contract over the registry center's internal HTTP API.

Every request is signed with the cluster secret (arkor/security.py `ClusterAuth`) over exactly what
goes on the wire (method, path, query, body digest) with a fresh nonce. Error responses are
rebuilt into the same ArkorError subclasses the in-process service raises (`errors.from_response`);
a registry that cannot be reached (refused, reset, timed out) is ServiceUnavailable (code
registry_unavailable), so callers handle one family of errors whichever implementation they hold.
Calls have their own `Timeouts` (object.registry*Timeout), much shorter than the data path's: an
object server cut from the registry answers 503 within them. Nothing is cached here: manifests
change under concurrent writers and a stale one could serve deleted data. The wire forms are the
`to_json` forms of arkor/model.py, documented in docs/specs/Internal.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Unpack
from urllib.parse import quote

import httpx
import trio

from arkor import batchwire, model
from arkor.errors import ArkorError, ServiceUnavailable, from_response
from arkor.httpclient import LeanClient
from arkor.security import ClusterAuth
from arkor.transfer.coalesce import Coalescer, each_alone
from arkor.transfer.registry_calls import (
    ListOptions,
    ListQuery,
    LockOptions,
    LockQuery,
    MultipartCommit,
    ObjectCommit,
)
from arkor.transfer.timeouts import Timeouts

log = logging.getLogger(__name__)

# A commit of more fragments than this goes alone (its manifest is the request).
BATCH_COMMIT_FRAGMENTS = 16

PREFIX = "/internal/v1"
UNREACHABLE_PAUSE = 1.0

def object_path(bucket: str, key: str) -> str:
    return f"{PREFIX}/objects/{quote(bucket, safe='')}/{quote(key, safe='/')}"


class HttpRegistry:
    """A registry center reached over HTTP; `client` is shared and owned by the caller. Given a
    long-lived `nursery`, concurrent lookups and small commits are coalesced into one request
    each (`POST /lookups`, `POST /commits`)."""

    def __init__(
        self,
        base_url: str,
        secret: bytes,
        client: LeanClient | httpx.AsyncClient,
        timeout: float | Timeouts = Timeouts(2.0, 5.0, 5.0, 10.0),
        *,
        nursery: trio.Nursery | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self.client = client
        self.timeouts = Timeouts.of(timeout)
        self._auth = ClusterAuth(secret)
        self._down_until = 0.0  # trio time; 0: reachable as far as we know
        self._down_reason = ""
        self._lookups: Coalescer[tuple[str, str], model.ObjectRecord] | None = None
        self._commits: Coalescer[ObjectCommit, model.ObjectRecord] | None = None
        if nursery is not None:
            self._lookups = Coalescer(nursery, self._lookup_batch, kind="registry_lookup",
                                      max_items=128)
            self._commits = Coalescer(nursery, self._commit_batch, kind="registry_commit",
                                      max_items=64)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        t = self.timeouts
        if self._down_until:
            now = trio.current_time()
            if now < self._down_until:
                raise ServiceUnavailable(
                    f"registry {self.base_url} unreachable ({self._down_reason})",
                    code="registry_unavailable",
                )
            self._down_until = now + UNREACHABLE_PAUSE  # this call probes; the others wait
        try:
            with trio.fail_after(t.transfer):
                response = await self.client.request(
                    method, self.base_url + path, json=body, params=params, auth=self._auth,
                    timeout=t.for_client(self.client),
                )
        except trio.TooSlowError:
            self._unreachable(f"no answer within {t.transfer:g} s")
            raise ServiceUnavailable(
                f"registry {self.base_url} did not answer within {t.transfer:g} s",
                code="registry_unavailable",
            ) from None
        except httpx.TransportError as exc:
            self._unreachable(f"{type(exc).__name__}: {exc}")
            raise ServiceUnavailable(
                f"registry {self.base_url} unreachable: {type(exc).__name__}: {exc}",
                code="registry_unavailable",
            ) from exc
        self._down_until = 0.0
        if response.status_code >= 400:
            raise from_response(response.status_code, response.content, response.headers)
        if not response.content:
            return None
        return response.json()

    def _unreachable(self, reason: str) -> None:
        self._down_until = trio.current_time() + UNREACHABLE_PAUSE
        self._down_reason = reason

    # --- membership -------------------------------------------------------------------------
    async def heartbeat(self, server: model.ServerInfo) -> None:
        await self._call("POST", f"{PREFIX}/heartbeat", body=server.to_json())

    async def groups(self) -> list[model.GroupInfo]:
        data = await self._call("GET", f"{PREFIX}/groups")
        return [model.GroupInfo.from_json(g) for g in data["groups"]]

    async def remove_server(self, server_id: str, *, force: bool = False) -> model.ServerInfo:
        """Forget a data server that is gone for good (`arkor admin remove-server`)."""
        params = {"force": "1"} if force else None
        path = f"{PREFIX}/servers/{quote(server_id, safe='')}"
        return model.ServerInfo.from_json(await self._call("DELETE", path, params=params))

    async def reclaim_backlog(self) -> int:
        """Fragments waiting in the durable deletion queue (what the reaper still has to do)."""
        return int((await self._call("GET", f"{PREFIX}/reclaim"))["backlog"])

    # --- file IDs ---------------------------------------------------------------------------
    async def lease_keys(self, count: int) -> model.KeyRange:
        return model.KeyRange.from_json(await self._call("POST", f"{PREFIX}/leases", body={"count": count}))

    # --- objects ----------------------------------------------------------------------------
    async def commit_object(self, commit: ObjectCommit) -> model.ObjectRecord:
        if self._commits is not None and len(commit.record.fragments) <= BATCH_COMMIT_FRAGMENTS:
            return await self._commits.submit(commit)
        return await self._commit_one(commit)

    async def _commit_one(self, commit: ObjectCommit) -> model.ObjectRecord:
        path = object_path(commit.record.bucket, commit.record.key)
        return model.ObjectRecord.from_json(await self._call("PUT", path, body=commit.to_json()))

    async def _commit_batch(self, commits: list[ObjectCommit]) -> Sequence[Any]:
        body = {"commits": [{"bucket": c.record.bucket, "key": c.record.key, **c.to_json()}
                            for c in commits]}
        return await self._batch("commits", body, commits, self._commit_one)

    async def get_object(self, bucket: str, key: str) -> model.ObjectRecord:
        if self._lookups is not None:
            return await self._lookups.submit((bucket, key))
        return await self._get_one((bucket, key))

    async def _get_one(self, name: tuple[str, str]) -> model.ObjectRecord:
        return model.ObjectRecord.from_json(await self._call("GET", object_path(*name)))

    async def _lookup_batch(self, names: list[tuple[str, str]]) -> Sequence[Any]:
        body = {"objects": [[bucket, key] for bucket, key in names]}
        return await self._batch("lookups", body, names, self._get_one)

    async def _batch(self, route: str, body: Any, items: list[Any], alone: Any) -> Sequence[Any]:
        """One `POST /{route}` for `items`, each outcome a record or its error; a lone item, or
        a registry without the route (an older release, during a rolling upgrade), alone."""
        if len(items) == 1 or self._lookups is None:
            return await each_alone(items, alone)
        try:
            answer = await self._call("POST", f"{PREFIX}/{route}", body=body)
        except ArkorError as exc:
            if exc.status not in (404, 405) or exc.code not in ("not_found", "method_not_allowed"):
                raise
            log.warning("registry %s has no %s route (%s): calls go one by one", self.base_url, route, exc)
            self._lookups = self._commits = None
            return await each_alone(items, alone)
        return [o if isinstance(o, BaseException) else model.ObjectRecord.from_json(o)
                for o in batchwire.outcomes_of(answer, len(items))]

    async def delete_object(self, bucket: str, key: str) -> model.ObjectRecord:
        return model.ObjectRecord.from_json(await self._call("DELETE", object_path(bucket, key)))

    async def list_objects(self, bucket: str, **options: Unpack[ListOptions]) -> model.ListPage:
        params = ListQuery(bucket, **options).params()
        data = await self._call("GET", f"{PREFIX}/buckets/{quote(bucket, safe='')}", params=params)
        return model.ListPage.from_json(data)

    async def list_buckets(self) -> list[model.BucketInfo]:
        data = await self._call("GET", f"{PREFIX}/buckets")
        return [model.BucketInfo.from_json(b) for b in data["buckets"]]

    async def create_bucket(self, bucket: str) -> bool:
        data = await self._call("PUT", f"{PREFIX}/buckets/{quote(bucket, safe='')}")
        return bool(data["created"])

    async def delete_bucket(self, bucket: str) -> None:
        await self._call("DELETE", f"{PREFIX}/buckets/{quote(bucket, safe='')}")

    async def discard_fragments(self, fragments: list[model.Fragment]) -> None:
        await self._call(
            "POST", f"{PREFIX}/discard", body={"fragments": [f.to_json() for f in fragments]}
        )

    # --- multipart uploads --------------------------------------------------------------------
    async def create_multipart(
        self, bucket: str, key: str, content_type: str, metadata: dict[str, str]
    ) -> model.MultipartUpload:
        body = {"bucket": bucket, "key": key, "content_type": content_type, "metadata": metadata}
        return model.MultipartUpload.from_json(await self._call("POST", f"{PREFIX}/uploads", body=body))

    async def get_multipart(self, upload_id: str) -> model.MultipartUpload:
        path = f"{PREFIX}/uploads/{quote(upload_id, safe='')}"
        return model.MultipartUpload.from_json(await self._call("GET", path))

    async def put_part(self, upload_id: str, part: model.PartInfo) -> None:
        path = f"{PREFIX}/uploads/{quote(upload_id, safe='')}/parts/{int(part.part_number)}"
        await self._call("PUT", path, body=part.to_json())

    async def list_parts(self, upload_id: str) -> list[model.PartInfo]:
        data = await self._call("GET", f"{PREFIX}/uploads/{quote(upload_id, safe='')}/parts")
        return [model.PartInfo.from_json(p) for p in data["parts"]]

    async def complete_multipart(self, commit: MultipartCommit) -> model.ObjectRecord:
        path = f"{PREFIX}/uploads/{quote(commit.upload_id, safe='')}/complete"
        return model.ObjectRecord.from_json(await self._call("POST", path, body=commit.to_json()))

    async def abort_multipart(self, upload_id: str) -> None:
        await self._call("DELETE", f"{PREFIX}/uploads/{quote(upload_id, safe='')}")

    async def list_multipart(self, bucket: str) -> list[model.MultipartUpload]:
        data = await self._call("GET", f"{PREFIX}/buckets/{quote(bucket, safe='')}/uploads")
        return [model.MultipartUpload.from_json(u) for u in data["uploads"]]

    # --- Git LFS locks --------------------------------------------------------------------------
    async def create_lock(self, repo: str, path: str, owner: str, ref: str | None) -> model.LfsLock:
        body = {"repo": repo, "path": path, "owner": owner, "ref": ref}
        return model.LfsLock.from_json(await self._call("POST", f"{PREFIX}/locks", body=body))

    async def list_locks(
        self, repo: str, **options: Unpack[LockOptions]
    ) -> tuple[list[model.LfsLock], str | None]:
        params = LockQuery(repo, **options).params()
        data = await self._call("GET", f"{PREFIX}/locks", params=params)
        return [model.LfsLock.from_json(x) for x in data["locks"]], data.get("next_cursor")

    async def delete_lock(
        self, repo: str, lock_id: str, owner: str, *, force: bool = False
    ) -> model.LfsLock:
        body = {"repo": repo, "owner": owner, "force": force}
        path = f"{PREFIX}/locks/{quote(lock_id, safe='')}/unlock"
        return model.LfsLock.from_json(await self._call("POST", path, body=body))
