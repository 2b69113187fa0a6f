"""Object server benchmark: 4 KiB and 64 MiB PUT/GET through the public v1 API, beside nginx.

Run (one benchmark at a time on the machine):

    flock /tmp/arkor-bench.lock .venv/bin/python -m bench.bench_object [--small 3000] [--runs 3]

Deployments, each started by this script on free loopback ports with data in a temp directory:
- `allinone`: one `arkor allinone` process (registry, object server, three data servers);
- `cluster`: separate processes, `arkor registry`, three `arkor data` and one `arkor object` with
  `object.workers` hypercorn workers (--workers, default 2).
Every PUT is acknowledged only after three fsynced replicas, as in production.

References in the same run: the floor (`bench.floor`: hypercorn's trio worker with a bare ASGI app
serving 4 KiB and draining bodies, the most this stack allows on one core), nginx serving the same
4 KiB and 64 MiB bytes to the same load client (GET), and a raw write+fsync of 64 MiB to the same
disk (PUT: every byte is written three times, so the reference is a third of it). Prints a Markdown
table of req/s or MB/s with p50/p99 latency and the object server's peak RSS (also during
`--concurrent-big` 64 MiB PUTs at once: memory per upload stays bounded), then the goal table of
issue 14: every row as a ratio to its reference measured in this run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

from bench.common import (
    MB,
    Floor,
    RawHttp,
    machine,
    raw_disk_write,
    run_clients,
    start_nginx,
    throughput_parser,
)
from bench.swift_saio import DEFAULT_VENV, SwiftSaio, ensure_venv
from tests.object.cluster import start_allinone, start_cluster
from tests.procs import ArkorProcess, PeakRss

SMALL = 4 * 1024


class Deployment:
    """A running deployment: its front URL, where objects go (`base` + "/name"), the headers every
    request needs (a Swift token), the pid whose RSS is sampled and how to stop it."""

    def __init__(self, url: str, pid: int, stop: Callable[[], object], base: str,
                 headers: dict[str, str] | None = None) -> None:
        self.url, self.pid, self.stop, self.base, self.headers = url, pid, stop, base, headers or {}


def start(kind: str, work: Path, args: argparse.Namespace) -> Deployment:
    tmp = work / kind
    tmp.mkdir()
    if kind == "allinone":
        proc: ArkorProcess = start_allinone(tmp)
        return Deployment(proc.url, proc.pid or 0, proc.stop, "/v1/bench-allinone")
    if kind == "swift":
        venv = ensure_venv(Path(args.swift_venv))
        if venv is None:
            raise RuntimeError("Swift could not be installed from PyPI into " + args.swift_venv)
        saio = SwiftSaio(tmp, venv)
        return Deployment(saio.url, saio.pids()[-1], saio.stop, saio.container_path,
                          {"X-Auth-Token": saio.token})
    cluster = start_cluster(tmp, object_sections={"workers": args.workers})
    assert cluster.object is not None
    return Deployment(cluster.url, cluster.object.pid or 0, cluster.stop, "/v1/bench-cluster")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def small_load(url: str, method: str, paths: list[str], concurrency: int,
                     body: bytes, *, check: bool = True, headers: dict[str, str] | None = None,
                     ) -> dict[str, float]:
    """req/s and latency percentiles for one request per path, `concurrency` keep-alive clients."""
    todo = iter(paths)
    latencies: list[float] = []
    expected = 201 if method == "PUT" else 200

    async def worker(conn: RawHttp) -> None:
        for path in todo:
            started = time.perf_counter()
            status, data = await conn.request(method, path, headers, body if method == "PUT" else b"")
            latencies.append(time.perf_counter() - started)
            if status != expected or (method == "GET" and check and data != body):
                raise AssertionError(f"{method} {path}: {status} {data!r:.200}")

    elapsed = await run_clients(url, concurrency, worker)
    return {"rate": len(paths) / elapsed, "p50": percentile(latencies, 0.5) * 1000,
            "p99": percentile(latencies, 0.99) * 1000}


async def big_transfer(url: str, method: str, path: str, data: bytes,
                       headers: dict[str, str] | None = None) -> dict[str, float]:
    conn = await RawHttp.connect(url)
    try:
        started = time.perf_counter()
        if method == "PUT":
            status, reply = await conn.request("PUT", path, headers, data)
            ok = status == 201
        else:
            status, reply = await conn.request("GET", path, headers, keep=False)
            ok = status == 200 and reply == len(data)
        elapsed = time.perf_counter() - started
    finally:
        await conn.aclose()
    if not ok:
        raise AssertionError(f"{method} {path}: {status} {reply!r:.200}")
    return {"rate": len(data) / elapsed / MB, "p50": elapsed * 1000, "p99": elapsed * 1000}


def summarise(runs: list[dict[str, float]]) -> dict[str, float]:
    """Median of each figure over the runs."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


async def measure(dep: Deployment, args: argparse.Namespace, small: bytes,
                  big: bytes) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    h = dep.headers
    warm = [f"{dep.base}/warm-{i}" for i in range(200)]
    await small_load(dep.url, "PUT", warm, args.concurrency, small, headers=h)
    peak = PeakRss(dep.pid).start()
    paths = [f"{dep.base}/small-{i:06d}" for i in range(args.small)]
    out["4 KiB PUT"] = await small_load(dep.url, "PUT", paths, args.concurrency, small, headers=h)
    out["4 KiB GET"] = await small_load(dep.url, "GET", paths, args.concurrency, small, headers=h)
    puts, gets = [], []
    for run in range(args.runs):
        path = f"{dep.base}/big-{run}"
        puts.append(await big_transfer(dep.url, "PUT", path, big, h))
        gets.append(await big_transfer(dep.url, "GET", path, big, h))
    out["64 MiB PUT"] = summarise(puts)
    out["64 MiB GET"] = summarise(gets)
    out["peak RSS"] = {"rate": peak.stop() / MB, "p50": 0.0, "p99": 0.0}
    if args.concurrent_big and not dep.headers:  # Arkor deployments: memory per upload is bounded
        out[f"{args.concurrent_big} x 64 MiB PUT at once"] = await concurrent_big(dep, args, big)
    return out


async def concurrent_big(dep: Deployment, args: argparse.Namespace, big: bytes) -> dict[str, float]:
    """`args.concurrent_big` PUTs of `big` at once: aggregate MB/s and the object server's peak RSS
    (process tree). A 503 slow_down (the upload budget is spent) is retried after a pause, as
    clients do with Retry-After; the figure counts the retries."""
    peak = PeakRss(dep.pid).start()
    retries = 0

    async def one(index: int) -> None:
        nonlocal retries
        while True:
            conn = await RawHttp.connect(dep.url)
            try:
                status, _reply = await conn.request("PUT", f"{dep.base}/many-{index}", None, big)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                status = 503  # answered early and closed while the body was still going
            finally:
                await conn.aclose()
            if status == 201:
                return
            if status != 503:
                raise AssertionError(f"concurrent PUT {index}: {status}")
            retries += 1
            await trio.sleep(0.5)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for index in range(args.concurrent_big):
            nursery.start_soon(one, index)
    elapsed = time.perf_counter() - started
    rss = peak.stop() / MB
    return {"rate": args.concurrent_big * len(big) / elapsed / MB, "p50": elapsed * 1000,
            "p99": elapsed * 1000, "rss": rss, "retries": float(retries)}


async def measure_floor(args: argparse.Namespace, small: bytes, big: bytes) -> dict[str, dict[str, float]]:
    """The floor's 4 KiB GET and PUT rates and its 64 MiB body drain rate, with the same client."""
    floor = await trio.to_thread.run_sync(Floor, len(small))
    try:
        paths = [f"/floor/{i}" for i in range(args.small)]
        return {
            "4 KiB PUT": await small_load(floor.url, "PUT", paths, args.concurrency, small),
            "4 KiB GET": await small_load(floor.url, "GET", paths, args.concurrency, small, check=False),
            "64 MiB PUT": summarise(
                [await big_transfer(floor.url, "PUT", "/floor/big", big) for _ in range(args.runs)]),
        }
    finally:
        floor.stop()


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="arkor-bench-object-", dir=args.dir))
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        small, big = os.urandom(SMALL), os.urandom(args.big)
        nginx = await trio.to_thread.run_sync(start_nginx, work, big, small)
        if nginx:
            try:
                ref: dict[str, dict[str, float]] = {}
                ref["4 KiB GET"] = await small_load(nginx.url, "GET", ["/k.bin"] * args.small,
                                                    args.concurrency, small)
                ref["64 MiB GET"] = summarise(
                    [await big_transfer(nginx.url, "GET", "/big.bin", big) for _ in range(args.runs)])
                results["nginx"] = ref
            finally:
                nginx.stop()
        results["floor"] = await measure_floor(args, small, big)
        raws = [await trio.to_thread.run_sync(raw_disk_write, work, big) for _ in range(args.runs)]
        results["disk"] = {"64 MiB PUT": {"rate": statistics.median(raws), "p50": 0.0, "p99": 0.0}}
        for kind in args.deployments:
            dep = await trio.to_thread.run_sync(start, kind, work, args)
            try:
                results[kind] = await measure(dep, args, small, big)
            finally:
                await trio.to_thread.run_sync(dep.stop)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args, results)


def report(args: argparse.Namespace, results: dict[str, dict[str, dict[str, float]]]) -> None:
    print(f"machine: {machine()}")
    print(f"4 KiB: {args.small} requests at {args.concurrency} concurrent; 64 MiB: {args.big} bytes, "
          f"median of {args.runs}; cluster object workers: {args.workers}")
    print()
    nginx = results.get("nginx", {})
    disk = results["disk"]["64 MiB PUT"]["rate"]
    print("| deployment | measure | rate | p50 ms | p99 ms | reference | ratio |")
    print("|---|---|---|---|---|---|---|")
    for kind in args.deployments:
        for name, fig in results.get(kind, {}).items():
            if name == "peak RSS":
                print(f"| {kind} | object server peak RSS | {fig['rate']:,.0f} MB | | | | |")
                continue
            if "at once" in name:
                print(f"| {kind} | {name} | {fig['rate']:,.0f} MB/s in all, object server peak RSS "
                      f"{fig['rss']:,.0f} MB, {fig['retries']:.0f} retried after 503 | | | | |")
                continue
            unit = "req/s" if name.startswith("4 KiB") else "MB/s"
            ref, ratio = "", ""
            if name in nginx:
                ref = f"nginx {nginx[name]['rate']:,.0f} {unit}"
                ratio = f"{fig['rate'] / nginx[name]['rate']:.2f}"
            elif name == "64 MiB PUT":
                ref = f"disk write+fsync {disk:,.0f} MB/s, /3 = {disk / 3:,.0f}"
                ratio = f"{fig['rate'] / (disk / 3):.2f} of /3"
            print(f"| {kind} | {name} | {fig['rate']:,.0f} {unit} | {fig['p50']:,.1f} | {fig['p99']:,.1f} "
                  f"| {ref} | {ratio} |")
    for name, fig in results.get("floor", {}).items():
        unit = "req/s" if name.startswith("4 KiB") else "MB/s"
        print(f"| floor | {name} | {fig['rate']:,.0f} {unit} | {fig['p50']:,.1f} | {fig['p99']:,.1f} | | |")
    goal_table(args, results)


GOALS = [  # (row, measure, reference, goal) as in issue 14
    ("4 KiB GET /s", "4 KiB GET", "floor", {"allinone": 0.6, "cluster": 0.5}),
    ("4 KiB PUT /s (3 fsynced replicas)", "4 KiB PUT", "floor", {"allinone": 0.4, "cluster": 0.3}),
    ("64 MiB PUT MB/s", "64 MiB PUT", "lower of floor drain and disk/3", {"allinone": 0.5, "cluster": 0.5}),
    ("64 MiB GET MB/s", "64 MiB GET", "nginx", {"allinone": 0.8, "cluster": 0.6}),
]


def goal_table(args: argparse.Namespace, results: dict[str, dict[str, dict[str, float]]]) -> None:
    """Issue 14's table: each measure as a ratio to its reference from this same run."""
    floor, nginx = results.get("floor", {}), results.get("nginx", {})
    disk_third = results["disk"]["64 MiB PUT"]["rate"] / 3
    print()
    print("| measure | deployment | Arkor | reference (same run) | ratio | goal |")
    print("|---|---|---|---|---|---|")
    arkor_kinds = [k for k in args.deployments if k != "swift"]
    for row, name, ref_name, goals in GOALS:
        for kind in arkor_kinds:
            fig = results.get(kind, {}).get(name)
            if fig is None:
                continue
            if ref_name == "floor":
                ref = floor.get(name, {}).get("rate")
                ref_text = f"floor {ref:,.0f}" if ref else "floor: not measured"
            elif ref_name == "nginx":
                ref = nginx.get(name, {}).get("rate")
                ref_text = f"nginx {ref:,.0f}" if ref else "nginx: not installed"
            else:
                drain = floor.get(name, {}).get("rate", disk_third)
                ref = min(drain, disk_third)
                ref_text = f"min(floor drain {drain:,.0f}, disk/3 {disk_third:,.0f})"
            ratio = f"{fig['rate'] / ref:.2f}" if ref else "n/a"
            print(f"| {row} | {kind} | {fig['rate']:,.0f} | {ref_text} | {ratio} | >= {goals[kind]} |")
    for kind in arkor_kinds:
        for name in ("4 KiB PUT", "4 KiB GET"):
            fig = results.get(kind, {}).get(name)
            if fig:
                print(f"| p99 / p50 of {name} | {kind} | {fig['p99']:,.1f} / {fig['p50']:,.1f} ms "
                      f"| | {fig['p99'] / max(fig['p50'], 1e-9):.1f} | <= 5 |")
    swift = results.get("swift")
    if swift and "cluster" in results:
        print()
        print("| measure | cluster | Swift SAIO (3 replicas, same run) | cluster / Swift | goal |")
        print("|---|---|---|---|---|")
        for name in ("4 KiB GET", "4 KiB PUT", "64 MiB PUT", "64 MiB GET"):
            ours, theirs = results["cluster"][name]["rate"], swift[name]["rate"]
            print(f"| {name} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f} | >= 3 |")


def cli() -> None:
    parser = throughput_parser(__doc__, small=3000)
    parser.add_argument("--workers", type=int, default=2, help="object.workers for the cluster")
    parser.add_argument("--concurrent-big", type=int, default=32,
                        help="64 MiB PUTs at once for the peak-RSS figure (0: skip)")
    parser.add_argument("--deployments", nargs="+", default=["allinone", "cluster", "swift"],
                        choices=["allinone", "cluster", "swift"],
                        help="swift: a Swift SAIO (3 replicas, tempauth) as the peer reference")
    parser.add_argument("--swift-venv", default=str(DEFAULT_VENV), help="Swift's own venv (made if missing)")
    trio.run(main, parser.parse_args())


if __name__ == "__main__":
    cli()
