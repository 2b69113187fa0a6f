"""Restarting one role of a process without ending the others (`arkor allinone`, embedded nodes).

What lives here: `supervise`, which runs one role (a `nursery.start`-style function), and when it
fails after start-up logs it, counts it in `arkor_role_restarts_total{role}` and starts it again
after a growing pause, a bounded number of times per window; `Current`, a stable reference to the
latest instance a restarted role reported (the registry service other roles call).
What must not: anything about a particular role (see `arkor.allinone`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from prometheus_client import Counter

log = logging.getLogger(__name__)

ROLE_RESTARTS = Counter(
    "arkor_role_restarts_total", "Roles of a process restarted after a failure", ["role"]
)

MAX_RESTARTS = 5  # within RESTART_WINDOW; one more failure ends the process (then systemd & co.)
RESTART_WINDOW = 600.0
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0


class RoleFailed(Exception):
    """A role failed more often than the restart budget allows."""


class Current:
    """Forwards every attribute to the latest instance of a restarted role's object."""

    def __init__(self) -> None:
        self.target: Any = None

    def __getattr__(self, name: str) -> Any:
        if self.target is None:
            raise AttributeError(name)
        return getattr(self.target, name)


async def supervise(
    role: str,
    start: Callable[..., Awaitable[Any]],
    *,
    on_started: Callable[[Any], None] = lambda value: None,
    max_restarts: int = MAX_RESTARTS,
    window: float = RESTART_WINDOW,
    first_backoff: float = FIRST_BACKOFF,
    max_backoff: float = MAX_BACKOFF,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `start` (called with `task_status=`) until cancelled, restarting it when it fails.

    A failure before the first start-up completes is raised (a bad port or directory is a
    configuration problem, not something a restart fixes). `on_started` gets each instance's
    started value; `task_status` the first one.
    """
    failures: deque[float] = deque()
    first = True
    backoff = first_backoff
    while True:
        try:
            async with trio.open_nursery() as nursery:
                value = await nursery.start(start)
                on_started(value)
                if first:
                    task_status.started(value)
                    first = False
            error: BaseException | None = None
        except Exception as exc:  # noqa: BLE001 - a role's failure is handled here, by restart
            while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]  # the role's own error, as it raised it
            if first:
                raise exc from None
            error = exc
        now = trio.current_time()
        while failures and failures[0] < now - window:
            failures.popleft()
        if not failures:
            backoff = first_backoff  # healthy for a whole window: start again from a short pause
        failures.append(now)
        if len(failures) > max_restarts:
            raise RoleFailed(
                f"role {role} failed {len(failures)} times in {window:.0f} s; last: {error!r}"
            ) from error
        ROLE_RESTARTS.labels(role).inc()
        log.error(
            "role %s %s; restarting it in %.1f s (restart %d of %d in %.0f s)",
            role, f"failed: {error!r}" if error else "exited", backoff, len(failures),
            max_restarts, window, exc_info=error,
        )
        await trio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff)
