"""RegistryService: the `Registry` contract over a metadata store (source of truth) and a KV (caches).

Durable invariants, each kept inside one store transaction:
- a needle key is handed out once (`sequences` row bumped atomically);
- a manifest commit or overwrite is one transaction, with its preconditions checked inside it;
- every needle key a manifest or a multipart part references has a `needles` row whose `refs` counts
  the references; when it drops to zero the row turns 'reclaimed' (final) and the needle is queued in
  `reclaim`; a commit naming a reclaimed key fails, and the orphan sweeper only claims keys that have
  no row at all. So a needle is never both committed and reclaimed.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from arkor.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from arkor.fileid import FileID
from arkor.model import (
    BucketInfo,
    Fragment,
    GroupInfo,
    KeyRange,
    LfsLock,
    ListPage,
    MultipartUpload,
    ObjectRecord,
    PartInfo,
    ServerInfo,
)
from arkor.names import check_bucket, check_object_key
from arkor.registry.kv import KV
from arkor.registry.store import MetaStore, Tx

log = logging.getLogger(__name__)

MAX_LEASE = 1_000_000
MAX_LIST_LIMIT = 1000
MAX_PART_NUMBER = 10_000
_IN_CHUNK = 500  # keys per IN (...) list
_OBJECT_COLS = "okey, size, etag, content_type, metadata, created, modified, version"


class MetadataTooLarge(BadRequest):
    """User metadata is larger than allowed."""

    code = "metadata_too_large"


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _in_list(n: int) -> str:
    return "(" + ",".join("?" * n) + ")"


def _manifest_text(fragments: list[Fragment]) -> str:
    return json.dumps([[f.fid, f.size, f.crc32c] for f in fragments], separators=(",", ":"))


def _manifest(text: str) -> list[Fragment]:
    return [Fragment(fid=f[0], size=int(f[1]), crc32c=int(f[2])) for f in json.loads(text)]


def _unquote_etag(etag: str) -> str:
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


class RegistryService:
    """Implements `arkor.transfer.contracts.Registry` in-process (used by the HTTP app and by
    `arkor allinone`)."""

    def __init__(
        self,
        store: MetaStore,
        kv: KV,
        *,
        replicas: int = 3,
        heartbeat_timeout: float = 10.0,
        min_free_bytes: int = 64 * 1024 * 1024,
        max_metadata_bytes: int = 8 * 1024,
    ) -> None:
        self.store = store
        self.kv = kv
        self.replicas = replicas
        self.heartbeat_timeout = heartbeat_timeout
        self.min_free_bytes = min_free_bytes
        self.max_metadata_bytes = max_metadata_bytes
        self._dialect = store.dialect

    # ------------------------------------------------------------------ helpers

    def _upsert(self, table: str, cols: Sequence[str], keys: Sequence[str]) -> str:
        values = ", ".join("?" * len(cols))
        updates = [c for c in cols if c not in keys]
        head = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({values})"
        if self._dialect.name == "sqlite":
            sets = ", ".join(f"{c} = excluded.{c}" for c in updates)
            return f"{head} ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"
        sets = ", ".join(f"{c} = VALUES({c})" for c in updates)
        return f"{head} ON DUPLICATE KEY UPDATE {sets}"

    def _check_metadata(self, metadata: dict[str, str]) -> str:
        text = json.dumps(metadata, separators=(",", ":"), sort_keys=True)
        if len(text.encode()) > self.max_metadata_bytes:
            raise MetadataTooLarge(
                f"user metadata is {len(text.encode())} bytes, more than {self.max_metadata_bytes}"
            )
        return text

    @staticmethod
    def _check_fragments(fragments: list[Fragment]) -> None:
        for frag in fragments:
            FileID.parse(frag.fid)
            if frag.size < 0 or not 0 <= frag.crc32c <= 0xFFFFFFFF:
                raise BadRequest(f"invalid fragment {frag.fid}", code="invalid_manifest")

    def _check_record(self, record: ObjectRecord) -> str:
        check_bucket(record.bucket)
        check_object_key(record.key)
        if record.size < 0:
            raise BadRequest("size must not be negative", code="invalid_manifest")
        if not record.etag or len(record.etag) > 128:
            raise BadRequest("etag must be 1-128 characters", code="invalid_manifest")
        if len(record.content_type) > 1024:
            raise BadRequest("content type is longer than 1024 characters", code="invalid_manifest")
        self._check_fragments(record.fragments)
        if sum(f.size for f in record.fragments) != record.size:
            raise BadRequest(
                "the fragments' sizes do not add up to the object size", code="invalid_manifest"
            )
        return self._check_metadata(record.metadata)

    async def _bucket_exists(self, tx: Tx, bucket: str) -> bool:
        return bool(await tx.query("SELECT 1 FROM buckets WHERE name = ?", (bucket,)))

    async def _not_found(self, tx: Tx, bucket: str, key: str) -> NotFound:
        if not await self._bucket_exists(tx, bucket):
            return NotFound(f"no such bucket {bucket!r}", code="no_such_bucket")
        return NotFound(f"no such object {key!r} in bucket {bucket!r}", code="no_such_key")

    async def _adjust_refs(
        self, tx: Tx, add: list[Fragment], remove: list[Fragment], reason: str
    ) -> None:
        """Count references up for `add` and down for `remove`; keys reaching zero are marked
        reclaimed and queued. Fails (Conflict fragment_reclaimed) if an added key was reclaimed."""
        now = time.time()
        fids: dict[int, str] = {}
        delta: Counter[int] = Counter()
        for frag in add:
            key = FileID.parse(frag.fid).key
            fids[key] = frag.fid
            delta[key] += 1
        for frag in remove:
            key = FileID.parse(frag.fid).key
            fids.setdefault(key, frag.fid)
            delta[key] -= 1
        added = sorted({FileID.parse(f.fid).key for f in add})
        if added:
            await tx.executemany(
                f"{self._dialect.insert_ignore} INTO needles (nkey, fid, refs, state, updated) "
                "VALUES (?, ?, 0, 'live', ?)",
                [(k, fids[k], now) for k in added],
            )
            for chunk in _chunks(added):
                bad = await tx.query(
                    f"SELECT fid FROM needles WHERE state = 'reclaimed' AND nkey IN {_in_list(len(chunk))}",
                    chunk,
                )
                if bad:
                    raise Conflict(
                        f"fragment {bad[0][0]} was already reclaimed (upload took longer than the "
                        "orphan grace period, or its data was discarded)",
                        code="fragment_reclaimed",
                    )
        changed = sorted(k for k, d in delta.items() if d)
        if not changed:
            return
        await tx.executemany(
            "UPDATE needles SET refs = refs + ?, updated = ? WHERE nkey = ?",
            [(delta[k], now, k) for k in changed],
        )
        dropped = sorted(k for k in changed if delta[k] < 0)
        for chunk in _chunks(dropped):
            rows = await tx.query(
                f"SELECT nkey, fid FROM needles WHERE refs <= 0 AND state = 'live' "
                f"AND nkey IN {_in_list(len(chunk))}",
                chunk,
            )
            await self._queue_reclaim(tx, rows, reason, now)

    async def _queue_reclaim(
        self, tx: Tx, rows: Sequence[tuple[Any, ...]], reason: str, now: float
    ) -> None:
        if not rows:
            return
        await tx.executemany(
            "UPDATE needles SET state = 'reclaimed', updated = ? WHERE nkey = ?",
            [(now, int(r[0])) for r in rows],
        )
        await tx.executemany(
            "INSERT INTO reclaim (fid, reason, queued, next_try, attempts) VALUES (?, ?, ?, ?, 0)",
            [(str(r[1]), reason, now, now) for r in rows],
        )

    # ------------------------------------------------------------------ membership

    async def heartbeat(self, server: ServerInfo) -> None:
        if not server.server_id or len(server.server_id) > 191:
            raise BadRequest("server_id must be 1-191 characters", code="invalid_server")
        if not server.url.startswith(("http://", "https://")) or len(server.url) > 512:
            raise BadRequest("url must be an http(s) URL", code="invalid_server")
        if server.group < 1:
            raise BadRequest("group must be at least 1", code="invalid_server")
        now = time.time()
        cached = await self.kv.get("server:" + server.server_id)
        fresh = ServerInfo.from_json({**server.to_json(), "last_seen": now, "state": "up"})
        await self.kv.set(
            "server:" + server.server_id,
            json.dumps(fresh.to_json()).encode(),
            ttl=max(60.0, 6 * self.heartbeat_timeout),
        )
        identity_changed = True
        if cached is not None:
            old = ServerInfo.from_json(json.loads(cached))
            identity_changed = (old.url, old.group, old.repair_needed) != (
                server.url, server.group, server.repair_needed,
            )
        # The DB copy (shared by every registry process) is refreshed at most every third of the
        # timeout unless something that matters changed: fresh enough for every process to judge
        # up/down, without one DB write per heartbeat.
        if not identity_changed and not await self.kv.set_nx(
            "hbdb:" + server.server_id, b"1", ttl=self.heartbeat_timeout / 3
        ):
            return
        cols = ("server_id", "url", "grp", "capacity", "free", "needles", "used", "repair_needed",
                "last_seen", "registered")
        sql = self._upsert("servers", cols, ("server_id",))

        async def body(tx: Tx) -> None:
            # A server replaced under the same URL (new disk, new id) replaces the old member.
            await tx.execute(
                "DELETE FROM servers WHERE url = ? AND server_id <> ?", (server.url, server.server_id)
            )
            existing = await tx.query(
                "SELECT registered FROM servers WHERE server_id = ?", (server.server_id,)
            )
            registered = float(existing[0][0]) if existing else now
            await tx.execute(
                sql,
                (server.server_id, server.url, server.group, server.capacity, server.free,
                 server.needles, server.used, int(server.repair_needed), now, registered),
            )

        await self.store.write(body)

    async def servers(self) -> list[ServerInfo]:
        """Every known data server with its state (DB rows refreshed by the KV cache)."""

        async def body(tx: Tx) -> list[tuple[Any, ...]]:
            return await tx.query(
                "SELECT server_id, url, grp, capacity, free, needles, used, repair_needed, last_seen "
                "FROM servers ORDER BY grp, url"
            )

        rows = await self.store.read(body)
        cached = await self.kv.get_many(["server:" + str(r[0]) for r in rows])
        now = time.time()
        out: list[ServerInfo] = []
        for row, raw in zip(rows, cached, strict=True):
            info = ServerInfo(
                server_id=str(row[0]), url=str(row[1]), group=int(row[2]), capacity=int(row[3]),
                free=int(row[4]), needles=int(row[5]), used=int(row[6]),
                repair_needed=bool(row[7]), last_seen=float(row[8]),
            )
            if raw is not None:
                fresh = ServerInfo.from_json(json.loads(raw))
                if fresh.last_seen > info.last_seen and fresh.url == info.url:
                    info = fresh
            if now - info.last_seen > self.heartbeat_timeout:
                info.state = "down"
            elif info.repair_needed:
                info.state = "repairing"
            else:
                info.state = "up"
            out.append(info)
        return out

    async def remove_server(self, server_id: str, *, force: bool = False) -> ServerInfo:
        """Forget a data server that is gone for good, so that its group can take a new member
        under another URL (the newcomer fills itself from the peers, then the group is writable).
        A server that is still heartbeating is refused unless `force`: it would re-register anyway.
        """
        found = [s for s in await self.servers() if s.server_id == server_id]
        if not found:
            raise NotFound(f"no data server {server_id!r}", code="no_such_server")
        if found[0].state != "down" and not force:
            raise Conflict(f"data server {server_id!r} is {found[0].state}; stop it first or force",
                           code="server_not_down")

        async def body(tx: Tx) -> None:
            await tx.execute("DELETE FROM servers WHERE server_id = ?", (server_id,))

        await self.store.write(body)
        log.info("data server %s (%s, group %d) removed", server_id, found[0].url, found[0].group)
        return found[0]

    async def groups(self) -> list[GroupInfo]:
        by_group: dict[int, list[ServerInfo]] = {}
        for info in await self.servers():
            by_group.setdefault(info.group, []).append(info)
        out = []
        for group in sorted(by_group):
            members = by_group[group]
            free = min(s.free for s in members)
            writable = (
                len(members) >= self.replicas
                # "repairing" members (still being filled from their peers) block writes too
                and all(s.state == "up" for s in members)
                and free > self.min_free_bytes
            )
            out.append(GroupInfo(group=group, servers=members, writable=writable, free=free))
        return out

    # ------------------------------------------------------------------ file IDs

    async def lease_keys(self, count: int) -> KeyRange:
        if not 1 <= count <= MAX_LEASE:
            raise BadRequest(f"count must be between 1 and {MAX_LEASE}", code="invalid_count")

        async def body(tx: Tx) -> int:
            if self._dialect.name == "sqlite":
                rows = await tx.query(
                    "UPDATE sequences SET next = next + ? WHERE name = 'needle' RETURNING next",
                    (count,),
                )
            else:
                await tx.execute(
                    "UPDATE sequences SET next = LAST_INSERT_ID(next + ?) WHERE name = 'needle'",
                    (count,),
                )
                rows = await tx.query("SELECT LAST_INSERT_ID()")
            return int(rows[0][0])

        end = await self.store.write(body)
        return KeyRange(start=end - count, count=count)

    # ------------------------------------------------------------------ objects

    async def _commit_in_tx(
        self,
        tx: Tx,
        record: ObjectRecord,
        metadata_text: str,
        *,
        if_match: str | None,
        if_none_match: bool,
        also_remove: list[Fragment],
        reason: str,
    ) -> ObjectRecord:
        now = time.time()
        key = record.key.encode()
        lock = self._dialect.for_update
        if not await tx.query(f"SELECT name FROM buckets WHERE name = ?{lock}", (record.bucket,)):
            await tx.execute(
                f"{self._dialect.insert_ignore} INTO buckets (name, created, objects, bytes) "
                "VALUES (?, ?, 0, 0)",
                (record.bucket, now),
            )
            await tx.query(f"SELECT name FROM buckets WHERE name = ?{lock}", (record.bucket,))
        rows = await tx.query(
            f"SELECT etag, created, size, manifest FROM objects WHERE bucket = ? AND okey = ?{lock}",
            (record.bucket, key),
        )
        current = rows[0] if rows else None
        if if_none_match and current is not None:
            raise PreconditionFailed(f"object {record.key!r} already exists")
        if if_match is not None:
            wanted = _unquote_etag(if_match)
            if current is None or (wanted != "*" and wanted != str(current[0])):
                raise PreconditionFailed(f"object {record.key!r} does not have ETag {if_match}")
        old_fragments = _manifest(str(current[3])) if current is not None else []
        await self._adjust_refs(tx, record.fragments, old_fragments + also_remove, reason)
        stored = ObjectRecord(
            bucket=record.bucket, key=record.key, size=record.size, etag=record.etag,
            content_type=record.content_type or "application/octet-stream",
            metadata=dict(record.metadata),
            created=float(current[1]) if current is not None else now,
            modified=now, version=uuid.uuid4().hex, fragments=list(record.fragments),
        )
        cols = ("bucket", "okey", "size", "etag", "content_type", "metadata", "created", "modified",
                "version", "manifest")
        await tx.execute(
            self._upsert("objects", cols, ("bucket", "okey")),
            (stored.bucket, key, stored.size, stored.etag, stored.content_type, metadata_text,
             stored.created, stored.modified, stored.version, _manifest_text(stored.fragments)),
        )
        added_objects = 0 if current is not None else 1
        added_bytes = stored.size - (int(current[2]) if current is not None else 0)
        await tx.execute(
            "UPDATE buckets SET objects = objects + ?, bytes = bytes + ? WHERE name = ?",
            (added_objects, added_bytes, stored.bucket),
        )
        return stored

    async def commit_object(
        self,
        record: ObjectRecord,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> ObjectRecord:
        metadata_text = self._check_record(record)

        async def body(tx: Tx) -> ObjectRecord:
            return await self._commit_in_tx(
                tx, record, metadata_text, if_match=if_match, if_none_match=if_none_match,
                also_remove=[], reason="overwrite",
            )

        try:
            return await self.store.write(body)
        except (PreconditionFailed, Conflict):
            # The new needles will never be referenced: queue them (keys still referenced by a
            # committed manifest, e.g. on a retried commit, are left alone by discard).
            await self.discard_fragments(record.fragments)
            raise

    @staticmethod
    def _record_from_row(bucket: str, row: Sequence[Any], manifest: str | None) -> ObjectRecord:
        return ObjectRecord(
            bucket=bucket, key=bytes(row[0]).decode(), size=int(row[1]), etag=str(row[2]),
            content_type=str(row[3]), metadata=json.loads(row[4]), created=float(row[5]),
            modified=float(row[6]), version=str(row[7]),
            fragments=_manifest(manifest) if manifest is not None else [],
        )

    async def get_object(self, bucket: str, key: str) -> ObjectRecord:
        check_bucket(bucket)
        check_object_key(key)

        async def body(tx: Tx) -> ObjectRecord:
            rows = await tx.query(
                f"SELECT {_OBJECT_COLS}, manifest FROM objects WHERE bucket = ? AND okey = ?",
                (bucket, key.encode()),
            )
            if not rows:
                raise await self._not_found(tx, bucket, key)
            return self._record_from_row(bucket, rows[0], str(rows[0][8]))

        return await self.store.read(body)

    async def delete_object(self, bucket: str, key: str) -> ObjectRecord:
        check_bucket(bucket)
        check_object_key(key)

        async def body(tx: Tx) -> ObjectRecord:
            lock = self._dialect.for_update
            if not await tx.query(f"SELECT name FROM buckets WHERE name = ?{lock}", (bucket,)):
                raise NotFound(f"no such bucket {bucket!r}", code="no_such_bucket")
            rows = await tx.query(
                f"SELECT {_OBJECT_COLS}, manifest FROM objects WHERE bucket = ? AND okey = ?{lock}",
                (bucket, key.encode()),
            )
            if not rows:
                raise await self._not_found(tx, bucket, key)
            record = self._record_from_row(bucket, rows[0], str(rows[0][8]))
            await tx.execute(
                "DELETE FROM objects WHERE bucket = ? AND okey = ?", (bucket, key.encode())
            )
            await tx.execute(
                "UPDATE buckets SET objects = objects - 1, bytes = bytes - ? WHERE name = ?",
                (record.size, bucket),
            )
            await self._adjust_refs(tx, [], record.fragments, "delete")
            return record

        return await self.store.write(body)

    async def list_objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        marker: str = "",
        limit: int = 1000,
    ) -> ListPage:
        check_bucket(bucket)
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise BadRequest(f"limit must be between 1 and {MAX_LIST_LIMIT}", code="invalid_limit")
        for name, value in (("prefix", prefix), ("delimiter", delimiter), ("marker", marker)):
            if len(value.encode("utf-8", "surrogatepass")) > 1024:
                raise BadRequest(f"{name} is longer than 1024 bytes", code="invalid_argument")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest(f"{name} must be valid UTF-8", code="invalid_argument") from None
        pfx = prefix.encode()
        delim = delimiter.encode()
        upper = _successor(pfx) if pfx else None
        # Start strictly after the marker, or at the prefix when that comes later.
        lower, inclusive = marker.encode(), False
        if pfx > lower:
            lower, inclusive = pfx, True
        if delim and marker.encode().startswith(pfx):
            rest = marker.encode()[len(pfx):]
            at = rest.find(delim)
            if at >= 0:
                # The marker lies inside a common prefix already returned: skip all of it.
                skip = _successor(pfx + rest[: at + len(delim)])
                if skip is None:
                    return ListPage([], [], False, None)
                lower, inclusive = max(lower, skip), True

        async def body(tx: Tx) -> ListPage:
            lo, inc = lower, inclusive  # the body may be re-run: keep the start untouched
            objects: list[ObjectRecord] = []
            prefixes: list[str] = []
            last = ""
            truncated = False
            # With a delimiter most fetched rows may fall in one common prefix and be skipped:
            # fetch small batches after each jump and grow them while rows are plain objects.
            window = 16 if delim else MAX_LIST_LIMIT + 1
            while True:
                batch = min(limit - len(objects) - len(prefixes) + 1, MAX_LIST_LIMIT + 1, window)
                sql = f"SELECT {_OBJECT_COLS} FROM objects WHERE bucket = ? AND okey {'>=' if inc else '>'} ?"
                params: list[Any] = [bucket, lo]
                if upper is not None:
                    sql += " AND okey < ?"
                    params.append(upper)
                sql += " ORDER BY okey LIMIT ?"
                params.append(batch)
                rows = await tx.query(sql, params)
                jumped = False
                for row in rows:
                    okey = bytes(row[0])
                    if len(objects) + len(prefixes) >= limit:
                        truncated = True
                        break
                    if delim:
                        at = okey.find(delim, len(pfx))
                        if at >= 0:
                            common = okey[: at + len(delim)]
                            prefixes.append(common.decode())
                            last = common.decode()
                            nxt = _successor(common)
                            if nxt is None:
                                return ListPage(objects, prefixes, False, None)
                            lo, inc, jumped = nxt, True, True
                            break
                    objects.append(self._record_from_row(bucket, row, None))
                    last = objects[-1].key
                    lo, inc = okey, False
                if truncated or (not jumped and len(rows) < batch):
                    break
                window = 4 if jumped else min(window * 4, MAX_LIST_LIMIT + 1)
            if not objects and not prefixes and not await self._bucket_exists(tx, bucket):
                raise NotFound(f"no such bucket {bucket!r}", code="no_such_bucket")
            return ListPage(objects, prefixes, truncated, last if truncated else None)

        return await self.store.read(body)

    async def list_buckets(self) -> list[BucketInfo]:
        async def body(tx: Tx) -> list[BucketInfo]:
            rows = await tx.query("SELECT name, created, objects, bytes FROM buckets ORDER BY name")
            return [
                BucketInfo(name=str(r[0]), created=float(r[1]), objects=int(r[2]), bytes=int(r[3]))
                for r in rows
            ]

        return await self.store.read(body)

    async def delete_bucket(self, bucket: str) -> None:
        check_bucket(bucket)

        async def body(tx: Tx) -> None:
            lock = self._dialect.for_update
            if not await tx.query(f"SELECT name FROM buckets WHERE name = ?{lock}", (bucket,)):
                raise NotFound(f"no such bucket {bucket!r}", code="no_such_bucket")
            if await tx.query("SELECT 1 FROM objects WHERE bucket = ? LIMIT 1", (bucket,)):
                raise Conflict(f"bucket {bucket!r} is not empty", code="bucket_not_empty")
            await tx.execute("DELETE FROM buckets WHERE name = ?", (bucket,))

        await self.store.write(body)

    async def discard_fragments(self, fragments: list[Fragment]) -> None:
        self._check_fragments(fragments)
        by_key = {FileID.parse(f.fid).key: f.fid for f in fragments}
        if not by_key:
            return

        async def body(tx: Tx) -> None:
            now = time.time()
            keys = sorted(by_key)
            for chunk in _chunks(keys):
                rows = await tx.query(
                    f"SELECT nkey, refs, state FROM needles WHERE nkey IN {_in_list(len(chunk))}",
                    chunk,
                )
                known = {int(r[0]): (int(r[1]), str(r[2])) for r in rows}
                queue: list[tuple[Any, ...]] = []
                for key in chunk:
                    if key not in known:
                        if await tx.execute(
                            f"{self._dialect.insert_ignore} INTO needles (nkey, fid, refs, state, "
                            "updated) VALUES (?, ?, 0, 'reclaimed', ?)",
                            (key, by_key[key], now),
                        ):
                            await tx.execute(
                                "INSERT INTO reclaim (fid, reason, queued, next_try, attempts) "
                                "VALUES (?, 'discard', ?, ?, 0)",
                                (by_key[key], now, now),
                            )
                    elif known[key] == (0, "live") or known[key][0] < 0:
                        queue.append((key, by_key[key]))
                await self._queue_reclaim(tx, queue, "discard", now)

        await self.store.write(body)

    # ------------------------------------------------------------------ multipart uploads

    async def create_multipart(
        self, bucket: str, key: str, content_type: str, metadata: dict[str, str]
    ) -> MultipartUpload:
        check_bucket(bucket)
        check_object_key(key)
        metadata_text = self._check_metadata(metadata)
        upload = MultipartUpload(
            upload_id=uuid.uuid4().hex, bucket=bucket, key=key,
            content_type=content_type or "application/octet-stream", metadata=dict(metadata),
            created=time.time(),
        )

        async def body(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO uploads (upload_id, bucket, okey, content_type, metadata, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (upload.upload_id, bucket, key.encode(), upload.content_type, metadata_text,
                 upload.created),
            )

        await self.store.write(body)
        return upload

    async def _upload(self, tx: Tx, upload_id: str, *, lock: bool = False) -> MultipartUpload:
        if not upload_id or len(upload_id) > 64:
            raise NotFound(f"no such upload {upload_id[:80]!r}", code="no_such_upload")
        suffix = self._dialect.for_update if lock else ""
        rows = await tx.query(
            "SELECT upload_id, bucket, okey, content_type, metadata, created FROM uploads "
            f"WHERE upload_id = ?{suffix}",
            (upload_id,),
        )
        if not rows:
            raise NotFound(f"no such upload {upload_id[:80]!r}", code="no_such_upload")
        r = rows[0]
        return MultipartUpload(
            upload_id=str(r[0]), bucket=str(r[1]), key=bytes(r[2]).decode(), content_type=str(r[3]),
            metadata=json.loads(r[4]), created=float(r[5]),
        )

    async def get_multipart(self, upload_id: str) -> MultipartUpload:
        async def body(tx: Tx) -> MultipartUpload:
            return await self._upload(tx, upload_id)

        return await self.store.read(body)

    async def _parts(self, tx: Tx, upload_id: str) -> list[PartInfo]:
        rows = await tx.query(
            "SELECT part_number, size, etag, manifest, modified FROM parts WHERE upload_id = ? "
            "ORDER BY part_number",
            (upload_id,),
        )
        return [
            PartInfo(part_number=int(r[0]), size=int(r[1]), etag=str(r[2]),
                     fragments=_manifest(str(r[3])), modified=float(r[4]))
            for r in rows
        ]

    async def put_part(self, upload_id: str, part: PartInfo) -> None:
        if not 1 <= part.part_number <= MAX_PART_NUMBER:
            raise BadRequest(
                f"part number must be between 1 and {MAX_PART_NUMBER}", code="invalid_part_number"
            )
        if part.size < 0 or not part.etag or len(part.etag) > 128:
            raise BadRequest("invalid part size or etag", code="invalid_manifest")
        self._check_fragments(part.fragments)
        if sum(f.size for f in part.fragments) != part.size:
            raise BadRequest("the fragments' sizes do not add up to the part size", code="invalid_manifest")

        async def body(tx: Tx) -> None:
            await self._upload(tx, upload_id, lock=True)
            rows = await tx.query(
                "SELECT manifest FROM parts WHERE upload_id = ? AND part_number = ?"
                + self._dialect.for_update,
                (upload_id, part.part_number),
            )
            old = _manifest(str(rows[0][0])) if rows else []
            await self._adjust_refs(tx, part.fragments, old, "part_replaced")
            cols = ("upload_id", "part_number", "size", "etag", "manifest", "modified")
            await tx.execute(
                self._upsert("parts", cols, ("upload_id", "part_number")),
                (upload_id, part.part_number, part.size, part.etag, _manifest_text(part.fragments),
                 time.time()),
            )

        try:
            await self.store.write(body)
        except (NotFound, Conflict):
            await self.discard_fragments(part.fragments)
            raise

    async def list_parts(self, upload_id: str) -> list[PartInfo]:
        async def body(tx: Tx) -> list[PartInfo]:
            await self._upload(tx, upload_id)
            return await self._parts(tx, upload_id)

        return await self.store.read(body)

    async def complete_multipart(
        self, upload_id: str, parts: list[tuple[int, str]], *, etag: str
    ) -> ObjectRecord:
        if not parts:
            raise Unprocessable("at least one part is required", code="invalid_part")

        async def body(tx: Tx) -> ObjectRecord:
            upload = await self._upload(tx, upload_id, lock=True)
            stored = {p.part_number: p for p in await self._parts(tx, upload_id)}
            fragments: list[Fragment] = []
            size = 0
            previous = 0
            for number, part_etag in parts:
                if number <= previous:
                    raise Unprocessable(
                        "parts must be listed in ascending order", code="invalid_part_order"
                    )
                previous = number
                part = stored.get(number)
                if part is None or _unquote_etag(part_etag) != _unquote_etag(part.etag):
                    raise Unprocessable(
                        f"part {number} was not uploaded or its ETag differs", code="invalid_part"
                    )
                fragments.extend(part.fragments)
                size += part.size
            record = ObjectRecord(
                bucket=upload.bucket, key=upload.key, size=size, etag=etag,
                content_type=upload.content_type, metadata=upload.metadata, fragments=fragments,
            )
            metadata_text = self._check_record(record)
            every_part = [f for p in stored.values() for f in p.fragments]
            result = await self._commit_in_tx(
                tx, record, metadata_text, if_match=None, if_none_match=False,
                also_remove=every_part, reason="multipart",
            )
            await tx.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            await tx.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
            return result

        return await self.store.write(body)

    async def abort_multipart(self, upload_id: str) -> None:
        async def body(tx: Tx) -> None:
            await self._upload(tx, upload_id, lock=True)
            every_part = [f for p in await self._parts(tx, upload_id) for f in p.fragments]
            await self._adjust_refs(tx, [], every_part, "abort")
            await tx.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            await tx.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))

        await self.store.write(body)

    async def list_multipart(self, bucket: str) -> list[MultipartUpload]:
        check_bucket(bucket)

        async def body(tx: Tx) -> list[MultipartUpload]:
            rows = await tx.query(
                "SELECT upload_id, bucket, okey, content_type, metadata, created FROM uploads "
                "WHERE bucket = ? ORDER BY okey, created LIMIT 10000",
                (bucket,),
            )
            return [
                MultipartUpload(upload_id=str(r[0]), bucket=str(r[1]), key=bytes(r[2]).decode(),
                                content_type=str(r[3]), metadata=json.loads(r[4]),
                                created=float(r[5]))
                for r in rows
            ]

        return await self.store.read(body)

    # ------------------------------------------------------------------ Git LFS locks

    @staticmethod
    def _check_lock_args(repo: str, path: str | None = None) -> None:
        if not repo or len(repo) > 255 or not repo.isascii():
            raise BadRequest("repo must be 1-255 ASCII characters", code="invalid_repo")
        if path is not None and (not path or len(path.encode()) > 1024):
            raise BadRequest("path must be 1-1024 bytes", code="invalid_path")

    @staticmethod
    def _lock_from_row(r: Sequence[Any]) -> LfsLock:
        return LfsLock(id=str(r[0]), repo=str(r[1]), path=bytes(r[2]).decode(), owner=str(r[3]),
                       ref=None if r[4] is None else str(r[4]), locked_at=float(r[5]))

    async def create_lock(self, repo: str, path: str, owner: str, ref: str | None) -> LfsLock:
        self._check_lock_args(repo, path)
        if not owner or len(owner) > 255:
            raise BadRequest("owner must be 1-255 characters", code="invalid_owner")
        # Ids sort by creation time, so "ordered by id" is creation order.
        lock = LfsLock(id=f"{time.time_ns():016x}{uuid.uuid4().hex[:8]}", repo=repo, path=path,
                       owner=owner, locked_at=time.time(), ref=ref)

        async def body(tx: Tx) -> LfsLock:
            inserted = await tx.execute(
                f"{self._dialect.insert_ignore} INTO locks (id, repo, path, owner, ref, locked_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (lock.id, repo, path.encode(), owner, ref, lock.locked_at),
            )
            if not inserted:
                rows = await tx.query(
                    "SELECT id FROM locks WHERE repo = ? AND path = ?", (repo, path.encode())
                )
                existing = str(rows[0][0]) if rows else ""
                raise Conflict(f"lock exists: {existing}", code="lock_exists")
            return lock

        return await self.store.write(body)

    async def list_locks(
        self,
        repo: str,
        *,
        path: str | None = None,
        lock_id: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
        ref: str | None = None,
    ) -> tuple[list[LfsLock], str | None]:
        self._check_lock_args(repo)
        if not 1 <= limit <= 1000:
            raise BadRequest("limit must be between 1 and 1000", code="invalid_limit")
        sql = "SELECT id, repo, path, owner, ref, locked_at FROM locks WHERE repo = ?"
        params: list[Any] = [repo]
        if path:
            sql += " AND path = ?"
            params.append(path.encode())
        if lock_id:
            sql += " AND id = ?"
            params.append(lock_id)
        if cursor:
            sql += " AND id >= ?"
            params.append(cursor)
        if ref:
            sql += " AND (ref = ? OR ref IS NULL)"
            params.append(ref)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit + 1)

        async def body(tx: Tx) -> list[tuple[Any, ...]]:
            return await tx.query(sql, params)

        rows = await self.store.read(body)
        locks = [self._lock_from_row(r) for r in rows[:limit]]
        next_cursor = str(rows[limit][0]) if len(rows) > limit else None
        return locks, next_cursor

    async def delete_lock(
        self, repo: str, lock_id: str, owner: str, *, force: bool = False
    ) -> LfsLock:
        self._check_lock_args(repo)

        async def body(tx: Tx) -> LfsLock:
            rows = await tx.query(
                "SELECT id, repo, path, owner, ref, locked_at FROM locks WHERE repo = ? AND id = ?"
                f"{self._dialect.for_update}",
                (repo, lock_id),
            )
            if not rows:
                raise NotFound(f"no such lock {lock_id[:80]!r}", code="no_such_lock")
            lock = self._lock_from_row(rows[0])
            if lock.owner != owner and not force:
                raise Forbidden(f"lock {lock_id} is owned by {lock.owner}", code="lock_not_owner")
            await tx.execute("DELETE FROM locks WHERE id = ?", (lock_id,))
            return lock

        return await self.store.write(body)

    # ------------------------------------------------------------------ reclaim queue (reaper)

    async def due_reclaims(self, limit: int) -> list[tuple[int, str]]:
        """Queued needles whose next attempt is due, that no manifest references (re-checked)."""

        async def body(tx: Tx) -> list[tuple[int, str]]:
            rows = await tx.query(
                "SELECT r.id, r.fid FROM reclaim r WHERE r.next_try <= ? ORDER BY r.next_try LIMIT ?",
                (time.time(), limit),
            )
            return [(int(r[0]), str(r[1])) for r in rows]

        return await self.store.read(body)

    async def still_reclaimed(self, fids: list[str]) -> set[str]:
        """The subset of `fids` whose needle row is (still) 'reclaimed': only those are deleted."""
        keys = {FileID.parse(f).key: f for f in fids}
        out: set[str] = set()

        async def body(tx: Tx) -> None:
            for chunk in _chunks(sorted(keys)):
                rows = await tx.query(
                    f"SELECT nkey FROM needles WHERE state = 'reclaimed' AND refs <= 0 "
                    f"AND nkey IN {_in_list(len(chunk))}",
                    chunk,
                )
                out.update(keys[int(r[0])] for r in rows)

        await self.store.read(body)
        return out

    async def finish_reclaims(self, ids: list[int]) -> None:
        async def body(tx: Tx) -> None:
            for chunk in _chunks(ids):
                await tx.execute(f"DELETE FROM reclaim WHERE id IN {_in_list(len(chunk))}", chunk)

        if ids:
            await self.store.write(body)

    async def postpone_reclaims(self, ids: list[int], delay: float) -> None:
        async def body(tx: Tx) -> None:
            for chunk in _chunks(ids):
                await tx.execute(
                    f"UPDATE reclaim SET attempts = attempts + 1, next_try = ? "
                    f"WHERE id IN {_in_list(len(chunk))}",
                    [time.time() + delay, *chunk],
                )

        if ids:
            await self.store.write(body)

    async def reclaim_backlog(self) -> int:
        async def body(tx: Tx) -> int:
            return int((await tx.query("SELECT COUNT(*) FROM reclaim"))[0][0])

        return await self.store.read(body)

    async def claim_orphans(self, fids: list[str]) -> list[str]:
        """Queue for reclaim those of `fids` (old needles found on data servers) whose key has no
        `needles` row, i.e. that no commit ever referenced; returns the ones queued."""
        self._check_fragments([Fragment(fid=f, size=0, crc32c=0) for f in fids])
        by_key = {FileID.parse(f).key: f for f in fids}
        claimed: list[str] = []

        async def body(tx: Tx) -> None:
            claimed.clear()
            now = time.time()
            for key in sorted(by_key):
                if await tx.execute(
                    f"{self._dialect.insert_ignore} INTO needles (nkey, fid, refs, state, updated) "
                    "VALUES (?, ?, 0, 'reclaimed', ?)",
                    (key, by_key[key], now),
                ):
                    await tx.execute(
                        "INSERT INTO reclaim (fid, reason, queued, next_try, attempts) "
                        "VALUES (?, 'orphan', ?, ?, 0)",
                        (by_key[key], now, now),
                    )
                    claimed.append(by_key[key])

        if by_key:
            await self.store.write(body)
        return claimed
