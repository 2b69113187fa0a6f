"""One web layer for every role: a QuartTrio app for the lifecycle and control routes, the raw-ASGI
hot paths in front of it, wired by `role_app` the same way in the object, registry and data roles.

What lives here: `control_app` (a QuartTrio app answering errors with the JSON error body),
`role_app` (router -> control fallback, optional early-answer handling, metrics) and the
early-answer drain that `arkor.web.lifecycle.RequestCycle` decides. What must not: routes of a
role, or protocol parsing (`arkor.web.semantics`).

Lifespan is Quart's: hypercorn's lifespan scope falls through the router to the control app, so
`before_serving` / `after_serving` hooks are the one place for start-up and shutdown work.
Per request, the hot path crosses exactly the layers it crossed before: metrics, (object role:
the early-answer guard), the router; nothing else.
"""

from __future__ import annotations

from typing import Any

import trio

from arkor.errors import ArkorError
from arkor.web.asgi import ASGIApp, Receive, Scope, Send, StreamRouter
from arkor.web.lifecycle import RequestCycle, declares_body
from arkor.web.metrics import instrument
from arkor.web.serve import quart_app

DRAIN_BYTES = 1024**3
DRAIN_SECONDS = 120.0
DRAIN_CHUNK_SECONDS = 5.0  # a client still sending its body sends more often than this


def control_app(name: str, health: dict[str, Any] | None = None) -> Any:
    """A QuartTrio app (`arkor.web.serve.quart_app`) whose errors are the JSON error body:
    ArkorError as raised, Quart's own 404/405 as ``not_found`` / ``method_not_allowed``. With
    `health`, it answers the liveness probe ``GET /healthz`` with ``{"status": "ok", **health}``."""
    from quart import jsonify
    from werkzeug.exceptions import HTTPException

    app = quart_app(name)
    if health is not None:
        alive = {"status": "ok", **health}

        @app.get("/healthz")
        async def healthz() -> Any:
            return jsonify(alive)

    @app.errorhandler(ArkorError)
    async def arkor_error(exc: ArkorError) -> Any:
        return jsonify(exc.to_json()), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Any:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.code or 500, "bad_request")
        return jsonify({"error": {"code": code, "message": exc.description or code}}), exc.code

    return app


def role_app(
    role: str,
    router: StreamRouter,
    control: Any,
    *,
    early_answers: float | None = None,
) -> ASGIApp:
    """The ASGI app of a role: `router`'s raw routes, everything else (lifespan included) to the
    QuartTrio `control` app, every request counted by `instrument`.

    `early_answers` (a body chunk timeout, seconds) turns on the drain of request bodies answered
    before they were read (roles that take large bodies)."""
    router.fallback = _quart_entry(control)
    app: ASGIApp = router
    if early_answers is not None:
        app = guard_early_answers(router, min(early_answers, DRAIN_CHUNK_SECONDS))
    return instrument(app, role)


def _quart_entry(control: Any) -> ASGIApp:
    """The control app as the router's fallback. A request without a body gets its (empty) body
    from here: Quart's body-reader task would otherwise call hypercorn's `receive` again after the
    response, and hypercorn then keeps a ``Connection: close`` connection open until its
    keep-alive timeout (measured: 5 s instead of at once)."""

    async def entry(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or declares_body(scope.get("headers", ())):
            await control(scope, receive, send)
            return
        delivered = False

        async def empty_body() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await trio.sleep_forever()  # Quart cancels its reader once the response is sent
            raise AssertionError("unreachable")

        await control(scope, empty_body, send)

    return entry


def guard_early_answers(app: ASGIApp, drain_timeout: float) -> ASGIApp:
    """Wrap `app` so that an answer given before the request body was read closes the connection
    after draining that body within bounds (see `arkor.web.lifecycle`)."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        cycle = RequestCycle.for_scope(scope)
        if cycle.body_done:  # no body (a GET, a HEAD): nothing can be answered early
            await app(scope, receive, send)
            return

        async def tracking_receive() -> dict[str, Any]:
            message = await receive()
            cycle.received(message)
            return message

        async def closing_send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                if cycle.starting(int(message["status"])):
                    message = cycle.with_close(message)
            elif kind == "http.response.body" and not message.get("more_body", False):
                if cycle.finishing():
                    await _drain(tracking_receive, cycle, drain_timeout)
                if cycle.finished():
                    nursery.start_soon(_discard_until_closed, tracking_receive)
            await send(message)

        async with trio.open_nursery() as nursery:
            try:
                await app(scope, tracking_receive, closing_send)
                if cycle.abandoned():
                    await _drain(tracking_receive, cycle, drain_timeout)
            finally:
                nursery.cancel_scope.cancel()  # the discard of an abandoned body

    return guarded


def answer_lifespan(app: ASGIApp) -> ASGIApp:
    """For an app with no control app behind it (the S3 listener): answer hypercorn's lifespan
    protocol (there is no start-up work), pass everything else to `app`."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return wrapped


async def _drain(receive: Receive, cycle: RequestCycle, chunk_timeout: float) -> None:
    """Read and drop the rest of a request body we answered early, within bounds; past them we
    give up and the connection is closed."""
    dropped = 0
    with trio.move_on_after(DRAIN_SECONDS):
        while not cycle.body_done and dropped < DRAIN_BYTES:
            with trio.move_on_after(chunk_timeout) as scope:
                message = await receive()
            if scope.cancelled_caught or message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))


async def _discard_until_closed(receive: Receive) -> None:
    """Keep taking body messages until hypercorn says the stream is closed: when a response
    completes, hypercorn pushes `http.disconnect` into the request's bounded queue from inside our
    `send`; if that queue is full of body chunks nobody reads, the `send` never returns."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
