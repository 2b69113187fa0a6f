"""Per-replica health, shared by every request of a process: who to write to, who to read first.

What lives here: `HealthTracker`. For each data server (by URL) it keeps the consecutive failures,
an EWMA of its lag (how much later than its peers it finishes a write, or than the hedging
threshold it answers a read) and a circuit breaker:

- closed: normal.
- open: after a failure (error, timeout) or when the lag EWMA passes `slow_lag`. Writes avoid
  groups with an open member while another writable group exists; reads try it last. It stays open
  for a backoff (1 s, doubling on every failed probe up to 10 s: a healed replica is back
  within 10 s, a dead one costs one write per 10 s).
- probe: once the backoff has passed, ONE write is allowed through to probe it (`claim_probe`
  re-arms the backoff for everybody else); a success closes the circuit and resets the backoff, a
  failure re-opens it for twice as long. A read that happens to succeed on it closes it too.

Why here and not in the registry: the registry notices a dead server only after its heartbeat
timeout and knows nothing of a slow or half-partitioned one; what this process measures on its own
calls is first-hand and immediate. Nothing here does I/O or starts tasks: the engine reports
outcomes, placement and read ordering ask.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

from arkor.metrics import TRANSFER_CIRCUIT_OPEN
from arkor.model import GroupInfo, ServerInfo

EWMA_WEIGHT = 0.3  # weight of the newest sample
BASE_BACKOFF = 1.0
MAX_BACKOFF = 10.0


@dataclass
class _Replica:
    failures: int = 0  # consecutive
    lag: float | None = None  # EWMA, seconds
    latency: float | None = None  # EWMA of successful calls, seconds (reported, for ordering ties)
    open_until: float = 0.0  # 0: circuit closed
    backoff: float = BASE_BACKOFF
    opened: int = 0  # times opened (metrics, tests)


@dataclass(kw_only=True, eq=False)  # shared by a process: compared and hashed by identity
class HealthTracker:
    slow_lag: float = 0.1
    clock: Callable[[], float] = trio.current_time
    base_backoff: float = BASE_BACKOFF
    max_backoff: float = MAX_BACKOFF
    _replicas: dict[str, _Replica] = field(default_factory=dict, init=False, repr=False)

    def _get(self, url: str) -> _Replica:
        state = self._replicas.get(url)
        if state is None:
            state = self._replicas[url] = _Replica(backoff=self.base_backoff)
        return state

    # --- outcomes -------------------------------------------------------------------------------
    def success(self, url: str, latency: float | None = None) -> None:
        state = self._get(url)
        state.failures = 0
        if latency is not None:
            state.latency = latency if state.latency is None else (
                EWMA_WEIGHT * latency + (1 - EWMA_WEIGHT) * state.latency)
        if state.open_until and (state.lag is None or state.lag < self.slow_lag):
            state.open_until = 0.0  # a probe (or a last-resort read) went through
            state.backoff = self.base_backoff
            TRANSFER_CIRCUIT_OPEN.labels(url).set(0)

    def failure(self, url: str) -> None:
        state = self._get(url)
        state.failures += 1
        self._open(url, state)

    def observe_lag(self, url: str, lag: float) -> None:
        """How much later than expected a call finished (behind its peers, past the hedge)."""
        state = self._get(url)
        state.lag = EWMA_WEIGHT * lag + (1 - EWMA_WEIGHT) * (state.lag or 0.0)
        if state.lag > self.slow_lag:
            # At the threshold: the probe after the backoff decides (one fast answer closes the
            # circuit, one slow answer re-opens it for twice as long).
            state.lag = self.slow_lag
            self._open(url, state)

    def _open(self, url: str, state: _Replica) -> None:
        now = self.clock()
        TRANSFER_CIRCUIT_OPEN.labels(url).set(1)
        if state.open_until:  # already open or probing: a failed probe backs off further
            state.backoff = min(self.max_backoff, state.backoff * 2)
        state.open_until = now + state.backoff
        state.opened += 1

    # --- questions ------------------------------------------------------------------------------
    def is_open(self, url: str) -> bool:
        """Open and not yet due for a probe."""
        state = self._replicas.get(url)
        return state is not None and self.clock() < state.open_until

    def is_closed(self, url: str) -> bool:
        state = self._replicas.get(url)
        return state is None or not state.open_until

    def opened(self, url: str) -> int:
        state = self._replicas.get(url)
        return 0 if state is None else state.opened

    def group_healthy(self, group: GroupInfo) -> bool:
        """Every member up and its circuit closed."""
        return all(s.state == "up" and self.is_closed(s.url) for s in group.servers)

    def group_probe_due(self, group: GroupInfo) -> bool:
        """No member open any more, at least one waiting to be probed."""
        return all(s.state == "up" and not self.is_open(s.url) for s in group.servers) and not (
            self.group_healthy(group))

    def claim_probe(self, group: GroupInfo) -> None:
        """This write probes `group`: re-arm its members' backoff so no other write follows it
        until the probe has answered (`success` closes the circuits)."""
        now = self.clock()
        for server in group.servers:
            state = self._replicas.get(server.url)
            if state is not None and state.open_until:
                state.open_until = now + state.backoff

    def read_order(self, servers: Iterable[ServerInfo]) -> list[ServerInfo]:
        """Healthy live replicas first (shuffled, to spread load), then those due for a probe or
        not reported up, then open circuits."""
        first: list[ServerInfo] = []
        later: list[ServerInfo] = []
        last: list[ServerInfo] = []
        now = self.clock()
        for server in servers:
            state = self._replicas.get(server.url)
            if state is not None and state.open_until:
                (last if now < state.open_until else later).append(server)
            elif server.state != "up":
                later.append(server)
            else:
                first.append(server)
        if len(first) > 1:
            random.shuffle(first)
        if later or last:
            first += later + last
        return first

    def snapshot(self) -> dict[str, dict[str, float | int | None]]:
        """For logs and /metrics-style inspection."""
        now = self.clock()
        return {
            url: {"failures": s.failures, "lag": s.lag, "latency": s.latency,
                  "open_for": max(0.0, s.open_until - now) if s.open_until else 0.0,
                  "opened": s.opened}
            for url, s in self._replicas.items()
        }
