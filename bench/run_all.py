"""`make bench`: every benchmark in turn (never two at once on this 2-core machine), each one's
output kept in bench/results/<name>.md for docs/benchmarks.md."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = ["bench_data", "bench_registry", "bench_object", "bench_sdk", "bench_lfs", "bench_s3",
              "bench_chaos", "bench_net"]
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    failed = []
    for name in sys.argv[1:] or BENCHMARKS:
        started = time.monotonic()
        print(f"== {name}", flush=True)
        with open(RESULTS / f"{name}.md", "w") as out:
            code = subprocess.call([sys.executable, "-m", f"bench.{name}"], stdout=out)
        print(f"   exit {code} in {time.monotonic() - started:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
