"""The chaos verdicts: after the faults, every replica converges to exactly the referenced needles,
every live needle copy reads back intact, and every object reads back as its last acknowledged
operation left it (acked: same bytes; deleted: 404; failed: absent or intact, never partial).

What lives here: the end-of-run checks and the figures they produce. What must not: the workload
or the faults (workload.py, faults.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import httpx
import trio

from arkor.fileid import FileID
from arkor.transfer.data_client import HttpReplica
from tests.chaos.cluster import Cluster
from tests.chaos.report import Report
from tests.chaos.workload import BUCKET, Workload


class Verifier:
    """Checks the cluster against the workload's book of objects; problems go to `report.problems`."""

    def __init__(
        self, cluster: Cluster, report: Report, workload: Workload, log: Callable[[str], None]
    ) -> None:
        self.cluster = cluster
        self.report = report
        self.workload = workload
        self.log = log

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
        for name, tracked in sorted(self.workload.objects.items()):
            url = self.workload.object_url(name, 0)
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

