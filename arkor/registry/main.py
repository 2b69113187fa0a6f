"""`arkor registry`: the registry center process (and `serve_registry` for `arkor allinone`).

Stateless in-process: everything durable is in the metadata DB (SQLite file or MySQL/MariaDB), the
KV only caches. Several registry processes may share one MySQL database and one Redis.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path

import trio

from arkor.config import Config
from arkor.httpclient import LeanClient
from arkor.httpclient import Timeouts as LeanTimeouts
from arkor.metrics import REPLICA_UP
from arkor.model import NeedleInfo, ServerInfo
from arkor.registry.app import build_app
from arkor.registry.kv import KV, MemoryKV, open_redis_kv
from arkor.registry.mysql_store import MysqlStore
from arkor.registry.reaper import NeedleLister, Reaper, ReplicaFactory
from arkor.registry.service import RegistryService
from arkor.registry.sqlite_store import SqliteStore
from arkor.registry.store import MetaStore
from arkor.security import configured_secret
from arkor.transfer.contracts import Replica
from arkor.web.serve import client_verify, serve_app

log = logging.getLogger(__name__)


def make_store(config: Config) -> MetaStore:
    db = config.sqldatabase
    if db.driver == "mysql":
        return MysqlStore(
            host=db.host, port=db.port, user=db.username, password=db.password,
            database=db.schema, pool_size=db.poolSize,
        )
    path = Path(db.path) if db.path else Path(config.registry.dataDir) / "registry.db"
    return SqliteStore(path)


@asynccontextmanager
async def open_kv(config: Config) -> AsyncIterator[KV]:
    kv = config.kvdatabase
    if kv.driver == "redis":
        async with open_redis_kv(
            host=kv.host, port=kv.port, db=kv.partition, username=kv.username,
            password=kv.password, prefix=config.registry.kvPrefix,
        ) as redis:
            yield redis
        return
    memory = MemoryKV()
    try:
        yield memory
    finally:
        await memory.aclose()


async def _close_store(store: MetaStore) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(5):
        await store.aclose()


@asynccontextmanager
async def open_service(config: Config) -> AsyncIterator[RegistryService]:
    """Open the metadata store (creating/migrating the schema) and the KV; close both on exit."""
    async with AsyncExitStack() as stack:
        store = make_store(config)
        stack.push_async_callback(_close_store, store)
        await store.open()
        kv = await stack.enter_async_context(open_kv(config))
        yield RegistryService(
            store, kv, replicas=config.cluster.replicas,
            heartbeat_timeout=float(config.registry.heartbeatTimeout),
            min_free_bytes=int(config.registry.minFreeBytes),
            max_metadata_bytes=int(config.object.maxMetadataBytes),
        )


def _http_replicas(config: Config, client: LeanClient) -> ReplicaFactory:
    """Replicas over HTTP (arkor.transfer.data_client), sharing one pooled client."""
    from arkor.transfer.data_client import HttpReplica

    secret = configured_secret(config.cluster.secret)
    cache: dict[str, Replica] = {}

    def factory(server: ServerInfo) -> Replica:
        replica = cache.get(server.url)
        if replica is None:
            replica = cache[server.url] = HttpReplica(server.url, secret, client, 30.0)
        return replica

    return factory


def http_needle_lister(config: Config, client: LeanClient) -> NeedleLister:
    """A data server's live needles, from its signed key listing (`HttpReplica.list_needles`)."""
    from arkor.transfer.data_client import HttpReplica

    secret = configured_secret(config.cluster.secret)

    def lister(server: ServerInfo) -> AsyncIterator[NeedleInfo]:
        return HttpReplica(server.url, secret, client, 30.0).list_needles()

    return lister


async def serve_registry(
    config: Config,
    *,
    replica_factory: ReplicaFactory | None = None,
    task_status: trio.TaskStatus[RegistryService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the registry until cancelled; `task_status.started` gets the RegistryService."""
    rc = config.registry
    async with open_service(config) as service, trio.open_nursery() as nursery:
        app = build_app(service, configured_secret(config.cluster.secret))
        await nursery.start(partial(serve_app, app, config.http, f"{rc.host}:{rc.port}"))
        nursery.start_soon(_reap, config, service, replica_factory)
        nursery.start_soon(_membership_gauges, service, max(float(rc.heartbeatTimeout) / 3, 0.5))
        log.info(
            "registry on %s:%d (metadata %s, kv %s)", rc.host, rc.port,
            config.sqldatabase.driver, config.kvdatabase.driver,
        )
        task_status.started(service)


async def _membership_gauges(service: RegistryService, every: float) -> None:
    """Keep `arkor_replica_up` (1 up, 0 down or repairing, per group and server) current: the
    registry is where every server's state is known, so this is where alerts should look."""
    while True:
        try:
            for group in await service.groups():
                for server in group.servers:
                    REPLICA_UP.labels(str(group.group), server.url).set(1 if server.state == "up" else 0)
        except Exception as exc:  # noqa: BLE001 - a metrics refresh never stops the registry
            log.debug("membership gauges not refreshed: %r", exc)
        await trio.sleep(every)


async def _reap(
    config: Config, service: RegistryService, replica_factory: ReplicaFactory | None
) -> None:
    rc = config.registry
    async with LeanClient(
        verify=client_verify(config.http),
        timeout=LeanTimeouts(connect=5.0, read=30.0, write=30.0, pool=30.0),
        max_connections=64, max_idle_per_origin=8,
    ) as client:
        reaper = Reaper(
            service, service.kv, replica_factory or _http_replicas(config, client),
            interval=float(rc.reaperInterval), orphan_grace=float(rc.orphanGrace),
            needle_lister=http_needle_lister(config, client),
            multipart_expiry=float(config.object.multipartExpiry),
        )
        await reaper.run()


async def run(config: Config) -> None:
    await serve_registry(config)
