"""Real `arkor registry` processes over loopback HTTP: bad input, crash safety, membership expiry,
and two registries sharing one MariaDB + Redis."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import trio

from arkor.errors import Forbidden, NotFound, PreconditionFailed, ServiceUnavailable
from arkor.fileid import FileID
from arkor.model import Fragment, ObjectRecord, PartInfo, ServerInfo
from arkor.security import ClusterAuth
from arkor.transfer.registry_calls import MultipartCommit, ObjectCommit, Preconditions
from arkor.transfer.registry_client import HttpRegistry
from tests.procs import ArkorProcess, free_port
from tests.registry.conftest import (
    SECRET,
    as_config,
    cleanup_backends,
    http_registry,
    registry_config,
    start_registry,
)


def record(bucket: str, key: str, start_key: int, size: int = 10) -> ObjectRecord:
    frag = Fragment(fid=str(FileID.new(1, start_key)), size=size, crc32c=123)
    return ObjectRecord(bucket=bucket, key=key, size=size, etag=f"e{start_key}", fragments=[frag])


UNLESS_EXISTS = Preconditions(if_none_match=True)


async def signed(
    client: httpx.AsyncClient, method: str, url: str, path: str, **kwargs: object
) -> httpx.Response:
    auth = ClusterAuth(SECRET.encode())
    return await client.request(method, url + path, auth=auth, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def sqlite_registry(
    tmp_path: Path, request: pytest.FixtureRequest, unique_name: str, processes: list[ArkorProcess]
) -> ArkorProcess:
    """A real registry on SQLite + the in-process KV with the default settings, killed after the test."""
    proc = start_registry(tmp_path, registry_config(tmp_path, "sqlite-memory", request, unique_name))
    processes.append(proc)
    return proc


async def test_bad_input_gets_clear_4xx_json(
    sqlite_registry: ArkorProcess, http_client: httpx.AsyncClient
) -> None:
    url = sqlite_registry.url
    big_meta = {"record": {**record("b", "k", 1).to_json(), "metadata": {"x": "y" * 10000}}}
    cases = [
        ("POST", "/internal/v1/leases", {"content": b"{not json"}, 400, "malformed_json"),
        ("POST", "/internal/v1/leases", {"json": {"cnt": 3}}, 400, "invalid_request"),
        ("POST", "/internal/v1/leases", {"json": [1]}, 400, "invalid_request"),
        ("POST", "/internal/v1/leases", {"json": {"count": -1}}, 400, "invalid_count"),
        ("PUT", "/internal/v1/objects/bad%20bucket/k", {"json": {"record": record("x", "k", 1).to_json()}},
         400, "invalid_bucket_name"),
        ("PUT", "/internal/v1/objects/b/a/%2E%2E/k", {"json": {"record": record("b", "k", 1).to_json()}},
         400, "invalid_object_name"),
        ("PUT", "/internal/v1/objects/b/k", {"json": big_meta}, 400, "metadata_too_large"),
        ("PUT", "/internal/v1/objects/b/k", {"json": {"record": {"size": "x"}}}, 400, "invalid_request"),
        ("GET", "/internal/v1/objects/nobucket/k", {}, 404, "no_such_bucket"),
        ("GET", "/internal/v1/objects/b/%FF%FE", {}, 400, "invalid_object_name"),
        ("GET", "/internal/v1/buckets/nobucket", {}, 404, "no_such_bucket"),
        ("GET", "/internal/v1/buckets/b", {"params": {"limit": "many"}}, 400, "invalid_argument"),
        ("DELETE", "/internal/v1/buckets/nobucket", {}, 404, "no_such_bucket"),
        ("GET", "/internal/v1/uploads/nope", {}, 404, "no_such_upload"),
        ("POST", "/internal/v1/heartbeat", {"json": {"server_id": "s", "url": "ftp://x", "group": 1}},
         400, "invalid_server"),
        ("GET", "/internal/v1/locks", {"params": {"repo": ""}}, 400, "invalid_repo"),
        ("GET", "/internal/v1/nothing-here", {}, 404, "not_found"),
    ]
    for method, path, kwargs, status, code in cases:
        response = await signed(http_client, method, url, path, **kwargs)
        assert response.status_code == status, (path, response.text)
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["error"]["code"] == code, (path, body)
        assert body["error"]["message"]
    # Unsigned and wrongly signed requests are refused; health and metrics are open.
    response = await http_client.post(url + "/internal/v1/leases", json={"count": 1})
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    wrong = HttpRegistry(url, b"not-the-secret", http_client)
    with pytest.raises(Forbidden, match="does not match"):
        await wrong.lease_keys(1)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await http_client.get(url + path)).status_code == 200


async def test_every_method_over_http(sqlite_registry: ArkorProcess, http_client: httpx.AsyncClient) -> None:
    reg = http_registry(sqlite_registry, http_client)
    lease = await reg.lease_keys(100)
    key = "dir/ünï cödé?#%.txt"
    stored = await reg.commit_object(ObjectCommit(record("bkt", key, lease.start), UNLESS_EXISTS))
    assert (await reg.get_object("bkt", key)).version == stored.version
    with pytest.raises(PreconditionFailed):
        await reg.commit_object(ObjectCommit(record("bkt", key, lease.start + 1), UNLESS_EXISTS))
    page = await reg.list_objects("bkt", prefix="dir/", delimiter="/", limit=5)
    assert [o.key for o in page.objects] == [key] and not page.truncated
    assert [(b.name, b.objects) for b in await reg.list_buckets()] == [("bkt", 1)]
    upload = await reg.create_multipart("bkt", "mp", "text/plain", {"k": "v"})
    assert (await reg.get_multipart(upload.upload_id)).metadata == {"k": "v"}
    part_fragment = record("x", "y", lease.start + 2).fragments[0]
    await reg.put_part(upload.upload_id, PartInfo(1, 10, "p1", [part_fragment]))
    assert [p.part_number for p in await reg.list_parts(upload.upload_id)] == [1]
    assert [u.key for u in await reg.list_multipart("bkt")] == ["mp"]
    done = await reg.complete_multipart(MultipartCommit(upload.upload_id, [(1, "p1")], "m-1"))
    assert done.size == 10 and done.content_type == "text/plain"
    other = await reg.create_multipart("bkt", "mp2", "", {})
    await reg.abort_multipart(other.upload_id)
    await reg.discard_fragments([record("x", "y", lease.start + 3).fragments[0]])
    lock = await reg.create_lock("ns/r", "a.bin", "me", None)
    assert (await reg.list_locks("ns/r"))[0][0].id == lock.id
    assert (await reg.delete_lock("ns/r", lock.id, "me")).path == "a.bin"
    assert (await reg.delete_object("bkt", key)).version == stored.version
    await reg.delete_object("bkt", "mp")
    await reg.delete_bucket("bkt")
    await reg.heartbeat(ServerInfo("s1", "http://127.0.0.1:1", 1, free=1))
    assert [g.group for g in await reg.groups()] == [1]
    sqlite_registry.kill()
    with pytest.raises(ServiceUnavailable):
        await reg.lease_keys(1)


@pytest.mark.parametrize("backend", ["sqlite-memory", "mysql-redis"])
async def test_sigkilled_registry_loses_nothing_committed(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest, unique_name: str,
    processes: list[ArkorProcess], http_client: httpx.AsyncClient,
) -> None:
    raw = registry_config(tmp_path, backend, request, unique_name)
    try:
        proc = start_registry(tmp_path, raw)
        processes.append(proc)
        reg = http_registry(proc, http_client)
        acknowledged: dict[str, str] = {}
        leased: list[int] = []
        enough = trio.Event()

        async def writer(w: int) -> None:
            for i in range(10_000):
                try:
                    lease = await reg.lease_keys(1)
                    leased.append(lease.start)
                    rec = await reg.commit_object(ObjectCommit(record("crash", f"w{w}/{i:05d}", lease.start)))
                except ServiceUnavailable:
                    return
                acknowledged[rec.key] = rec.version
                if len(acknowledged) >= 60:
                    enough.set()

        async with trio.open_nursery() as nursery:
            for w in range(4):
                nursery.start_soon(writer, w)
            with trio.fail_after(60):
                await enough.wait()
            await trio.to_thread.run_sync(proc.kill)  # SIGKILL mid-traffic
        proc.start(wait=60)
        # A fresh client: the old one fails fast for a second after it found the registry gone
        # (HttpRegistry's UNREACHABLE_PAUSE), and a restart can be quicker than that.
        reg = http_registry(proc, http_client)
        assert len(acknowledged) >= 60
        for key, version in acknowledged.items():
            assert (await reg.get_object("crash", key)).version == version
        # Keys handed out before the crash are never handed out again.
        after = await reg.lease_keys(1000)
        assert after.start > max(leased)
    finally:
        await cleanup_backends(as_config(tmp_path, raw))


async def test_silent_data_server_is_marked_down_within_the_timeout(
    tmp_path: Path, request: pytest.FixtureRequest, unique_name: str, processes: list[ArkorProcess],
    http_client: httpx.AsyncClient,
) -> None:
    raw = registry_config(tmp_path, "sqlite-memory", request, unique_name)
    assert "heartbeatTimeout" not in raw["registry"]  # the default: 10 s
    proc = start_registry(tmp_path, raw)
    processes.append(proc)
    reg = http_registry(proc, http_client)
    last_sent = {"s0": 0.0}
    urls = {f"s{i}": f"http://127.0.0.1:{free_port()}" for i in range(3)}

    async def sender(server_id: str, stop: trio.Event) -> None:
        """A fake data server: the real client posting heartbeats every 0.5 s until stopped."""
        while not stop.is_set():
            await reg.heartbeat(ServerInfo(server_id, urls[server_id], 1, free=2**40))
            last_sent[server_id] = time.time()
            with trio.move_on_after(0.5):
                await stop.wait()

    victim, others = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender, "s0", victim)
        nursery.start_soon(sender, "s1", others)
        nursery.start_soon(sender, "s2", others)
        with trio.fail_after(30):
            while not any(g.writable for g in await reg.groups()):  # noqa: ASYNC110 - polls a server
                await trio.sleep(0.2)
        victim.set()  # s0 stops heartbeating, as if killed
        await trio.sleep(0.1)
        stopped = last_sent["s0"]
        with trio.fail_after(40):
            while True:
                [group] = await reg.groups()
                states = {s.server_id: s.state for s in group.servers}
                if states["s0"] == "down":
                    break
                await trio.sleep(0.2)
        noticed = time.time()
        others.set()
    assert not group.writable and states == {"s0": "down", "s1": "up", "s2": "up"}
    # Down once silent for more than the 10 s timeout, and noticed within the timeout plus polling.
    assert noticed - stopped > 10.0
    assert noticed - stopped < 10.0 + 5.0


async def test_two_registries_share_one_mariadb_and_redis(
    tmp_path: Path, request: pytest.FixtureRequest, unique_name: str, processes: list[ArkorProcess],
    http_client: httpx.AsyncClient,
) -> None:
    raw_a = registry_config(tmp_path, "mysql-redis", request, unique_name)
    raw_b = json.loads(json.dumps(raw_a))
    raw_b["registry"]["port"] = free_port()
    try:
        a = start_registry(tmp_path, raw_a, "registry-a")
        processes.append(a)
        b = start_registry(tmp_path, raw_b, "registry-b")
        processes.append(b)
        ra, rb = http_registry(a, http_client), http_registry(b, http_client)

        ranges = []

        async def lease(reg: HttpRegistry, n: int) -> None:
            for _ in range(25):
                ranges.append(await reg.lease_keys(n))

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(lease, ra, 1 + i)
                nursery.start_soon(lease, rb, 1 + i)
        keys = [k for r in ranges for k in range(r.start, r.start + r.count)]
        assert len(ranges) == 200 and len(keys) == len(set(keys))

        # Writes through one are read through the other; a create race has exactly one winner.
        base = max(keys) + 1000
        await ra.commit_object(ObjectCommit(record("shared", "doc", base)))
        assert (await rb.get_object("shared", "doc")).etag == f"e{base}"
        outcomes: list[str] = []

        async def create(reg: HttpRegistry, n: int) -> None:
            try:
                await reg.commit_object(ObjectCommit(record("shared", "race", base + n), UNLESS_EXISTS))
                outcomes.append("created")
            except PreconditionFailed:
                outcomes.append("412")

        async with trio.open_nursery() as nursery:
            for n in range(1, 9):
                nursery.start_soon(create, ra if n % 2 else rb, n)
        assert sorted(outcomes) == ["412"] * 7 + ["created"]
        assert (await ra.list_objects("shared")).to_json() == (await rb.list_objects("shared")).to_json()

        await ra.heartbeat(ServerInfo("srv", "http://127.0.0.1:1", 7, free=2**40))
        [group] = [g for g in await rb.groups() if g.group == 7]
        assert [s.state for s in group.servers] == ["up"]
        await rb.delete_object("shared", "doc")
        with pytest.raises(NotFound):
            await ra.get_object("shared", "doc")
    finally:
        await cleanup_backends(as_config(tmp_path, raw_a))
