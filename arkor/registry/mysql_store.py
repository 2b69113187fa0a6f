"""MySQL/MariaDB metadata store over trio-mysql 1.0.3 (native trio, no threads).

trio-mysql has no pool and its own `transaction()` turns a cancellation into InterfaceError
(STACK-NOTES), so this module brings both: a bounded pool that drops connections a cancelled query
closed, and a transaction helper that rolls back shielded, with a deadline, and only when the
connection is still open. InnoDB deadlocks and lock-wait timeouts retry the whole transaction body.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
import trio_mysql
import trio_mysql.cursors
import trio_mysql.err

from arkor.registry.store import MYSQL, Dialect, Tx, migrate

log = logging.getLogger(__name__)
T = TypeVar("T")



class _QuietCursor(trio_mysql.cursors.Cursor):
    """INSERT IGNORE reports skipped duplicates as server warnings: expected here, and fetching
    them would cost a round trip per statement."""

    _defer_warnings = True

_RETRYABLE = {1213, 1205}  # ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
_MAX_ATTEMPTS = 8


def _placeholders(sql: str) -> str:
    # The service writes `?` placeholders and never a literal `%` or `?` in SQL text.
    return sql.replace("?", "%s")


class _MysqlTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self._conn.cursor(_QuietCursor) as cur:
            return int(await cur.execute(_placeholders(sql), tuple(params)) or 0)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            async with self._conn.cursor(_QuietCursor) as cur:
                await cur.executemany(_placeholders(sql), [tuple(r) for r in rows])

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._conn.cursor(_QuietCursor) as cur:
            await cur.execute(_placeholders(sql), tuple(params))
            return list(await cur.fetchall())


class MysqlStore:
    dialect: Dialect = MYSQL

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str,
        password: str,
        database: str,
        pool_size: int = 8,
        connect_timeout: float = 10.0,
    ) -> None:
        self._params = {
            "host": host, "port": port, "user": user, "password": password,
            "connect_timeout": connect_timeout,
        }
        self.database = database
        self._slots = trio.Semaphore(max(1, pool_size))
        self._idle: list[Any] = []

    async def _new_connection(self, database: str | None) -> Any:
        conn = trio_mysql.connect(
            **self._params, database=database, use_unicode=True, charset="utf8mb4",
            autocommit=True,
        )
        await conn.connect()
        return conn

    async def open(self) -> None:
        if not self.database.replace("_", "").isalnum():
            raise ValueError(f"sqldatabase.schema: invalid database name {self.database!r}")
        conn = await self._new_connection(None)
        try:
            async with conn.cursor() as cur:
                await cur.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{self.database}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await conn.aclose()
        await migrate(self)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        async with self._slots:
            conn = None
            while self._idle:
                candidate = self._idle.pop()
                if candidate.open:
                    conn = candidate
                    break
            if conn is None:
                conn = await self._new_connection(self.database)
            try:
                yield conn
            finally:
                # A cancelled query closes the connection itself; a failed rollback closes it.
                if conn.open:
                    self._idle.append(conn)
                else:
                    conn.close()

    async def _run(self, body: Callable[[Tx], Awaitable[T]], *, read_only: bool) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._connection() as conn:
                    return await self._transaction(conn, body, read_only)
            except trio_mysql.err.OperationalError as exc:
                code = exc.args[0] if exc.args else None
                if code not in _RETRYABLE or attempt >= _MAX_ATTEMPTS:
                    raise
                log.debug("retrying transaction after MySQL error %s (attempt %d)", code, attempt)
                await trio.sleep(0.005 * attempt)

    @staticmethod
    async def _transaction(conn: Any, body: Callable[[Tx], Awaitable[T]], read_only: bool) -> T:
        tx = _MysqlTx(conn)
        await tx.execute("START TRANSACTION READ ONLY" if read_only else "START TRANSACTION")
        try:
            result = await body(tx)
            await tx.execute("COMMIT")
            return result
        except BaseException:
            if conn.open:
                with trio.CancelScope(shield=True), trio.move_on_after(5) as scope:
                    try:
                        await tx.execute("ROLLBACK")
                    except Exception:
                        conn.close()
                if scope.cancelled_caught:
                    conn.close()
            raise

    async def write(self, body: Callable[[Tx], Awaitable[T]]) -> T:
        return await self._run(body, read_only=False)

    async def read(self, body: Callable[[Tx], Awaitable[T]]) -> T:
        return await self._run(body, read_only=True)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            for conn in idle:
                await conn.aclose()
        for conn in idle:
            conn.close()

    async def drop_database(self) -> None:
        """Tests and benchmarks: remove the whole database."""
        conn = await self._new_connection(None)
        try:
            async with conn.cursor() as cur:
                await cur.execute(f"DROP DATABASE IF EXISTS `{self.database}`")
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await conn.aclose()
