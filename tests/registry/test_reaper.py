"""The reaper and orphan sweeper against real data servers: a registry process and three
`arkor data` processes on loopback. Overwritten and orphaned needles disappear from every replica;
needles a committed manifest references never do."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from arkor.checksum import crc32c
from arkor.errors import NotFound
from arkor.fileid import FileID
from arkor.model import Fragment, ObjectRecord
from arkor.transfer.data_client import HttpReplica
from arkor.transfer.registry_calls import ObjectCommit
from tests.procs import ArkorProcess, free_port, write_config
from tests.registry.conftest import SECRET, http_registry, registry_config, start_registry


async def test_reaper_deletes_reclaimed_and_orphaned_needles_only(
    tmp_path: Path, request: pytest.FixtureRequest, unique_name: str, processes: list[ArkorProcess],
    http_client: httpx.AsyncClient,
) -> None:
    raw = registry_config(tmp_path, "sqlite-memory", request, unique_name,
                          reaperInterval="300ms", orphanGrace="2s")
    registry = start_registry(tmp_path, raw)
    processes.append(registry)
    replicas = []
    for i in range(3):
        port = free_port()
        data_raw = {
            "run": raw["run"], "cluster": raw["cluster"],
            "data": {"host": "127.0.0.1", "port": port, "dir": str(tmp_path / f"data{i}"), "group": 1,
                     "registry": registry.url, "heartbeatInterval": "300ms",
                     "volumeSize": "8MiB", "reserveBytes": 0},
        }
        path = write_config(tmp_path / f"data{i}.yaml", data_raw)
        proc = ArkorProcess("data", path, port, log_path=tmp_path / f"data{i}.log").start(wait=60)
        processes.append(proc)
        replicas.append(HttpReplica(proc.url, SECRET.encode(), http_client, 30.0))
    reg = http_registry(registry, http_client)
    with trio.fail_after(30):
        while not any(g.writable for g in await reg.groups()):  # noqa: ASYNC110 - polls a server
            await trio.sleep(0.2)

    lease = await reg.lease_keys(10)
    fids = [FileID.new(1, lease.start + i) for i in range(4)]
    payload = b"needle-bytes"
    for fid in fids:
        for replica in replicas:
            await replica.put_needle(fid, payload, crc32c(payload))

    def fragment(fid: FileID) -> Fragment:
        return Fragment(fid=str(fid), size=len(payload), crc32c=crc32c(payload))

    kept, replaced, orphan, discarded = fids
    for etag, fid in (("e1", replaced), ("e2", kept)):
        record = ObjectRecord("r", "obj", len(payload), etag, fragments=[fragment(fid)])
        await reg.commit_object(ObjectCommit(record))
    await reg.discard_fragments([fragment(discarded)])

    async def gone(fid: FileID) -> bool:
        for replica in replicas:
            try:
                await replica.head_needle(fid)
                return False
            except NotFound:
                pass
        return True

    with trio.fail_after(60):
        while not (await gone(replaced) and await gone(discarded) and await gone(orphan)):  # noqa: ASYNC110
            await trio.sleep(0.3)
    # The committed needle survived every reaper and sweeper pass, on every replica.
    for replica in replicas:
        assert await replica.get_needle(kept) == payload
    assert (await http_client.get(registry.url + "/metrics")).status_code == 200
