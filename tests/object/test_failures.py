"""Failures with real processes: data servers SIGKILLed mid-upload, clients vanishing mid-upload,
replicas down or corrupt during GETs. Fragments are 1 MiB so a few MiB span many fragments."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio

from arkor.errors import CorruptNeedle
from arkor.fileid import FileID
from arkor.model import GroupInfo, ObjectRecord
from arkor.transfer.data_client import HttpReplica
from arkor.transfer.registry_client import HttpRegistry
from tests.lfs.test_http_api import HEADERS as LFS_HEADERS
from tests.lfs.test_http_api import LFS as LFS_MEDIA_TYPE
from tests.lfs.test_http_api import _upload as lfs_upload
from tests.object.cluster import CLUSTER_SECRET, Cluster, start_cluster
from tests.procs import ArkorProcess, free_port, run_cli

MIB = 1024 * 1024
OBJECT_SECTIONS = {"fragmentSize": "1MiB", "inFlightFragments": 2, "replicaTimeout": "10s"}
SECRET = CLUSTER_SECRET.encode()
ADMIN_SECRET = ("--set", f"cluster.secret={CLUSTER_SECRET}")


@pytest.fixture(scope="module")
def one_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("g1"), groups=1, object_sections=OBJECT_SECTIONS)
    yield cluster
    cluster.stop()


@pytest.fixture
def two_groups(tmp_path: Path) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path, groups=2, object_sections=OBJECT_SECTIONS)
    yield cluster
    cluster.stop()


async def groups_of(cluster: Cluster, client: httpx.AsyncClient) -> dict[int, GroupInfo]:
    registry = HttpRegistry(cluster.registry.url, SECRET, client, 10.0)
    return {g.group: g for g in await registry.groups()}


async def manifest(cluster: Cluster, client: httpx.AsyncClient, bucket: str, key: str) -> ObjectRecord:
    return await HttpRegistry(cluster.registry.url, SECRET, client, 10.0).get_object(bucket, key)


def data_proc(cluster: Cluster, url: str) -> ArkorProcess:
    return next(p for p in cluster.data if p.url == url.rstrip("/"))


async def holders(client: httpx.AsyncClient, group: GroupInfo, fid: str, crc: int) -> list[str]:
    """URLs of the group's servers that hold the needle intact (HEAD on each real data server)."""
    found = []
    for server in group.servers:
        try:
            info = await HttpReplica(server.url, SECRET, client, 10.0).head_needle(FileID.parse(fid))
        except Exception:  # noqa: BLE001 - down or absent
            continue
        if info.crc32c == crc:
            found.append(server.url)
    return found


async def wait_no_needles(cluster: Cluster, client: httpx.AsyncClient) -> None:
    """Until every data server reports zero live needles (the reaper has reclaimed everything)."""
    with trio.move_on_after(90):
        while True:
            counts = [s.needles for g in (await groups_of(cluster, client)).values() for s in g.servers]
            if counts and all(n == 0 for n in counts):
                return
            await trio.sleep(0.5)
    raise AssertionError(f"needles left after reclaim: {await groups_of(cluster, client)}")


def flip_byte_after(directory: Path, marker: bytes, distance: int) -> bool:
    """Corrupt one byte `distance` bytes after `marker` in the first file of `directory` holding it."""
    for path in sorted(directory.rglob("*")):
        if not path.is_file():
            continue
        raw = path.read_bytes()
        at = raw.find(marker)
        if at >= 0:
            with open(path, "r+b") as fh:
                fh.seek(at + distance)
                fh.write(bytes([raw[at + distance] ^ 0xFF]))
            return True
    return False


def body_with_kill(total: int, kill_at: int, victim: ArkorProcess | None) -> AsyncIterator[bytes]:
    """A streamed request body that SIGKILLs `victim` once `kill_at` bytes have been sent."""

    async def gen() -> AsyncIterator[bytes]:
        sent = 0
        block = os.urandom(256 * 1024)
        while sent < total:
            if victim is not None and sent >= kill_at and victim.proc and victim.proc.poll() is None:
                victim.kill()
            yield block
            sent += len(block)

    return gen()


async def test_kill_data_server_mid_upload_two_groups(two_groups: Cluster) -> None:
    cluster = two_groups
    async with httpx.AsyncClient(timeout=120) as client:
        groups = await groups_of(cluster, client)
        victim = data_proc(cluster, groups[1].servers[0].url)
        total = 32 * MIB
        response = await client.put(
            cluster.url + "/v1/kill2/obj", content=body_with_kill(total, 8 * MIB, victim)
        )
        assert response.status_code == 201, response.text
        assert victim.proc is not None and victim.proc.poll() is not None  # it really died
        record = await manifest(cluster, client, "kill2", "obj")
        assert record.size == total and len(record.fragments) == 32
        after_kill = 0
        for fragment in record.fragments:
            group = groups[FileID.parse(fragment.fid).group]
            found = await holders(client, group, fragment.fid, fragment.crc32c)
            if victim.url in [s.url.rstrip("/") for s in group.servers]:
                # written to the victim's group before it died: on both live replicas
                assert len(found) == 2, (fragment, found)
            else:
                assert len(found) == 3, (fragment, found)
                after_kill += 1
        assert after_kill > 0  # the fragments after the kill went to the other group
        got = await client.get(cluster.url + "/v1/kill2/obj")
        assert got.status_code == 200 and hashlib.md5(got.content).hexdigest() == record.etag
        # The victim comes back with everything it acknowledged: each fragment on 3 live replicas.
        victim.start(wait=60)
        for fragment in record.fragments:
            group = groups[FileID.parse(fragment.fid).group]
            assert len(await holders(client, group, fragment.fid, fragment.crc32c)) == 3


async def test_client_disconnect_mid_upload(one_group: Cluster) -> None:
    cluster = one_group
    with socket.create_connection(("127.0.0.1", cluster.object.port)) as sock:  # type: ignore[union-attr]
        sock.sendall(b"PUT /v1/gone/obj HTTP/1.1\r\nHost: x\r\nContent-Length: 33554432\r\n\r\n")
        block = os.urandom(MIB)
        for _ in range(10):
            sock.sendall(block)
        await trio.sleep(1.0)  # let several fragments reach the data servers
    async with httpx.AsyncClient(timeout=60) as client:
        assert (await client.get(cluster.url + "/v1/gone/obj")).status_code == 404
        await wait_no_needles(cluster, client)


async def test_get_with_one_replica_down_and_corrupt_replica(one_group: Cluster) -> None:
    cluster = one_group
    body = os.urandom(6 * MIB + 4321)
    async with httpx.AsyncClient(timeout=60) as client:
        assert (await client.put(cluster.url + "/v1/rd/obj", content=body)).status_code == 201
        record = await manifest(cluster, client, "rd", "obj")
        group = (await groups_of(cluster, client))[1]
        # Corrupt fragment 2 on one replica: flip a byte of its data inside the volume file.
        target = record.fragments[2]
        start = 2 * MIB
        needle_bytes = body[start : start + 64]
        victim_dir = Path(data_proc(cluster, group.servers[0].url).overrides[1].split("=", 1)[1])
        corrupted = await trio.to_thread.run_sync(flip_byte_after, victim_dir, needle_bytes, 1000)
        assert corrupted
        bad = HttpReplica(group.servers[0].url, SECRET, client, 10.0)
        with pytest.raises(CorruptNeedle):
            await bad.get_needle(FileID.parse(target.fid))
        for _ in range(8):  # replicas are tried in random order: the bad one is hit first often
            got = await client.get(cluster.url + "/v1/rd/obj")
            assert got.status_code == 200 and got.content == body
        ranged = await client.get(
            cluster.url + "/v1/rd/obj", headers={"range": f"bytes={start}-{start + 5000}"}
        )
        assert ranged.content == body[start : start + 5001]
        # Now one replica of every fragment down: still served.
        down = data_proc(cluster, group.servers[1].url)
        down.kill()
        try:
            for _ in range(3):
                got = await client.get(cluster.url + "/v1/rd/obj")
                assert got.status_code == 200 and got.content == body
        finally:
            down.start(wait=60)
        await client.delete(cluster.url + "/v1/rd/obj")


async def test_kill_data_server_mid_upload_one_group(one_group: Cluster) -> None:
    cluster = one_group
    async with httpx.AsyncClient(timeout=120) as client:
        await wait_group_writable(cluster, client)
        group = (await groups_of(cluster, client))[1]
        victim = data_proc(cluster, group.servers[2].url)
        try:
            response = await client.put(
                cluster.url + "/v1/kill1/obj", content=body_with_kill(24 * MIB, 4 * MIB, victim)
            )
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "service_unavailable"
        except httpx.TransportError:
            pytest.fail("the object server closed the connection instead of answering 503")
        assert (await client.get(cluster.url + "/v1/kill1/obj")).status_code == 404
        victim.start(wait=60)
        await wait_no_needles(cluster, client)


async def wait_group_writable(cluster: Cluster, client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(g.writable for g in (await groups_of(cluster, client)).values()):
            return
        await trio.sleep(0.3)
    raise AssertionError("group never became writable again")


def admin_status(cluster: Cluster, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return run_cli("admin", "status", "--registry", cluster.registry.url, *ADMIN_SECRET, *extra,
                   timeout=60)


async def test_admin_status_shows_a_dead_server(one_group: Cluster) -> None:
    cluster = one_group
    async with httpx.AsyncClient(timeout=60) as client:
        await wait_group_writable(cluster, client)
        assert (await client.put(cluster.url + "/v1/adm/obj", content=b"x" * 5000)).status_code == 201
    done = await trio.to_thread.run_sync(admin_status, cluster, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    [group] = report["groups"]
    assert group["writable"] and len(group["servers"]) == 3
    for server in group["servers"]:
        assert server["state"] == "up"
        assert server["status"]["needles"] >= 1 and server["status"]["volumes"], server
        assert "state" in server["repair"], server
    victim = data_proc(cluster, group["servers"][0]["url"])
    victim.kill()
    try:
        deadline = time.monotonic() + 20
        while True:
            done = await trio.to_thread.run_sync(admin_status, cluster)
            text = done.stdout.decode()
            if "[down]" in text or time.monotonic() > deadline:
                break
            await trio.sleep(0.5)
        assert done.returncode == 0, done.stderr
        assert "group 1: NOT writable" in text and "[down]" in text and "unreachable" in text, text
    finally:
        victim.start(wait=60)
    unreachable = await trio.to_thread.run_sync(
        lambda: run_cli("admin", "status", "--registry", "http://127.0.0.1:9", *ADMIN_SECRET, timeout=60))
    assert unreachable.returncode == 1
    assert unreachable.stderr.decode().count("\n") == 1 and "unreachable" in unreachable.stderr.decode()


async def test_dead_server_removed_and_replaced_under_another_url(tmp_path: Path) -> None:
    cluster = await trio.to_thread.run_sync(
        lambda: start_cluster(tmp_path, groups=1, object_sections=OBJECT_SECTIONS))
    try:
        body = os.urandom(3 * MIB + 17)
        async with httpx.AsyncClient(timeout=60) as client:
            assert (await client.put(cluster.url + "/v1/rep/obj", content=body)).status_code == 201
            record = await manifest(cluster, client, "rep", "obj")
            group = (await groups_of(cluster, client))[1]
        victim_id = group.servers[0].server_id
        remove = ["admin", "remove-server", "--registry", cluster.registry.url, *ADMIN_SECRET]
        refused = await trio.to_thread.run_sync(lambda: run_cli(*remove, victim_id, timeout=60))
        assert refused.returncode == 1 and b"stop it first" in refused.stderr, refused.stderr
        data_proc(cluster, group.servers[0].url).kill()
        deadline = time.monotonic() + 20
        while True:  # the registry must see it down first (registry.heartbeatTimeout is 3 s here)
            done = await trio.to_thread.run_sync(lambda: run_cli(*remove, victim_id, timeout=60))
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            await trio.sleep(0.5)
        assert done.returncode == 0, done.stderr
        unknown = await trio.to_thread.run_sync(lambda: run_cli(*remove, "no-such-id", timeout=60))
        assert unknown.returncode == 1 and b"no data server" in unknown.stderr
        async with httpx.AsyncClient(timeout=60) as client:
            group = (await groups_of(cluster, client))[1]
            assert len(group.servers) == 2 and not group.writable
            port = free_port()
            newcomer = ArkorProcess(
                "data", tmp_path / "cluster.yaml", port, log_path=tmp_path / "data-new.log",
                overrides=[f"data.port={port}", f"data.dir={tmp_path}/data-new", "data.group=1"],
            )
            cluster.data.append(newcomer.start(wait=60))
            await wait_group_writable(cluster, client)
            group = (await groups_of(cluster, client))[1]
            assert newcomer.url in [s.url.rstrip("/") for s in group.servers]
            for fragment in record.fragments:  # filled from its peers before the group took writes
                assert newcomer.url in await holders(client, group, fragment.fid, fragment.crc32c)
            got = await client.get(cluster.url + "/v1/rep/obj")
            assert got.status_code == 200 and got.content == body
    finally:
        cluster.stop()


async def test_every_role_serves_health_and_metrics(one_group: Cluster) -> None:
    """healthz/readyz on every role; Prometheus /metrics with the series operators alert on."""
    cluster = one_group
    async with httpx.AsyncClient(timeout=30) as client:
        await wait_group_writable(cluster, client)
        assert (await client.put(cluster.url + "/v1/metrics/obj", content=b"m" * 3000)).status_code == 201
        assert (await client.get(cluster.url + "/v1/metrics/obj")).status_code == 200
        wanted = {
            cluster.url: ["arkor_http_requests_total", "arkor_http_request_seconds_bucket",
                          "arkor_http_body_bytes_total"],
            cluster.registry.url: ["arkor_http_requests_total", "arkor_reclaim_backlog_fragments",
                                   "arkor_replica_up"],
            cluster.data[0].url: ["arkor_http_requests_total", "arkor_data_fsync_seconds_bucket",
                                  "arkor_repair_pending_needles"],
        }
        for url, names in wanted.items():
            for path in ("/healthz", "/readyz"):
                assert (await client.get(url + path)).status_code == 200, (url, path)
            metrics = await client.get(url + "/metrics")
            assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
            present = {line.split("{")[0].split(" ")[0] for line in metrics.text.splitlines()
                       if line and not line.startswith("#")}
            missing = [name for name in names if name not in present]
            assert not missing, (url, missing)


def test_a_read_no_replica_can_serve_is_a_503_in_each_api_s_own_shape(one_group: Cluster) -> None:
    """Every replica of the group down: v1 answers its JSON error, Git LFS its own (message and
    request_id, LFS media type), both before any byte of the object (never a 200 cut short)."""
    data = os.urandom(300_000)
    base = f"{one_group.url}/team/down.git/info/lfs"
    with httpx.Client(timeout=60) as client:
        obj = lfs_upload(client, base, data)
        assert client.put(one_group.url + "/v1/down/obj", content=data).status_code == 201
        stopped = list(one_group.data)
        for proc in stopped:
            proc.kill()
        try:
            v1 = client.get(one_group.url + "/v1/down/obj")
            assert v1.status_code == 503, v1.text
            assert v1.json()["error"]["code"] == "service_unavailable"
            lfs = client.get(f"{base}/objects/{obj['oid']}", headers=LFS_HEADERS)
            assert lfs.status_code == 503, lfs.text
            assert lfs.headers["content-type"].startswith(LFS_MEDIA_TYPE)
            assert lfs.json()["message"] and lfs.json()["request_id"]
        finally:
            for proc in stopped:
                proc.start(wait=60)
        got = client.get(f"{base}/objects/{obj['oid']}", headers=LFS_HEADERS)
        assert got.status_code == 200 and got.content == data
