"""`arkor data`: open the needle store, serve the internal API, heartbeat to the registry.

`serve_data_server` is also what `arkor allinone` runs (three times, in one process): it reports a
`DataServerHandle` through `task_status` once the socket is bound and the store is open.
A registry that is down never stops the data server: heartbeats failing are logged and retried.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from arkor.config import Config, DataConfig
from arkor.data.local import LocalReplica
from arkor.data.repair import Repairer
from arkor.data.scrub import Scrubber
from arkor.data.store import NeedleStore
from arkor.dataserver.app import ServerState, build_app
from arkor.httpclient import LeanClient
from arkor.httpclient import Timeouts as LeanTimeouts
from arkor.model import ServerInfo
from arkor.security import configured_secret
from arkor.transfer.contracts import Registry
from arkor.transfer.data_client import HttpReplica
from arkor.transfer.registry_client import HttpRegistry
from arkor.web.serve import client_verify, serve_app, url_scheme

log = logging.getLogger(__name__)

SERVER_ID_FILE = "server_id"
PEER_TIMEOUT = 60.0  # seconds, per request phase, for repair's calls to the other replicas


@dataclass
class DataServerHandle:
    store: NeedleStore
    replica: LocalReplica
    url: str
    server_id: str


def load_server_id(directory: Path) -> str:
    """The server's identity, created once (uuid4) and kept in its data directory, so a restart
    (or a move to another port) is the same server to the registry."""
    path = directory / SERVER_ID_FILE
    try:
        text = path.read_text().strip()
        if text:
            return text
    except FileNotFoundError:
        pass
    directory.mkdir(parents=True, exist_ok=True)
    server_id = uuid.uuid4().hex
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(server_id + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return server_id


async def server_info(store: NeedleStore, server_id: str, url: str, group: int) -> ServerInfo:
    status = await store.status()
    return ServerInfo(
        server_id=server_id, url=url, group=group, capacity=status["capacity"],
        free=max(status["free"] - store.reserve_bytes, 0), needles=status["needles"],
        used=status["disk_bytes"],
    )


async def heartbeat_loop(
    registry: Registry, store: NeedleStore, server_id: str, url: str, data: DataConfig,
    repair_needed: Callable[[], bool] = lambda: False,
) -> None:
    """Report to the registry every data.heartbeatInterval, forever; failures are only logged
    (once per outage), never fatal."""
    interval = max(float(data.heartbeatInterval), 0.05)
    failing = False
    while True:
        try:
            with trio.fail_after(max(interval * 2, 5.0)):
                info = await server_info(store, server_id, url, data.group)
                info.repair_needed = repair_needed()
                await registry.heartbeat(info)
            if failing:
                log.info("registry reachable again; heartbeats resumed")
            failing = False
        except Exception as exc:  # noqa: BLE001 - any registry failure must not stop serving
            if not failing:
                log.warning("heartbeat to the registry failed (will keep trying): %r", exc)
            failing = True
        await trio.sleep(interval)


async def compaction_loop(store: NeedleStore, interval: float, garbage_ratio: float) -> None:
    """Reclaim dead space by itself: every `interval`, rewrite the volumes whose garbage exceeds
    `garbage_ratio` of their size (reads and writes go on meanwhile). A failure is logged and the
    next round tries again: compaction is an optimisation, never a reason to stop serving."""
    while True:
        await trio.sleep(interval)
        try:
            done = await store.compact(min_garbage_ratio=garbage_ratio, min_active_fill=0.5)
        except Exception:
            log.exception("compaction failed; retrying in %.0f s", interval)
            continue
        if done:
            log.info("compacted %d volumes: %s", len(done), done)


async def serve_data_server(
    config: Config,
    data: DataConfig,
    *,
    registry: Registry | None,
    task_status: trio.TaskStatus[DataServerHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    directory = Path(data.dir)
    store = await NeedleStore.open(
        directory, volume_size=int(data.volumeSize), reserve_bytes=int(data.reserveBytes),
        max_needle_size=int(data.maxNeedleSize), disk_threads=data.diskThreads,
        label=f"{data.host}:{data.port}",
    )
    state: ServerState | None = None
    try:
        server_id = await trio.to_thread.run_sync(load_server_id, directory)
        app, serving = build_app(config, data, store, server_id)
        state = serving
        # Repair reaches its peers with the object server's replica client (one data-server client)
        peer_client = LeanClient(
            verify=client_verify(config.http), max_connections=8, max_idle_per_origin=4,
            timeout=LeanTimeouts(connect=5.0, read=PEER_TIMEOUT, write=PEER_TIMEOUT, pool=PEER_TIMEOUT),
        )
        repairer = Repairer(
            store, group=data.group, server_id=server_id, url=lambda: serving.url, registry=registry,
            replica=lambda url: HttpReplica(url, serving.secret, peer_client, PEER_TIMEOUT),
            rate=float(data.repairRate), interval=float(data.repairInterval),
        )
        scrubber = Scrubber(store, group=data.group, rate=float(data.scrubRate),
                            pause=float(data.repairInterval))
        serving.repairer = repairer
        async with peer_client, trio.open_nursery() as nursery:
            await nursery.start(partial(serve_app, app, config.http, f"{data.host}:{data.port}"))
            url = (data.advertiseUrl or f"{url_scheme(config.http)}://{data.host}:{data.port}").rstrip("/")
            state.url = url
            nursery.start_soon(repairer.run)
            nursery.start_soon(scrubber.run)
            nursery.start_soon(compaction_loop, store, float(data.compactInterval), data.compactGarbageRatio)
            if registry is not None:
                # A quick first repair pass (empty peers: milliseconds) before the first heartbeat,
                # so a fresh cluster is writable at once; a long one continues while heartbeating
                # "repairing" (the group stays unwritable until it is done).
                with trio.move_on_after(3):
                    await repairer.first_pass_done.wait()
                nursery.start_soon(heartbeat_loop, registry, store, server_id, url, data,
                                   lambda: repairer.progress.repair_needed)
            log.info("data server %s (group %d) serving %s from %s", server_id, data.group, url, directory)
            task_status.started(DataServerHandle(store, LocalReplica(store, url), url, server_id))
    finally:
        if state is not None:
            state.serving = False
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            await store.aclose()


async def run(config: Config) -> None:
    data = config.data
    secret = configured_secret(config.cluster.secret)
    async with LeanClient(verify=client_verify(config.http),
                          timeout=LeanTimeouts(connect=5.0, read=10.0, write=10.0, pool=10.0)) as client:
        registry: Registry | None = None
        if data.registry:
            registry = HttpRegistry(data.registry, secret, client, 10.0)
        await serve_data_server(config, data, registry=registry)
