"""Network-namespace plumbing for the net test bed: `ip` commands, entering a namespace for one
thread, and an httpx client whose sockets live in a namespace (the bed's client host).

What lives here: the few system calls and commands every other net module needs. What must not:
topology (tests/net/bed.py), faults, workloads. Nothing here sends traffic anywhere by itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
from collections.abc import Iterator

import httpcore
import httpx
import trio
from httpcore._backends.trio import TrioStream

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*args: str, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run one command (argv, no shell) and return it; raise with its stderr when it fails."""
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def in_ns(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command inside namespace `ns` (`ip netns exec`)."""
    return sh("ip", "netns", "exec", ns, *args, check=check)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def ns_path(ns: str) -> str:
    """The namespace file of `ns`: a name under /run/netns, or a path such as /proc/PID/ns/net."""
    return ns if ns.startswith("/") else f"/run/netns/{ns}"


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """Switch the calling thread (only it) into `ns`, and back afterwards.

    A socket belongs to the namespace it was created in, whatever thread uses it later, so creating
    it inside this block is enough; nothing that awaits may run inside it.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(ns_path(ns), os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def socket_in(ns: str | None, family: int = socket.AF_INET) -> socket.socket:
    """A TCP socket created in namespace `ns` (None: the caller's own)."""
    if ns is None:
        return socket.socket(family, socket.SOCK_STREAM)
    with entered(ns):
        return socket.socket(family, socket.SOCK_STREAM)


class NamespaceBackend(httpcore.AsyncNetworkBackend):
    """httpcore's trio backend, except that every TCP socket is created in one namespace."""

    def __init__(self, ns: str) -> None:
        self.ns = ns

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 - httpcore's API
        local_address: str | None = None, socket_options: object = None,
    ) -> httpcore.AsyncNetworkStream:
        sock = trio.socket.from_stdlib_socket(socket_in(self.ns))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with trio.fail_after(float("inf") if timeout is None else timeout):
                await sock.connect((host, port))
        except trio.TooSlowError as exc:
            sock.close()
            raise httpcore.ConnectTimeout(f"connect to {host}:{port}: timed out") from exc
        except OSError as exc:
            sock.close()
            raise httpcore.ConnectError(f"connect to {host}:{port}: {exc}") from exc
        except BaseException:
            sock.close()
            raise
        return TrioStream(trio.SocketStream(sock))

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


def client_in(ns: str, *, connections: int = 64, **kwargs: object) -> httpx.AsyncClient:
    """An httpx client whose connections start in namespace `ns` (the load client's host)."""
    transport = httpx.AsyncHTTPTransport()
    transport._pool = httpcore.AsyncConnectionPool(  # noqa: SLF001 - httpx has no backend option
        max_connections=connections, max_keepalive_connections=connections,
        keepalive_expiry=30.0, network_backend=NamespaceBackend(ns),
    )
    return httpx.AsyncClient(transport=transport, **kwargs)  # type: ignore[arg-type]


def namespaces() -> list[str]:
    """Names of the network namespaces under /run/netns."""
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def pids_in(ns: str) -> list[int]:
    out = sh("ip", "netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def delete_namespace(ns: str) -> None:
    """SIGKILL every process left in `ns`, then delete the namespace (gone already is fine)."""
    for pid in pids_in(ns):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    sh("ip", "netns", "del", ns, check=False)


def can_create_namespaces() -> str | None:
    """None when this process can create namespaces, veths and iptables rules; else why not."""
    for tool in ("ip", "iptables", "tc"):
        if sh("sh", "-c", f"command -v {tool}", check=False).returncode != 0:
            return f"{tool} is not installed (make system-deps installs it)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"arknetprobe{os.getpid()}"
    try:
        sh("ip", "netns", "add", probe)
        in_ns(probe, "iptables", "-w", "-A", "INPUT", "-j", "ACCEPT")
        in_ns(probe, "ip", "link", "add", "p0", "type", "veth", "peer", "name", "p1")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace here: {exc}"
    finally:
        sh("ip", "netns", "del", probe, check=False)
    return None

