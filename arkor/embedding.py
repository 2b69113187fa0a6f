"""`arkor.embedded`: a whole Arkor node (`arkor allinone`) inside another trio program.

What lives here: the async context manager and its choice of ports and directory. What must not:
how the roles run (`arkor.allinone.serve_node`).

    async with arkor.embedded(data_dir="/var/lib/myapp/arkor") as node:
        async with node.client() as client:        # the SDK, talking to node.url
            await client.put("bucket", "key", b"data")
        app = node.asgi_app("/storage")             # mount the object API in your ASGI server
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from arkor.allinone import Node, serve_node
from arkor.config import Config, load_config


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def embedded(
    config: Config | str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    free_ports: bool = True,
) -> AsyncIterator[Node]:
    """Run registry, object server and one data group in this trio program until the block ends.

    `config` is a `Config`, a path to a runtime.yaml, or None (defaults); `data_dir` overrides
    `allinone.dataDir`. With `free_ports` (the default) every port is one the OS picks now, so
    several nodes (and tests) can run side by side; False keeps the configured ports. The block
    is entered once a write would succeed; leaving it stops every role (shielded cleanup).
    """
    if not isinstance(config, Config):
        config = load_config(config)
    ac = config.allinone
    if data_dir is not None:
        ac = dataclasses.replace(ac, dataDir=str(data_dir))
    s3 = config.s3
    if free_ports:
        ports = [_free_port(ac.host) for _ in range(3 + len(ac.dataPorts))]
        ac = dataclasses.replace(ac, objectPort=ports[0], registryPort=ports[1], dataPorts=ports[3:])
        s3 = dataclasses.replace(s3, port=ports[2])
    config = dataclasses.replace(config, allinone=ac, s3=s3)
    async with trio.open_nursery() as nursery:
        node = await nursery.start(serve_node, config)
        try:
            yield node
        finally:
            nursery.cancel_scope.cancel()
