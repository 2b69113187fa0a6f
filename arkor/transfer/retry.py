"""Retry with exponential backoff and full jitter, for any awaitable operation.

Why a shared module: the object server (replica writes) and the SDK (requests to object servers)
both retry transient failures, and both must never retry what cannot succeed (a 4xx) and never sleep
unboundedly. Full jitter (a uniform delay in [0, min(cap, base * 2**n)]) spreads clients that failed
together, so a restarted server is not hit by all of them at the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """How often and how long to wait: `attempts` tries in all (1 = no retry)."""

    attempts: int = 5
    base: float = 0.1
    cap: float = 5.0

    def delay(self, failures: int) -> float:
        """Seconds to sleep after the `failures`-th consecutive failure (1-based)."""
        return random.uniform(0.0, min(self.cap, self.base * (2 ** max(0, failures - 1))))


NO_RETRY = Backoff(attempts=1)


async def retry(
    operation: Callable[[], Awaitable[T]],
    *,
    policy: Backoff,
    retryable: Callable[[Exception], bool],
    on_retry: Callable[[int, Exception, float], None] | None = None,
) -> T:
    """Run `operation` until it succeeds, fails with a non-retryable error, or attempts run out.

    `operation` is called afresh for every attempt, so it must be safe to repeat (idempotent, or
    its partial effects are overwritten by the next attempt). The last error is re-raised as is.
    Cancellation is never caught: it passes through the sleep and the operation.
    """
    failures = 0
    while True:
        try:
            return await operation()
        except Exception as exc:
            failures += 1
            if failures >= policy.attempts or not retryable(exc):
                raise
            pause = policy.delay(failures)
            if on_retry is not None:
                on_retry(failures, exc, pause)
            await trio.sleep(pause)
