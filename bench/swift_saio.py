"""A Swift All-In-One on loopback: the peer reference for the cluster benchmark (issue 14).

Why Swift: it is the established replicated object store in Python, so "how does an Arkor cluster
compare with Swift on the same machine, in the same run" is the question users ask first.

What it starts (all on 127.0.0.1, free ports, data under one temp directory, nothing outside it):
three storage nodes, each with an account, a container and an object server and one device; rings
of 3 replicas over them; a proxy with tempauth (user ``test:tester``, key ``testing``) and a
memcached for its tokens. Object servers fsync every object, as Arkor's data servers do.

Swift is installed from PyPI into a venv of its own (``make bench-swift`` or `ensure_venv`), never
into Arkor's. swift.conf normally lives in /etc/swift; `bench.swift_run` points Swift at ours.
Must not: leave a process or a file behind (`SwiftSaio.stop` ends everything it started).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.procs import free_port

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VENV = REPO / "bench" / ".swift-venv"
MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"


def ensure_venv(venv: Path = DEFAULT_VENV) -> Path | None:
    """Swift's own venv (created on first use); None when Swift cannot be installed here."""
    python = venv / "bin" / "python"
    if not (venv / "bin" / "swift-ring-builder").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "swift"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if done.returncode != 0:
            return None
    return venv


def _conf(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


class SwiftSaio:
    """Start with `SwiftSaio(work, venv)`; `url` is the proxy, `token`/`storage_url` from tempauth."""

    def __init__(self, work: Path, venv: Path, *, replicas: int = 3) -> None:
        self.work = work
        self.venv = venv
        self.procs: list[subprocess.Popen[bytes]] = []
        self.etc = work / "etc"
        self.etc.mkdir(parents=True)
        self.env = {**os.environ, "ARKOR_SWIFT_CONF": str(self.etc / "swift.conf")}
        try:
            self._start(replicas)
        except BaseException:
            self.stop()
            raise

    def _bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def _start(self, replicas: int) -> None:
        _conf(self.etc / "swift.conf", """
[swift-hash]
swift_hash_path_suffix = arkorbench
swift_hash_path_prefix = arkorbench
[storage-policy:0]
name = gold
default = yes
""")
        memcached_port = free_port()
        self._spawn([MEMCACHED, "-u", "root", "-l", "127.0.0.1", "-p", str(memcached_port), "-U", "0",
                     "-m", "64"], "memcached")
        ports = {kind: [free_port() for _ in range(replicas)] for kind in ("account", "container", "object")}
        for kind, kind_ports in ports.items():
            builder = str(self.etc / f"{kind}.builder")
            subprocess.run([self._bin("swift-ring-builder"), builder, "create", "10", str(replicas), "1"],
                           check=True, stdout=subprocess.DEVNULL)
            for node, port in enumerate(kind_ports, start=1):
                subprocess.run([self._bin("swift-ring-builder"), builder, "add",
                                f"r1z{node}-127.0.0.1:{port}/d{node}", "100"],
                               check=True, stdout=subprocess.DEVNULL)
            subprocess.run([self._bin("swift-ring-builder"), builder, "rebalance"],
                           check=False, stdout=subprocess.DEVNULL)
        for node in range(1, replicas + 1):
            devices = self.work / f"srv{node}"
            (devices / f"d{node}").mkdir(parents=True)
            for kind, kind_ports in ports.items():
                conf = _conf(self.etc / f"{kind}-{node}.conf", f"""
[DEFAULT]
devices = {devices}
mount_check = false
bind_ip = 127.0.0.1
bind_port = {kind_ports[node - 1]}
workers = 1
user = root
swift_dir = {self.etc}
log_facility = LOG_LOCAL2
[pipeline:main]
pipeline = {kind}-server
[app:{kind}-server]
use = egg:swift#{kind}
""")
                self._spawn([self._bin("python"), "-m", "bench.swift_run", kind, str(conf)], f"{kind}-{node}")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        proxy = _conf(self.etc / "proxy.conf", f"""
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {self.port}
workers = 1
user = root
swift_dir = {self.etc}
[pipeline:main]
pipeline = catch_errors proxy-logging cache tempauth proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{memcached_port}
memcache_max_connections = 64
connect_timeout = 2.0
pool_timeout = 5.0
io_timeout = 5.0
tries = 3
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:proxy-logging]
use = egg:swift#proxy_logging
""")
        self._spawn([self._bin("python"), "-m", "bench.swift_run", "proxy", str(proxy)], "proxy")
        self.token, self.storage_url = self._auth()

    def _spawn(self, args: list[str], name: str) -> None:
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.procs.append(subprocess.Popen(args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def _auth(self) -> tuple[str, str]:
        deadline = time.monotonic() + 60
        last = ""
        while time.monotonic() < deadline:
            try:
                reply = httpx.get(self.url + "/auth/v1.0", timeout=5,
                                  headers={"X-Auth-User": "test:tester", "X-Auth-Key": "testing"})
                if reply.status_code == 200:
                    token, storage = reply.headers["x-auth-token"], reply.headers["x-storage-url"]
                    created = httpx.put(storage + "/bench", headers={"X-Auth-Token": token}, timeout=30)
                    if created.status_code in (201, 202):
                        return token, storage
                    last = f"container PUT {created.status_code}"
                else:
                    last = f"auth {reply.status_code}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.3)
        raise RuntimeError(f"Swift SAIO did not come up: {last} (logs in {self.work})")

    @property
    def container_path(self) -> str:
        """The path of the benchmark container, for a client connected to `url`."""
        return httpx.URL(self.storage_url).path + "/bench"

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:  # each in its own session: the group holds its forked workers too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.procs = []
