"""Pieces every benchmark shares: a cheap HTTP/1.1 load client, an RSS sampler, the reference servers
(nginx, the floor), the request-rate benchmarks' common options and a one-line machine description.
Benchmarks run one at a time (flock /tmp/arkor-bench.lock)."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import psutil
import trio

from arkor.config import parse_size
from tests.procs import free_port

MB = 1_000_000
NGINX = Path("/usr/sbin/nginx")


def machine() -> str:
    """CPU model, cores, RAM and Python version: printed above every table."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"Python {platform.python_version()}")


class RawHttp:
    """A minimal HTTP/1.1 keep-alive client on a trio socket: about a tenth of httpx's CPU per
    request, so the load generator (sharing the machine's cores) is not what gets measured."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    @classmethod
    async def connect(cls, url: str) -> RawHttp:
        host, port = url.removeprefix("http://").split(":")
        return cls(await trio.open_tcp_stream(host, int(port)))

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes = b"", *, keep: bool = True) -> tuple[int, bytes | int]:
        """(status, body) — or (status, body length) when `keep` is False (big GETs)."""
        lines = [f"{method} {path} HTTP/1.1", "Host: bench", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        if len(body) < 65536:
            await self.stream.send_all(head + body)
        else:
            await self.stream.send_all(head)
            view = memoryview(body)
            for i in range(0, len(body), 1 << 20):
                await self.stream.send_all(view[i : i + (1 << 20)])
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            await self._more()
        header_block = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[: end + 4]
        status = int(header_block[9:12])
        length = 0
        for line in header_block.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if keep:
            while len(self.buf) < length:
                await self._more()
            data = bytes(self.buf[:length])
            del self.buf[:length]
            return status, data
        got = min(len(self.buf), length)
        del self.buf[:got]
        while got < length:
            chunk = await self.stream.receive_some(min(1 << 20, length - got))
            if not chunk:
                raise ConnectionError("server closed the connection")
            got += len(chunk)
        return status, got

    async def _more(self) -> None:
        chunk = await self.stream.receive_some(1 << 16)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    async def aclose(self) -> None:
        await self.stream.aclose()


async def run_clients(url: str, concurrency: int, worker: Callable[[RawHttp], Awaitable[None]]) -> float:
    """Run `worker` on `concurrency` keep-alive connections at once; the elapsed seconds."""
    conns = [await RawHttp.connect(url) for _ in range(concurrency)]
    started = time.perf_counter()
    try:
        async with trio.open_nursery() as nursery:
            for conn in conns:
                nursery.start_soon(worker, conn)
        return time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.aclose()


def raw_disk_write(directory: Path, data: bytes) -> float:
    path = directory / "raw-reference.bin"
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[: 4 * 1024 * 1024]) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - started
    path.unlink()
    return len(data) / elapsed / MB


class ReferenceServer:
    """A reference server subprocess (`proc`) answering HTTP at `url`: ready when a GET answers."""

    url: str
    proc: subprocess.Popen[bytes]

    def wait_ready(self, path: str, seconds: float, what: str) -> None:
        """Until GET `path` answers at all; stopped and an error raised after `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + path, timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{what} did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Nginx(ReferenceServer):
    """nginx on a free port serving `root` (temp config, no daemon, killed on exit)."""

    def __init__(self, root: Path, work: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = work / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 100000;
    client_body_temp_path {work}/body; proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fcgi; uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
    server {{ listen 127.0.0.1:{self.port}; root {root}; }}
}}
""")
        self.proc = subprocess.Popen([str(NGINX), "-c", str(conf), "-p", str(work)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready("/k.bin", 10, "nginx")


class Floor(ReferenceServer):
    """The floor reference (`bench.floor`): hypercorn's trio worker + a bare ASGI app, one process."""

    def __init__(self, size: int) -> None:
        import sys

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.floor", "--port", str(self.port), "--size", str(size)],
            cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready("/k", 15, "the floor reference server")


def throughput_parser(doc: str, small: int) -> argparse.ArgumentParser:
    """The options the request-rate benchmarks share (bench_data, bench_object)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=small, help="small requests per run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--big", type=parse_size, default=64 * 1024 * 1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to put the temp data (default: system temp)")
    return parser


def start_nginx(work: Path, big: bytes, small: bytes | None = None) -> Nginx | None:
    """nginx serving `small` (default 1 KiB random) as /k.bin and `big` as /big.bin, when installed."""
    if not NGINX.exists():
        return None
    www = work / "www"
    www.mkdir()
    work.chmod(0o755)  # nginx workers (user nobody when run as root) must read www/
    (www / "k.bin").write_bytes(small if small is not None else os.urandom(1024))
    (www / "big.bin").write_bytes(big)
    return Nginx(www, work)


