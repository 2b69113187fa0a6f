"""Heartbeats from a real `arkor data` to a real `arkor registry`; a registry that is down does not
stop the data server serving, and the server keeps its identity across restarts."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from arkor.fileid import FileID
from arkor.transfer.registry_client import HttpRegistry
from tests.data.conftest import SECRET, payload, put, start_data
from tests.procs import ArkorProcess, free_port, write_config


async def registered(registry_url: str, server_url: str, needles: int) -> dict:
    async with httpx.AsyncClient() as client:
        registry = HttpRegistry(registry_url, SECRET.encode(), client, 10.0)
        with trio.fail_after(30):
            while True:
                for group in await registry.groups():
                    for server in group.servers:
                        if server.url == server_url and server.state == "up" and server.needles == needles:
                            return server.to_json()
                await trio.sleep(0.2)


async def test_heartbeat_registers_and_registry_down_is_harmless(tmp_path: Path) -> None:
    registry_port = free_port()
    registry_url = f"http://127.0.0.1:{registry_port}"
    # the registry is not running yet: the data server must start and serve anyway
    data = await trio.to_thread.run_sync(
        lambda: start_data(tmp_path / "d", registry=registry_url, heartbeatInterval="200ms")
    )
    reg_dir = tmp_path / "r"
    reg_config = write_config(reg_dir / "runtime.yaml", {
        "run": {"logPath": str(reg_dir / "log")},
        "cluster": {"secret": SECRET},
        "registry": {"port": registry_port, "dataDir": str(reg_dir / "db")},
    })
    registry = ArkorProcess("registry", reg_config, registry_port, log_path=reg_dir / "registry.log")
    try:
        fid = FileID(1, 1, 1)
        with httpx.Client(base_url=data.url, timeout=30) as client:  # noqa: ASYNC212 - test driver
            assert put(client, fid, payload(1, 100)).status_code == 201
            first_id = client.get("/healthz").json()["server_id"]  # noqa: ASYNC212
        await trio.to_thread.run_sync(lambda: registry.start(wait=60))
        info = await registered(registry_url, data.url, 1)
        assert info["server_id"] == first_id and info["group"] == 1 and info["capacity"] > 0
        # registry killed: the data server keeps serving; restarted: heartbeats resume
        await trio.to_thread.run_sync(registry.kill)
        with httpx.Client(base_url=data.url, timeout=30) as client:
            fid2 = FileID(1, 2, 2)
            assert put(client, fid2, payload(2, 100)).status_code == 201
            assert client.get(f"/needles/{fid}").content == payload(1, 100)
        await trio.to_thread.run_sync(lambda: data.restart(wait=60))
        await trio.to_thread.run_sync(lambda: registry.start(wait=60))
        info = await registered(registry_url, data.url, 2)  # a fresh heartbeat
        assert info["server_id"] == first_id  # identity persisted in the data directory
    finally:
        registry.stop()
        data.stop()
