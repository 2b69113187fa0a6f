"""`arkor object`: a stateless object server talking HTTP to the registry and the data servers.

With `object.workers` > 1 this process binds the listening socket once and runs N worker processes
(each one trio process serving `fd://N` through hypercorn), restarting any that exits; the kernel
spreads connections across them.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

import httpx
import trio
import yaml

from arkor.config import Config, dump_config
from arkor.model import ServerInfo
from arkor.object.app import ObjectContext, build_object_app
from arkor.object.auth import Authenticator
from arkor.object.service import ObjectService
from arkor.security import effective_secret
from arkor.transfer.contracts import Registry, Replica
from arkor.transfer.placement import ReplicaFactory
from arkor.web.serve import client_verify, serve_app

log = logging.getLogger(__name__)

WORKER_FD_ENV = "ARKOR_OBJECT_FD"


async def serve_object_server(
    config: Config,
    *,
    registry: Registry,
    replica_factory: ReplicaFactory,
    bind: str | None = None,
    task_status: trio.TaskStatus[ObjectContext] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the public API until cancelled; `task_status` gets the context once listening."""
    service = ObjectService(config, registry, replica_factory)
    ctx = ObjectContext(config=config, service=service, registry=registry, auth=Authenticator(config))
    app = build_object_app(ctx)
    address = bind or f"{config.object.host}:{config.object.port}"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_app, app, config.http, address)
        log.info("object server on %s (registry %s)", address, config.object.registry)
        task_status.started(ctx)


def http_client(config: Config) -> httpx.AsyncClient:
    """One pooled client for all internal calls of this process."""
    timeout = float(config.object.replicaTimeout)
    return httpx.AsyncClient(
        verify=client_verify(config.http),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=128, keepalive_expiry=30),
    )


def http_replica_factory(config: Config, client: httpx.AsyncClient) -> ReplicaFactory:
    """Replicas over HTTP, one client object per data-server URL."""
    from arkor.transfer.data_client import HttpReplica

    secret = effective_secret(config.cluster.secret)
    timeout = float(config.object.replicaTimeout)
    cache: dict[str, Replica] = {}

    def factory(server: ServerInfo) -> Replica:
        replica = cache.get(server.url)
        if replica is None:
            replica = cache[server.url] = HttpReplica(server.url, secret, client, timeout)
        return replica

    return factory


async def _serve_http(config: Config, bind: str | None) -> None:
    from arkor.transfer.registry_client import HttpRegistry

    secret = effective_secret(config.cluster.secret)
    async with http_client(config) as client:
        registry = HttpRegistry(
            config.object.registry, secret, client, float(config.object.replicaTimeout)
        )
        await serve_object_server(
            config,
            registry=registry,
            replica_factory=http_replica_factory(config, client),
            bind=bind,
        )
        await trio.sleep_forever()


async def _supervise_workers(config: Config) -> None:
    """Bind once, then keep `object.workers` worker processes serving the inherited socket."""
    oc = config.object
    sock = socket.socket(socket.AF_INET6 if ":" in oc.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((oc.host, oc.port))
    sock.listen(1024)
    sock.set_inheritable(True)
    fd = sock.fileno()
    plain = json.loads(json.dumps(dump_config(config)))
    with tempfile.TemporaryDirectory(prefix="arkor-object-") as tmp:
        path = Path(tmp) / "runtime.yaml"
        path.write_text(yaml.safe_dump(plain, sort_keys=False))
        env = {**os.environ, WORKER_FD_ENV: str(fd)}
        args = [sys.executable, "-m", "arkor.cli", "object", "--config", str(path)]
        log.info("object server on %s:%d with %d worker processes", oc.host, oc.port, oc.workers)

        async def worker(number: int) -> None:
            while True:
                result = await trio.run_process(args, env=env, pass_fds=(fd,), check=False)
                log.error("object worker %d exited with %s; restarting", number, result.returncode)
                await trio.sleep(1.0)

        try:
            async with trio.open_nursery() as nursery:
                for number in range(oc.workers):
                    nursery.start_soon(worker, number)
        finally:
            sock.close()


async def run(config: Config) -> None:
    fd = os.environ.get(WORKER_FD_ENV)
    if fd is not None:
        await _serve_http(config, f"fd://{int(fd)}")
    elif config.object.workers > 1:
        await _supervise_workers(config)
    else:
        await _serve_http(config, None)
