"""The chaos harness: a real multi-process Arkor cluster, a PUT/DELETE/GET workload, a schedule of
SIGKILLs and disk corruptions, and the checks that nothing acknowledged was lost.

Used by tests/chaos/test_chaos.py (short run) and bench/bench_chaos.py (ARKOR_CHAOS_SECONDS).
What lives here: one run's order (start, workload under the fault schedule, replacement, checks)
and the entry point both callers share. The parts live by concern in cluster.py (processes,
backends), workload.py (writers, reader, acked-object book), faults.py (kills, corruptions) and
verify.py (convergence and read-back verdicts); report.py holds the figures.
"""

from __future__ import annotations

import random
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import trio

from tests.chaos.cluster import ORPHAN_GRACE, Cluster, backend_config, drop_backends
from tests.chaos.faults import Faults
from tests.chaos.report import Report
from tests.chaos.verify import Verifier
from tests.chaos.workload import MIB, Workload


class ChaosRun:
    """One run over `cluster`: the fault schedule repeats for `chaos_seconds` (at least one round)."""

    def __init__(self, cluster: Cluster, chaos_seconds: float, seed: int = 7) -> None:
        self.cluster = cluster
        self.chaos_seconds = chaos_seconds
        self.report = Report()
        self.log_lines: list[str] = []
        self.workload = Workload(cluster, self.report)
        self.faults = Faults(cluster, self.report, random.Random(seed), self.log)
        self.verifier = Verifier(cluster, self.report, self.workload, self.log)

    def log(self, message: str) -> None:
        line = f"[chaos {time.strftime('%H:%M:%S')}] {message}"
        self.log_lines.append(line)
        print(line, flush=True)

    async def run(self) -> Report:
        started = time.monotonic()
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            await self.cluster.start()
            if not await self.cluster.wait_healthy(client, 120):
                raise RuntimeError("cluster never became healthy")
            self.log("cluster up")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.workload.writer, client, 0, 64 * MIB)
                nursery.start_soon(self.workload.writer, client, 1, None)
                nursery.start_soon(self.workload.writer, client, 2, None)
                nursery.start_soon(self.workload.reader, client)
                await trio.sleep(3)
                await self.faults.schedule(client, self.chaos_seconds)
                self.workload.stop_writers.set()
            self.log(f"workload stopped: {self.report.puts_acked} PUTs acked")
            await self.faults.replace_server(client)
            if not await self.cluster.wait_healthy(client, 120):
                self.report.problems.append("cluster not healthy at the end")
            await self.verifier.verify_replicas(client, 120)
            await self.verifier.scrape_replaced(client)
            self.log("waiting for orphans to be reclaimed and replicas to converge")
            await self.verifier.converge(client, ORPHAN_GRACE * 3 + 90)
            await self.verifier.verify_objects(client)
        self.report.seconds = round(time.monotonic() - started, 1)
        return self.report



async def run_chaos(
    tmp: Path | None, mysql_url: str | None, redis_url: str | None, seconds: float, tag: str
) -> Report:
    """One whole run on the backends named (SQLite / in-process KV where None), cleaned up after.

    `tmp` holds the processes' data and logs (a temporary directory when None); `tag` starts the
    unique MariaDB schema and Redis key prefix, so that runs never share state.
    """
    unique = tag + uuid.uuid4().hex[:10]
    sql, kv, backend = backend_config(mysql_url, redis_url, unique)
    prefix = f"arkor-chaos:{unique}:"
    with tempfile.TemporaryDirectory(prefix="arkor-chaos-") as scratch:
        cluster = Cluster(tmp or Path(scratch), sql, kv, prefix)
        chaos = ChaosRun(cluster, seconds)
        chaos.report.backend = backend
        try:
            return await chaos.run()
        finally:
            cluster.stop()
            await drop_backends(sql, kv, prefix)
