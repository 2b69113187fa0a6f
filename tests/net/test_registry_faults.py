"""The registry down (SIGKILLed, then started again on its host with the same database) while 3
writers and 3 readers run: requests fail with 503 rather than hang, nothing acknowledged is lost,
nothing half-written becomes visible, service resumes by itself once it is back, and it sees every
data server up again within the heartbeat timeout of its restart.
"""

from __future__ import annotations

from tests.net.bed import Bed
from tests.net.load import Ledger, assert_correct
from tests.net.scenarios import run_fault
from tests.net.test_replica_faults import OUT


async def test_registry_down(bed: Bed, ledger: Ledger) -> None:
    f = await run_fault(bed, ledger, "regdown", out=OUT)
    assert_correct(f)
    assert f.put_ok_after > 0 and f.get_ok_after > 0
    # Already so before issue 13: with the registry refusing connections, answers are quick 503s.
    assert set(f.failures_during) <= {"put 503", "get 503", "delete 503"}, f.failures_during
    assert f.put_p99_during < 2.0 and f.get_p99_during < 2.0
