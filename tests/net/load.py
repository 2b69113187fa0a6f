"""Scenarios on the net test bed: writers and readers running through a fault and its heal, the
figures of the run (success rates, p50/p99 during and after, time to steer around, time for the
registry to see the truth, time for the replicas to converge), the final check of every object and
`assert_correct`, what every scenario must show whatever the fault.

What must not live here: the bed itself (tests/net/bed.py) and per-fault expectations (the tests).
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import trio

from arkor.fileid import FileID
from tests.chaos.report import Verdict
from tests.net.bed import GROUPS, HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, USER, Bed

BUCKET = "netbed"
SLOW = 2.0  # an operation slower than this during a fault counts as not steered around
OP_TIMEOUT = 30.0


@dataclass
class Op:
    kind: str  # put | get | delete
    start: float
    end: float
    ok: bool
    outcome: str  # HTTP status, or the exception's name


@dataclass
class Tracked:
    size: int
    sha256: str
    state: str  # acked | put-failed | deleting | deleted | delete-failed
    scenario: str


@dataclass
class Figures(Verdict):
    scenario: str
    fault: str
    fault_seconds: float = 0.0
    put_during: int = 0
    put_ok_during: int = 0
    put_prompt_during: int = 0  # succeeded within SLOW seconds
    get_during: int = 0
    get_ok_during: int = 0
    get_prompt_during: int = 0
    put_p50_during: float = 0.0
    put_p99_during: float = 0.0
    get_p50_during: float = 0.0
    get_p99_during: float = 0.0
    put_after: int = 0
    put_ok_after: int = 0
    get_after: int = 0
    get_ok_after: int = 0
    put_p99_after: float = 0.0
    get_p99_after: float = 0.0
    failures_during: dict[str, int] = field(default_factory=dict)
    steer_put_s: float | None = None
    steer_get_s: float | None = None
    resume_put_s: float | None = None
    detect_s: float | None = None
    seen_s: float | None = None
    registry_back_s: float | None = None
    converge_s: float | None = None

    def rate(self, kind: str, phase: str, which: str = "ok") -> float:
        """Share of `kind` operations started in `phase` that succeeded ("prompt": within SLOW s)."""
        total = getattr(self, f"{kind}_{phase}")
        return getattr(self, f"{kind}_{which}_{phase}") / total if total else float("nan")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


class Ledger:
    """Every object the bed's writers touched, across scenarios (for reads and final checks)."""

    def __init__(self) -> None:
        self.objects: dict[str, Tracked] = {}
        self.counter = 0


class Scenario:
    """One fault: load through it and the heal, then the figures and the final checks."""

    def __init__(self, bed: Bed, ledger: Ledger, name: str, *, writers: int = 3, readers: int = 3,
                 seed: int = 1) -> None:
        self.bed, self.ledger, self.name = bed, ledger, name
        self.writers, self.readers = writers, readers
        self.rng = random.Random(seed)
        self.ops: list[Op] = []
        self.stop = trio.Event()

    # --- load ----------------------------------------------------------------------------------

    def url(self, name: str) -> str:
        return f"{self.bed.object_urls[self.rng.randrange(2)]}/v1/{BUCKET}/{name}"

    async def _call(self, client: httpx.AsyncClient, kind: str, method: str, name: str,
                    body: bytes | None = None) -> httpx.Response | None:
        start = trio.current_time()
        response: httpx.Response | None = None
        try:
            response = await client.request(method, self.url(name), content=body, timeout=OP_TIMEOUT)
            outcome = str(response.status_code)
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        ok = response is not None and response.status_code in (200, 201, 204)
        self.ops.append(Op(kind, start, trio.current_time(), ok, outcome))
        return response

    async def writer(self, client: httpx.AsyncClient, wid: int) -> None:
        rng = random.Random(f"{self.name}-w{wid}")
        mine: list[str] = []
        while not self.stop.is_set():
            live = [n for n in mine if self.ledger.objects[n].state == "acked"]
            if live and rng.random() < 0.15:
                name = rng.choice(live)
                self.ledger.objects[name].state = "deleting"
                response = await self._call(client, "delete", "DELETE", name)
                done = response is not None and response.status_code in (204, 404)
                self.ledger.objects[name].state = "deleted" if done else "delete-failed"
            else:
                size = rng.randint(1024, 64 * 1024) if rng.random() < 0.9 else rng.randint(300_000, 700_000)
                self.ledger.counter += 1
                name = f"{self.name}/w{wid}/o{self.ledger.counter}"
                data = rng.randbytes(size)
                digest = hashlib.sha256(data).hexdigest()
                self.ledger.objects[name] = Tracked(size, digest, "put-failed", self.name)
                mine.append(name)
                response = await self._call(client, "put", "PUT", name, data)
                if response is not None and response.status_code in (200, 201):
                    self.ledger.objects[name].state = "acked"
            await trio.sleep(0.1)

    async def reader(self, client: httpx.AsyncClient, rid: int) -> None:
        rng = random.Random(f"{self.name}-r{rid}")
        while not self.stop.is_set():
            acked = [n for n, t in self.ledger.objects.items() if t.state == "acked"]
            if not acked:
                await trio.sleep(0.1)
                continue
            name = rng.choice(acked)
            response = await self._call(client, "get", "GET", name)
            tracked = self.ledger.objects[name]
            if response is not None and response.status_code == 200 and \
                    hashlib.sha256(response.content).hexdigest() != tracked.sha256:
                self.ops[-1].ok = False
                self.problems.append(f"GET {name} returned wrong data during the run")
            elif response is not None and response.status_code == 404 and tracked.state == "acked":
                self.problems.append(f"acked {name} answered 404 during the run")
            await trio.sleep(0.05)

    # --- the run -------------------------------------------------------------------------------

    async def run(self, fault: str, apply: Callable[[], None], *, warm: float = 3.0,
                  window: float = 12.0, after: float = 6.0, expect_down: list[str] | None = None,
                  converge_limit: float = 90.0) -> Figures:
        self.figures = Figures(self.name, fault, window)
        self.problems = self.figures.problems
        bed = self.bed
        async with bed.client(connections=64, auth=USER) as client:
            await bed.wait_healthy(client, 90)
            async with trio.open_nursery() as nursery:
                for wid in range(self.writers):
                    nursery.start_soon(self.writer, client, wid)
                for rid in range(self.readers):
                    nursery.start_soon(self.reader, client, rid)
                await trio.sleep(warm)
                t_fault = trio.current_time()
                await trio.to_thread.run_sync(apply)
                if expect_down:
                    nursery.start_soon(self._detect, client, expect_down, t_fault)
                await trio.sleep_until(t_fault + window)
                await trio.to_thread.run_sync(bed.heal)
                t_heal = trio.current_time()
                self.figures.seen_s = await self._seen(client, t_heal)
                await trio.sleep_until(max(trio.current_time(), t_heal + after))
                self.stop.set()
            self._figures(t_fault, t_heal)
            self.figures.converge_s = await self._converge(client, t_heal, converge_limit)
            await self._verify(client)
        return self.figures

    async def _detect(self, client: httpx.AsyncClient, hosts: list[str], t_fault: float) -> None:
        """Seconds until the registry shows every server of `hosts` down."""
        urls = {self.bed.data_url(h) for h in hosts}
        with trio.move_on_after(HEARTBEAT_TIMEOUT * 4):
            while not self.stop.is_set():
                try:
                    groups = await self.bed.groups(client)
                    states = {s.url: s.state for g in groups.values() for s in g.servers}
                    if all(states.get(u) == "down" for u in urls):
                        self.figures.detect_s = round(trio.current_time() - t_fault, 2)
                        return
                except Exception:  # noqa: BLE001 - the registry may be what is cut off
                    pass
                await trio.sleep(0.1)

    async def _seen(self, client: httpx.AsyncClient, t_heal: float) -> float | None:
        """Seconds after the heal until the registry shows all six servers up again; also sets
        `registry_back_s`, when it first answered (later than the heal only when it restarted)."""
        limit = HEARTBEAT_TIMEOUT * 2 + 30
        with trio.move_on_after(limit):
            while True:
                self.bed.check_alive()
                try:
                    groups = await self.bed.groups(client)
                    if self.figures.registry_back_s is None:
                        self.figures.registry_back_s = round(trio.current_time() - t_heal, 2)
                    states = [s.state for g in groups.values() for s in g.servers]
                    if len(states) == 6 and all(s in ("up", "repairing") for s in states):
                        return round(trio.current_time() - t_heal, 2)
                except Exception:  # noqa: BLE001 - a restarted registry is still starting
                    pass
                await trio.sleep(0.1)
        self.problems.append(f"registry did not show every server up {limit:g}s after the heal")
        return None

    async def _converge(self, client: httpx.AsyncClient, t_heal: float, limit: float) -> float | None:
        """Seconds after the heal until the three replicas of each group hold the same needles."""
        last = ""
        with trio.move_on_after(limit):
            while True:
                try:
                    same = True
                    for group, hosts in GROUPS.items():
                        views = [{(n["key"], n["crc32c"], n["deleted"])
                                  for n in await self.bed.listing(client, self.bed.data_url(h))}
                                 for h in hosts]
                        if any(v != views[0] for v in views):
                            same = False
                            last = f"group {group}: sizes {[len(v) for v in views]}"
                    if same:
                        return round(trio.current_time() - t_heal, 2)
                except Exception as exc:  # noqa: BLE001
                    last = repr(exc)
                await trio.sleep(1.0)
        self.problems.append(f"replicas did not converge within {limit:g}s: {last}")
        return None

    async def _get(self, client: httpx.AsyncClient, name: str) -> tuple[int, str]:
        for attempt in range(5):
            try:
                response = await client.get(f"{self.bed.object_urls[attempt % 2]}/v1/{BUCKET}/{name}",
                                            timeout=OP_TIMEOUT)
                if response.status_code < 500:
                    return response.status_code, hashlib.sha256(response.content).hexdigest()
            except httpx.HTTPError:
                pass
            await trio.sleep(1 + attempt)
        return -1, ""

    async def _verify(self, client: httpx.AsyncClient) -> None:
        """Every acked object of this scenario (and a sample of earlier ones) reads back intact;
        nothing deleted is back; a failed PUT is absent or whole; each fragment is on every replica."""
        f = self.figures
        mine = sorted(n for n, t in self.ledger.objects.items() if t.scenario == self.name)
        earlier = sorted(n for n, t in self.ledger.objects.items() if t.scenario != self.name)
        names = mine + random.Random(5).sample(earlier, min(60, len(earlier)))
        limiter = trio.CapacityLimiter(8)

        async def check(name: str) -> None:
            async with limiter:
                tracked = self.ledger.objects[name]
                status, digest = await self._get(client, name)
            good = status == 200 and digest == tracked.sha256
            if tracked.state == "acked":
                f.objects_verified += 1
                if not good:
                    f.lost += 1
                    self.problems.append(f"acked {name} lost: status {status}")
            elif tracked.state == "deleted" and status != 404:
                f.resurrected += 1
                self.problems.append(f"deleted {name} answered {status}")
            elif tracked.state != "deleted" and status != 404 and not good:
                f.partial_visible += 1
                self.problems.append(f"{tracked.state} {name} visible as {status}, not intact")

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(check, name)
        await self._fragments_everywhere(client, [n for n in mine if self.ledger.objects[n].state == "acked"])

    async def _fragments_everywhere(self, client: httpx.AsyncClient, names: list[str]) -> None:
        registry = self.bed.registry(client, 10.0)
        live = {}
        for hosts in GROUPS.values():
            for h in hosts:
                listing = await self.bed.listing(client, self.bed.data_url(h))
                live[h] = {n["fid"] for n in listing if not n["deleted"]}
        for name in random.Random(3).sample(names, min(80, len(names))):
            record = await registry.get_object(BUCKET, name)
            for fragment in record.fragments:
                for host in GROUPS[FileID.parse(fragment.fid).group]:
                    if fragment.fid not in live[host]:
                        self.problems.append(f"{name}: fragment {fragment.fid} missing on {host}")

    def _figures(self, t_fault: float, t_heal: float) -> None:
        f = self.figures
        f.fault_seconds = round(t_heal - t_fault, 1)
        during = [o for o in self.ops if t_fault <= o.start < t_heal]
        after = [o for o in self.ops if o.start >= t_heal]
        for kind in ("put", "get"):
            d = [o for o in during if o.kind == kind]
            a = [o for o in after if o.kind == kind]
            setattr(f, f"{kind}_during", len(d))
            setattr(f, f"{kind}_ok_during", sum(o.ok for o in d))
            setattr(f, f"{kind}_prompt_during", sum(o.ok and o.end - o.start <= SLOW for o in d))
            setattr(f, f"{kind}_after", len(a))
            setattr(f, f"{kind}_ok_after", sum(o.ok for o in a))
            lat_d = [o.end - o.start for o in d]
            setattr(f, f"{kind}_p50_during", round(pct(lat_d, 50), 3))
            setattr(f, f"{kind}_p99_during", round(pct(lat_d, 99), 3))
            setattr(f, f"{kind}_p99_after", round(pct([o.end - o.start for o in a], 99), 3))
            bad = [o for o in d if not o.ok or o.end - o.start > SLOW]
            setattr(f, f"steer_{kind}_s", round(max(o.end for o in bad) - t_fault, 2) if bad else 0.0)
        resumed = [o.end for o in after if o.kind == "put" and o.ok]
        f.resume_put_s = round(min(resumed) - t_heal, 2) if resumed else None
        for o in during:
            if not o.ok:
                key = f"{o.kind} {o.outcome}"
                f.failures_during[key] = f.failures_during.get(key, 0) + 1


def summary(f: Figures) -> str:
    """One line of figures for the test's output."""
    def pc(x: float) -> str:
        return "n/a" if x != x else f"{100 * x:.0f}%"  # noqa: PLR0124 - NaN check

    return (f"{f.scenario}: during {f.fault_seconds}s PUT {pc(f.rate('put', 'during'))} of {f.put_during} "
            f"({pc(f.rate('put', 'during', 'prompt'))} within {SLOW:g}s, "
            f"p50 {f.put_p50_during}s p99 {f.put_p99_during}s), GET {pc(f.rate('get', 'during'))} of "
            f"{f.get_during} ({pc(f.rate('get', 'during', 'prompt'))} within {SLOW:g}s, "
            f"p50 {f.get_p50_during}s p99 {f.get_p99_during}s); after PUT "
            f"{pc(f.rate('put', 'after'))} p99 {f.put_p99_after}s, GET {pc(f.rate('get', 'after'))} "
            f"p99 {f.get_p99_after}s, first PUT ok {f.resume_put_s}s after the heal; "
            f"steer PUT {f.steer_put_s}s GET {f.steer_get_s}s; detect "
            f"{f.detect_s}s, seen {f.seen_s}s (registry answering {f.registry_back_s}s), "
            f"converge {f.converge_s}s; verified {f.objects_verified}, "
            f"lost {f.lost}; failures {f.failures_during}")


HEAL_SEEN_LIMIT = HEARTBEAT_TIMEOUT + HEARTBEAT_INTERVAL + 1.0


def assert_correct(f: Figures, *, seen: bool = True) -> None:
    """What every scenario must show whatever the engine does about the fault."""
    assert f.put_ok_during + f.put_ok_after > 0, "no PUT succeeded at all"
    assert f.data_intact, f.problems
    assert f.converge_s is not None, f.problems
    if seen:
        # Counted from when the registry answers again (its own start-up, after a restart).
        assert f.seen_s is not None and f.registry_back_s is not None, f.problems
        assert f.seen_s - f.registry_back_s <= HEAL_SEEN_LIMIT, (f.seen_s, f.registry_back_s)
    assert not f.problems, f.problems


def dump(f: Figures, out: Any) -> None:
    """Append one scenario's figures as a JSON line to `out` (a path, for the benchmark)."""
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps(asdict(f)) + "\n")
