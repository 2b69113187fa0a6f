"""Registry operations on objects and buckets: manifest commits and overwrites (preconditions
checked inside the transaction), lookups, deletes and listings.

Must not: know about multipart parts or locks."""


import json
import time
import uuid
from collections.abc import Sequence
from typing import Any, Unpack

from arkor.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PreconditionFailed,
)
from arkor.model import (
    BucketInfo,
    Fragment,
    ListPage,
    ObjectRecord,
)
from arkor.names import check_bucket, check_object_key
from arkor.registry.needles import NeedleOps
from arkor.registry.ops_base import (
    MAX_LIST_LIMIT,
    OBJECT_COLS,
    key_successor,
    manifest_text,
    parse_manifest,
)
from arkor.registry.store import Tx
from arkor.transfer.registry_calls import ListOptions, ListQuery, ObjectCommit
from arkor.web.semantics import unquote_etag


class ObjectOps(NeedleOps):
    """Built on the needle operations: an overwrite or delete discards the replaced fragments."""

    # ------------------------------------------------------------------ objects

    async def _commit_in_tx(
        self, tx: Tx, commit: ObjectCommit, metadata_text: str, also_remove: list[Fragment], reason: str
    ) -> ObjectRecord:
        record, when = commit.record, commit.when
        now = time.time()
        key = record.key.encode()
        lock = self._dialect.for_update
        if not await tx.query(f"SELECT name FROM buckets WHERE name = ?{lock}", (record.bucket,)):
            if not commit.create_bucket:
                raise NotFound(f"no such bucket {record.bucket!r}", code="no_such_bucket")
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
        if when.if_none_match and current is not None:
            raise PreconditionFailed(f"object {record.key!r} already exists")
        if when.if_match is not None:
            wanted = unquote_etag(when.if_match)
            if current is None or (wanted != "*" and wanted != str(current[0])):
                raise PreconditionFailed(f"object {record.key!r} does not have ETag {when.if_match}")
        old_fragments = parse_manifest(str(current[3])) if current is not None else []
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
            self._dialect.upsert("objects", cols, ("bucket", "okey")),
            (stored.bucket, key, stored.size, stored.etag, stored.content_type, metadata_text,
             stored.created, stored.modified, stored.version, manifest_text(stored.fragments)),
        )
        added_objects = 0 if current is not None else 1
        added_bytes = stored.size - (int(current[2]) if current is not None else 0)
        await tx.execute(
            "UPDATE buckets SET objects = objects + ?, bytes = bytes + ? WHERE name = ?",
            (added_objects, added_bytes, stored.bucket),
        )
        return stored

    async def commit_object(self, commit: ObjectCommit) -> ObjectRecord:
        record = commit.record
        metadata_text = self._check_record(record)

        async def body(tx: Tx) -> ObjectRecord:
            return await self._commit_in_tx(tx, commit, metadata_text, [], "overwrite")

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
            fragments=parse_manifest(manifest) if manifest is not None else [],
        )

    async def get_object(self, bucket: str, key: str) -> ObjectRecord:
        check_bucket(bucket)
        check_object_key(key)

        async def body(tx: Tx) -> ObjectRecord:
            rows = await tx.query(
                f"SELECT {OBJECT_COLS}, manifest FROM objects WHERE bucket = ? AND okey = ?",
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
                f"SELECT {OBJECT_COLS}, manifest FROM objects WHERE bucket = ? AND okey = ?{lock}",
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

    async def list_objects(self, bucket: str, **options: Unpack[ListOptions]) -> ListPage:
        query = ListQuery(bucket, **options)
        prefix, delimiter, marker, limit = query.prefix, query.delimiter, query.marker, query.limit
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
        upper = key_successor(pfx) if pfx else None
        # Start strictly after the marker, or at the prefix when that comes later.
        lower, inclusive = marker.encode(), False
        if pfx > lower:
            lower, inclusive = pfx, True
        if delim and marker.encode().startswith(pfx):
            rest = marker.encode()[len(pfx):]
            at = rest.find(delim)
            if at >= 0:
                # The marker lies inside a common prefix already returned: skip all of it.
                skip = key_successor(pfx + rest[: at + len(delim)])
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
                sql = f"SELECT {OBJECT_COLS} FROM objects WHERE bucket = ? AND okey {'>=' if inc else '>'} ?"
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
                            nxt = key_successor(common)
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

    async def create_bucket(self, bucket: str) -> bool:
        """Create an empty bucket (S3 CreateBucket); False when it already existed."""
        check_bucket(bucket)

        async def body(tx: Tx) -> bool:
            if await self._bucket_exists(tx, bucket):
                return False
            await tx.execute(
                f"{self._dialect.insert_ignore} INTO buckets (name, created, objects, bytes) "
                "VALUES (?, ?, 0, 0)",
                (bucket, time.time()),
            )
            return True

        return await self.store.write(body)

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

