"""The registry down (SIGKILLed, then started again on its host with the same database) while 3
writers and 3 readers run: nothing acknowledged is lost, nothing half-written becomes visible,
service resumes by itself once it is back, and it sees every data server up again within the
heartbeat timeout of its restart.
"""

from __future__ import annotations

from tests.net.bed import Bed
from tests.net.load import Ledger, assert_correct
from tests.net.test_replica_faults import run


async def test_registry_down(bed: Bed, ledger: Ledger) -> None:
    f = await run(bed, ledger, "regdown", "registry SIGKILLed, restarted at the heal",
                  lambda: bed.kill_process("reg"))
    assert_correct(f)
    assert f.put_ok_after > 0 and f.get_ok_after > 0
