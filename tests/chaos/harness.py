"""The chaos harness: a real multi-process Arkor cluster, a PUT/DELETE/GET workload, a schedule of
SIGKILLs and disk corruptions, and the checks that nothing acknowledged was lost.

Used by tests/chaos/test_chaos.py (short run) and bench/bench_chaos.py (ARKOR_CHAOS_SECONDS).
Processes: one registry, two object servers, two groups of three data servers, each an `arkor <role>`
subprocess on free loopback ports with its data under the run's directory.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import random
import shutil
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from arkor.fileid import FileID
from arkor.model import GroupInfo
from arkor.security import SIGNATURE_HEADER, effective_secret, sign
from arkor.transfer.data_client import HttpReplica
from arkor.transfer.registry_client import HttpRegistry
from tests.procs import ArkorProcess, free_port, write_config

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
SECRET = "chaos-secret"
BUCKET = "chaos"
ORPHAN_GRACE = 20.0


@dataclass
class Report:
    """One run's figures (printed by the test, written to docs/benchmarks.md by the benchmark)."""

    backend: str = ""
    seconds: float = 0.0
    puts_acked: int = 0
    puts_failed: int = 0
    deletes_acked: int = 0
    deletes_failed: int = 0
    gets_verified_during_run: int = 0
    gets_unavailable_during_run: int = 0
    bytes_acked: int = 0
    kills: int = 0
    kills_by_role: dict[str, int] = field(default_factory=dict)
    corruptions_injected: int = 0
    torn_tails_injected: int = 0
    corrupt_copies_replaced: int = 0
    objects_verified: int = 0
    lost: int = 0
    wrong_data: int = 0
    partial_visible: int = 0
    resurrected: int = 0
    replicas_converged: bool = False
    orphans_left: int = 0
    detect_seconds: list[float] = field(default_factory=list)
    repair_bytes: int = 0
    repair_seconds: float = 0.0
    repair_seconds_per_gib: float = 0.0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Tracked:
    size: int
    sha256: str
    state: str  # acked | put-failed | deleting | deleted | delete-failed


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
        self.secret = effective_secret(SECRET)

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
                headers={SIGNATURE_HEADER: sign(self.secret, "GET", "/needles")}, timeout=30,
            )
            response.raise_for_status()
            body = response.json()
            out += body["needles"]
            after = body.get("next_after")
            if after is None:
                return out


def make_payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def pick_size(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.55:
        return rng.randint(1 * KIB, 64 * KIB)
    if roll < 0.85:
        return rng.randint(64 * KIB, 1 * MIB)
    if roll < 0.97:
        return rng.randint(1 * MIB, 8 * MIB)
    return rng.randint(16 * MIB, 64 * MIB)


def flip_needle_byte(directory: Path, key: int, size: int) -> bool:
    """Flip one data byte of the newest copy of needle `key` in its volume file."""
    needle = struct.pack("<Q", key)
    best: tuple[Path, int] | None = None
    for path in sorted(directory.glob("*.dat")):
        with open(path, "rb") as f:
            try:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:
                continue
            with mm:
                pos = mm.find(needle, 16)
                while pos != -1:
                    start = pos - 16
                    if start >= 0 and mm[start:start + 4] == b"ARKN" and mm[start + 5] == 0 and \
                            struct.unpack_from("<Q", mm, pos + 8)[0] == size:
                        best = (path, start)
                    pos = mm.find(needle, pos + 1)
    if best is None:
        return False
    path, start = best
    where = start + 40 + size // 2
    with open(path, "r+b") as f:
        f.seek(where)
        byte = f.read(1)
        f.seek(where)
        f.write(bytes([byte[0] ^ 0x5A]))
    return True


def tear_tail(directory: Path, rng: random.Random) -> int:
    """Cut the newest volume file short (and leave some garbage): a torn write after a crash."""
    volumes = sorted(directory.glob("*.dat"))
    if not volumes:
        return 0
    path = volumes[-1]
    size = path.stat().st_size
    cut = min(rng.randint(100, 64 * KIB), max(size - 16, 0))
    with open(path, "r+b") as f:
        f.truncate(size - cut)
        f.seek(size - cut)
        f.write(os.urandom(rng.randint(1, 30)))
    return cut


class ChaosRun:
    def __init__(self, cluster: Cluster, chaos_seconds: float, seed: int = 7) -> None:
        self.cluster = cluster
        self.chaos_seconds = chaos_seconds
        self.rng = random.Random(seed)
        self.report = Report()
        self.objects: dict[str, Tracked] = {}
        self.next_id = 0
        self.stop_writers = trio.Event()
        self.log_lines: list[str] = []

    def log(self, message: str) -> None:
        line = f"[chaos {time.strftime('%H:%M:%S')}] {message}"
        self.log_lines.append(line)
        print(line, flush=True)

    # --- workload ----------------------------------------------------------------------------

    def object_url(self, name: str, n: int) -> str:
        return f"{self.cluster.objects[n % 2].url}/v1/{BUCKET}/{name}"

    async def writer(self, client: httpx.AsyncClient, wid: int, first_size: int | None) -> None:
        rng = random.Random(1000 + wid)
        while not self.stop_writers.is_set():
            acked = [k for k, t in self.objects.items() if t.state == "acked"]
            if acked and rng.random() < 0.2:
                name = rng.choice(acked)
                # Not "acked" while the DELETE is in flight: a reader's 404 then is no loss.
                self.objects[name].state = "deleting"
                try:
                    response = await client.delete(self.object_url(name, rng.randrange(2)), timeout=60)
                    ok = response.status_code in (200, 204)
                except httpx.HTTPError:
                    ok = False
                self.objects[name].state = "deleted" if ok else "delete-failed"
                if ok:
                    self.report.deletes_acked += 1
                else:
                    self.report.deletes_failed += 1
                    await trio.sleep(0.2)
                continue
            size = first_size if first_size is not None else pick_size(rng)
            first_size = None
            self.next_id += 1
            name = f"w{wid}/o{self.next_id}"
            seed = rng.randrange(1 << 30)
            data = await trio.to_thread.run_sync(make_payload, seed, size)
            digest = hashlib.sha256(data).hexdigest()
            self.objects[name] = Tracked(size, digest, "put-failed")
            try:
                url = self.object_url(name, rng.randrange(2))
                response = await client.put(url, content=data, timeout=120)
                ok = response.status_code in (200, 201)
            except httpx.HTTPError:
                ok = False
            del data
            if ok:
                self.objects[name].state = "acked"
                self.report.puts_acked += 1
                self.report.bytes_acked += size
            else:
                self.report.puts_failed += 1
                await trio.sleep(0.2)

    async def reader(self, client: httpx.AsyncClient) -> None:
        rng = random.Random(99)
        while not self.stop_writers.is_set():
            acked = [k for k, t in self.objects.items() if t.state == "acked" and t.size <= 8 * MIB]
            if not acked:
                await trio.sleep(0.2)
                continue
            name = rng.choice(acked)
            try:
                response = await client.get(self.object_url(name, rng.randrange(2)), timeout=60)
            except httpx.HTTPError:
                self.report.gets_unavailable_during_run += 1
                await trio.sleep(0.2)
                continue
            tracked = self.objects[name]
            if response.status_code == 200:
                if hashlib.sha256(response.content).hexdigest() != tracked.sha256:
                    self.report.wrong_data += 1
                    self.report.problems.append(f"GET {name} during the run returned wrong data")
                else:
                    self.report.gets_verified_during_run += 1
            elif response.status_code == 404 and tracked.state == "acked":
                self.report.problems.append(f"acked {name} answered 404 during the run")
            else:
                self.report.gets_unavailable_during_run += 1
                await trio.sleep(0.1)

    # --- faults ------------------------------------------------------------------------------

    def count_kill(self, role: str, n: int = 1) -> None:
        self.report.kills += n
        self.report.kills_by_role[role] = self.report.kills_by_role.get(role, 0) + n

    async def measure_detect(self, client: httpx.AsyncClient, urls: list[str]) -> None:
        started = time.monotonic()
        with trio.move_on_after(30):
            while True:
                try:
                    groups = await self.cluster.groups(client)
                    states = {s.url: s.state for g in groups.values() for s in g.servers}
                    if all(states.get(u) == "down" for u in urls):
                        self.report.detect_seconds.append(round(time.monotonic() - started, 2))
                        return
                except Exception:  # noqa: BLE001
                    pass
                await trio.sleep(0.1)

    async def kill_data(self, client: httpx.AsyncClient, procs: list[ArkorProcess], pause: float) -> None:
        for proc in procs:
            proc.kill()
        self.count_kill("data", len(procs))
        self.log(f"killed data {[p.url for p in procs]}")
        await self.measure_detect(client, [p.url for p in procs])
        await trio.sleep(pause)
        for proc in procs:
            await self.cluster.restart(proc)

    async def flip_bits(self, client: httpx.AsyncClient, per_group: int) -> None:
        for group, procs in self.cluster.data.items():
            proc = self.rng.choice(procs)
            listing = await self.cluster.listing(client, proc.url)
            live = [n for n in listing if not n["deleted"] and n["size"] >= 64]
            for needle in self.rng.sample(live, min(per_group, len(live))):
                if await trio.to_thread.run_sync(
                    flip_needle_byte, self.cluster.dirs[proc.url], int(needle["key"], 16), needle["size"]
                ):
                    self.report.corruptions_injected += 1
            self.log(f"flipped bits in group {group} on {proc.url}")

    async def schedule(self, client: httpx.AsyncClient) -> None:
        """The fault schedule, stretched over `chaos_seconds` (at least one round)."""
        c = self.cluster
        deadline = time.monotonic() + self.chaos_seconds
        rounds = 0
        while rounds == 0 or time.monotonic() < deadline:
            rounds += 1
            steps = [
                ("one data server", lambda: self.kill_data(client, [self.rng.choice(c.data[1])], 2.0)),
                ("two data servers", lambda: self.kill_data(client, self.rng.sample(c.data[2], 2), 2.0)),
                ("a whole group", lambda: self.kill_data(client, list(c.data[1]), 3.0)),
                ("an object server", lambda: self.kill_object(client)),
                ("the registry", lambda: self.kill_registry()),
                ("torn tail", lambda: self.torn_tail(client)),
                ("flipped bits", lambda: self.flip_bits(client, 3)),
            ]
            for name, step in steps:
                await trio.sleep(1.5)
                self.log(f"round {rounds}: {name}")
                await step()
                if not await c.wait_healthy(client, 120):
                    self.report.problems.append(f"cluster not healthy 120 s after {name!r}")
                    self.log("cluster not healthy after " + name)

    async def kill_object(self, client: httpx.AsyncClient) -> None:
        proc = self.rng.choice(self.cluster.objects)
        proc.kill()
        self.count_kill("object")
        await trio.sleep(1.0)
        await self.cluster.restart(proc)

    async def kill_registry(self) -> None:
        self.cluster.registry.kill()
        self.count_kill("registry")
        await trio.sleep(2.0)
        await self.cluster.restart(self.cluster.registry)

    async def torn_tail(self, client: httpx.AsyncClient) -> None:
        proc = self.rng.choice(self.cluster.all_data)
        proc.kill()
        self.count_kill("data")
        await trio.to_thread.run_sync(tear_tail, self.cluster.dirs[proc.url], self.rng)
        self.report.torn_tails_injected += 1
        await self.cluster.restart(proc)

    async def replace_server(self, client: httpx.AsyncClient) -> None:
        """Replace a data server by an empty one at the same place; time its repair."""
        proc = self.rng.choice(self.cluster.data[2])
        proc.kill()
        self.count_kill("data")
        await trio.to_thread.run_sync(shutil.rmtree, self.cluster.dirs[proc.url])
        started = time.monotonic()
        await self.cluster.restart(proc)
        progress: dict[str, Any] = {}
        with trio.move_on_after(600):
            while True:
                try:
                    progress = (await client.get(proc.url + "/repair", timeout=10)).json()
                    if not progress["repair_needed"]:
                        break
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.1)
        seconds = time.monotonic() - started
        self.report.repair_bytes = int(progress.get("bytes_copied", 0))
        self.report.repair_seconds = round(seconds, 2)
        if self.report.repair_bytes:
            self.report.repair_seconds_per_gib = round(seconds / (self.report.repair_bytes / GIB), 1)
        self.log(f"replaced {proc.url}: {progress}")

    # --- checks ------------------------------------------------------------------------------

    async def expected_needles(self, client: httpx.AsyncClient) -> dict[int, set[str]]:
        """Fragments referenced by every object that exists now, by group."""
        registry = self.cluster.registry_client(client)
        out: dict[int, set[str]] = {1: set(), 2: set()}
        marker = ""
        while True:
            page = await registry.list_objects(BUCKET, marker=marker, limit=1000)
            for item in page.objects:
                record = await registry.get_object(BUCKET, item.key)
                for frag in record.fragments:
                    out.setdefault(FileID.parse(frag.fid).group, set()).add(frag.fid)
            if not page.truncated:
                return out
            marker = page.next_marker or page.objects[-1].key

    async def converge(self, client: httpx.AsyncClient, limit: float) -> None:
        """Until every replica holds exactly the referenced needles and the same tombstones."""
        last = ""
        with trio.move_on_after(limit):
            while True:
                try:
                    expected = await self.expected_needles(client)
                    ok = True
                    orphans = 0
                    for group, procs in self.cluster.data.items():
                        listings = [await self.cluster.listing(client, p.url) for p in procs]
                        views = [{(n["key"], n["crc32c"], n["deleted"]) for n in lst} for lst in listings]
                        lives = [{n["fid"] for n in lst if not n["deleted"]} for lst in listings]
                        orphans += sum(len(live - expected.get(group, set())) for live in lives)
                        if any(v != views[0] for v in views) or any(live != expected.get(group, set())
                                                                    for live in lives):
                            ok = False
                            same = all(v == views[0] for v in views)
                            last = (f"group {group}: live {[len(x) for x in lives]}, expected "
                                    f"{len(expected.get(group, ()))}, same={same}")
                    self.report.orphans_left = orphans
                    if ok:
                        self.report.replicas_converged = True
                        return
                except Exception as exc:  # noqa: BLE001
                    last = repr(exc)
                await trio.sleep(2.0)
        self.report.problems.append(f"replicas did not converge: {last}")

    async def verify_replicas(self, client: httpx.AsyncClient, limit: float) -> None:
        """Every live needle reads back intact from every replica (a bad read triggers repair)."""
        with trio.move_on_after(limit):
            while True:
                bad = 0
                for procs in self.cluster.data.values():
                    for proc in procs:
                        replica = HttpReplica(proc.url, self.cluster.secret, client, 60.0)
                        for needle in await self.cluster.listing(client, proc.url):
                            if needle["deleted"]:
                                continue
                            try:
                                await replica.get_needle(FileID.parse(needle["fid"]))
                            except Exception:  # noqa: BLE001
                                bad += 1
                if not bad:
                    return
                self.log(f"{bad} needle copies still bad; waiting for repair")
                await trio.sleep(3.0)
        self.report.problems.append("some needle copies stayed unreadable")

    async def verify_objects(self, client: httpx.AsyncClient) -> None:
        for name, tracked in sorted(self.objects.items()):
            url = self.object_url(name, 0)
            for attempt in range(5):
                try:
                    sha = hashlib.sha256()
                    async with client.stream("GET", url, timeout=120) as response:
                        status = response.status_code
                        async for chunk in response.aiter_bytes():
                            sha.update(chunk)
                    break
                except httpx.HTTPError:
                    status = -1
                    await trio.sleep(1 + attempt)
            good = status == 200 and sha.hexdigest() == tracked.sha256
            if tracked.state == "acked":
                self.report.objects_verified += 1
                if not good:
                    self.report.lost += 1
                    self.report.problems.append(f"acked {name} lost: status {status}")
            elif tracked.state == "deleted":
                if status != 404:
                    self.report.resurrected += 1
                    self.report.problems.append(f"deleted {name} answered {status}")
            elif status not in (404,) and not good:
                self.report.partial_visible += 1
                self.report.problems.append(f"{tracked.state} {name} visible with wrong content ({status})")

    async def scrape_replaced(self, client: httpx.AsyncClient) -> None:
        total = 0
        for proc in self.cluster.all_data:
            try:
                total += int((await client.get(proc.url + "/repair", timeout=10)).json()["corrupt_replaced"])
            except (httpx.HTTPError, KeyError, ValueError):
                pass
        self.report.corrupt_copies_replaced = total

    # --- the whole run ------------------------------------------------------------------------

    async def run(self) -> Report:
        started = time.monotonic()
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            await self.cluster.start()
            if not await self.cluster.wait_healthy(client, 120):
                raise RuntimeError("cluster never became healthy")
            self.log("cluster up")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.writer, client, 0, 64 * MIB)
                nursery.start_soon(self.writer, client, 1, None)
                nursery.start_soon(self.writer, client, 2, None)
                nursery.start_soon(self.reader, client)
                await trio.sleep(3)
                await self.schedule(client)
                self.stop_writers.set()
            self.log(f"workload stopped: {self.report.puts_acked} PUTs acked")
            await self.replace_server(client)
            if not await self.cluster.wait_healthy(client, 120):
                self.report.problems.append("cluster not healthy at the end")
            await self.verify_replicas(client, 120)
            await self.scrape_replaced(client)
            self.log("waiting for orphans to be reclaimed and replicas to converge")
            await self.converge(client, ORPHAN_GRACE * 3 + 90)
            await self.verify_objects(client)
        self.report.seconds = round(time.monotonic() - started, 1)
        return self.report


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


def format_report(report: Report) -> str:
    return json.dumps(report.to_json(), indent=1)
