"""hypercorn's trio worker, hardened: guarded connections and strict HTTP/1.1 framing.

What lives here: `serve_listeners` (hypercorn's `worker_serve` for plain and TLS TCP listeners),
the per-connection guard and the h11 protocol subclass that enforces what an object store needs.
What must not: application routing, limits of request bodies (see `arkor.web.asgi`).

Why not plain `hypercorn.trio.serve`:
- one connection's exception ended the server: hypercorn's error-response path (an h11
  RemoteProtocolError on a half-sent body) raced its own `send_eof` and raised
  `trio.BusyResourceError` out of the connection task, through `serve_listeners`, out of the
  server. Here every connection runs under `_guarded`, which logs and counts what escapes
  (`arkor_http_connection_errors_total`), and a busy stream is treated as a closed one.
- h11 accepts Content-Length together with Transfer-Encoding (RFC 9112 6.3: reject and close),
  and enforces `max_incomplete_event_size` only on heads that arrive in several reads.
- every 503 carries `Retry-After` (the app's own, else 2 s).
- a response head is held until the first body bytes (or the end of the message) and written with
  them: a small answer is one `send` instead of three (head, body, and the empty end of a
  Content-Length body), which was most of the server's cost per small GET.
- keep-alive: hypercorn restarts an idle-timeout task for every request (a lock and a
  `nursery.start`, about 6 % of a small GET's CPU) and keeps a connection whose client has gone
  until that timeout. Here one watcher per connection follows a deadline each request moves, and
  a connection whose client has closed is closed as soon as its request is done.
- reads of 256 KiB instead of 64 KiB: each read is one body event through hypercorn, the app
  queue and the handler, so large bodies cost a quarter of the events (`_read_data`).
- at most `max_connections` connections are served at once (`arkor.web.admission`).
- hypercorn answers `Expect: 100-continue` before the app runs. Here `100 Continue` goes out when
  the app first asks for the body, that is after its auth, size and precondition checks; an app
  that answers without reading gets its answer out and the connection closed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from http import HTTPStatus
from itertools import chain
from typing import Any

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, RawData, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.events import Body, Data, EndBody, StreamClosed
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.h11 import STREAM_ID, H11Protocol
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import parse_socket_addr, wrap_app
from prometheus_client import Counter

from arkor.web.admission import Admission

log = logging.getLogger(__name__)

CONNECTION_ERRORS = Counter(
    "arkor_http_connection_errors_total",
    "Exceptions that escaped one HTTP connection (logged; the server goes on)",
    ["kind"],
)
FRAMING_REJECTS = Counter(
    "arkor_http_framing_rejects_total", "Requests refused for their framing", ["reason"]
)


RETRY_AFTER = b"2"  # seconds, on a 503 that does not say


class _ContinueApp:
    """Wraps the ASGI app of one request: `100 Continue` on its first body read, not before."""

    def __init__(self, app: Any, protocol: StrictH11Protocol) -> None:
        self.app = app
        self.protocol = protocol

    async def __call__(self, scope: Any, receive: Any, send: Any, *rest: Any) -> None:
        protocol = self.protocol
        refused = False  # answered while the client still waited for `100 Continue`

        async def tracking_send(message: Any) -> None:
            nonlocal refused
            if message is not None and message.get("type") == "http.response.start":
                refused = protocol.waiting_for_continue()
                if message.get("status") == 503:
                    message = _with_retry_after(message)
            await send(message)

        async def continue_receive() -> Any:
            if refused:
                # The client must not send the body now: it never comes, and the connection is
                # closed after the response (h11 cannot start a next cycle).
                return {"type": "http.disconnect"}
            if protocol.waiting_for_continue():
                await protocol.send_continue()
            return await receive()

        await self.app(scope, continue_receive, tracking_send, *rest)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


def _with_retry_after(message: Any) -> Any:
    """A 503 of any role says when to come back (git-lfs and the S3 SDKs retry on it)."""
    headers = list(message.get("headers", []))
    if not any(bytes(name).lower() == b"retry-after" for name, _ in headers):
        headers.append((b"retry-after", RETRY_AFTER))
        message = {**message, "headers": headers}
    return message


# One read from a connection (hypercorn reads 64 KiB).
READ_SIZE = 256 * 1024

# A response head is joined to a first body chunk up to this size (one write); beyond, two writes.
COALESCE_MAX = 64 * 1024


class StrictH11Protocol(H11Protocol):
    """h11 with the framing checks of RFC 9112 and a late `100 Continue` (module docstring)."""

    def __init__(self, *args: Any, max_head_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head_bytes = max_head_bytes
        self.held_head = b""  # a response head not yet written (`_send_h11_event`)
        self.app = _ContinueApp(self.app, self)  # type: ignore[assignment]  # wraps every stream's app

    def waiting_for_continue(self) -> bool:
        connection = self.connection
        return isinstance(connection, h11.Connection) and connection.they_are_waiting_for_100_continue

    async def _send_h11_event(self, event: Any) -> None:
        # A status line needs its reason phrase for botocore: it reads a final answer to
        # `Expect: 100-continue` (an error, or an empty body) only as "HTTP/1.1 200 OK", and
        # hypercorn sends "HTTP/1.1 200 " (aws-cli and boto3 then fail with ConnectionClosedError).
        if isinstance(event, (h11.Response, h11.InformationalResponse)) and not event.reason:
            event = type(event)(status_code=event.status_code, headers=event.headers,  # validated
                                reason=_reason(event.status_code))
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            return
        if isinstance(event, h11.Response):  # held: it goes out with the first body bytes
            self.held_head = data
            return
        if self.held_head:
            head, self.held_head = self.held_head, b""
            if len(data) <= COALESCE_MAX:
                data = head + data
            else:  # a large first chunk is not copied to join it
                await self.send(RawData(data=head))
        if data:  # the end of a Content-Length body is empty: nothing to write
            await self.send(RawData(data=data))

    async def stream_send(self, event: StreamEvent) -> None:
        if isinstance(event, StreamClosed) and self.held_head:  # a head whose body never came
            head, self.held_head = self.held_head, b""
            await self.send(RawData(data=head))
        await super().stream_send(event)

    async def send_continue(self) -> None:
        await self._send_h11_event(
            h11.InformationalResponse(status_code=100, headers=self.config.response_headers("h11"))
        )

    async def _handle_events(self) -> None:
        # hypercorn's loop, without its unconditional `100 Continue` and with `_reject` checks.
        while True:
            try:
                event = self.connection.next_event()
            except h11.RemoteProtocolError as error:
                if self.connection.our_state in {h11.IDLE, h11.SEND_RESPONSE}:
                    await self._send_error_response(error.error_status_hint)
                await self.send(Closed())
                break
            if isinstance(event, h11.Request):
                reason = self._reject(event)
                if reason is not None:
                    FRAMING_REJECTS.labels(reason[1]).inc()
                    await self._send_error_response(reason[0])
                    await self.send(Closed())
                    break
                await self.send(Updated(idle=False))
                await self._check_protocol(event)
                await self._create_stream(event)
            elif event is h11.PAUSED:
                await self.can_read.clear()
                await self.can_read.wait()
            elif isinstance(event, h11.ConnectionClosed) or event is h11.NEED_DATA:
                break
            elif self.stream is None:
                break
            elif isinstance(event, h11.Data):
                await self.stream.handle(Body(stream_id=STREAM_ID, data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await self.stream.handle(EndBody(stream_id=STREAM_ID))
            elif isinstance(event, Data):  # a WebSocket connection's bytes, passed through
                await self.stream.handle(event)

    def _reject(self, request: h11.Request) -> tuple[int, str] | None:
        """(status, reason) when the request head must be refused, else None."""
        size = len(request.method) + len(request.target) + 12
        has_length = has_chunked = False
        for name, value in request.headers:
            size += len(name) + len(value) + 4
            if name == b"content-length":
                has_length = True
            elif name == b"transfer-encoding":
                has_chunked = True
        if has_length and has_chunked:
            return 400, "length_and_chunked"
        if size > self.max_head_bytes:
            return 431, "head_too_large"
        return None

    async def _send_error_response(self, status_code: int) -> None:
        await self._send_h11_event(
            h11.Response(
                status_code=status_code,
                headers=list(
                    chain(
                        [(b"content-length", b"0"), (b"connection", b"close")],
                        self.config.response_headers("h11"),
                    )
                ),
            )
        )
        await self._send_h11_event(h11.EndOfMessage())


class _StrictProtocolWrapper(ProtocolWrapper):
    """hypercorn's protocol switch with `StrictH11Protocol` for HTTP/1.1."""

    def __init__(self, *args: Any, max_head_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self.protocol, H11Protocol):
            self.protocol = StrictH11Protocol(
                self.app, self.config, self.context, self.task_group, self.state, self.ssl,
                self.client, self.server, self.send, max_head_bytes=max_head_bytes,
            )


class GuardedTCPServer(TCPServer):
    """One connection: hypercorn's `TCPServer` with the strict protocol; a stream another task is
    using (its `send_eof` racing an error response) counts as closed instead of raising."""

    def __init__(self, *args: Any, max_head_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head_bytes = max_head_bytes
        # Keep-alive: hypercorn starts a new idle-timeout task for every request (a lock and a
        # `nursery.start` each, 6 % of a small GET); here one task per connection waits on a
        # deadline that each request moves (`_watch_idle`).
        self.idle_scope = trio.CancelScope(deadline=trio.current_time() + self.config.keep_alive_timeout)
        self.busy = False
        self.went_idle: trio.Event | None = None  # set when a request ends, if the watcher waits
        self.reading_ended = False

    async def _watch_idle(self) -> None:
        """Close the connection once it has been idle for `keep_alive_timeout`, or when the
        server shuts down while it is idle; never while a request is in progress."""
        with self.idle_scope:
            while True:
                await self.context.terminated.wait()
                if not self.busy:
                    break
                self.went_idle = trio.Event()
                await self.went_idle.wait()
        with trio.CancelScope(shield=True):
            await self._initiate_server_close()

    def _set_idle(self, idle: bool) -> None:
        self.busy = not idle
        if not idle:
            self.idle_scope.deadline = math.inf
            return
        if self.reading_ended:  # the client has gone: nothing more can come
            self.idle_scope.deadline = -math.inf
        else:
            self.idle_scope.deadline = trio.current_time() + self.config.keep_alive_timeout
        if self.went_idle is not None:
            self.went_idle.set()
            self.went_idle = None

    async def _read_data(self) -> None:
        """hypercorn's read loop, with reads of `READ_SIZE` instead of 64 KiB: every read becomes
        one body event that crosses hypercorn, the app queue and the handler, so a large body
        costs a quarter of the events (the app queue is shortened to keep the bytes it may hold
        per connection about the same: `arkor.web.serve`)."""
        read_timeout = self.config.read_timeout  # None (the default): no scope per read
        try:
            while True:
                try:
                    if read_timeout is None:
                        data = await self.stream.receive_some(READ_SIZE)
                    else:
                        with trio.fail_after(read_timeout):
                            data = await self.stream.receive_some(READ_SIZE)
                except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                    break
                await self.protocol.handle(RawData(bytes(data)))
                if not data:
                    break
            await self.protocol.handle(Closed())
        finally:
            self.reading_ended = True
            if not self.busy:
                self.idle_scope.deadline = -math.inf

    async def run(self) -> None:
        try:
            try:
                with trio.fail_after(self.config.ssl_handshake_timeout):
                    await self.stream.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError):
                return
            alpn_protocol = self.stream.selected_alpn_protocol()
            sock = self.stream.transport_stream.socket
            ssl = True
        except AttributeError:  # not TLS
            alpn_protocol = "http/1.1"
            sock = self.stream.socket
            ssl = False
        try:
            client = parse_socket_addr(sock.family, sock.getpeername())
            server = parse_socket_addr(sock.family, sock.getsockname())
            async with TaskGroup() as task_group:
                self._task_group = task_group
                self.protocol = _StrictProtocolWrapper(
                    self.app, self.config, self.context, task_group, ConnectionState(self.state),
                    ssl, client, server, self.protocol_send, alpn_protocol,
                    max_head_bytes=self.max_head_bytes,
                )
                await self.protocol.initiate()
                task_group._nursery.start_soon(self._watch_idle)  # type: ignore[union-attr]
                await self._read_data()
        except OSError:
            pass
        finally:
            await self._close()

    async def protocol_send(self, event: Any) -> None:
        if isinstance(event, Updated):
            self._set_idle(event.idle)
            return
        if isinstance(event, Closed):
            self.idle_scope.cancel()  # the connection is done: nothing left to watch
        try:
            await super().protocol_send(event)
        except trio.BusyResourceError:
            if isinstance(event, RawData):
                await self.protocol.handle(Closed())
            else:
                raise


async def _guarded(server_factory: Callable[[Any], Awaitable[None]], stream: Any) -> None:
    """Run one connection; whatever escapes it is logged and counted, never raised."""
    try:
        await server_factory(stream)
    except Exception as exc:  # noqa: BLE001 - one connection never ends the server
        leaf: BaseException = exc
        while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
            leaf = leaf.exceptions[0]
        CONNECTION_ERRORS.labels(type(leaf).__name__).inc()
        log.warning("HTTP connection ended by %r (the server goes on)", exc, exc_info=True)
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            try:
                await stream.aclose()
            except Exception:  # noqa: BLE001 - already broken
                pass


async def serve_listeners(
    app: Any,
    config: HypercornConfig,
    listeners: Sequence[Any],
    *,
    max_head_bytes: int,
    max_connections: int = 2048,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """hypercorn's `worker_serve` for TCP listeners (lifespan, graceful shutdown), with every
    connection under `_guarded`, HTTP/1.1 through `StrictH11Protocol`, and at most
    `max_connections` served at once (`arkor.web.admission`)."""
    admission = Admission(max_connections)

    async def handle(stream: Any) -> None:
        try:
            await _guarded(factory, stream)
        finally:
            admission.release(stream)

    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    factory = partial(
        GuardedTCPServer, wrapped, config, context, ConnectionState(lifespan_state.copy()),
        max_head_bytes=max_head_bytes,
    )
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        try:
            await lifespan.wait_for_startup()
        except trio.ClosedResourceError:
            pass  # an app that returned from its lifespan scope (no lifespan support)
        async with trio.open_nursery() as server_nursery:
            task_status.started()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        partial(
                            trio.serve_listeners, handle, [admission.listener(x) for x in listeners],
                            handler_nursery=server_nursery,
                        )
                    )
                    if shutdown_trigger is not None:
                        await shutdown_trigger()
                    else:
                        await context.terminate.wait()
                    nursery.cancel_scope.cancel()
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        try:
            await lifespan.wait_for_shutdown()
        except trio.ClosedResourceError:
            pass  # an app that returned from its lifespan scope (no lifespan support)
        lifespan_nursery.cancel_scope.cancel()
