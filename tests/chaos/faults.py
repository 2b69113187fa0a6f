"""The chaos fault schedule: SIGKILLs (data servers, a whole group, an object server, the registry),
torn volume tails, flipped needle bytes, and the replacement of a data server by an empty one.

What lives here: the on-disk corruptions and the schedule that applies every fault in turn and
waits for the cluster to heal, with the fault figures (kills, detection time, repair rate). What
must not: the workload or the end-of-run verdicts (workload.py, verify.py).
"""

from __future__ import annotations

import mmap
import os
import random
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.chaos.cluster import Cluster
from tests.chaos.report import Report
from tests.chaos.workload import KIB
from tests.procs import ArkorProcess

GIB = 1024 * 1024 * KIB


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



class Faults:
    """Applies the schedule to `cluster`, choosing victims with the run's seeded `rng`."""

    def __init__(
        self, cluster: Cluster, report: Report, rng: random.Random, log: Callable[[str], None]
    ) -> None:
        self.cluster = cluster
        self.report = report
        self.rng = rng
        self.log = log

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

    async def schedule(self, client: httpx.AsyncClient, chaos_seconds: float) -> None:
        """The fault schedule, stretched over `chaos_seconds` (at least one round)."""
        c = self.cluster
        deadline = time.monotonic() + chaos_seconds
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

