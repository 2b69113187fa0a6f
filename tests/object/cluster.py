"""Real Arkor deployments for the object-server tests: one `arkor allinone` process, or a cluster of
separate `arkor registry`, `arkor data` x N and `arkor object` processes, all on free loopback ports
with their data under the test's tmp_path."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.procs import ArkorProcess, free_port, write_config

# Separate processes need a shared secret (allinone makes up its own): docs/security.md.
CLUSTER_SECRET = "object-test-cluster-secret-0123456789"


def base_config(tmp: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {"run": {"runMode": "dev", "logPath": str(tmp / "logs")}}
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


def start_allinone(tmp: Path, **sections: dict[str, Any]) -> ArkorProcess:
    """`arkor allinone` on free ports; `.url` is the object server."""
    ports = [free_port() for _ in range(5)]
    sections.setdefault("allinone", {}).update(
        {
            "dataDir": str(tmp / "arkor-data"),
            "objectPort": ports[0],
            "registryPort": ports[1],
            "dataPorts": ports[2:],
        }
    )
    path = write_config(tmp / "allinone.yaml", base_config(tmp, **sections))
    proc = ArkorProcess("allinone", path, ports[0], log_path=tmp / "allinone.log")
    proc.start(wait=60)
    wait_ready(proc.url)
    return proc


def wait_ready(url: str, timeout: float = 60.0) -> None:
    """Until /readyz says a group is writable (data servers registered and heartbeating)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url + "/readyz", timeout=5)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready: {last}")


@dataclass
class Cluster:
    """Separate processes: registry, data servers (groups of three) and one object server."""

    tmp: Path
    registry: ArkorProcess
    data: list[ArkorProcess] = field(default_factory=list)
    object: ArkorProcess | None = None

    @property
    def url(self) -> str:
        assert self.object is not None
        return self.object.url

    def stop(self) -> None:
        for proc in [self.object, *self.data, self.registry]:
            if proc is not None:
                proc.kill()

    def groups(self) -> list[dict[str, Any]]:
        """The registry's view of the groups (GET /internal/groups over the real HTTP client)."""
        import trio

        from arkor.transfer.registry_client import HttpRegistry

        async def fetch() -> list[dict[str, Any]]:
            async with httpx.AsyncClient() as client:
                registry = HttpRegistry(self.registry.url, CLUSTER_SECRET.encode(), client, 10.0)
                return [g.to_json() for g in await registry.groups()]

        return trio.run(fetch)


def start_cluster(
    tmp: Path,
    *,
    groups: int = 1,
    object_sections: dict[str, Any] | None = None,
    registry_sections: dict[str, Any] | None = None,
) -> Cluster:
    reg_port = free_port()
    registry_url = f"http://127.0.0.1:{reg_port}"
    common = base_config(
        tmp,
        cluster={"secret": CLUSTER_SECRET},
        registry={
            "port": reg_port,
            "dataDir": str(tmp / "registry"),
            "heartbeatTimeout": "3s",
            "reaperInterval": "1s",
            "orphanGrace": "1h",
            **(registry_sections or {}),
        },
        data={"registry": registry_url, "heartbeatInterval": "500ms"},
        object={"registry": registry_url, **(object_sections or {})},
    )
    path = write_config(tmp / "cluster.yaml", common)
    registry = ArkorProcess("registry", path, reg_port, log_path=tmp / "registry.log")
    cluster = Cluster(tmp=tmp, registry=registry)
    try:
        registry.start(wait=60)
        for g in range(1, groups + 1):
            for r in range(1, 4):
                port = free_port()
                proc = ArkorProcess(
                    "data",
                    path,
                    port,
                    log_path=tmp / f"data-g{g}r{r}.log",
                    overrides=[f"data.port={port}", f"data.dir={tmp}/data-g{g}r{r}", f"data.group={g}"],
                )
                cluster.data.append(proc.start(wait=60))
        obj_port = free_port()
        cluster.object = ArkorProcess(
            "object", path, obj_port, log_path=tmp / "object.log", overrides=[f"object.port={obj_port}"]
        ).start(wait=60)
        wait_ready(cluster.url)
        # Every group must be writable before a test starts killing servers.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sum(1 for g in cluster.groups() if g["writable"]) == groups:
                break
            time.sleep(0.2)
        else:
            raise TimeoutError(f"groups not writable: {cluster.groups()}")
    except BaseException:
        cluster.stop()
        raise
    return cluster
