"""Real `arkor` processes for tests: start on free loopback ports, wait until ready, kill, restart.

Every role answers ``GET /healthz`` with 200 once it serves; `ArkorProcess.start` waits for that.
Processes are started in their own session so SIGKILL takes the whole role at once.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
ARKOR = [sys.executable, "-m", "arkor.cli"]


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A currently free loopback TCP port below the kernel's ephemeral range. A port from that
    range (what binding port 0 gives) can be taken meanwhile as the local end of any outgoing
    connection, so a server restarted on it would fail with EADDRINUSE."""
    low, _high = _ephemeral_range()
    start = max(1025, low - 20_000)
    for _ in range(200):
        port = random.randrange(start, low)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # crowded: let the OS pick
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_free_disk(path: os.PathLike[str] | str, gib: float) -> None:
    """Skip a test that stores `gib` GiB (all replicas and client copies counted) when the disk
    under `path` has less free, rather than fill it and fail every test that runs after it (a data
    server refuses writes, 507, once free space falls below its reserve)."""
    free = shutil.disk_usage(path).free / 1024**3
    if free < gib:
        pytest.skip(f"needs {gib:.0f} GiB free under {path}, has {free:.1f} GiB")


class Stoppable(Protocol):
    def stop(self) -> object: ...


StoppableT = TypeVar("StoppableT", bound=Stoppable)


def stopped_after(started: StoppableT) -> Iterator[StoppableT]:
    """A fixture's body: `yield from stopped_after(start_x())` hands the started process or cluster
    to the test and stops it afterwards, whether the test passed or failed."""
    try:
        yield started
    finally:
        started.stop()


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class ArkorProcess:
    """One `arkor <role>` subprocess; `url` is its HTTP base URL."""

    def __init__(
        self,
        role: str,
        config_path: Path,
        port: int,
        *,
        log_path: Path,
        overrides: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.role = role
        self.config_path = config_path
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.overrides = list(overrides or [])
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.s3_port = self._s3_port() if role in ("object", "allinone") else None

    def _s3_port(self) -> int | None:
        """The S3 listener's port: as configured, else a free one (never the shared default,
        which parallel test processes would fight over); None when S3 is off."""
        raw = yaml.safe_load(self.config_path.read_text()) or {}
        s3 = raw.get("s3") or {}
        for item in self.overrides:
            name, _, value = item.partition("=")
            if name.startswith("s3."):
                s3[name[3:]] = yaml.safe_load(value)
        if s3.get("enabled") is False:
            return None
        if "port" not in s3:
            self.overrides.append(f"s3.port={free_port()}")
            return int(self.overrides[-1].partition("=")[2])
        return int(s3["port"])

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, *, wait: float = 20.0) -> ArkorProcess:
        args = [*ARKOR, self.role, "--config", str(self.config_path)]
        for item in self.overrides:
            args += ["--set", item]
        env = {**os.environ, **(self.env or {})}
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            args, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_ready(wait)
        return self

    def wait_ready(self, timeout: float = 20.0, path: str = "/healthz") -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"arkor {self.role} exited with {self.proc.returncode}:\n{self.tail_log()}"
                )
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.05)
        raise TimeoutError(f"arkor {self.role} not ready on {self.url}: {last}\n{self.tail_log()}")

    def tail_log(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the process group: no cleanup, as in a crash or power loss of the process."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait (graceful shutdown); SIGKILL if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def restart(self, *, wait: float = 20.0) -> ArkorProcess:
        self.kill()
        return self.start(wait=wait)

    def rss_bytes(self) -> int:
        """Resident memory of the process (and its children), via psutil."""
        assert self.proc is not None
        return tree_rss(self.proc.pid)


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its children (hypercorn workers, subprocesses)."""
    import psutil

    parent = psutil.Process(pid)
    total = parent.memory_info().rss
    for child in parent.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class PeakRss:
    """The peak `tree_rss` of a process, sampled every 50 ms in a thread while a transfer runs.

    ``with PeakRss(pid) as rss: ...`` then ``rss.peak``; or ``PeakRss(pid).start()`` and ``stop()``.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, tree_rss(self.pid))
            except psutil.Error:  # exited, or between children
                pass

    def start(self) -> PeakRss:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak

    def __enter__(self) -> PeakRss:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_cli(*args: str, input: bytes | None = None, env: dict[str, str] | None = None,
            timeout: float = 120.0) -> subprocess.CompletedProcess[bytes]:
    """Run `arkor ARGS...` to completion and capture its output."""
    return subprocess.run(
        [*ARKOR, *args], cwd=REPO_ROOT, input=input, capture_output=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )
