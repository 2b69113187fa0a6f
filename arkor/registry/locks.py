"""Registry operations on Git LFS file locks (create, list with cursor, delete with force).

Must not: touch objects or needles."""


import time
import uuid
from collections.abc import Sequence
from typing import Any, Unpack

from arkor.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
)
from arkor.model import (
    LfsLock,
)
from arkor.registry.ops_base import (
    RegistryBase,
)
from arkor.registry.store import Tx
from arkor.transfer.registry_calls import LockOptions, LockQuery


class LockOps(RegistryBase):
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
        self, repo: str, **options: Unpack[LockOptions]
    ) -> tuple[list[LfsLock], str | None]:
        query = LockQuery(repo, **options)
        limit = query.limit
        self._check_lock_args(repo)
        if not 1 <= limit <= 1000:
            raise BadRequest("limit must be between 1 and 1000", code="invalid_limit")
        sql = "SELECT id, repo, path, owner, ref, locked_at FROM locks WHERE repo = ?"
        params: list[Any] = [repo]
        for condition, value in (
            (" AND path = ?", query.path and query.path.encode()),
            (" AND id = ?", query.lock_id),
            (" AND id >= ?", query.cursor),
            (" AND (ref = ? OR ref IS NULL)", query.ref),
        ):
            if value:
                sql += condition
                params.append(value)
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

