"""The one `arkor` command: server roles, client commands and `version`.

Server roles: ``arkor data | registry | object | allinone [--config PATH] [--set key=value ...]``.
Every failure prints one line (``arkor: ...``) and exits non-zero; nothing imports this module.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import trio

from arkor import __version__, admin
from arkor.config import Config, ConfigError, check_role, load_config

# role name -> module with `async def run(config: Config) -> None`
ROLES = {
    "data": "arkor.dataserver.main",
    "registry": "arkor.registry.main",
    "object": "arkor.object.main",
    "allinone": "arkor.allinone",
}


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=None, help="YAML config (default conf/runtime.yaml if present)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config key (repeatable), e.g. --set data.port=8128",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arkor", description="Arkor object storage")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for role, help_text in (
        ("data", "run a data server (one replica of a group)"),
        ("registry", "run the registry center"),
        ("object", "run an object server (public REST API and Git LFS)"),
        ("allinone", "run registry, object server and a group of three data servers"),
    ):
        _add_config_args(sub.add_parser(role, help=help_text))
    sub.add_parser("version", help="print the version")
    check = sub.add_parser("config", help="validate the configuration and print it")
    _add_config_args(check)
    try:
        client_cli = importlib.import_module("arkor.client.cli")
    except ModuleNotFoundError as exc:
        if exc.name != "arkor.client.cli":
            raise
    else:
        client_cli.add_commands(sub)
    admin.add_commands(sub)
    return parser


async def _run_until_signal(run: Callable[[Config], Awaitable[None]], config: Config) -> None:
    """Run a role; SIGINT/SIGTERM cancel it, so every nursery unwinds and cleanup runs."""
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(watch_signals)
        await run(config)
        nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"arkor {__version__}")
        return 0
    try:
        if args.command in ROLES or args.command == "config":
            config = load_config(args.config, args.overrides)
            if args.command == "config":
                import yaml

                from arkor.config import dump_config

                print(yaml.safe_dump(dump_config(config), sort_keys=False), end="")
                return 0
            check_role(config, args.command)
            from arkor.logs import setup_logging

            setup_logging(config.run, args.command)
            module = importlib.import_module(ROLES[args.command])
            trio.run(_run_until_signal, module.run, config)
            return 0
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"arkor: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"arkor: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
