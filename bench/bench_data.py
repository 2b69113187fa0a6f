"""Data server benchmark: one real `arkor data` process over HTTP, with references in the same run.

Run (one benchmark at a time on the machine):

    flock /tmp/arkor-bench.lock .venv/bin/python -m bench.bench_data [--small 4000] [--big 64MiB]

Measures, against one `arkor data` process on loopback (its data directory under --dir, default a
temp dir on the same disk as /tmp):
- 1 KiB needle PUT/s and GET/s at --concurrency (32) concurrent requests (every PUT fsynced,
  grouped); reference: nginx serving a 1 KiB file to the same client, and single-writer 1 KiB
  append+fsync/s on the raw disk;
- 64 MiB needle PUT and GET MB/s (median of --runs); references: raw write+fsync of the same bytes
  to a file beside the volumes, and nginx serving the same 64 MiB file (if /usr/sbin/nginx exists,
  on a free port with a temp config); the data server's peak RSS during the transfers;
- engine level at --million (1,000,000) needles: index RAM per needle and the process RSS it adds,
  time to open the store from the index files and by a full scan without them, and time for a
  real `arkor data` process on those volumes to answer /healthz (restart to serving).

The load generator runs in this process (a minimal keep-alive HTTP/1.1 client on trio sockets, far
cheaper than httpx) and shares the 2 cores with the server; the nginx figures use the same client,
so their ratio is the fair comparison.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psutil
import trio

from arkor.checksum import crc32c
from arkor.data import needle as nd
from arkor.data.idxfile import IDX_HEADER, IDX_MAGIC, Record, idx_path
from arkor.data.store import NeedleStore
from arkor.data.volume import dat_path
from arkor.fileid import FileID
from arkor.security import signed_headers
from bench.common import MB, RawHttp, machine, raw_disk_write, run_clients, start_nginx, throughput_parser
from tests.procs import ArkorProcess, PeakRss, free_port, write_config

SECRET = "bench-data-secret"


def headers_for(fid: FileID, data: bytes) -> dict[str, str]:
    path = f"/needles/{fid}"
    crc = crc32c(data)
    return {**signed_headers(SECRET.encode(), "PUT", path, crc32c=crc), "x-arkor-crc32c": str(crc)}


async def small_requests(url: str, n: int, concurrency: int, method: str, paths: list[str]) -> float:
    """Requests per second for `n` 1 KiB PUTs (or GETs) of `paths[i]`, `concurrency` at a time,
    one keep-alive connection per concurrent client."""
    todo = iter(range(n))
    body = os.urandom(1024)
    crc_value = crc32c(body)
    crc = str(crc_value)
    secret = SECRET.encode()

    async def worker(conn: RawHttp) -> None:
        for i in todo:
            path = paths[i]
            if method == "PUT":
                headers = {**signed_headers(secret, "PUT", path, crc32c=crc_value), "x-arkor-crc32c": crc}
                status, data = await conn.request("PUT", path, headers, body)
                assert status == 201, (status, data)
            else:
                status, data = await conn.request("GET", path)
                assert status == 200 and len(data) == 1024, status  # type: ignore[arg-type]

    return n / await run_clients(url, concurrency, worker)


async def big_put(url: str, fid: FileID, data: bytes) -> float:
    conn = await RawHttp.connect(url)
    try:
        started = time.perf_counter()
        status, body = await conn.request("PUT", f"/needles/{fid}", headers_for(fid, data), data)
        elapsed = time.perf_counter() - started
    finally:
        await conn.aclose()
    assert status == 201, (status, body)
    return len(data) / elapsed / MB


async def big_get(url: str, path: str, size: int) -> float:
    conn = await RawHttp.connect(url)
    try:
        started = time.perf_counter()
        status, got = await conn.request("GET", path, keep=False)
        elapsed = time.perf_counter() - started
    finally:
        await conn.aclose()
    assert status == 200 and got == size, (status, got, size)
    return size / elapsed / MB


def raw_small_appends(directory: Path, n: int) -> float:
    """1 KiB append + fdatasync per write, one writer: what a PUT costs the disk without grouping."""
    path = directory / "raw-appends.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    body = os.urandom(1024)
    started = time.perf_counter()
    try:
        for _ in range(n):
            os.write(fd, body)
            os.fdatasync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - started
    path.unlink()
    return n / elapsed


# --- engine at a million needles -------------------------------------------------------------------


def build_volume(directory: Path, n: int, size: int) -> None:
    """Write one volume of `n` needles and its index file directly (fast set-up, same format)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    crc = crc32c(data)
    tail = data + nd.trailer(crc, size)
    length = nd.padded_length(size)
    ts = time.time_ns()
    with open(dat_path(directory, 1), "wb") as dat, open(idx_path(directory, 1), "wb") as idx:
        dat.write(nd.pack_superblock(1, 0))
        idx.write(IDX_HEADER.pack(IDX_MAGIC, 1, 0, 1, 0))
        offset = nd.SUPERBLOCK_SIZE
        batch_d, batch_i = [], []
        for key in range(1, n + 1):
            cookie = key * 2654435761 & 0xFFFFFFFF
            batch_d.append(nd.pack_header(nd.Header(key, cookie, size, ts)) + tail)
            batch_i.append(Record(offset, key, cookie, size, crc, ts, 0).pack())
            offset += length
            if len(batch_d) == 50_000:
                dat.write(b"".join(batch_d))
                idx.write(b"".join(batch_i))
                batch_d, batch_i = [], []
        dat.write(b"".join(batch_d))
        idx.write(b"".join(batch_i))
        dat.flush()
        os.fsync(dat.fileno())


async def open_store(directory: Path) -> tuple[float, NeedleStore]:
    started = time.perf_counter()
    store = await NeedleStore.open(directory, volume_size=4 * 1024**3, reserve_bytes=0,
                                   max_needle_size=256 * 1024**2, disk_threads=4)
    return time.perf_counter() - started, store


async def engine_million(work: Path, n: int) -> dict[str, float]:
    directory = work / "million"
    started = time.perf_counter()
    await trio.to_thread.run_sync(build_volume, directory, n, 100)
    out: dict[str, float] = {"build_s": time.perf_counter() - started}
    gc.collect()
    rss0 = psutil.Process().memory_info().rss
    seconds, store = await open_store(directory)
    gc.collect()
    out["rss_per_needle"] = (psutil.Process().memory_info().rss - rss0) / n
    out["index_bytes_per_needle"] = store.index.memory_bytes() / len(store.index)
    out["open_from_index_s"] = seconds
    assert store.live_needles == n
    probe = FileID(1, n // 2, (n // 2) * 2654435761 & 0xFFFFFFFF)
    assert len(await store.get(probe)) == 100
    await store.aclose()
    del store
    gc.collect()
    # full scan: no index files (they are rewritten by the scan)
    for idx in directory.glob("*.idx"):
        idx.unlink()
    seconds, store = await open_store(directory)
    out["open_by_scan_s"] = seconds
    assert store.load_stats["scanned_needles"] == n
    await store.aclose()
    del store
    gc.collect()
    # a real process restarting on these volumes: time until it answers /healthz
    port = free_port()
    config = write_config(work / "million.yaml", {
        "run": {"logPath": str(work / "log")}, "cluster": {"secret": SECRET},
        "data": {"port": port, "dir": str(directory), "registry": "", "reserveBytes": 0},
    })
    proc = ArkorProcess("data", config, port, log_path=work / "million.log")
    started = time.perf_counter()
    proc.start(wait=0)
    await trio.to_thread.run_sync(lambda: proc.wait_ready(300))
    out["process_restart_s"] = time.perf_counter() - started
    out["process_rss_mb"] = proc.rss_bytes() / MB
    proc.stop()
    empty_port = free_port()
    empty = ArkorProcess("data", write_config(work / "empty.yaml", {
        "run": {"logPath": str(work / "log")}, "cluster": {"secret": SECRET},
        "data": {"port": empty_port, "dir": str(work / "empty"), "registry": ""},
    }), empty_port, log_path=work / "empty.log").start(wait=60)
    out["empty_process_rss_mb"] = empty.rss_bytes() / MB
    empty.stop()
    out["process_rss_per_needle"] = (out["process_rss_mb"] - out["empty_process_rss_mb"]) * MB / n
    shutil.rmtree(directory)
    return out


# --- main ------------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="arkor-bench-data-", dir=args.dir))
    results: dict[str, float] = {}
    try:
        port = free_port()
        config = write_config(work / "runtime.yaml", {
            "run": {"logPath": str(work / "log")}, "cluster": {"secret": SECRET},
            "data": {"port": port, "dir": str(work / "data"), "registry": ""},
        })
        proc = ArkorProcess("data", config, port, log_path=work / "data.log").start(wait=60)
        big = os.urandom(args.big)
        nginx = await trio.to_thread.run_sync(start_nginx, work, big)
        try:
            paths = [f"/needles/{FileID(1, k, k * 7 + 1)}" for k in range(1, args.small + 1)]
            warm = [f"/needles/{FileID(1, 10**9 + k, 1)}" for k in range(200)]
            await small_requests(proc.url, len(warm), args.concurrency, "PUT", warm)
            results["small_put_per_s"] = await small_requests(
                proc.url, args.small, args.concurrency, "PUT", paths)
            results["small_get_per_s"] = await small_requests(
                proc.url, args.small, args.concurrency, "GET", paths)
            if nginx:
                results["nginx_small_get_per_s"] = await small_requests(
                    nginx.url, args.small, args.concurrency, "GET", ["/k.bin"] * args.small)
            results["raw_small_fsync_per_s"] = await trio.to_thread.run_sync(raw_small_appends, work, 2000)
            puts, gets, raws, ngx = [], [], [], []
            peak = PeakRss(proc.pid or 0).start()
            for run in range(args.runs):
                fid = FileID(1, 2 * 10**9 + run, 99)
                puts.append(await big_put(proc.url, fid, big))
                gets.append(await big_get(proc.url, f"/needles/{fid}", len(big)))
                raws.append(await trio.to_thread.run_sync(raw_disk_write, work, big))
                if nginx:
                    ngx.append(await big_get(nginx.url, "/big.bin", len(big)))
            results["peak_rss_big_mb"] = peak.stop() / MB
            results["big_put_mb_s"] = statistics.median(puts)
            results["big_get_mb_s"] = statistics.median(gets)
            results["raw_write_fsync_mb_s"] = statistics.median(raws)
            if ngx:
                results["nginx_big_get_mb_s"] = statistics.median(ngx)
        finally:
            if nginx:
                nginx.stop()
            proc.stop()
        if args.million:
            results.update(await engine_million(work, args.million))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args, results)


def report(args: argparse.Namespace, r: dict[str, float]) -> None:
    print(f"machine: {machine()}")
    print(f"1 KiB needles: {args.small} requests at {args.concurrency} concurrent; big: {args.big} bytes x "
          f"{args.runs}")
    print()
    print("| measure | arkor data | reference | ratio |")
    print("|---|---|---|---|")

    def row(name: str, ours: str, ref: str | None, unit: str) -> None:
        if ours not in r:
            return
        if ref and ref in r:
            ratio = r[ours] / r[ref]
            print(f"| {name} | {r[ours]:,.0f} {unit} | {r[ref]:,.0f} {unit} ({ref}) | {ratio:.2f} |")
        else:
            print(f"| {name} | {r[ours]:,.0f} {unit} | | |")

    row("1 KiB PUT (fsynced)", "small_put_per_s", "raw_small_fsync_per_s", "req/s")
    row("1 KiB GET", "small_get_per_s", "nginx_small_get_per_s", "req/s")
    row("64 MiB PUT", "big_put_mb_s", "raw_write_fsync_mb_s", "MB/s")
    row("64 MiB GET", "big_get_mb_s", "nginx_big_get_mb_s", "MB/s")
    print()
    for key, value in r.items():
        print(f"{key}: {value:,.3f}")


def cli() -> None:
    parser = throughput_parser(__doc__, small=4000)
    parser.add_argument("--million", type=int, default=1_000_000)
    trio.run(main, parser.parse_args())


if __name__ == "__main__":
    cli()
