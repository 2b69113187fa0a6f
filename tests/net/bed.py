"""The net test bed: an Arkor cluster deployed as README's multi-host deployment, one host per
network namespace, with faults applied per host or per link and everything removed afterwards.

Hosts (namespaces `arknet<pid>-<host>`, addresses in 10.213.0.0/24 that exist only inside them):
a switch namespace holding bridge br0, and one veth from it to each of: reg (registry, .10), obj1 and
obj2 (object servers, .11/.12), d11-d13 (group 1, .21-.23), d21-d23 (group 2, .24-.26) and cli (the
load client, .100). Every role runs as `ip netns exec HOST .venv/bin/arkor ROLE --config ...`, binds
0.0.0.0 and advertises its host's address, in runMode prod with an explicit cluster secret. MariaDB
and Redis (127.0.0.1 of the root namespace) are reached through relays listening on 127.0.0.1 of
the registry's host. Host d13 has a relay on its link (the data server behind it on port 8137) that
adds latency on demand: the kernel has no netem.

What must not live here: workloads and figures (tests/net/load.py), assertions (the tests).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
import yaml

from arkor.model import GroupInfo
from arkor.security import ClusterAuth
from arkor.transfer.registry_client import HttpRegistry
from tests.net.netns import client_in, delete_namespace, in_ns, namespaces, sh

REPO_ROOT = Path(__file__).resolve().parents[2]
ARKOR_BIN = str(Path(sys.executable).parent / "arkor")
PREFIX = "arknet"
NET = "10.213.0"
SECRET = "netbed-cluster-secret-f3a9c1d7e2b4"
USER = ("load", "netbed-load-secret-9b1e7c3a5d2f")
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TIMEOUT = 4.0
SLOW_HOST = "d13"  # the data host with a delaying relay on its link

HOSTS: dict[str, int] = {"reg": 10, "obj1": 11, "obj2": 12, "d11": 21, "d12": 22, "d13": 23,
                         "d21": 24, "d22": 25, "d23": 26, "cli": 100}
GROUPS: dict[int, list[str]] = {1: ["d11", "d12", "d13"], 2: ["d21", "d22", "d23"]}


def cleanup_leftovers() -> list[str]:
    """Remove the namespaces (and their processes) of earlier beds whose process is gone."""
    removed = []
    for ns in namespaces():
        match = re.fullmatch(rf"{PREFIX}(\d+)-\w+", ns)
        if not match:
            continue
        owner = int(match.group(1))
        if owner != os.getpid() and Path(f"/proc/{owner}").exists():
            continue  # another live bed (a concurrent run)
        delete_namespace(ns)
        removed.append(ns)
    return removed


@dataclass
class Role:
    """One `arkor ROLE` process on one host."""

    role: str
    host: str
    ns: str
    url: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, *self.argv], cwd=REPO_ROOT, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)  # a stopped process still dies, but be sure
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Bed:
    """The namespaces, the processes and the faults of one bed. `close()` removes all of it."""

    def __init__(self, root: Path, *, sql: dict[str, Any] | None = None,
                 kv: dict[str, Any] | None = None, kv_prefix: str = "arkor:") -> None:
        self.root = root
        self.tag = f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self.sql, self.kv = sql, kv
        self.registry_url = f"http://{self.ip('reg')}:8126"
        self.object_urls = [f"http://{self.ip('obj1')}:8125", f"http://{self.ip('obj2')}:8125"]
        self.delay_file = root / "d13.delay"
        self.created: list[str] = []
        self.helpers: list[subprocess.Popen[bytes]] = []
        self.undo: list[tuple[str, Callable[[], None]]] = []
        self.roles: dict[str, Role] = {}
        self.backend = "+".join(["mysql" if sql else "sqlite", "redis" if kv else "memory"])
        config: dict[str, Any] = {
            "run": {"runMode": "prod", "logPath": "", "logLevel": "info"},
            "cluster": {"secret": SECRET},
            "auth": {"anonymousLoopback": False,
                     "users": [{"name": USER[0], "accessKey": USER[0], "secretKey": USER[1]}]},
            "registry": {"host": "0.0.0.0", "port": 8126, "dataDir": str(root / "registry"),
                         "heartbeatTimeout": f"{HEARTBEAT_TIMEOUT:g}s", "reaperInterval": "2s",
                         "kvPrefix": kv_prefix},
            "data": {"host": "0.0.0.0", "port": 8127, "registry": self.registry_url,
                     "heartbeatInterval": f"{HEARTBEAT_INTERVAL:g}s", "repairInterval": "2s",
                     "volumeSize": "32MiB", "reserveBytes": "16MiB"},
            "object": {"host": "0.0.0.0", "port": 8125, "registry": self.registry_url,
                       "fragmentSize": "256KiB"},
        }
        if sql:
            config["sqldatabase"] = sql
        if kv:
            config["kvdatabase"] = kv
        self.config = config
        self.config_path = root / "arkor.yaml"

    # --- topology --------------------------------------------------------------------------

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    @staticmethod
    def ip(host: str) -> str:
        return f"{NET}.{HOSTS[host]}"

    def _add_ns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.created.append(name)
        in_ns(name, "ip", "link", "set", "lo", "up")

    def build(self) -> None:
        """Create the switch, the hosts and their links."""
        cleanup_leftovers()
        self._add_ns(self.switch)
        in_ns(self.switch, "ip", "link", "add", "br0", "type", "bridge")
        in_ns(self.switch, "ip", "link", "set", "br0", "up")
        for host in HOSTS:
            ns = self.ns(host)
            self._add_ns(ns)
            in_ns(self.switch, "ip", "link", "add", f"v-{host}", "type", "veth",
                  "peer", "name", "eth0", "netns", ns)
            in_ns(self.switch, "ip", "link", "set", f"v-{host}", "master", "br0", "up")
            in_ns(ns, "ip", "addr", "add", f"{self.ip(host)}/24", "dev", "eth0")
            in_ns(ns, "ip", "link", "set", "eth0", "up")

    # --- processes -------------------------------------------------------------------------

    def _helper(self, host: str, *args: str) -> None:
        """A relay in `host`'s namespace; waits for its "ready" line."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(host), sys.executable, "-m", "tests.net.relay", *args],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=open(self.root / f"relay-{host}.log", "ab"),  # noqa: SIM115
            start_new_session=True,
        )
        self.helpers.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"relay on {host} did not start: {args}")

    def _role(self, name: str, role: str, host: str, port: int, sets: list[str]) -> Role:
        argv = [ARKOR_BIN, role, "--config", str(self.config_path)]
        for item in sets:
            argv += ["--set", item]
        proc = Role(role, host, self.ns(host), f"http://{self.ip(host)}:{port}", argv,
                    self.root / f"{name}.log")
        self.roles[name] = proc
        return proc

    def start(self) -> None:
        """Write the config, start relays and every role; `wait_healthy` then waits for them."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        root_ns = f"/proc/{os.getpid()}/ns/net"
        if self.sql:
            port = str(self.sql.get("port", 3306))
            self._helper("reg", "--listen", f"127.0.0.1:{port}", "--connect",
                         f"{self.sql.get('host', '127.0.0.1')}:{port}", "--connect-ns", root_ns)
        if self.kv:
            port = str(self.kv.get("port", 6379))
            self._helper("reg", "--listen", f"127.0.0.1:{port}", "--connect",
                         f"{self.kv.get('host', '127.0.0.1')}:{port}", "--connect-ns", root_ns)
        self._role("reg", "registry", "reg", 8126, []).start()
        for group, hosts in GROUPS.items():
            for host in hosts:
                sets = [f"data.dir={self.root / host}", f"data.group={group}",
                        f"data.advertiseUrl=http://{self.ip(host)}:8127"]
                if host == SLOW_HOST:
                    self.delay_file.write_text("0")
                    sets.append("data.port=8137")
                    self._helper(host, "--listen", f"{self.ip(host)}:8127",
                                 "--connect", f"{self.ip(host)}:8137",
                                 "--delay-file", str(self.delay_file))
                self._role(host, "data", host, 8127, sets).start()
        for host in ("obj1", "obj2"):
            self._role(host, "object", host, 8125, []).start()

    def restart(self, name: str) -> None:
        role = self.roles[name]
        role.kill()
        role.start()

    def close(self) -> None:
        """Kill every process and delete every namespace (veths, rules and qdiscs go with them)."""
        self.undo.clear()  # no heal: everything it would undo goes with the namespaces
        for role in self.roles.values():
            try:
                role.kill()
            except (OSError, subprocess.TimeoutExpired):
                pass
        for proc in self.helpers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for ns in reversed(self.created):
            delete_namespace(ns)
        self.created.clear()

    # --- faults (each one registers its undo; heal() undoes them all) -----------------------

    def _fault(self, label: str, apply: list[list[str]], undo: list[list[str]]) -> None:
        """Run `apply`; `undo` is registered first, so even a half-applied fault is healed."""

        def heal() -> None:
            for command in undo:
                sh(*command, check=False)

        self.undo.append((label, heal))
        for command in apply:
            sh(*command)

    def _ipt(self, host: str, *rule: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host), "iptables", "-w", *rule]

    def partition(self, host: str, *, peers: list[str] | None = None, inbound_only: bool = False) -> None:
        """Drop everything between `host` and `peers` (default: every other host); with
        `inbound_only`, only what arrives at `host` (a one-way partition)."""
        rules = []
        for peer in peers or [None]:
            src = ["-s", self.ip(peer)] if peer else []
            dst = ["-d", self.ip(peer)] if peer else []
            rules.append(self._ipt(host, "-A", "INPUT", "-i", "eth0", *src, "-j", "DROP"))
            if not inbound_only:
                rules.append(self._ipt(host, "-A", "OUTPUT", "-o", "eth0", *dst, "-j", "DROP"))
        flush = [self._ipt(host, "-F", "INPUT"), self._ipt(host, "-F", "OUTPUT")]
        self._fault(f"partition {host}", rules, flush)

    def link_down(self, host: str) -> None:
        """Take `host`'s link down at the switch: the host is cut off, its processes run on."""
        link = ["ip", "netns", "exec", self.switch, "ip", "link", "set", f"v-{host}"]
        self._fault(f"link down {host}", [[*link, "down"]], [[*link, "up"]])

    def lossy(self, host: str, probability: float) -> None:
        """Drop each packet in or out of `host` with `probability` (iptables statistic match)."""
        stat = ["-m", "statistic", "--mode", "random", "--probability", f"{probability:g}", "-j", "DROP"]
        self._fault(f"loss {probability:g} {host}",
                    [self._ipt(host, "-A", "INPUT", "-i", "eth0", *stat),
                     self._ipt(host, "-A", "OUTPUT", "-o", "eth0", *stat)],
                    [self._ipt(host, "-F", "INPUT"), self._ipt(host, "-F", "OUTPUT")])

    def rate_limit(self, host: str, rate: str) -> None:
        """Limit `host`'s link to `rate` (e.g. "8mbit") both ways with tc tbf."""
        ends = [(self.ns(host), "eth0"), (self.switch, f"v-{host}")]
        self._fault(
            f"rate {rate} {host}",
            [["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
              "rate", rate, "burst", "32kbit", "latency", "100ms"] for ns, dev in ends],
            [["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"] for ns, dev in ends],
        )

    def slow(self, seconds: float) -> None:
        """Add `seconds` to every round trip to the data server on SLOW_HOST (half each way)."""
        self.delay_file.write_text(f"{seconds / 2:g}")
        self.undo.append((f"slow {SLOW_HOST}", lambda: self.delay_file.write_text("0")))

    def stop_process(self, name: str) -> None:
        """SIGSTOP: the process keeps its sockets open but answers nothing (a gray failure)."""
        role = self.roles[name]
        role.signal(signal.SIGSTOP)
        self.undo.append((f"SIGSTOP {name}", lambda: role.signal(signal.SIGCONT)))

    def kill_process(self, name: str) -> None:
        """SIGKILL `name`; the heal starts it again with the same directory."""
        self.roles[name].kill()
        self.undo.append((f"down {name}", lambda: self.roles[name].start()))

    def heal(self) -> list[str]:
        labels = []
        while self.undo:
            label, undo = self.undo.pop()
            undo()
            labels.append(label)
        return labels

    # --- observing the cluster (from the client host) ----------------------------------------

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return client_in(self.ns("cli"), **kwargs)

    def registry(self, client: httpx.AsyncClient, timeout: float = 5.0) -> HttpRegistry:
        return HttpRegistry(self.registry_url, SECRET.encode(), client, timeout)

    async def groups(self, client: httpx.AsyncClient) -> dict[int, GroupInfo]:
        return {g.group: g for g in await self.registry(client).groups()}

    async def wait_healthy(self, client: httpx.AsyncClient, limit: float) -> float:
        """Seconds until both groups are writable with three members up; raises after `limit`."""
        started = time.monotonic()
        last: object = None
        with trio.move_on_after(limit):
            while True:
                self.check_alive()
                try:
                    groups = await self.groups(client)
                    last = {g: [s.state for s in i.servers] for g, i in groups.items()}
                    if len(groups) == 2 and all(
                        g.writable and len(g.servers) == 3 and all(s.state == "up" for s in g.servers)
                        for g in groups.values()
                    ):
                        await self.wait_objects_ready(client)
                        return time.monotonic() - started
                except Exception as exc:  # noqa: BLE001 - the registry may be starting or cut off
                    last = exc
                await trio.sleep(0.2)
        raise TimeoutError(f"bed not healthy after {limit:g}s: {last!r}\n{self.roles['reg'].tail()}")

    def check_alive(self) -> None:
        """Raise with its log when a role (or relay) exited: waiting on would only time out."""
        for role in self.roles.values():
            if role.proc is not None and role.proc.poll() is not None:
                raise RuntimeError(f"{role.host} {role.role} exited:\n{role.tail()}")
        for proc in self.helpers:
            if proc.poll() is not None:
                raise RuntimeError(f"relay {proc.args} exited")

    async def wait_objects_ready(self, client: httpx.AsyncClient) -> None:
        for url in self.object_urls:
            while (await client.get(url + "/readyz", timeout=5)).status_code != 200:  # noqa: ASYNC110
                await trio.sleep(0.2)

    async def listing(self, client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
        """A data server's needle listing (tombstones included)."""
        out: list[dict[str, Any]] = []
        after: str | None = "0"
        while after is not None:
            response = await client.get(url + "/needles", params={"after": after, "limit": "10000"},
                                        auth=ClusterAuth(SECRET.encode()),
                                        timeout=30)
            response.raise_for_status()
            body = response.json()
            out += body["needles"]
            after = body.get("next_after")
        return out

    def data_url(self, host: str) -> str:
        return f"http://{self.ip(host)}:8127"
