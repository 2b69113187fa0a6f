"""What every registry operation shares: the store, the KV, checks of records, and reference
counting of needle keys (the invariant that a needle is never both committed and reclaimed).

Must not: hold operations of its own; they live in membership, needles, objects, multipart and locks.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

from arkor.errors import (
    BadRequest,
    Conflict,
    NotFound,
)
from arkor.fileid import FileID
from arkor.model import (
    Fragment,
    ObjectRecord,
)
from arkor.names import check_bucket, check_object_key
from arkor.registry.kv import KV
from arkor.registry.store import Dialect, MetaStore, Tx

log = logging.getLogger(__name__)

MAX_LEASE = 1_000_000
MAX_LIST_LIMIT = 1000
MAX_PART_NUMBER = 10_000
IN_CHUNK = 500  # keys per IN (...) list
OBJECT_COLS = "okey, size, etag, content_type, metadata, created, modified, version"


class MetadataTooLarge(BadRequest):
    """User metadata is larger than allowed."""

    code = "metadata_too_large"


def key_successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def chunked(items: Sequence[Any], size: int = IN_CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def in_list(n: int) -> str:
    return "(" + ",".join("?" * n) + ")"


def manifest_text(fragments: list[Fragment]) -> str:
    return json.dumps([[f.fid, f.size, f.crc32c] for f in fragments], separators=(",", ":"))


def parse_manifest(text: str) -> list[Fragment]:
    return [Fragment(fid=f[0], size=int(f[1]), crc32c=int(f[2])) for f in json.loads(text)]


@dataclass(eq=False)  # a service: compared and hashed by identity
class RegistryBase:
    """State and helpers shared by the operation groups that make up `RegistryService`: the stores
    and the cluster's limits, as `RegistryService(store, kv, replicas=..., ...)` was given them."""

    store: MetaStore
    kv: KV
    _: KW_ONLY
    replicas: int = 3
    heartbeat_timeout: float = 10.0
    min_free_bytes: int = 64 * 1024 * 1024
    max_metadata_bytes: int = 8 * 1024

    @property
    def _dialect(self) -> Dialect:
        return self.store.dialect

    # ------------------------------------------------------------------ helpers

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
            for chunk in chunked(added):
                bad = await tx.query(
                    f"SELECT fid FROM needles WHERE state = 'reclaimed' AND nkey IN {in_list(len(chunk))}",
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
        for chunk in chunked(dropped):
            rows = await tx.query(
                f"SELECT nkey, fid FROM needles WHERE refs <= 0 AND state = 'live' "
                f"AND nkey IN {in_list(len(chunk))}",
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

