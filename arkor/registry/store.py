"""The metadata store interface the registry service runs on, and its schema.

Why an interface over SQL rather than one class per backend: the service's transactions (manifest
swap, reference counts, reclaim queue) are the subtle part, so they are written once, as SQL with
``?`` placeholders, and run unchanged on SQLite and MySQL/MariaDB. A backend only provides
transactions (`write` retries a whole transaction body on deadlock, so bodies must be re-runnable)
and the few dialect differences named in `Dialect`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

SCHEMA_VERSION = 1


class Tx(Protocol):
    """One open transaction on one connection (never shared between tasks)."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the affected row count."""

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        ...

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return all its rows."""


@dataclass(frozen=True)
class Dialect(ABC):
    """The SQL differences between the backends: every place the service's SQL differs is here."""

    name: str
    insert_ignore: str  # "INSERT OR IGNORE" | "INSERT IGNORE"
    for_update: str  # "" | " FOR UPDATE"

    table_options: str  # appended to CREATE TABLE
    # How an upsert names the conflict ({keys}) and a non-key column's new value ({col}).
    on_conflict: str
    new_value: str

    def upsert(self, table: str, cols: Sequence[str], keys: Sequence[str]) -> str:
        """INSERT that updates the non-key columns of an existing row with the same `keys`."""
        sets = ", ".join(f"{c} = {self.new_value.format(col=c)}" for c in cols if c not in keys)
        return f"{_insert(table, cols)} {self.on_conflict.format(keys=', '.join(keys))} {sets}"

    @abstractmethod
    async def bump_sequence(self, tx: Tx, name: str, count: int) -> int:
        """Add `count` to sequence `name` atomically; its new value (the end of the range taken)."""


def _insert(table: str, cols: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


@dataclass(frozen=True)
class SqliteDialect(Dialect):
    async def bump_sequence(self, tx: Tx, name: str, count: int) -> int:
        rows = await tx.query(
            "UPDATE sequences SET next = next + ? WHERE name = ? RETURNING next", (count, name)
        )
        return int(rows[0][0])


@dataclass(frozen=True)
class MysqlDialect(Dialect):
    async def bump_sequence(self, tx: Tx, name: str, count: int) -> int:
        await tx.execute(
            "UPDATE sequences SET next = LAST_INSERT_ID(next + ?) WHERE name = ?", (count, name)
        )
        rows = await tx.query("SELECT LAST_INSERT_ID()")
        return int(rows[0][0])


SQLITE = SqliteDialect(
    name="sqlite", insert_ignore="INSERT OR IGNORE", for_update="", table_options="",
    on_conflict="ON CONFLICT ({keys}) DO UPDATE SET", new_value="excluded.{col}",
)
MYSQL = MysqlDialect(
    name="mysql", insert_ignore="INSERT IGNORE", for_update=" FOR UPDATE",
    table_options=" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    on_conflict="ON DUPLICATE KEY UPDATE", new_value="VALUES({col})",
)


class MetaStore(Protocol):
    dialect: Dialect

    async def open(self) -> None:
        """Connect and create or migrate the schema."""

    async def write(self, body: Callable[[Tx], Awaitable[T]]) -> T:
        """Run `body` in one read-write transaction and commit; rolled back on any error or
        cancellation. `body` may run more than once (deadlock retry): it must not have side
        effects outside the transaction. It must await nothing but `tx` (and helpers that only
        await `tx`): SQLite runs the whole body in a worker thread (see sqlite_store)."""

    async def read(self, body: Callable[[Tx], Awaitable[T]]) -> T:
        """Run `body` on one consistent snapshot."""

    async def aclose(self) -> None:
        ...


# Schema v1. Object keys are stored as bytes (BLOB / VARBINARY) so that ORDER BY is bytewise, which
# for UTF-8 is code point order: the same order on both backends and for every client.
_TABLES = {
    "schema_version": "version INTEGER NOT NULL",
    "sequences": "name VARCHAR(64) NOT NULL PRIMARY KEY, next BIGINT NOT NULL",
    "servers": (
        "server_id VARCHAR(191) NOT NULL PRIMARY KEY, url VARCHAR(512) NOT NULL, grp BIGINT NOT NULL,"
        " capacity BIGINT NOT NULL, free BIGINT NOT NULL, needles BIGINT NOT NULL,"
        " used BIGINT NOT NULL, repair_needed INTEGER NOT NULL, last_seen DOUBLE NOT NULL,"
        " registered DOUBLE NOT NULL"
    ),
    "buckets": (
        "name {bucket} NOT NULL PRIMARY KEY, created DOUBLE NOT NULL, objects BIGINT NOT NULL,"
        " bytes BIGINT NOT NULL"
    ),
    "objects": (
        "bucket {bucket} NOT NULL, okey {key} NOT NULL, size BIGINT NOT NULL,"
        " etag VARCHAR(128) NOT NULL, content_type TEXT NOT NULL, metadata TEXT NOT NULL,"
        " created DOUBLE NOT NULL, modified DOUBLE NOT NULL, version VARCHAR(64) NOT NULL,"
        " manifest {long} NOT NULL, PRIMARY KEY (bucket, okey)"
    ),
    # One row per needle key ever referenced or reclaimed: `refs` counts the manifests and parts
    # that reference it; state 'reclaimed' is final (a commit naming such a key fails).
    "needles": (
        "nkey BIGINT NOT NULL PRIMARY KEY, fid VARCHAR(64) NOT NULL, refs BIGINT NOT NULL,"
        " state VARCHAR(16) NOT NULL, updated DOUBLE NOT NULL"
    ),
    "reclaim": (
        "id {autoid}, fid VARCHAR(64) NOT NULL, reason VARCHAR(32) NOT NULL,"
        " queued DOUBLE NOT NULL, next_try DOUBLE NOT NULL, attempts INTEGER NOT NULL"
    ),
    "uploads": (
        "upload_id VARCHAR(64) NOT NULL PRIMARY KEY, bucket {bucket} NOT NULL, okey {key} NOT NULL,"
        " content_type TEXT NOT NULL, metadata TEXT NOT NULL, created DOUBLE NOT NULL"
    ),
    "parts": (
        "upload_id VARCHAR(64) NOT NULL, part_number INTEGER NOT NULL, size BIGINT NOT NULL,"
        " etag VARCHAR(128) NOT NULL, manifest {long} NOT NULL, modified DOUBLE NOT NULL,"
        " PRIMARY KEY (upload_id, part_number)"
    ),
    "locks": (
        "id VARCHAR(64) NOT NULL PRIMARY KEY, repo {bucket} NOT NULL, path {key} NOT NULL,"
        " owner VARCHAR(255) NOT NULL, ref TEXT, locked_at DOUBLE NOT NULL"
    ),
}
_INDEXES = [
    ("reclaim_next_try", "reclaim", "next_try"),
    ("uploads_bucket", "uploads", "bucket, okey"),
    ("locks_repo_path", "locks", "repo, path"),
]
_TYPES = {
    "sqlite": {
        "bucket": "TEXT",
        "key": "BLOB",
        "long": "TEXT",
        "autoid": "INTEGER PRIMARY KEY AUTOINCREMENT",
    },
    "mysql": {
        "bucket": "VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin",
        "key": "VARBINARY(1024)",
        "long": "LONGTEXT",
        "autoid": "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
    },
}


def schema_statements(dialect: Dialect) -> list[str]:
    """CREATE statements for the current schema (idempotent)."""
    types = _TYPES[dialect.name]
    suffix = dialect.table_options
    out = [
        f"CREATE TABLE IF NOT EXISTS {name} ({cols.format(**types)}){suffix}"
        for name, cols in _TABLES.items()
    ]
    unique = {"locks_repo_path"}
    for index, table, cols in _INDEXES:
        kind = "UNIQUE INDEX" if index in unique else "INDEX"
        out.append(f"CREATE {kind} IF NOT EXISTS {index} ON {table} ({cols})")
    return out


# Migrations from version N-1 to N, applied in order inside one transaction each.
MIGRATIONS: dict[int, list[str]] = {}


async def migrate(store: MetaStore) -> None:
    """Create the schema and bring it to SCHEMA_VERSION; safe when several registries start at
    once (every statement is idempotent and the version row is updated conditionally)."""

    async def body(tx: Tx) -> None:
        for statement in schema_statements(store.dialect):
            await tx.execute(statement)
        rows = await tx.query("SELECT version FROM schema_version")
        if not rows:
            await tx.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            await tx.execute(
                f"{store.dialect.insert_ignore} INTO sequences (name, next) VALUES ('needle', 1)"
            )
            return
        current = int(rows[0][0])
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"metadata schema version {current} is newer than this arkor ({SCHEMA_VERSION})"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS.get(version, []):
                await tx.execute(statement)
            await tx.execute(
                "UPDATE schema_version SET version = ? WHERE version = ?", (version, version - 1)
            )

    await store.write(body)
