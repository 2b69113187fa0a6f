"""Chaos benchmark: the chaos suite's cluster and schedule, repeated for a longer time.

Run (one benchmark at a time on the machine):

    flock /tmp/arkor-bench.lock .venv/bin/python -m bench.bench_chaos [--seconds 300] [--sqlite]

Starts the same real cluster as tests/chaos (one registry, two object servers, two groups of three
data servers) on MariaDB + Redis at 127.0.0.1 (or SQLite + in-process KV with --sqlite), runs the
PUT/DELETE/GET workload while the schedule of SIGKILLs and corruptions repeats for --seconds, then
verifies every object and replica. Prints the run's report (operations, kills, corruptions, objects
verified, lost, time to detect a dead server, repair seconds per GiB) as JSON and a Markdown row.
"""

from __future__ import annotations

import argparse
import sys

import trio

from bench.common import machine
from tests.chaos.harness import run_chaos
from tests.chaos.report import Report, format_report

MYSQL_URL = "mysql://root:@127.0.0.1:3306/"
REDIS_URL = "redis://127.0.0.1:6379/0"


async def run(seconds: float, sqlite: bool) -> Report:
    return await run_chaos(None, None if sqlite else MYSQL_URL, None if sqlite else REDIS_URL, seconds, "b")


def markdown(report: Report) -> str:
    detect = max(report.detect_seconds) if report.detect_seconds else float("nan")
    return (
        "| backend | seconds | PUT acked | DELETE acked | kills | corruptions | objects verified | lost "
        "| max detect s | repair s/GiB |\n|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {report.backend} | {report.seconds:.0f} | {report.puts_acked} | {report.deletes_acked} "
        f"| {report.kills} | {report.corruptions_injected} | {report.objects_verified} | {report.lost} "
        f"| {detect:.1f} | {report.repair_seconds_per_gib:.1f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--sqlite", action="store_true", help="SQLite + in-process KV instead")
    args = parser.parse_args()
    report = trio.run(run, args.seconds, args.sqlite)
    print(f"machine: {machine()}")
    print(format_report(report))
    print(markdown(report))
    return 1 if not report.data_intact or report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
