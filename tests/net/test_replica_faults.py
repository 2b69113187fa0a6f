"""One replica of group 1 in trouble while 3 writers and 3 readers run through the fault and the
heal: partitioned, stopped (SIGSTOP, a gray failure), slow (+200 ms a round trip) and lossy (10 %).

Each scenario checks that requests steer around the replica (issue 13: most succeed within 2 s,
bounded p99) and what must hold whatever the engine does: every acknowledged object reads back
intact, nothing deleted comes back, nothing half-written is visible, the registry sees every server
up again within the heartbeat timeout after the heal, and the replicas converge. The figures
(success rates, p50/p99 during and after, time to steer around, time to converge) are printed, and
appended as JSON lines to $ARKOR_NET_FIGURES when set.
"""

from __future__ import annotations

import os

from tests.net.bed import HEARTBEAT_TIMEOUT, Bed
from tests.net.load import Figures, Ledger, assert_correct, summary
from tests.net.scenarios import run_fault

OUT = os.environ.get("ARKOR_NET_FIGURES")
# Issue 13: with one replica in trouble, requests steer around it within a few seconds (separate
# connect / first-byte timeouts, unhealthy replicas avoided, hedged reads). Loose bounds, far from
# the behaviour before (nothing within 2 s for the whole fault, p99 the fault window or more), so a
# loaded machine does not make them flaky.
PROMPT = 0.8  # share of requests started during the fault that succeed within 2 s
P99 = 8.0  # seconds; the fault window is 12 s


def assert_steered(f: Figures) -> None:
    """PUTs and GETs keep succeeding promptly through the fault, with a bounded p99."""
    for kind in ("put", "get"):
        assert f.rate(kind, "during", "prompt") >= PROMPT, (kind, summary(f))
        assert getattr(f, f"{kind}_p99_during") <= P99, (kind, summary(f))
    assert f.steer_put_s is not None and f.steer_put_s <= P99, summary(f)


async def test_replica_partitioned(bed: Bed, ledger: Ledger) -> None:
    f = await run_fault(bed, ledger, "partition", out=OUT)
    assert_correct(f)
    assert_steered(f)
    assert f.detect_s is not None and f.detect_s <= HEARTBEAT_TIMEOUT + 2.0, f.detect_s


async def test_replica_stopped(bed: Bed, ledger: Ledger) -> None:
    f = await run_fault(bed, ledger, "sigstop", out=OUT)
    assert_correct(f)
    assert_steered(f)
    assert f.detect_s is not None and f.detect_s <= HEARTBEAT_TIMEOUT + 2.0, f.detect_s


async def test_replica_slow(bed: Bed, ledger: Ledger) -> None:
    f = await run_fault(bed, ledger, "slow", out=OUT)
    assert_correct(f)
    # Already absorbed before issue 13: a slow replica makes nothing fail; hedged reads keep GET p99
    # near one round trip to the slow replica.
    assert f.rate("put", "during") >= 0.9 and f.rate("get", "during") >= 0.9, f.failures_during
    assert_steered(f)
    assert f.get_p99_during <= 2.0, summary(f)


async def test_replica_lossy(bed: Bed, ledger: Ledger) -> None:
    f = await run_fault(bed, ledger, "lossy", out=OUT)
    assert_correct(f)
    assert f.rate("put", "during") >= 0.9 and f.rate("get", "during") >= 0.9, f.failures_during
    assert_steered(f)
