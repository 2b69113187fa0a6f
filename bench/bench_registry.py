"""Registry benchmark: manifest commits/s and lookups/s on SQLite and MariaDB, in-process and over
HTTP, and the first-page latency of listing a bucket of one million keys.

Run: ``flock /tmp/arkor-bench.lock .venv/bin/python -m bench.bench_registry [--quick]``
(MariaDB at 127.0.0.1:3306 root/no password; a scratch database is created and dropped).
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import trio
import yaml

from arkor.config import Config, load_config
from arkor.fileid import FileID
from arkor.model import Fragment, ObjectRecord
from arkor.registry.main import open_service
from arkor.registry.mysql_store import MysqlStore
from arkor.registry.service import RegistryService
from arkor.registry.store import Tx
from arkor.transfer.contracts import Registry
from arkor.transfer.registry_calls import ObjectCommit
from arkor.transfer.registry_client import HttpRegistry
from bench.common import machine
from tests.procs import ArkorProcess, free_port

SECRET = "bench-registry-secret-0123456789"
VERSIONS: dict[str, str] = {}


def make_config(tmp: Path, backend: str, db_name: str) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "run": {"logPath": str(tmp / "log"), "logLevel": "warning"},
        "cluster": {"secret": SECRET},
        "registry": {"port": free_port(), "dataDir": str(tmp / backend), "reaperInterval": "1h"},
    }
    if backend == "mariadb":
        raw["sqldatabase"] = {"driver": "mysql", "host": "127.0.0.1", "port": 3306,
                              "username": "root", "password": "", "schema": db_name,
                              "poolSize": 16}
    return raw


def as_config(tmp: Path, raw: dict[str, Any], name: str) -> tuple[Config, Path]:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path), path


async def rate(op: Callable[[int], Awaitable[None]], total: int, concurrency: int) -> float:
    """Operations per second for `total` calls spread over `concurrency` tasks."""
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            await op(i)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return total / (time.perf_counter() - started)


async def commits_and_lookups(
    reg: Registry, bucket: str, total: int, concurrency: int
) -> tuple[float, float]:
    lease = await reg.lease_keys(total)

    async def commit(i: int) -> None:
        frag = Fragment(str(FileID.new(1, lease.start + i)), 1024, 0)
        record = ObjectRecord(bucket, f"obj/{i:08d}", 1024, "0" * 32, fragments=[frag])
        await reg.commit_object(ObjectCommit(record))

    async def lookup(i: int) -> None:
        await reg.get_object(bucket, f"obj/{(i * 7919) % total:08d}")

    return await rate(commit, total, concurrency), await rate(lookup, total, concurrency)


async def bulk_load(service: RegistryService, bucket: str, count: int) -> float:
    """Insert `count` object rows directly (the benchmark measures listing, not loading)."""
    started = time.perf_counter()
    now = time.time()
    batch = 5000

    async def create_bucket(tx: Tx) -> None:
        await tx.execute("INSERT INTO buckets (name, created, objects, bytes) VALUES (?, ?, ?, ?)",
                         (bucket, now, count, count * 1024))

    await service.store.write(create_bucket)
    for first in range(0, count, batch):
        rows = [
            (bucket, f"dir{i % 100:02d}/file-{i:08d}".encode(), 1024, "0" * 32,
             "application/octet-stream", "{}", now, now, uuid.uuid4().hex,
             json.dumps([[f"1,{i + 1:x}00c0ffee", 1024, 0]]))
            for i in range(first, min(first + batch, count))
        ]

        async def insert(tx: Tx, rows: list[tuple[Any, ...]] = rows) -> None:
            await tx.executemany(
                "INSERT INTO objects (bucket, okey, size, etag, content_type, metadata, created, "
                "modified, version, manifest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

        await service.store.write(insert)
    return time.perf_counter() - started


async def first_page_ms(reg: Registry, bucket: str, **kwargs: Any) -> float:
    samples = []
    for _ in range(7):
        started = time.perf_counter()
        page = await reg.list_objects(bucket, limit=1000, **kwargs)
        samples.append((time.perf_counter() - started) * 1000)
        assert page.objects or page.common_prefixes
    return statistics.median(samples)


async def bench_backend(
    tmp: Path, backend: str, args: argparse.Namespace, results: list[list[str]]
) -> None:
    db_name = f"arkor_bench_{uuid.uuid4().hex[:8]}"
    raw = make_config(tmp, backend, db_name)
    config, path = as_config(tmp, raw, backend)
    try:
        async with open_service(config) as service:
            if backend == "mariadb":

                async def version(tx: Tx) -> str:
                    return str((await tx.query("SELECT VERSION()"))[0][0])

                VERSIONS["mariadb"] = await service.store.read(version)
            c, g = await commits_and_lookups(service, "svc", args.ops, args.concurrency)
            results.append([backend, "in-process", f"{c:,.0f}", f"{g:,.0f}"])
            print(f"{backend} in-process: {c:.0f} commits/s, {g:.0f} lookups/s", file=sys.stderr)
            load_s = await bulk_load(service, "million", args.keys)
            print(f"{backend}: loaded {args.keys} rows in {load_s:.1f} s", file=sys.stderr)
            listing = {
                "first page": await first_page_ms(service, "million"),
                "first page, delimiter /": await first_page_ms(service, "million", delimiter="/"),
                "page from the middle": await first_page_ms(
                    service, "million", marker=f"dir50/file-{args.keys // 2:08d}"),
            }
        proc = ArkorProcess("registry", path, raw["registry"]["port"], log_path=tmp / f"{backend}.log")
        proc.start(wait=60)
        try:
            async with httpx.AsyncClient(
                timeout=60, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64)
            ) as client:
                reg = HttpRegistry(proc.url, SECRET.encode(), client, 60.0)
                c, g = await commits_and_lookups(reg, "http", args.ops, args.concurrency)
                results.append([backend, "HTTP (1 registry process)", f"{c:,.0f}", f"{g:,.0f}"])
                print(f"{backend} HTTP: {c:.0f} commits/s, {g:.0f} lookups/s", file=sys.stderr)
                http_first = await first_page_ms(reg, "million")
        finally:
            proc.stop()
        listing["first page over HTTP"] = http_first
        for name, ms in listing.items():
            results.append([backend, f"list {args.keys:,} keys: {name}", f"{ms:.1f} ms", ""])
    finally:
        if backend == "mariadb":
            store = MysqlStore(host="127.0.0.1", port=3306, user="root", password="", database=db_name)
            await store.drop_database()


async def main(args: argparse.Namespace) -> None:
    results: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="arkor-bench-registry-") as tmp:
        for backend in args.backends:
            await bench_backend(Path(tmp), backend, args, results)
    print(f"Machine: {machine()}, SQLite {sqlite3.sqlite_version}, "
          f"MariaDB {VERSIONS.get('mariadb', '-')}. {args.ops} operations per figure, "
          f"{args.concurrency} concurrent tasks.\n")
    print("| backend | what | commits/s (or latency) | lookups/s |")
    print("|---|---|---|---|")
    for row in results:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "mariadb"])
    parser.add_argument("--quick", action="store_true", help="small run to check the benchmark")
    ns = parser.parse_args()
    if ns.quick:
        ns.ops, ns.keys = 300, 20_000
    trio.run(main, ns)
