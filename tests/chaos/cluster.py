"""The chaos cluster: real `arkor` processes (one registry, two object servers, two groups of three
data servers) on free loopback ports, their backends, and the probes that read their state.

What lives here: building the cluster's config, starting/stopping/restarting processes, the group
and needle-listing probes, the SQL/KV backend choice and its cleanup. What must not: the workload,
the fault schedule or the verdicts (workload.py, faults.py, verify.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from arkor.model import GroupInfo
from arkor.security import ClusterAuth
from arkor.transfer.registry_client import HttpRegistry
from tests.procs import ArkorProcess, free_port, write_config

SECRET = "chaos-secret"
ORPHAN_GRACE = 20.0


class Cluster:
    """Processes of the cluster plus the helpers the schedule needs."""

    def __init__(self, tmp: Path, sql: dict[str, Any] | None, kv: dict[str, Any] | None, prefix: str) -> None:
        self.tmp = tmp
        reg_port = free_port()
        self.registry_url = f"http://127.0.0.1:{reg_port}"
        config: dict[str, Any] = {
            "run": {"runMode": "dev", "logPath": str(tmp / "logs")},
            "cluster": {"secret": SECRET},
            "registry": {
                "port": reg_port, "dataDir": str(tmp / "registry"), "heartbeatTimeout": "3s",
                "reaperInterval": "1s", "orphanGrace": f"{ORPHAN_GRACE:g}s", "kvPrefix": prefix,
            },
            "data": {
                "registry": self.registry_url, "heartbeatInterval": "500ms", "repairInterval": "4s",
                "scrubRate": "256MiB", "repairRate": "64MiB", "volumeSize": "48MiB",
                "reserveBytes": "16MiB",
            },
            "object": {
                "registry": self.registry_url, "fragmentSize": "4MiB", "inFlightFragments": 2,
                "replicaTimeout": "10s", "fragmentRetries": 4,
            },
        }
        if sql:
            config["sqldatabase"] = sql
        if kv:
            config["kvdatabase"] = kv
        self.config = config
        path = write_config(tmp / "cluster.yaml", config)
        self.registry = ArkorProcess("registry", path, reg_port, log_path=tmp / "registry.log")
        self.data: dict[int, list[ArkorProcess]] = {}
        self.dirs: dict[str, Path] = {}
        for g in (1, 2):
            for r in (1, 2, 3):
                port = free_port()
                directory = tmp / f"data-g{g}r{r}"
                proc = ArkorProcess(
                    "data", path, port, log_path=tmp / f"data-g{g}r{r}.log",
                    overrides=[f"data.port={port}", f"data.dir={directory}", f"data.group={g}"],
                )
                self.data.setdefault(g, []).append(proc)
                self.dirs[proc.url] = directory
        self.objects = []
        for i in (1, 2):
            port = free_port()
            self.objects.append(ArkorProcess("object", path, port, log_path=tmp / f"object{i}.log",
                                             overrides=[f"object.port={port}"]))
        self.secret = SECRET.encode()

    @property
    def all_data(self) -> list[ArkorProcess]:
        return [p for procs in self.data.values() for p in procs]

    async def start(self) -> None:
        await trio.to_thread.run_sync(lambda: self.registry.start(wait=60))
        for proc in self.all_data:
            await trio.to_thread.run_sync(lambda p=proc: p.start(wait=60))
        for proc in self.objects:
            await trio.to_thread.run_sync(lambda p=proc: p.start(wait=60))

    def stop(self) -> None:
        for proc in [*self.objects, *self.all_data, self.registry]:
            proc.kill()

    async def restart(self, proc: ArkorProcess) -> None:
        await trio.to_thread.run_sync(lambda: proc.start(wait=90))

    def registry_client(self, client: httpx.AsyncClient) -> HttpRegistry:
        return HttpRegistry(self.registry_url, self.secret, client, 10.0)

    async def groups(self, client: httpx.AsyncClient) -> dict[int, GroupInfo]:
        return {g.group: g for g in await self.registry_client(client).groups()}

    async def wait_healthy(self, client: httpx.AsyncClient, limit: float) -> bool:
        """Until both groups have three members up (repaired) and are writable."""
        with trio.move_on_after(limit):
            while True:
                try:
                    groups = await self.groups(client)
                    if len(groups) == 2 and all(
                        g.writable and len(g.servers) == 3 and all(s.state == "up" for s in g.servers)
                        for g in groups.values()
                    ):
                        return True
                except Exception:  # noqa: BLE001 - the registry may be restarting
                    pass
                await trio.sleep(0.2)
        return False

    async def listing(self, client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
        """A data server's full needle listing (tombstones included)."""
        out: list[dict[str, Any]] = []
        after = "0"
        while True:
            response = await client.get(
                url + "/needles", params={"after": after, "limit": "10000"},
                auth=ClusterAuth(self.secret), timeout=30,
            )
            response.raise_for_status()
            body = response.json()
            out += body["needles"]
            after = body.get("next_after")
            if after is None:
                return out


def backend_config(
    mysql_url: str | None, redis_url: str | None, unique: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str]:
    from urllib.parse import urlparse

    sql = kv = None
    names = []
    if mysql_url:
        url = urlparse(mysql_url)
        sql = {"driver": "mysql", "host": url.hostname, "port": url.port or 3306,
               "username": url.username or "root", "password": url.password or "",
               "schema": f"arkor_{unique}"}
        names.append("mysql")
    else:
        names.append("sqlite")
    if redis_url:
        url = urlparse(redis_url)
        kv = {"driver": "redis", "host": url.hostname, "port": url.port or 6379,
              "partition": int((url.path or "/0").strip("/") or 0)}
        names.append("redis")
    else:
        names.append("memory")
    return sql, kv, "+".join(names)


async def drop_backends(sql: dict[str, Any] | None, kv: dict[str, Any] | None, prefix: str) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(30):
        if sql:
            from arkor.registry.mysql_store import MysqlStore

            await MysqlStore(host=sql["host"], port=sql["port"], user=sql["username"],
                             password=sql["password"], database=sql["schema"]).drop_database()
        if kv:
            import coredis

            async with coredis.Redis(host=kv["host"], port=kv["port"], db=kv["partition"]) as client:
                keys = [k async for k in client.scan_iter(match=prefix + "*")]
                if keys:
                    await client.delete(keys)

