"""Faults on links rather than on one replica, with 3 writers and 3 readers through the fault and
the heal: a whole group cut off (its three links down at the switch), a replica that the object
servers cannot reach while the registry still hears its heartbeats (a one-way partition: what the
object servers send it is dropped), and an object server cut from the registry.

Each checks what must hold whatever the engine does (nothing acknowledged lost, nothing deleted
back, nothing partial visible, the registry sees the truth after the heal, replicas converge) and
prints the figures.
"""

from __future__ import annotations

from tests.net.bed import HEARTBEAT_TIMEOUT, Bed
from tests.net.load import Ledger, assert_correct
from tests.net.scenarios import run_fault
from tests.net.test_replica_faults import OUT


async def test_group_partitioned(bed: Bed, ledger: Ledger) -> None:
    f = await run_fault(bed, ledger, "group", out=OUT)
    assert_correct(f)
    assert f.detect_s is not None and f.detect_s <= HEARTBEAT_TIMEOUT + 2.0, f.detect_s


async def test_replica_unreachable_from_object_servers(bed: Bed, ledger: Ledger) -> None:
    f = await run_fault(bed, ledger, "oneway", out=OUT)
    assert_correct(f)
    assert f.detect_s is None  # not expected down: its heartbeats still arrive


async def test_object_server_cut_from_registry(bed: Bed, ledger: Ledger) -> None:
    f = await run_fault(bed, ledger, "objcut", out=OUT)
    assert_correct(f)
