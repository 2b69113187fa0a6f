"""`arkor admin status | remove-server`: the cluster as an operator sees it, and forgetting a dead
data server so that its group can take a replacement under another URL.

Asks the registry for its groups and reclaim backlog (signed with the cluster secret from the
config), then each data server for its volumes (`GET /status`) and repair progress (`GET /repair`),
concurrently and with a short timeout, so one dead server shows as unreachable instead of hanging
the command. Prints a table, or JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
from typing import Any

import httpx
import trio

from arkor.config import load_config
from arkor.errors import ArkorError
from arkor.httpclient import LeanClient
from arkor.model import ServerInfo
from arkor.security import configured_secret
from arkor.transfer.registry_client import HttpRegistry
from arkor.web.serve import client_verify

TIMEOUT = 5.0


async def _get_json(client: LeanClient, url: str) -> dict[str, Any]:
    try:
        response = await client.request("GET", url, timeout=TIMEOUT)
        if response.status_code != 200:
            return {"error": f"HTTP {response.status_code} from {url}"}
        return dict(response.json())
    except (httpx.HTTPError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


async def collect(
    registry_url: str, secret: bytes, verify: ssl.SSLContext | bool = True
) -> dict[str, Any]:
    """Groups with each server's registry view, its own status and its repair progress."""
    async with LeanClient(verify=verify, timeout=TIMEOUT) as client:
        registry = HttpRegistry(registry_url, secret, client, TIMEOUT)
        groups = await registry.groups()
        backlog = await registry.reclaim_backlog()
        report: dict[str, Any] = {"registry": registry_url, "reclaim_backlog": backlog,
                                  "groups": [g.to_json() for g in groups]}
        servers = [s for g in report["groups"] for s in g["servers"]]

        async def fill(server: dict[str, Any]) -> None:
            server["status"] = await _get_json(client, server["url"] + "/status")
            server["repair"] = await _get_json(client, server["url"] + "/repair")

        async with trio.open_nursery() as nursery:
            for server in servers:
                nursery.start_soon(fill, server)
    return report


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def format_report(report: dict[str, Any]) -> str:
    lines = [f"registry {report['registry']}: {len(report['groups'])} groups, "
             f"reclaim backlog {report['reclaim_backlog']} fragments"]
    for group in report["groups"]:
        lines.append(f"group {group['group']}: {'writable' if group['writable'] else 'NOT writable'}, "
                     f"free {_gib(group['free'])}")
        for s in group["servers"]:
            status, repair = s.get("status", {}), s.get("repair", {})
            if "error" in status:
                detail = f"unreachable ({status['error']})"
            else:
                detail = (f"{status.get('needles', 0):,} needles, {_gib(status.get('bytes', 0))} live, "
                          f"{len(status.get('volumes', []))} volumes, free {_gib(status.get('free', 0))}")
            if "error" not in repair:
                detail += (f"; repair {repair.get('state', '?')}, "
                           f"{repair.get('needles_copied', 0):,} copied, "
                           f"{repair.get('corrupt_replaced', 0):,} corrupt replaced, "
                           f"{repair.get('errors', 0)} errors")
                if repair.get("needles_lost"):
                    shown = ", ".join(repair.get("lost", [])[:5])
                    detail += f"; {repair['needles_lost']:,} needles LOST ({shown})"
            lines.append(f"  {s['server_id']} {s['url']} [{s['state']}] {detail}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    registry_url = args.registry or config.object.registry
    try:
        report = trio.run(collect, registry_url, configured_secret(config.cluster.secret),
                          client_verify(config.http))
    except (ArkorError, httpx.InvalidURL, ValueError) as exc:
        print(f"arkor: admin status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def cmd_remove_server(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    registry_url = args.registry or config.object.registry

    async def remove() -> ServerInfo:
        async with LeanClient(verify=client_verify(config.http), timeout=TIMEOUT) as client:
            registry = HttpRegistry(registry_url, configured_secret(config.cluster.secret), client, TIMEOUT)
            return await registry.remove_server(args.server_id, force=args.force)

    try:
        removed = trio.run(remove)
    except (ArkorError, httpx.InvalidURL, ValueError) as exc:
        print(f"arkor: admin remove-server: {exc}", file=sys.stderr)
        return 1
    print(f"removed data server {removed.server_id} ({removed.url}, group {removed.group}); start a new "
          f"member with data.group={removed.group} and it fills itself from its peers")
    return 0


def _registry_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML config with cluster.secret and object.registry")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--registry", default=None, help="registry URL (default: object.registry)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `arkor admin ...` on the `arkor` command's subparsers."""
    admin = sub.add_parser("admin", help="operator commands (cluster status)")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True, metavar="ADMIN_COMMAND")
    status = admin_sub.add_parser("status", help="servers, groups, health, capacity, repair progress")
    _registry_args(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)
    remove = admin_sub.add_parser("remove-server", help="forget a data server that is gone for good")
    remove.add_argument("server_id", help="as shown by `arkor admin status`")
    _registry_args(remove)
    remove.add_argument("--force", action="store_true", help="even if it is still heartbeating")
    remove.set_defaults(handler=cmd_remove_server)
