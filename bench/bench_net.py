"""Net benchmark: the net test bed's scenarios (tests/net) with longer fault windows, as a table.

Run as root (one benchmark at a time on the machine):

    flock /tmp/arkor-bench.lock .venv/bin/python -m bench.bench_net [--window 40] [--after 15]
        [--sqlite] [--only partition,sigstop,...] [--json FILE]

Builds the bed (registry, two object servers, two groups of three data servers and a load client,
each host its own network namespace, on MariaDB + Redis through relays, or SQLite + in-process KV
with --sqlite), then for each scenario runs 3 writers and 3 readers through the fault (--window s)
and after the heal (--after s), and checks every object and replica. Prints one Markdown row per
scenario: PUT and GET success (and within 2 s) during the fault, p50/p99 during, p99 after, time
to steer around, time for the registry to see the fault and the heal, time to converge, objects
verified and lost.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import uuid
from pathlib import Path

import trio

from bench.common import machine
from tests.chaos.cluster import backend_config, drop_backends
from tests.net.bed import Bed
from tests.net.load import SLOW, Figures, Ledger
from tests.net.netns import can_create_namespaces
from tests.net.scenarios import FAULTS, run_fault

MYSQL_URL = "mysql://root:@127.0.0.1:3306/"
REDIS_URL = "redis://127.0.0.1:6379/0"
HEADER = (
    "| scenario | PUT ok (≤2 s) during | GET ok (≤2 s) during | PUT p50 / p99 during | GET p50 / p99 during "
    "| PUT / GET p99 after | steer PUT / GET s | detect s | seen after heal s | converge s "
    "| verified | lost |\n" + "|---" * 12 + "|"
)


def _pc(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.0f}%"


def _s(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def row(f: Figures) -> str:
    return (
        f"| {f.scenario} | {_pc(f.rate('put', 'during'))} ({_pc(f.rate('put', 'during', 'prompt'))}) "
        f"of {f.put_during} | {_pc(f.rate('get', 'during'))} ({_pc(f.rate('get', 'during', 'prompt'))}) "
        f"of {f.get_during} | {_s(f.put_p50_during)} / {_s(f.put_p99_during)} "
        f"| {_s(f.get_p50_during)} / {_s(f.get_p99_during)} | {_s(f.put_p99_after)} / {_s(f.get_p99_after)} "
        f"| {_s(f.steer_put_s)} / {_s(f.steer_get_s)} | {_s(f.detect_s)} | {_s(f.seen_s)} "
        f"| {_s(f.converge_s)} | {f.objects_verified} | **{f.lost}** |"
    )


async def run(names: list[str], window: float, after: float, sqlite: bool, out: str | None) -> list[Figures]:
    unique = "nb" + uuid.uuid4().hex[:10]
    sql, kv, _ = backend_config(None if sqlite else MYSQL_URL, None if sqlite else REDIS_URL, unique)
    prefix = f"arkor-netbed:{unique}:"
    results = []
    with tempfile.TemporaryDirectory(prefix="arkor-bench-net-") as tmp:
        bed = Bed(Path(tmp), sql=sql, kv=kv, kv_prefix=prefix)
        try:
            await trio.to_thread.run_sync(bed.build)
            await trio.to_thread.run_sync(bed.start)
            async with bed.client() as client:
                await bed.wait_healthy(client, 120)
            ledger = Ledger()
            for name in names:
                results.append(await run_fault(bed, ledger, name, window=window, after=after, out=out))
        finally:
            bed.close()
            await drop_backends(sql, kv, prefix)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=40.0, help="seconds of each fault")
    parser.add_argument("--after", type=float, default=15.0, help="seconds of load after each heal")
    parser.add_argument("--sqlite", action="store_true", help="SQLite + in-process KV instead")
    parser.add_argument("--only", default=",".join(FAULTS), help="comma-separated scenario names")
    parser.add_argument("--json", help="append each scenario's figures to this file (JSON lines)")
    args = parser.parse_args()
    reason = can_create_namespaces()
    if reason:
        print(f"bench_net: {reason}", file=sys.stderr)
        return 2
    names = [n for n in args.only.split(",") if n]
    figures = trio.run(run, names, args.window, args.after, args.sqlite, args.json)
    print(f"machine: {machine()}")
    print(f"fault window {args.window:g} s, load after the heal {args.after:g} s, "
          f"3 writers + 3 readers, 'ok (≤2 s)' = succeeded within {SLOW:g} s")
    for f in figures:
        print(f"- {f.scenario}: {f.fault}; failures during: {f.failures_during or 'none'}")
    print(HEADER)
    for f in figures:
        print(row(f))
    bad = [f for f in figures if not f.data_intact or f.problems]
    for f in bad:
        print(f"{f.scenario}: problems: {f.problems}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
