"""Registry fixtures: the same service on every backend combination, and real registry processes.

Backends: sqlite|mysql metadata x memory|redis KV. MySQL tests get their own database (dropped
afterwards) and Redis tests their own key prefix (deleted afterwards), so runs never interfere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import trio

from arkor.config import Config, load_config
from arkor.registry.main import open_service
from arkor.registry.mysql_store import MysqlStore
from arkor.registry.service import RegistryService
from arkor.transfer.registry_client import HttpRegistry
from tests.procs import ArkorProcess, free_port, write_config

BACKENDS = ["sqlite-memory", "sqlite-redis", "mysql-memory", "mysql-redis"]
SECRET = "registry-test-secret-0123456789"


def registry_config(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest, unique: str, **registry: Any
) -> dict[str, Any]:
    """A plain config dict (YAML-ready) for one backend combination."""
    sql, kv = backend.split("-")
    raw: dict[str, Any] = {
        "run": {"logPath": str(tmp_path / "log")},
        "cluster": {"secret": SECRET},
        "registry": {
            "host": "127.0.0.1", "port": free_port(), "dataDir": str(tmp_path / "registry"),
            "kvPrefix": f"arkor-test:{unique}:", "minFreeBytes": 0, **registry,
        },
    }
    if sql == "mysql":
        url = urlparse(request.getfixturevalue("mysql_url"))
        raw["sqldatabase"] = {
            "driver": "mysql", "host": url.hostname, "port": url.port or 3306,
            "username": url.username or "root", "password": url.password or "",
            "schema": f"arkor_{unique}",
        }
    if kv == "redis":
        url = urlparse(request.getfixturevalue("redis_url"))
        raw["kvdatabase"] = {
            "driver": "redis", "host": url.hostname, "port": url.port or 6379,
            "partition": int((url.path or "/0").strip("/") or 0),
        }
    return raw


def as_config(tmp_path: Path, raw: dict[str, Any]) -> Config:
    return load_config(write_config(tmp_path / "registry.yaml", raw))


async def cleanup_backends(config: Config) -> None:
    """Drop the test database and the test's Redis keys."""
    with trio.CancelScope(shield=True), trio.move_on_after(30):
        if config.sqldatabase.driver == "mysql":
            db = config.sqldatabase
            store = MysqlStore(host=db.host, port=db.port, user=db.username, password=db.password,
                               database=db.schema)
            await store.drop_database()
        if config.kvdatabase.driver == "redis":
            import coredis

            kv = config.kvdatabase
            async with coredis.Redis(host=kv.host, port=kv.port, db=kv.partition) as client:
                keys = [k async for k in client.scan_iter(match=config.registry.kvPrefix + "*")]
                if keys:
                    await client.delete(keys)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def config(tmp_path: Path, backend: str, request: pytest.FixtureRequest, unique_name: str) -> Config:
    return as_config(tmp_path, registry_config(tmp_path, backend, request, unique_name))


@pytest.fixture
async def service(config: Config) -> AsyncIterator[RegistryService]:
    try:
        async with open_service(config) as svc:
            yield svc
    finally:
        await cleanup_backends(config)


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client


def start_registry(tmp_path: Path, raw: dict[str, Any], name: str = "registry") -> ArkorProcess:
    """A real `arkor registry` process on the config's port."""
    path = write_config(tmp_path / f"{name}.yaml", raw)
    proc = ArkorProcess("registry", path, raw["registry"]["port"], log_path=tmp_path / f"{name}.log")
    return proc.start(wait=60)


def http_registry(proc: ArkorProcess, client: httpx.AsyncClient) -> HttpRegistry:
    return HttpRegistry(proc.url, SECRET.encode(), client, timeout=30.0)


@pytest.fixture
def processes() -> Iterator[list[ArkorProcess]]:
    """Processes a test starts; all killed at the end whatever happened."""
    started: list[ArkorProcess] = []
    yield started
    for proc in started:
        proc.kill()
