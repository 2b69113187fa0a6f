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

import trio
import yaml

from arkor.config import Config, dump_config
from arkor.httpclient import LeanClient
from arkor.model import ServerInfo
from arkor.object.app import ObjectContext, build_object_app
from arkor.object.auth import Authenticator
from arkor.object.service import ObjectService
from arkor.security import configured_secret
from arkor.transfer.contracts import Registry, Replica
from arkor.transfer.placement import ReplicaFactory
from arkor.transfer.timeouts import Timeouts
from arkor.web.serve import client_verify, serve_app

log = logging.getLogger(__name__)

WORKER_FD_ENV = "ARKOR_OBJECT_FD"
S3_FD_ENV = "ARKOR_S3_FD"


async def serve_object_server(
    config: Config,
    *,
    registry: Registry,
    replica_factory: ReplicaFactory,
    bind: str | None = None,
    s3_bind: str | None = None,
    task_status: trio.TaskStatus[ObjectContext] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the public API (and the S3 API unless `s3.enabled` is false) until cancelled;
    `task_status` gets the context once listening."""
    from arkor.object.s3.server import serve_s3

    service = ObjectService(config, registry, replica_factory)
    ctx = ObjectContext(config=config, service=service, registry=registry, auth=Authenticator(config))
    app = build_object_app(ctx)
    address = bind or f"{config.object.host}:{config.object.port}"
    async with trio.open_nursery() as nursery:
        await nursery.start(service.engine.cleanup.run)  # outlives every request
        await nursery.start(serve_app, app, config.http, address)
        log.info("object server on %s (registry %s)", address, config.object.registry)
        if config.s3.enabled:
            s3_address = s3_bind or f"{config.s3_host}:{config.s3.port}"
            await nursery.start(serve_s3, config, ctx, s3_address)
            log.info("S3 API on %s (region %s)", s3_address, config.s3.region)
        task_status.started(ctx)


def http_client(config: Config) -> LeanClient:
    """One pooled client for all internal calls of this process (every call passes its own
    timeouts; these are the replica ones, so nothing runs on a library default). The lean client,
    not httpx: internal calls are the cluster's hot path (arkor/httpclient explains)."""
    return LeanClient(
        verify=client_verify(config.http),
        timeout=Timeouts.from_config(config.object, "replica").lean(),
        max_connections=512, max_idle_per_origin=128, idle_expiry=30.0,
    )


def http_replica_factory(
    config: Config, client: LeanClient, nursery: trio.Nursery | None = None
) -> ReplicaFactory:
    """Replicas over HTTP, one client object per data-server URL; with a `nursery` (and
    `object.coalesce`), concurrent small needle writes to one server share a request."""
    from arkor.transfer.data_client import HttpReplica

    secret = configured_secret(config.cluster.secret)
    timeout = Timeouts.from_config(config.object, "replica")
    cache: dict[str, Replica] = {}

    def factory(server: ServerInfo) -> Replica:
        replica = cache.get(server.url)
        if replica is None:
            replica = cache[server.url] = HttpReplica(
                server.url, secret, client, timeout,
                nursery=nursery if config.object.coalesce else None,
            )
        return replica

    return factory


async def _serve_http(config: Config, bind: str | None, s3_bind: str | None = None) -> None:
    from arkor.transfer.registry_client import HttpRegistry

    secret = configured_secret(config.cluster.secret)
    async with http_client(config) as client, trio.open_nursery() as batches:
        registry = HttpRegistry(
            config.object.registry, secret, client, Timeouts.from_config(config.object, "registry"),
            nursery=batches if config.object.coalesce else None,
        )
        await serve_object_server(
            config,
            registry=registry,
            replica_factory=http_replica_factory(config, client, batches),
            bind=bind,
            s3_bind=s3_bind,
        )
        await trio.sleep_forever()


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket worker processes inherit."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


async def _supervise_workers(config: Config) -> None:
    """Bind once, then keep `object.workers` worker processes serving the inherited sockets."""
    oc = config.object
    sock = _listen(oc.host, oc.port)
    s3_sock = _listen(config.s3_host, config.s3.port) if config.s3.enabled else None
    fd = sock.fileno()
    fds = (fd,) if s3_sock is None else (fd, s3_sock.fileno())
    plain = json.loads(json.dumps(dump_config(config)))
    with tempfile.TemporaryDirectory(prefix="arkor-object-") as tmp:
        path = Path(tmp) / "runtime.yaml"
        path.write_text(yaml.safe_dump(plain, sort_keys=False))
        env = {**os.environ, WORKER_FD_ENV: str(fd)}
        if s3_sock is not None:
            env[S3_FD_ENV] = str(s3_sock.fileno())
        args = [sys.executable, "-m", "arkor.cli", "object", "--config", str(path)]
        log.info("object server on %s:%d with %d worker processes", oc.host, oc.port, oc.workers)

        async def worker(number: int) -> None:
            while True:
                result = await trio.run_process(args, env=env, pass_fds=fds, check=False)
                log.error("object worker %d exited with %s; restarting", number, result.returncode)
                await trio.sleep(1.0)

        try:
            async with trio.open_nursery() as nursery:
                for number in range(oc.workers):
                    nursery.start_soon(worker, number)
        finally:
            sock.close()
            if s3_sock is not None:
                s3_sock.close()


async def run(config: Config) -> None:
    fd = os.environ.get(WORKER_FD_ENV)
    if fd is not None:
        s3_fd = os.environ.get(S3_FD_ENV)
        await _serve_http(config, f"fd://{int(fd)}", f"fd://{int(s3_fd)}" if s3_fd else None)
    elif config.object.workers > 1:
        await _supervise_workers(config)
    else:
        await _serve_http(config, None)
