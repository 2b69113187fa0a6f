"""SQLite metadata store: the embedded default (no set-up), one file in WAL mode.

Every SQLite call blocks, so it runs in a worker thread under a bounded CapacityLimiter. A whole
transaction (BEGIN, the body's statements, COMMIT) runs in ONE worker-thread call: the body's
`await tx.query(...)` calls complete at once there (`_InlineTx` never suspends), so a commit costs
one thread hand-off instead of one per statement. Under load each hand-off waits for a turn of the
busy trio loop, and with one writer at a time that wait serialised every PUT. So a body must await
nothing but its transaction (see `MetaStore`): one that suspends on something else is rolled back
and run again the slow way (a statement per hand-off); one that calls trio from the worker thread
fails.

Writes are group-committed: one queued writer leads and takes every write queued so far (up to
`WRITE_BATCH`) into one transaction, each body inside its own SAVEPOINT (a body that
raises is rolled back alone). The WAL fsync of that one COMMIT, the cost that bounds SQLite at a
few hundred commits per second on this kind of disk, is shared; nobody's result is returned before
the COMMIT is durable. Writes go through ONE writer connection (SQLite allows one writer at a time
anyway; the queue orders writers fairly instead of spinning on SQLITE_BUSY); `BEGIN IMMEDIATE`
plus busy_timeout also serialise writers of other processes sharing the file.

Reads use a small pool of reader connections, which WAL lets run beside the writer, and are batched
the same way: while every reader connection is busy, new reads queue; a read that finds a free
connection leads and runs the oldest queued reads (its own first, up to `READ_BATCH`) in one
worker-thread call, one snapshot transaction, each body's outcome its own. Under load a GET then
costs a fraction of a thread hand-off instead of one; each read still sees every write committed
before it was asked.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio

from arkor.registry.store import SQLITE, Dialect, Tx, migrate

T = TypeVar("T")

WRITE_BATCH = 64
READ_BATCH = 32


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


class _InlineTx:
    """Statements run at once on the calling (worker) thread; see the module docstring."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, tuple(params)).rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._conn.executemany(sql, [tuple(r) for r in rows])

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, tuple(params)).fetchall()


class _PendingWrite:
    """One queued read or write body; `finished` once its batch has run (or failed)."""

    __slots__ = ("body", "error", "finished", "result", "slow", "taken", "wake")

    def __init__(self, body: Callable[[Tx], Awaitable[Any]]) -> None:
        self.body = body
        self.taken = False  # picked up by a batch: its outcome is decided there
        self.slow = False  # suspended inline: run in its own transaction after the batch
        self.finished = False
        self.wake = trio.Event()  # set when finished, or when it is this entry's turn to lead
        self.result: Any = None
        self.error: BaseException | None = None

    async def sleep(self) -> None:
        """Until woken: finished, or (for a queued entry) its turn to lead."""
        await self.wake.wait()
        self.wake = trio.Event()

    def finish(self) -> None:
        self.finished = True
        self.wake.set()


def _run_read_batch(conn: sqlite3.Connection, batch: list[_PendingWrite]) -> None:
    """One read transaction (one snapshot) around every body of `batch`; each body's result or
    error is stored on its entry. A body that suspends is marked slow and run after the batch."""
    conn.execute("BEGIN")
    try:
        for entry in batch:
            entry.error = None
            coro = entry.body(_InlineTx(conn))
            try:
                coro.send(None)  # type: ignore[attr-defined]
            except StopIteration as finished:
                entry.result = finished.value
            except Exception as exc:  # this body's own failure (NotFound, ...), reported to it alone
                entry.error = exc
            else:
                coro.close()  # type: ignore[attr-defined]
                entry.slow = True
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def _run_batch(conn: sqlite3.Connection, batch: list[_PendingWrite]) -> None:
    """One BEGIN IMMEDIATE ... COMMIT around every body of `batch`, each in a SAVEPOINT; outcomes
    are stored on the entries (if the transaction fails as a whole, every entry gets its error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for entry in batch:
            entry.error = None
            conn.execute("SAVEPOINT arkor_write")
            coro = entry.body(_InlineTx(conn))
            try:
                coro.send(None)  # type: ignore[attr-defined]
            except StopIteration as finished:
                entry.result = finished.value
                conn.execute("RELEASE arkor_write")
                continue
            except Exception as exc:
                if not conn.in_transaction:  # SQLite rolled everything back (disk full, I/O error)
                    raise
                entry.error = exc  # this body's own failure, reported to it alone
            else:
                coro.close()  # type: ignore[attr-defined]
                entry.slow = True
            conn.execute("ROLLBACK TO arkor_write")
            conn.execute("RELEASE arkor_write")
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        for entry in batch:
            entry.error, entry.result, entry.slow = exc, None, False
        raise


class SqliteStore:
    dialect: Dialect = SQLITE

    def __init__(self, path: Path, *, readers: int = 4, threads: int = 8) -> None:
        self.path = path
        self._limiter = trio.CapacityLimiter(threads)
        self._write_queue: list[_PendingWrite] = []
        self._write_leader: _PendingWrite | None = None
        self._writer: sqlite3.Connection | None = None
        self._readers_wanted = readers
        self._readers: list[sqlite3.Connection] = []  # idle reader connections
        self._read_queue: list[_PendingWrite] = []
        self.read_calls = 0  # worker-thread calls that ran reads (observability; tests)
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
    async def _transaction(self, conn: sqlite3.Connection, begin: str) -> AsyncIterator[_SqliteTx]:
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
        """Run `body` in a write transaction, group-committed with the writes queued beside it.

        One queued writer at a time leads: it commits the oldest `WRITE_BATCH` queued writes (its
        own first) in one worker-thread call, shielded, then hands the lead to the oldest writer
        still queued. The others wait for their outcome. A writer cancelled while still queued is
        removed and never runs; one already taken into a batch gets that batch's true outcome."""
        assert self._writer is not None, "store not open"
        entry = _PendingWrite(body)
        self._write_queue.append(entry)
        if self._write_leader is None:
            self._write_leader = entry
        try:
            while not entry.finished and self._write_leader is not entry:
                await entry.sleep()
        except BaseException:
            if not entry.taken:
                self._write_queue.remove(entry)
                if self._write_leader is entry:
                    self._hand_over_lead()
                raise
            with trio.CancelScope(shield=True):  # decided in another writer's batch, shortly
                while not entry.finished:
                    await entry.sleep()
        if not entry.finished:
            with trio.CancelScope(shield=True):
                await self._lead(self._writer)
        assert entry.finished
        if entry.error is not None:
            raise entry.error
        return entry.result

    async def _lead(self, conn: sqlite3.Connection) -> None:
        """Commit the oldest queued writes (the leader's own is the first), then pass the lead."""
        batch, self._write_queue = self._write_queue[:WRITE_BATCH], self._write_queue[WRITE_BATCH:]
        try:
            for entry in batch:
                entry.taken = True
                entry.error = RuntimeError("the write batch did not run")  # cleared by _run_batch
            with contextlib.suppress(Exception):  # every entry carries the error
                await trio.to_thread.run_sync(_run_batch, conn, batch, limiter=self._limiter)
            await self._run_slow(conn, batch, "BEGIN IMMEDIATE")
        finally:
            for entry in batch:
                entry.finish()
            self._hand_over_lead()

    async def _run_slow(self, conn: sqlite3.Connection, batch: list[_PendingWrite], begin: str) -> None:
        """The entries whose body awaited something besides the database, each in its own
        transaction, a statement per worker-thread call."""
        for entry in batch:
            if entry.slow:
                entry.error = None
                try:
                    async with self._transaction(conn, begin) as tx:
                        entry.result = await entry.body(tx)
                except Exception as exc:  # noqa: BLE001 - reported to its caller
                    entry.error = exc

    def _hand_over_lead(self) -> None:
        self._write_leader = self._write_queue[0] if self._write_queue else None
        if self._write_leader is not None:
            self._write_leader.wake.set()

    async def read(self, body: Callable[[Tx], Awaitable[T]]) -> T:
        """Run `body` in a read transaction, batched with the reads queued beside it (see the
        module docstring). A read cancelled while queued never runs; one taken into a batch waits
        (shielded, briefly) for that batch, whose thread call cannot be abandoned anyway."""
        await trio.lowlevel.checkpoint_if_cancelled()
        entry = _PendingWrite(body)
        self._read_queue.append(entry)
        try:
            while not entry.finished and not (self._readers and not entry.taken):
                await entry.sleep()
        except BaseException:
            if not entry.taken:
                self._read_queue.remove(entry)
                self._wake_next_reader()
                raise
            with trio.CancelScope(shield=True):
                while not entry.finished:
                    await entry.sleep()
        if not entry.finished:
            with trio.CancelScope(shield=True):
                await self._lead_reads(entry)
        if entry.error is not None:
            raise entry.error
        return entry.result

    async def _lead_reads(self, leader: _PendingWrite) -> None:
        conn = self._readers.pop()
        self._read_queue.remove(leader)
        batch = [leader, *self._read_queue[: READ_BATCH - 1]]
        del self._read_queue[: READ_BATCH - 1]
        try:
            for entry in batch:
                entry.taken = True
                entry.error = RuntimeError("the read batch did not run")  # cleared by the batch
            self.read_calls += 1
            with contextlib.suppress(Exception):  # a failed BEGIN/COMMIT: every entry keeps its error
                await trio.to_thread.run_sync(_run_read_batch, conn, batch, limiter=self._limiter)
            await self._run_slow(conn, batch, "BEGIN")
        finally:
            self._readers.append(conn)
            for entry in batch:
                entry.finish()
            self._wake_next_reader()

    def _wake_next_reader(self) -> None:
        """A reader connection is free: the oldest queued read leads the next batch."""
        if self._readers and self._read_queue:
            self._read_queue[0].wake.set()

    async def aclose(self) -> None:
        conns, self._all = self._all, []
        self._readers = []
        self._writer = None

        def close_all() -> None:
            for conn in conns:
                conn.close()

        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(close_all, limiter=self._limiter)
