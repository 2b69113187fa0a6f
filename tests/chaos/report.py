"""The chaos run's figures: the Report a run fills in and its JSON form; its Verdict (the final
check of every object) is also the net bed's (tests/net/load.py `Figures`).

What lives here: the counters and verdicts of one run (printed by tests/chaos, written to
docs/benchmarks.md by bench/bench_chaos.py). What must not: anything that runs the cluster or talks
to it (tests/chaos/cluster.py, workload.py, faults.py, verify.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(kw_only=True)
class Verdict:
    """The final check of every object a run wrote, the same for a chaos run and a net bed
    scenario: how many were verified, each way one was not as acknowledged, and why."""

    objects_verified: int = 0
    lost: int = 0
    wrong_data: int = 0
    partial_visible: int = 0
    resurrected: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def data_intact(self) -> bool:
        """Nothing acknowledged lost or wrong, nothing partly visible, nothing deleted came back."""
        return not (self.lost or self.wrong_data or self.partial_visible or self.resurrected)


@dataclass
class Report(Verdict):
    """One run's figures (printed by the test, written to docs/benchmarks.md by the benchmark)."""

    backend: str = ""
    seconds: float = 0.0
    puts_acked: int = 0
    puts_failed: int = 0
    deletes_acked: int = 0
    deletes_failed: int = 0
    gets_verified_during_run: int = 0
    gets_unavailable_during_run: int = 0
    bytes_acked: int = 0
    kills: int = 0
    kills_by_role: dict[str, int] = field(default_factory=dict)
    corruptions_injected: int = 0
    torn_tails_injected: int = 0
    corrupt_copies_replaced: int = 0
    replicas_converged: bool = False
    orphans_left: int = 0
    detect_seconds: list[float] = field(default_factory=list)
    repair_bytes: int = 0
    repair_seconds: float = 0.0
    repair_seconds_per_gib: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)



def format_report(report: Report) -> str:
    return json.dumps(report.to_json(), indent=1)
