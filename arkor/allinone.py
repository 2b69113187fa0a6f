"""`arkor allinone`: registry, object server and one group of data servers in ONE trio process.

Embedded defaults only (SQLite, in-process KV), data under `allinone.dataDir`. The object server and
the registry use the in-process `RegistryService` and the data servers' `LocalReplica`s directly, so
a request makes no HTTP hop to its own process; the registry and data servers still listen on their
ports (8126, 8127-8129) for separate object servers, the SDK and operators.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial
from pathlib import Path

import trio

from arkor.config import Config, ConfigError
from arkor.model import ServerInfo
from arkor.object.main import http_client, http_replica_factory, serve_object_server
from arkor.transfer.contracts import Replica
from arkor.web.serve import url_scheme

log = logging.getLogger(__name__)


def allinone_config(config: Config) -> Config:
    """The effective config: every role's host, port and directory from the allinone section."""
    ac = config.allinone
    if len(ac.dataPorts) < config.cluster.replicas:
        raise ConfigError(
            f"allinone.dataPorts: needs at least cluster.replicas ({config.cluster.replicas}) ports"
        )
    base = Path(ac.dataDir)
    registry_url = f"http://{ac.host}:{ac.registryPort}"
    return dataclasses.replace(
        config,
        registry=dataclasses.replace(
            config.registry, host=ac.host, port=ac.registryPort, dataDir=str(base / "registry")
        ),
        object=dataclasses.replace(
            config.object, host=ac.host, port=ac.objectPort, registry=registry_url
        ),
    )


def data_configs(config: Config) -> list:
    ac = config.allinone
    base = Path(ac.dataDir)
    return [
        dataclasses.replace(
            config.data,
            host=ac.host,
            port=port,
            dir=str(base / f"data{i + 1}"),
            group=1,
            advertiseUrl="",
            registry=f"http://{ac.host}:{ac.registryPort}",
        )
        for i, port in enumerate(ac.dataPorts)
    ]


async def run(config: Config) -> None:
    from arkor.dataserver.main import serve_data_server
    from arkor.registry.main import serve_registry

    cfg = allinone_config(config)
    local: dict[str, Replica] = {}
    async with http_client(cfg) as client:
        remote = http_replica_factory(cfg, client)

        def replica_factory(server: ServerInfo) -> Replica:
            """In-process replicas for our own data servers, HTTP for any other."""
            return local.get(server.url.rstrip("/")) or remote(server)

        async with trio.open_nursery() as nursery:
            registry = await nursery.start(
                partial(serve_registry, cfg, replica_factory=replica_factory)
            )
            for data_cfg in data_configs(cfg):
                handle = await nursery.start(
                    partial(serve_data_server, cfg, data_cfg, registry=registry)
                )
                local[str(handle.url).rstrip("/")] = handle.replica
            await nursery.start(
                partial(serve_object_server, cfg, registry=registry, replica_factory=replica_factory)
            )
            log.info(
                "arkor allinone ready: object %s://%s:%d, registry :%d, data %s, data dir %s",
                url_scheme(cfg.http), cfg.allinone.host, cfg.allinone.objectPort, cfg.allinone.registryPort,
                ",".join(str(p) for p in cfg.allinone.dataPorts), cfg.allinone.dataDir,
            )
