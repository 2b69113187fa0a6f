"""The faults of issue 13 as named scenarios, shared by the net tests and bench/bench_net.py.

Each scenario names the fault, how to apply it to a bed (the heal undoes it) and which data servers
the registry should see down while it lasts. What must not live here: the load, the figures, the
pass/fail policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.net.bed import Bed
from tests.net.load import Figures, Ledger, Scenario, dump, summary


@dataclass(frozen=True)
class Fault:
    text: str
    apply: Callable[[Bed], None]
    expect_down: list[str] = field(default_factory=list)


def _cut_group(bed: Bed) -> None:
    for host in ("d21", "d22", "d23"):
        bed.link_down(host)


FAULTS: dict[str, Fault] = {
    "partition": Fault("d12 partitioned (iptables DROP both ways)",
                       lambda bed: bed.partition("d12"), ["d12"]),
    "sigstop": Fault("d11 SIGSTOPped (holds its connections, answers nothing)",
                     lambda bed: bed.stop_process("d11"), ["d11"]),
    "slow": Fault("d13 +200 ms a round trip (delaying relay on its link)", lambda bed: bed.slow(0.2)),
    "lossy": Fault("d12 link drops 10 % of packets both ways", lambda bed: bed.lossy("d12", 0.10)),
    "group": Fault("group 2 cut off (its three links down at the switch)", _cut_group,
                   ["d21", "d22", "d23"]),
    "oneway": Fault("d23 drops what the object servers send it (one-way; the registry still hears it)",
                    lambda bed: bed.partition("d23", peers=["obj1", "obj2"], inbound_only=True)),
    "objcut": Fault("obj1 cut from the registry (both ways)",
                    lambda bed: bed.partition("obj1", peers=["reg"])),
    "regdown": Fault("registry SIGKILLed, started again at the heal",
                     lambda bed: bed.kill_process("reg")),
}


async def run_fault(bed: Bed, ledger: Ledger, name: str, *, window: float = 12.0, after: float = 6.0,
                    out: str | Path | None = None) -> Figures:
    """Run scenario `name` on `bed`, print its one-line summary, append its figures to `out`."""
    fault = FAULTS[name]
    figures = await Scenario(bed, ledger, name).run(
        fault.text, lambda: fault.apply(bed), window=window, after=after,
        expect_down=fault.expect_down or None,
    )
    print(summary(figures), flush=True)
    dump(figures, out)
    return figures
