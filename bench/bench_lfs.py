"""Git LFS push and pull times with the stock `git lfs` client: Arkor beside giftless, same run.

Run (one benchmark at a time on the machine):

    flock /tmp/arkor-bench.lock .venv/bin/python -m bench.bench_lfs [--big 256MiB] [--small 200] [--runs 3]

Servers, both on loopback, started by this script:
- Arkor: `arkor allinone` (dev mode, embedded SQLite/in-process KV, one object-server process, three
  data servers that fsync every write).
- giftless (PyPI, the reference): in its own venv under /tmp (created on first use), local storage,
  the basic streaming transfer adapter, served by uWSGI (its documented WSGI server) with 2 processes
  x 4 threads. giftless 0.6.2's wheel declares no dependencies (its METADATA has no Requires-Dist),
  so they are installed by name here.

Scenarios: one large file (`--big`) and many small files (`--small` x 4 KiB). For each run and server
a fresh repository (so nothing is stored yet) is pushed with `git push` (timed: the pre-push hook
uploads every object), then cloned without smudge and `git lfs pull` is timed (download + checkout).
Prints a Markdown table (median and best seconds, MB/s for the large file) and the servers' peak RSS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from arkor.config import parse_size
from tests.lfs.gitlfs import GitEnv, sha256_file, start_allinone
from tests.procs import PeakRss, free_port

MB = 1_000_000
GIFTLESS_VENV = Path("/tmp/arkor-bench-giftless-venv")
GIFTLESS_VERSION = "0.6.2"
# giftless 0.6.2 imports these but its wheel does not declare them. PyJWT 2.10 and later refuse the
# transfer tokens giftless issues to anonymous users ("sub": null), so uploads would get 401.
GIFTLESS_DEPS = [
    "flask", "flask-classful", "flask-marshmallow", "marshmallow", "webargs", "figcan", "pyjwt<2.10",
    "python-dateutil", "python-dotenv", "pyyaml", "cachetools", "typing-extensions", "requests",
    "cryptography", "uwsgi",
]


# --- servers -----------------------------------------------------------------------------------


def ensure_giftless() -> Path:
    """The venv with giftless and uWSGI, created once."""
    python = GIFTLESS_VENV / "bin" / "python"
    check = [str(python), "-c", "import giftless.wsgi_entrypoint"]
    if python.exists() and (GIFTLESS_VENV / "bin" / "uwsgi").exists():
        if subprocess.run(check, capture_output=True).returncode == 0:
            return GIFTLESS_VENV
    subprocess.run([sys.executable, "-m", "venv", str(GIFTLESS_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"giftless=={GIFTLESS_VERSION}", *GIFTLESS_DEPS], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(check, check=True, capture_output=True)
    return GIFTLESS_VENV


class Giftless:
    """giftless under uWSGI on a free port, storing under `root`."""

    def __init__(self, root: Path) -> None:
        venv = ensure_giftless()
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = root / "giftless.yaml"
        config.write_text(
            # Transfer actions carry giftless's own JWT: verify it first, else anonymous read-write.
            "AUTH_PROVIDERS:\n"
            "  - factory: giftless.auth.jwt:factory\n"
            "    options: {algorithm: HS256, private_key: arkor-bench-giftless-key}\n"
            "  - giftless.auth.allow_anon:read_write\n"
            "PRE_AUTHORIZED_ACTION_PROVIDER:\n"
            "  factory: giftless.auth.jwt:factory\n"
            "  options: {algorithm: HS256, private_key: arkor-bench-giftless-key, default_lifetime: 900}\n"
            "LEGACY_ENDPOINTS: false\n"
            "TRANSFER_ADAPTERS:\n  basic:\n"
            "    factory: giftless.transfer.basic_streaming:factory\n"
            "    options:\n"
            "      storage_class: giftless.storage.local_storage:LocalStorage\n"
            f"      storage_options:\n        path: {root / 'storage'}\n"
        )
        log = open(root / "uwsgi.log", "wb")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                str(venv / "bin" / "uwsgi"), "--master", "--http", f"127.0.0.1:{self.port}",
                "-H", str(venv), "--module", "giftless.wsgi_entrypoint", "--callable", "app",
                "--processes", "2", "--threads", "4", "--manage-script-name",
                "--http-timeout", "600", "--disable-logging",
                # uWSGI's HTTP router closes every connection after its response; without saying
                # so the Go client reuses a closing one and a POST fails ("server closed idle").
                "--add-header", "Connection: close",
            ],
            env={**os.environ, "GIFTLESS_CONFIG_FILE": str(config)},
            stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                probe = httpx.post(
                    f"{self.url}/probe/probe.git/info/lfs/objects/batch",
                    json={"operation": "download", "objects": [{"oid": "0" * 64, "size": 1}]},
                    headers={"Content-Type": "application/vnd.git-lfs+json"}, timeout=2,
                )
                if probe.status_code < 500:  # giftless answers 404 when no object is found
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"giftless did not start: see {root / 'uwsgi.log'}")
            time.sleep(0.2)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """SIGINT (for the uWSGI master SIGTERM means reload); SIGKILL its group if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


# --- one measurement ---------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def make_dataset(root: Path, big: int, small: int) -> dict[str, list[Path]]:
    """Incompressible files: one big file and `small` x 4 KiB, written once and copied per run."""
    root.mkdir(parents=True, exist_ok=True)
    big_path = root / "big" / "big.bin"
    big_path.parent.mkdir()
    block = os.urandom(16 * 1024 * 1024)
    with open(big_path, "wb") as fh:
        for offset in range(0, big, len(block)):
            fh.write((offset.to_bytes(8, "little") + block[8:])[: min(len(block), big - offset)])
    smalls = []
    (root / "small").mkdir()
    for i in range(small):
        path = root / "small" / f"s{i:04d}.bin"
        path.write_bytes(os.urandom(4096))
        smalls.append(path)
    return {"big": [big_path], "small": smalls}


def push_and_pull(git: GitEnv, work_root: Path, lfs_url: str, files: list[Path]) -> tuple[float, float]:
    work = work_root / "work"
    work_root.mkdir(parents=True)
    git.new_repo(work, lfs_url)
    for path in files:
        shutil.copyfile(path, work / path.name)
    git.run("add", ".", cwd=work)
    git.run("commit", "-q", "-m", "data", cwd=work)
    push = timed(lambda: git.run("push", "-q", "origin", "main", cwd=work))
    clone = work_root / "clone"
    git.run("clone", "-q", str(work_root / "work-origin.git"), str(clone), cwd=work_root,
            env={"GIT_LFS_SKIP_SMUDGE": "1"})
    pull = timed(lambda: git.run("lfs", "pull", cwd=clone))
    for path in files[:3]:
        if sha256_file(clone / path.name) != sha256_file(path):
            raise AssertionError(f"{path.name} differs after the pull")
    return push, pull


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", default="256MiB", help="size of the large file")
    parser.add_argument("--small", type=int, default=200, help="number of 4 KiB files")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    big = parse_size(args.big)
    tmp = Path(tempfile.mkdtemp(prefix="arkor-bench-lfs-"))
    arkor = giftless = None
    try:
        dataset = make_dataset(tmp / "dataset", big, args.small)
        arkor = start_allinone(tmp / "arkor", prod=False)
        giftless = Giftless(tmp / "giftless")
        servers = {"arkor": (arkor.url, arkor.pid), "giftless": (giftless.url, giftless.pid)}
        gits = {name: GitEnv(tmp / f"home-{name}") for name in servers}
        times: dict[tuple[str, str, str], list[float]] = {}
        peaks = {name: 0 for name in servers}
        for run in range(args.runs):
            for scenario, files in dataset.items():
                for name, (url, pid) in servers.items():  # interleaved: drift hits both alike
                    repo = f"bench/{scenario}-{run}"
                    with PeakRss(pid) as rss:
                        push, pull = push_and_pull(
                            gits[name], tmp / "runs" / name / f"{scenario}-{run}",
                            f"{url}/{repo}.git/info/lfs", files,
                        )
                    peaks[name] = max(peaks[name], rss.peak)
                    times.setdefault((scenario, name, "push"), []).append(push)
                    times.setdefault((scenario, name, "pull"), []).append(pull)
                    print(f"run {run} {scenario:5} {name:8} push {push:6.2f} s  pull {pull:6.2f} s",
                          file=sys.stderr)
        print_table(times, big, args.small, args.runs, peaks)
    finally:
        if giftless is not None:
            giftless.stop()
        if arkor is not None:
            arkor.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def print_table(times: dict[tuple[str, str, str], list[float]], big: int, small: int, runs: int,
                peaks: dict[str, int]) -> None:
    labels = {"big": f"1 x {big / 2**20:.0f} MiB", "small": f"{small} x 4 KiB"}
    print(f"\n| scenario | server | push median (best) | pull median (best) |   ({runs} runs)")
    print("|---|---|---|---|")
    for scenario in ("big", "small"):
        for name in ("arkor", "giftless"):
            cells = []
            for op in ("push", "pull"):
                values = times[(scenario, name, op)]
                med, best = statistics.median(values), min(values)
                cell = f"{med:.2f} s ({best:.2f} s)"
                if scenario == "big":
                    cell += f", {big / med / MB:.0f} MB/s"
                cells.append(cell)
            print(f"| {labels[scenario]} | {name} | {cells[0]} | {cells[1]} |")
    print("\npeak server RSS during the runs: "
          + ", ".join(f"{name} {peak / 2**20:.0f} MiB" for name, peak in peaks.items()))


if __name__ == "__main__":
    main()
