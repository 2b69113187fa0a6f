"""Serving an ASGI app on hypercorn's trio worker with the settings an object store needs.

STACK-NOTES: keep-alive must outlast httpx's 5 s pool expiry (else connection-reuse races), and
Quart's RESPONSE_TIMEOUT / MAX_CONTENT_LENGTH must be off for streamed bodies (see `quart_app`).
Connections are served by `arkor.web.hyper` (guarded connections, strict HTTP/1.1 framing).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.utils import repr_socket_addr

from arkor.config import HttpConfig
from arkor.web.hyper import serve_listeners

log = logging.getLogger(__name__)


class _Config(HypercornConfig):
    """hypercorn's settings, with the headers it adds to every response built once a second (it
    formats the Date for each one) and without `Server` (no need to tell what answers)."""

    _second = -1
    _headers: list[tuple[bytes, bytes]] = []

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        now = int(time.time())
        if now != self._second:
            self._headers = [(b"date", formatdate(now, usegmt=True).encode("ascii"))]
            self._second = now
        return self._headers


def hypercorn_config(http: HttpConfig, bind: str) -> HypercornConfig:
    """`bind` is ``host:port`` or ``fd://N`` (an inherited listening socket for worker processes)."""
    cfg = _Config()
    cfg.bind = [bind]
    cfg.keep_alive_timeout = float(http.keepAliveTimeout)
    cfg.keep_alive_max_requests = 100_000
    # Body events waiting for the app, per connection: 4 reads of 256 KiB (`arkor.web.hyper`),
    # about hypercorn's 10 of 64 KiB.
    cfg.max_app_queue_size = 4
    cfg.h11_max_incomplete_size = int(http.maxHeaderBytes)
    cfg.graceful_timeout = 5.0
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("hypercorn.error")
    if http.listenMode == "https":
        cfg.certfile = http.httpsCertFile
        cfg.keyfile = http.httpsKeyFile
    return cfg


def url_scheme(http: HttpConfig) -> str:
    return "https" if http.listenMode == "https" else "http"


def client_verify(http: HttpConfig) -> ssl.SSLContext | bool:
    """What internal httpx clients verify https peers against: `http.caFile`, else system CAs."""
    return ssl.create_default_context(cafile=http.caFile) if http.caFile else True


async def serve_app(
    app: Any,
    http: HttpConfig,
    bind: str,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled (or `shutdown_trigger` returns); `task_status` gets the bound URLs."""
    cfg = hypercorn_config(http, bind)
    sockets = cfg.create_sockets()
    ssl_context = cfg.create_ssl_context()
    listeners: list[Any] = []
    urls: list[str] = []
    for sock in sockets.secure_sockets:
        assert ssl_context is not None, "secure sockets come with a certificate (http.httpsCertFile)"
        sock.listen(cfg.backlog)
        listeners.append(
            trio.SSLListener(
                trio.SocketListener(trio.socket.from_stdlib_socket(sock)), ssl_context,
                https_compatible=True,
            )
        )
        urls.append(f"https://{repr_socket_addr(sock.family, sock.getsockname())}")
    for sock in sockets.insecure_sockets:
        sock.listen(cfg.backlog)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        urls.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
    log.info("listening on %s (%s)", bind, http.listenMode)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                serve_listeners, app, cfg, listeners, max_head_bytes=int(http.maxHeaderBytes),
                max_connections=http.maxConnections,
                shutdown_trigger=shutdown_trigger,
            )
        )
        task_status.started(urls)


def quart_app(name: str) -> Any:
    """A QuartTrio app with the body limits and response timeout that break streaming turned off.

    The data path does not go through Quart's body at all (see `arkor.web.asgi`); these settings
    keep the control-plane routes from truncating or rejecting what they legitimately serve.
    """
    from quart_trio import QuartTrio

    app = QuartTrio(name)
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024  # control-plane JSON only
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["BODY_TIMEOUT"] = 30
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    return app
