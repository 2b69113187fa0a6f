"""SDK throughput: a large upload and download with 1 and 8 connections, beside curl, same run.

Run (one benchmark at a time on the machine):

    flock /tmp/arkor-bench.lock .venv/bin/python -m bench.bench_sdk [--size 1GiB] [--runs 2]

It starts a real `arkor allinone` on free ports with its data in a temporary directory, writes a
test file, then for each run times: curl PUT (-T, one connection) and curl GET (-o file); the SDK's
put_file and get_file with concurrency 1 and 8. Every variant moves the same bytes to and from the
same server; downloads go to a file for all of them. The SDK verifies every transfer against the
ETag (MD5); curl verifies nothing, so the SDK's figures include that work. Prints a Markdown table
(best and median MB/s per variant) and the peak RSS of the benchmark process (the SDK side).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

from arkor.client import ArkorClient
from arkor.config import parse_size
from tests.object.cluster import start_allinone

MB = 1_000_000


def write_file(path: Path, size: int) -> str:
    """Incompressible bytes (16 MiB of urandom, each copy stamped with its offset)."""
    block = os.urandom(16 * 1024 * 1024)
    md5 = hashlib.md5()
    with open(path, "wb") as fh:
        for offset in range(0, size, len(block)):
            data = (offset.to_bytes(8, "little") + block[8:])[: min(len(block), size - offset)]
            fh.write(data)
            md5.update(data)
    return md5.hexdigest()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def curl_put(path: Path, url: str) -> None:
    subprocess.run(["curl", "-sS", "-f", "-o", os.devnull, "-T", str(path), url], check=True)


def curl_get(url: str, path: Path) -> None:
    subprocess.run(["curl", "-sS", "-f", "-o", str(path), url], check=True)


def file_md5(path: Path) -> str:
    md5 = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(16 * 1024 * 1024):
            md5.update(block)
    return md5.hexdigest()


def sdk_put(url: str, path: Path, key: str, concurrency: int, part_size: int) -> None:
    async def main() -> None:
        async with ArkorClient(url, concurrency=concurrency, part_size=part_size, timeout=300) as arkor:
            await arkor.put_file("bench", key, path)

    trio.run(main)


def sdk_get(url: str, key: str, path: Path, concurrency: int, part_size: int) -> None:
    async def main() -> None:
        async with ArkorClient(url, concurrency=concurrency, part_size=part_size, timeout=300) as arkor:
            await arkor.get_file("bench", key, path)

    trio.run(main)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB", help="file size (default 1GiB)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--part-size", default="16MiB", help="SDK part / range size (default 16MiB)")
    parser.add_argument("--workdir", default=None, help="where the temporary data goes")
    args = parser.parse_args(argv)
    size, part = parse_size(args.size), parse_size(args.part_size)

    with tempfile.TemporaryDirectory(prefix="arkor-bench-sdk-", dir=args.workdir) as tmp:
        root = Path(tmp)
        src, out = root / "src.bin", root / "out.bin"
        digest = write_file(src, size)
        server = start_allinone(root / "server")
        url = server.url
        obj = f"{url}/v1/bench"
        results: dict[str, list[float]] = {}

        def record(name: str, seconds: float) -> None:
            results.setdefault(name, []).append(size / seconds / MB)
            print(f"  {name:<22} {size / seconds / MB:8.1f} MB/s  ({seconds:.2f} s)", file=sys.stderr)

        try:
            for run in range(1, args.runs + 1):
                print(f"run {run}/{args.runs}", file=sys.stderr)
                # Every variant overwrites the same few keys, so old fragments are reclaimed.
                record("curl PUT", timed(lambda: curl_put(src, f"{obj}/curl")))
                record("curl GET", timed(lambda: curl_get(f"{obj}/curl", out)))
                out.unlink(missing_ok=True)
                for conc in (1, 8):
                    record(f"SDK put, {conc} conn",
                           timed(lambda c=conc: sdk_put(url, src, f"sdk{c}", c, part)))
                for conc in (1, 8):
                    record(f"SDK get, {conc} conn",
                           timed(lambda c=conc: sdk_get(url, "sdk8", out, c, part)))
                    out.unlink(missing_ok=True)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            curl_get(f"{obj}/sdk1", out)
            assert file_md5(out) == digest, "the bytes stored by the SDK differ from the file"
        finally:
            server.stop()

    print(f"\n{size / 2**20:.0f} MiB, {args.runs} runs, SDK part/range size {part / 2**20:.0f} MiB, "
          f"allinone on loopback, {os.cpu_count()} CPUs\n")
    print("| transfer | best MB/s | median MB/s |")
    print("|---|---:|---:|")
    for name, values in results.items():
        print(f"| {name} | {max(values):.0f} | {statistics.median(values):.0f} |")
    print(f"\npeak RSS of the benchmark process (SDK side): {rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
