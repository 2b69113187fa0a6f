"""SQLite metadata store: the embedded default (no set-up), one file in WAL mode.

Every SQLite call blocks, so each runs in a worker thread under a bounded CapacityLimiter. Writes go
through ONE writer connection (SQLite allows one writer at a time anyway; a trio.Lock queues
writers fairly instead of spinning on SQLITE_BUSY); `BEGIN IMMEDIATE` plus busy_timeout also
serialise writers of other processes sharing the file. Reads use a small pool of reader
connections, which WAL lets run beside the writer on a consistent snapshot.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio

from arkor.registry.store import SQLITE, Tx, migrate

T = TypeVar("T")


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection, limiter: trio.CapacityLimiter) -> None:
        self._conn = conn
        self._limiter = limiter

    async def _run(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self._run(lambda: self._conn.execute(sql, tuple(params)).rowcount)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._run(lambda: self._conn.executemany(sql, [tuple(r) for r in rows]))

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self._run(lambda: self._conn.execute(sql, tuple(params)).fetchall())


class SqliteStore:
    dialect = SQLITE

    def __init__(self, path: Path, *, readers: int = 4, threads: int = 8) -> None:
        self.path = path
        self._limiter = trio.CapacityLimiter(threads)
        self._write_lock = trio.Lock()
        self._writer: sqlite3.Connection | None = None
        self._readers_wanted = readers
        self._readers: list[sqlite3.Connection] = []
        self._reader_slots = trio.Semaphore(readers)
        self._all: list[sqlite3.Connection] = []

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is acknowledged only after the WAL is fsynced.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    async def open(self) -> None:
        def setup() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = self._connect()
            self._all.append(self._writer)
            for _ in range(self._readers_wanted):
                reader = self._connect()
                self._readers.append(reader)
                self._all.append(reader)

        await trio.to_thread.run_sync(setup, limiter=self._limiter)
        await migrate(self)

    @asynccontextmanager
    async def _transaction(self, conn: sqlite3.Connection, begin: str):  # type: ignore[no-untyped-def]
        tx = _SqliteTx(conn, self._limiter)
        await tx.execute(begin)
        try:
            yield tx
            # Not abandoned on cancel (run_sync waits for the thread): either COMMIT happened,
            # or it raised and the transaction is rolled back below.
            await tx.execute("COMMIT")
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(30):
                await trio.to_thread.run_sync(
                    lambda: conn.in_transaction and conn.execute("ROLLBACK"), limiter=self._limiter
                )
            raise

    async def write(self, body: Callable[[Tx], Awaitable[T]]) -> T:
        assert self._writer is not None, "store not open"
        async with self._write_lock:
            async with self._transaction(self._writer, "BEGIN IMMEDIATE") as tx:
                return await body(tx)

    async def read(self, body: Callable[[Tx], Awaitable[T]]) -> T:
        async with self._reader_slots:
            conn = self._readers.pop()
            try:
                async with self._transaction(conn, "BEGIN") as tx:
                    return await body(tx)
            finally:
                self._readers.append(conn)

    async def aclose(self) -> None:
        conns, self._all = self._all, []
        self._readers = []
        self._writer = None

        def close_all() -> None:
            for conn in conns:
                conn.close()

        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(close_all, limiter=self._limiter)
