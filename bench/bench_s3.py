"""S3 API benchmark: real S3 clients beside the v1 API on the same `arkor allinone`, in the same run.

Run (one benchmark at a time on the machine):

    flock /tmp/arkor-bench.lock .venv/bin/python -m bench.bench_s3 [--big 1GiB] [--small 1000]

Measures, each as wall time and as the object server's CPU seconds (the allinone process tree), so
the client programs' own cost (aws-cli is Python) can be told apart from the server's:
- large: `aws s3 cp` of one `--big` file up and down (aws-cli: multipart from 8 MiB, SigV4, CRC32
  checksums) beside `curl -T` / `curl -o` of the same file through the v1 API;
- small: `rclone copy` of `--small` files of 4 KiB up and down (S3, SigV4) beside the same files
  PUT and GET through the v1 API by httpx at rclone's concurrency (--transfers). rclone HEADs every
  object after its PUT unless `--no-head` (rclone --s3-no-head): two requests per object against
  v1's one, so run both ways to tell the client's habits from the server's cost.
- small, one client: the same 4 KiB PUTs and GETs through both APIs by one client (`same_client`:
  SigV4 headers computed beforehand against HTTP Basic), so the server's CPU per request shows
  the cost of the S3 API itself apart from the clients' habits.
v1 requests carry the access key's credentials (HTTP Basic), as in production.
Prints a Markdown table and the S3/v1 cost ratios against the issue-12 goals: S3 costs at most 10 %
more than v1 for large objects and 25 % more for small ones.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import httpx
import psutil
import trio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from arkor.config import parse_size
from bench.common import MB, RawHttp, machine, run_clients
from tests.object.cluster import start_allinone

ACCESS_KEY = "AKIDARKORBENCH000001"
SECRET_KEY = "arkor-bench-secret-0123456789"
REGION = "us-east-1"
BUCKET = "bench-s3"
BIN = Path(sys.executable).parent


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children so far."""
    total = 0.0
    try:
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            times = p.cpu_times()
            total += times.user + times.system
    except psutil.Error:
        pass
    return total


def timed(pid: int, action: Callable[[], object]) -> dict[str, float]:
    """Wall seconds and server CPU seconds of `action`."""
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    action()
    return {"wall": time.perf_counter() - t0, "cpu": cpu_seconds(pid) - cpu0}


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=3600)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])}... exit {done.returncode}: {done.stderr.decode()[-800:]}")


def client_env(work: Path, s3_url: str) -> dict[str, str]:
    """Environment for aws-cli and rclone: credentials and endpoint, no stray user config (an inherited
    AWS_CA_BUNDLE makes rclone's SDK fail before it sends anything, even over plain http)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": str(work / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "aws-credentials"),
        "RCLONE_CONFIG": str(work / "rclone.conf"),
        "RCLONE_CONFIG_ARKOR_TYPE": "s3", "RCLONE_CONFIG_ARKOR_PROVIDER": "Other",
        "RCLONE_CONFIG_ARKOR_ENDPOINT": s3_url, "RCLONE_CONFIG_ARKOR_REGION": REGION,
        "RCLONE_CONFIG_ARKOR_ACCESS_KEY_ID": ACCESS_KEY,
        "RCLONE_CONFIG_ARKOR_SECRET_ACCESS_KEY": SECRET_KEY,
    }


def same_file(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(1 << 22), fb.read(1 << 22)
            if x != y:
                return False
            if not x:
                return True


def large(args: argparse.Namespace, work: Path, pid: int, s3_url: str, v1_url: str,
          env: dict[str, str]) -> dict[str, dict[str, float]]:
    src = work / "big.bin"
    if not src.exists():
        with src.open("wb") as sink:
            left = args.big
            while left:
                sink.write(os.urandom(min(left, 1 << 24)))
                left -= min(left, 1 << 24)
    aws = [str(BIN / "aws"), "--endpoint-url", s3_url, "s3", "cp", "--only-show-errors"]
    curl = ["curl", "-sS", "--fail", "-o", "/dev/null"]
    out: dict[str, dict[str, float]] = {}
    out["large PUT s3"] = timed(pid, lambda: run([*aws, str(src), f"s3://{BUCKET}/big"], env))
    out["large PUT v1"] = timed(pid, lambda: run([*curl, "-T", str(src), f"{v1_url}/v1/{BUCKET}/big-v1"]))
    down = work / "big.down"
    out["large GET s3"] = timed(pid, lambda: run([*aws, f"s3://{BUCKET}/big", str(down)], env))
    if not same_file(src, down):
        raise AssertionError("the object read back through S3 differs from the file sent")
    down.unlink()
    out["large GET v1"] = timed(pid, lambda: run(["curl", "-sS", "--fail", "-o", str(down),
                                                  f"{v1_url}/v1/{BUCKET}/big-v1"]))
    if not same_file(src, down):
        raise AssertionError("the object read back through v1 differs from the file sent")
    down.unlink()
    return out


async def v1_small(url: str, paths: list[str], files: list[Path], concurrency: int, method: str) -> None:
    todo = iter(zip(paths, files, strict=True))
    async with httpx.AsyncClient(base_url=url, timeout=60, auth=(ACCESS_KEY, SECRET_KEY)) as client:
        async def worker() -> None:
            for path, file in todo:
                if method == "PUT":
                    response = await client.put(path, content=file.read_bytes())
                    ok = response.status_code in (200, 201)
                else:
                    response = await client.get(path)
                    ok = response.status_code == 200 and response.content == file.read_bytes()
                if not ok:
                    raise AssertionError(f"{method} {path}: {response.status_code} {response.text[:200]}")

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)


def small(args: argparse.Namespace, work: Path, pid: int, s3_url: str, v1_url: str,
          env: dict[str, str], run_no: int) -> dict[str, dict[str, float]]:
    src = work / "small"
    if not src.exists():
        src.mkdir()
        for i in range(args.small):
            (src / f"f{i:05d}").write_bytes(os.urandom(4096))
    files = sorted(src.iterdir())
    rclone = ["rclone", "--transfers", str(args.transfers), "--s3-no-check-bucket", "--retries", "1"]
    if args.no_head:
        rclone.append("--s3-no-head")
    prefix = f"run{run_no}"

    def s3() -> dict[str, dict[str, float]]:
        out = {"small PUT s3": timed(pid, lambda: run(
            [*rclone, "copy", str(src), f"arkor:{BUCKET}/{prefix}-s3"], env))}
        down = work / f"{prefix}.down"
        out["small GET s3"] = timed(pid, lambda: run(
            [*rclone, "copy", f"arkor:{BUCKET}/{prefix}-s3", str(down)], env))
        mismatched = [f.name for f in files if (down / f.name).read_bytes() != f.read_bytes()]
        if mismatched:
            raise AssertionError(f"{len(mismatched)} small objects differ after the S3 round trip")
        shutil.rmtree(down)
        return out

    def v1() -> dict[str, dict[str, float]]:
        paths = [f"/v1/{BUCKET}/{prefix}-v1/{f.name}" for f in files]
        return {f"small {method} v1": timed(pid, lambda m=method: trio.run(  # type: ignore[misc]
            v1_small, v1_url, paths, files, args.transfers, m)) for method in ("PUT", "GET")}

    # Alternate which API goes first, so background work (scrub, flushes) falls on both alike.
    first, second = (s3, v1) if run_no % 2 else (v1, s3)
    return {**first(), **second()}


def same_client(args: argparse.Namespace, pid: int, s3_url: str, v1_url: str,
                run_no: int) -> dict[str, dict[str, float]]:
    """The small objects through both APIs by ONE client (bench.common.RawHttp, --transfers
    keep-alive connections): S3 requests carry SigV4 headers computed beforehand by botocore (the
    payload signed by its SHA-256, as aws-cli does over http), v1 requests HTTP Basic credentials.
    The server's CPU per request is then the cost of the API itself, apart from each client's
    habits (rclone's HEAD after every PUT, its pacing)."""
    credentials = Credentials(ACCESS_KEY, SECRET_KEY)

    def signed(method: str, path: str, body: bytes) -> dict[str, str]:
        request = AWSRequest(method=method, url=f"http://bench{path}", data=body,
                             headers={"x-amz-content-sha256": hashlib.sha256(body).hexdigest()})
        SigV4Auth(credentials, "s3", REGION).add_auth(request)
        return {k: v for k, v in request.headers.items() if k.lower() != "host"}

    bodies = [os.urandom(4096) for _ in range(args.small)]
    names = [f"/{BUCKET}/same{run_no}/o{i:05d}" for i in range(args.small)]
    basic = {"Authorization": "Basic " + base64.b64encode(f"{ACCESS_KEY}:{SECRET_KEY}".encode()).decode()}
    plans = {
        "PUT s3": (s3_url, [(n, signed("PUT", n, b), b) for n, b in zip(names, bodies, strict=True)]),
        "PUT v1": (v1_url, [("/v1" + n + "-v1", basic, b) for n, b in zip(names, bodies, strict=True)]),
        "GET s3": (s3_url, [(n, signed("GET", n, b""), b) for n, b in zip(names, bodies, strict=True)]),
        "GET v1": (v1_url, [("/v1" + n + "-v1", basic, b) for n, b in zip(names, bodies, strict=True)]),
    }

    async def load(url: str, method: str, plan: list[tuple[str, dict[str, str], bytes]]) -> None:
        todo = iter(plan)

        async def worker(conn: RawHttp) -> None:
            for path, headers, body in todo:
                status, data = await conn.request(method, path, headers, body if method == "PUT" else b"")
                if status not in (200, 201) or (method == "GET" and data != body):
                    raise AssertionError(f"{method} {url}{path}: {status} {data!r:.300}")

        await run_clients(url, args.transfers, worker)

    out: dict[str, dict[str, float]] = {}
    order = ("s3", "v1") if run_no % 2 else ("v1", "s3")
    for method in ("PUT", "GET"):
        for api in order:
            url, plan = plans[f"{method} {api}"]
            out[f"same {method} {api}"] = timed(pid, lambda u=url, m=method, p=plan: trio.run(  # type: ignore[misc]
                load, u, m, p))
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(args: argparse.Namespace, runs: list[dict[str, dict[str, float]]]) -> None:
    """Medians over the runs; the S3/v1 ratios are of medians, each run's own ratios beside them."""
    print(f"machine: {machine()}")
    print(f"large: {args.big / MB:,.0f} MB, aws-cli {BIN / 'aws'} vs curl; small: {args.small} x 4 KiB, "
          f"rclone (--transfers {args.transfers}{' --s3-no-head' if args.no_head else ''}) vs httpx at the "
          f"same concurrency; {len(runs)} runs, APIs alternating which goes first; medians")
    print()
    print("| measure | API | wall s | rate | server CPU s |")
    print("|---|---|---|---|---|")
    names = [name for name in runs[0]]
    med = {name: {k: median([r[name][k] for r in runs if name in r]) for k in ("wall", "cpu")}
           for name in names}
    for name, fig in med.items():
        kind, method, api = name.split()
        if kind == "large":
            rate = f"{args.big / fig['wall'] / MB:,.0f} MB/s"
            kind = "large"
        elif kind == "same":
            kind = "small, one client"
            rate = f"{args.small / fig['wall']:,.0f} obj/s"
        else:
            rate = f"{args.small / fig['wall']:,.0f} obj/s"
        print(f"| {kind} {method} | {api} | {fig['wall']:,.2f} | {rate} | {fig['cpu']:,.2f} |")
    print()
    print("| measure | S3/v1 wall | S3/v1 server CPU | CPU ratio per run | goal (S3 cost / v1) |")
    print("|---|---|---|---|---|")
    for kind, goal in (("large", 1.10), ("small", 1.25), ("same", 1.25)):
        for method in ("PUT", "GET"):
            s3, v1 = med.get(f"{kind} {method} s3"), med.get(f"{kind} {method} v1")
            if s3 and v1:
                cpu = f"{s3['cpu'] / v1['cpu']:.2f}" if v1["cpu"] > 0 else "n/a"
                pairs = [(r[f"{kind} {method} s3"], r[f"{kind} {method} v1"])
                         for r in runs if f"{kind} {method} v1" in r]
                each = ", ".join(f"{a['cpu'] / b['cpu']:.2f}" for a, b in pairs if b["cpu"] > 0)
                label = "small, one client" if kind == "same" else kind
                print(f"| {label} {method} | {s3['wall'] / v1['wall']:.2f} | {cpu} | {each} | <= {goal} |")


def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="arkor-bench-s3-", dir=args.dir))
    proc = start_allinone(
        work, auth={"users": [{"name": "bench", "accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]})
    try:
        s3_url = f"http://127.0.0.1:{proc.s3_port}"
        boto3.client("s3", endpoint_url=s3_url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                     aws_secret_access_key=SECRET_KEY,
                     config=Config(s3={"addressing_style": "path"})).create_bucket(Bucket=BUCKET)
        env = client_env(work, s3_url)
        pid = proc.pid or 0
        runs: list[dict[str, dict[str, float]]] = []
        for run_no in range(args.runs):
            results = large(args, work, pid, s3_url, proc.url, env) if run_no < args.big_runs else {}
            results.update(small(args, work, pid, s3_url, proc.url, env, run_no))
            results.update(same_client(args, pid, s3_url, proc.url, run_no))
            runs.append(results)
    finally:
        proc.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(args, runs)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", type=parse_size, default=1024**3)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--transfers", type=int, default=4, help="rclone --transfers (v1: as many tasks)")
    parser.add_argument("--no-head", action="store_true",
                        help="rclone --s3-no-head: no HEAD after each PUT (one request per object, as v1)")
    parser.add_argument("--runs", type=int, default=3, help="runs of the small phase (medians reported)")
    parser.add_argument("--big-runs", type=int, default=2,
                        help="how many of the runs also do the large phase")
    parser.add_argument("--dir", default=None, help="where to put the temp data (default: system temp)")
    main(parser.parse_args())


if __name__ == "__main__":
    cli()
