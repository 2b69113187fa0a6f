"""The chaos workload: writers (PUT/DELETE) and a reader (GET) against the object servers, and the
book of every object's fate (acked, failed, deleted) that the verdicts are checked against.

What lives here: payload sizes and contents, the writer/reader loops, the acked-object book. What
must not: faults or end-of-run checks (faults.py, verify.py).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import httpx
import trio

from tests.chaos.cluster import Cluster
from tests.chaos.report import Report

KIB = 1024
MIB = 1024 * KIB
BUCKET = "chaos"


@dataclass
class Tracked:
    size: int
    sha256: str
    state: str  # acked | put-failed | deleting | deleted | delete-failed



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



class Workload:
    """PUT/DELETE writers and a GET reader; `objects` records what each name's last operation left."""

    def __init__(self, cluster: Cluster, report: Report) -> None:
        self.cluster = cluster
        self.report = report
        self.objects: dict[str, Tracked] = {}
        self.next_id = 0
        self.stop_writers = trio.Event()

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

