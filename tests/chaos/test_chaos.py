"""Chaos suite: a real cluster (registry, two object servers, two groups of three data servers) under
a PUT/DELETE/GET workload while data servers (one, two, a whole group), an object server and the
registry are SIGKILLed and restarted, volume files get torn tails and flipped bits, and a data server
is replaced by an empty one. Nothing acknowledged may be lost, nothing partial or deleted may be
visible, replicas must converge and no orphan needle may remain after reclaim.

Default: one round of the schedule (about 2-3 minutes on 2 cores). ARKOR_CHAOS_SECONDS=N keeps the
schedule repeating for N seconds (bench/bench_chaos.py). On MariaDB + Redis when they are reachable
(required when ARKOR_TEST_REQUIRE_SERVICES=1); otherwise on SQLite + the in-process KV.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from tests.chaos.harness import run_chaos
from tests.chaos.report import format_report


def optional_service(request: pytest.FixtureRequest, name: str) -> str | None:
    try:
        return request.getfixturevalue(name)
    except pytest.skip.Exception:
        return None


async def test_chaos_loses_nothing(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    report = await run_chaos(tmp_path, optional_service(request, "mysql_url"),
                             optional_service(request, "redis_url"),
                             float(os.environ.get("ARKOR_CHAOS_SECONDS", "0")), "c")
    print("chaos report:\n" + format_report(report))
    out = os.environ.get("ARKOR_CHAOS_REPORT")
    if out:
        await trio.Path(out).write_text(format_report(report))
    assert report.puts_acked > 0 and report.deletes_acked > 0
    assert report.kills >= 8 and report.corruptions_injected > 0
    assert report.data_intact, report.problems
    assert report.replicas_converged and report.orphans_left == 0, report.problems
    assert report.corrupt_copies_replaced > 0, report.problems
    assert not report.problems, report.problems
