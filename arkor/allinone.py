"""`arkor allinone`: registry, object server and one group of data servers in ONE trio process.

Embedded defaults only (SQLite, in-process KV), data under `allinone.dataDir`. The object server and
the registry use the in-process `RegistryService` and the data servers' `LocalReplica`s directly, so
a request makes no HTTP hop to its own process; the registry and data servers still listen on their
ports (8126, 8127-8129) for separate object servers, the SDK and operators.

Each role runs under `arkor.supervisor.supervise`: a role that fails is restarted (logged, counted
in `arkor_role_restarts_total`), the others keep serving. "ready" is logged when a write would
succeed (a group is writable), not when the sockets are bound. `serve_node` is what
`arkor.embedded` runs inside another trio program.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from arkor.config import Config, ConfigError
from arkor.model import ServerInfo
from arkor.object.main import http_client, http_replica_factory, serve_object_server
from arkor.supervisor import Current, supervise
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
        # No configured secret: a random one for this process (every role lives here), never a
        # built-in one (docs/security.md).
        cluster=dataclasses.replace(config.cluster,
                                    secret=config.cluster.secret or secrets.token_urlsafe(32)),
        registry=dataclasses.replace(
            config.registry, host=ac.host, port=ac.registryPort, dataDir=str(base / "registry")
        ),
        object=dataclasses.replace(
            config.object, host=ac.host, port=ac.objectPort, registry=registry_url
        ),
        s3=dataclasses.replace(config.s3, host=ac.host),
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


@dataclass
class Node:
    """A running allinone (what `arkor.embedded` yields): its URLs and in-process services."""

    config: Config  # the effective configuration (ports, directories)
    url: str  # the object server (API v1 and Git LFS)
    registry_url: str
    s3_url: str  # the S3 API ("" when `s3.enabled` is false)
    registry: Any  # the in-process RegistryService (follows restarts)
    object_context: Any  # the object server's ObjectContext (follows restarts)

    def client(self, **kwargs: Any) -> Any:
        """An SDK client (`arkor.client.ArkorClient`) for this node; kwargs go to it."""
        from arkor.client.sdk import ArkorClient

        return ArkorClient(self.url, **kwargs)

    def asgi_app(self, prefix: str = "") -> Any:
        """The object API as an ASGI app to mount in another server, under `prefix` (say
        ``/storage``): it serves this node's buckets and objects without a hop to `url`."""
        from arkor.object.app import build_object_app

        return mounted(build_object_app(self.object_context), prefix)


def mounted(app: Any, prefix: str) -> Any:
    """`app` answering under `prefix`: the prefix is taken off `path` and `raw_path`."""
    prefix = prefix.rstrip("/")
    if not prefix:
        return app
    raw_prefix = prefix.encode()

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == prefix or path.startswith(prefix + "/"):
                raw = scope.get("raw_path") or path.encode()
                scope = {**scope, "path": path[len(prefix):] or "/",
                         "raw_path": raw[len(raw_prefix):] or b"/",
                         "root_path": scope.get("root_path", "") + prefix}
        await app(scope, receive, send)

    return wrapped


async def wait_writable(registry: Any) -> None:
    """Until the registry reports a writable group (after a restart the group resyncs first)."""
    waited = 0.0
    while True:
        try:
            if any(g.writable for g in await registry.groups()):
                return
        except Exception as exc:  # noqa: BLE001 - the registry is starting; ask again
            log.debug("groups not known yet: %r", exc)
        if waited == 1.0:
            log.info("waiting for the data group to be writable (resyncing replicas)")
        await trio.sleep(0.1)
        waited = round(waited + 0.1, 1)


async def serve_node(
    config: Config, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run every role, each supervised (`arkor.supervisor`: one role's failure restarts it, the
    others go on); `task_status` gets the `Node` once a write would succeed."""
    from arkor.dataserver.main import serve_data_server
    from arkor.registry.main import serve_registry

    cfg = allinone_config(config)
    local: dict[str, Replica] = {}
    registry = Current()
    object_context = Current()
    async with http_client(cfg) as client:
        remote = http_replica_factory(cfg, client)

        def replica_factory(server: ServerInfo) -> Replica:
            """In-process replicas for our own data servers, HTTP for any other."""
            return local.get(server.url.rstrip("/")) or remote(server)

        def keep(ref: Current) -> Any:
            return lambda value: setattr(ref, "target", value)

        def keep_replica(handle: Any) -> None:
            local[str(handle.url).rstrip("/")] = handle.replica

        async with trio.open_nursery() as nursery:
            await nursery.start(partial(
                supervise, "registry", partial(serve_registry, cfg, replica_factory=replica_factory),
                on_started=keep(registry),
            ))
            for i, data_cfg in enumerate(data_configs(cfg)):
                await nursery.start(partial(
                    supervise, f"data{i + 1}",
                    partial(serve_data_server, cfg, data_cfg, registry=registry),
                    on_started=keep_replica,
                ))
            await nursery.start(partial(
                supervise, "object",
                partial(serve_object_server, cfg, registry=registry, replica_factory=replica_factory),
                on_started=keep(object_context),
            ))
            await wait_writable(registry)
            ac = cfg.allinone
            scheme = url_scheme(cfg.http)
            log.info(
                "arkor allinone ready: object %s://%s:%d, %s, registry :%d, data %s, data dir %s",
                scheme, ac.host, ac.objectPort, f"s3 :{cfg.s3.port}" if cfg.s3.enabled else "s3 off",
                ac.registryPort, ",".join(str(p) for p in ac.dataPorts), ac.dataDir,
            )
            task_status.started(Node(
                config=cfg, url=f"{scheme}://{ac.host}:{ac.objectPort}",
                registry_url=f"{scheme}://{ac.host}:{ac.registryPort}",
                s3_url=f"{scheme}://{ac.host}:{cfg.s3.port}" if cfg.s3.enabled else "",
                registry=registry, object_context=object_context,
            ))


async def run(config: Config) -> None:
    await serve_node(config)
