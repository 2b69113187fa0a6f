"""Faults on links rather than on one replica, with 3 writers and 3 readers through the fault and
the heal: a whole group cut off (its three links down at the switch), a replica that the object
servers cannot reach while the registry still hears its heartbeats (a one-way partition: what the
object servers send it is dropped), and an object server cut from the registry.

Each checks issue 13's behaviour (writes steer to the healthy group or replicas; what cannot be
served is a prompt 503, never a hang) and what must hold whatever the engine does (nothing
acknowledged lost, nothing deleted back, nothing partial visible, the registry sees the truth after
the heal, replicas converge), and prints the figures.
"""

from __future__ import annotations

from tests.net.bed import HEARTBEAT_TIMEOUT, Bed
from tests.net.load import Ledger, assert_correct, summary
from tests.net.scenarios import run_fault
from tests.net.test_replica_faults import OUT, P99, PROMPT, assert_steered

REGISTRY_TIMEOUT = 10.0  # object.registryTimeout's default: an answer comes within it


async def test_group_partitioned(bed: Bed, ledger: Ledger) -> None:
    f = await run_fault(bed, ledger, "group", out=OUT)
    assert_correct(f)
    # Writes go to the other group; reads of objects on the cut group fail with a clear 503, not a
    # hang or a dropped connection.
    assert f.rate("put", "during", "prompt") >= PROMPT and f.put_p99_during <= P99, summary(f)
    assert set(f.failures_during) <= {"get 503"}, f.failures_during
    assert f.get_p99_during <= REGISTRY_TIMEOUT, summary(f)
    assert f.detect_s is not None and f.detect_s <= HEARTBEAT_TIMEOUT + 2.0, f.detect_s


async def test_replica_unreachable_from_object_servers(bed: Bed, ledger: Ledger) -> None:
    f = await run_fault(bed, ledger, "oneway", out=OUT)
    assert_correct(f)
    assert_steered(f)
    assert f.detect_s is None  # not expected down: its heartbeats still arrive


async def test_object_server_cut_from_registry(bed: Bed, ledger: Ledger) -> None:
    f = await run_fault(bed, ledger, "objcut", out=OUT)
    assert_correct(f)
    # Through obj1 requests fail with 503 within the registry timeout (obj2 keeps serving); service
    # resumes by itself after the heal.
    assert set(f.failures_during) <= {"put 503", "get 503", "delete 503"}, f.failures_during
    assert max(f.put_p99_during, f.get_p99_during) <= REGISTRY_TIMEOUT + 1.0, summary(f)
    assert f.resume_put_s is not None and f.resume_put_s <= 5.0, summary(f)
