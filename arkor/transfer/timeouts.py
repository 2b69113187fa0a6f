"""The four timeouts of an internal call, and how they map onto httpx.

What lives here: `Timeouts` (connect, first byte, idle, whole transfer), one value for calls to data
servers and one for calls to the registry (object.replica*Timeout / object.registry*Timeout), and
the httpx form of it. Nothing is left at a library default: httpx's pool timeout (waiting for a free
pooled connection, a local saturation, not a peer's fault) is the whole-transfer deadline.

- connect: TCP (and TLS) connection set-up.
- first_byte: from the request being sent to the response head. A pooled keep-alive connection
  skips `connect`, so a peer that went silent is caught here, not after the whole-transfer deadline.
  For a needle PUT the head comes after the data server's fsync, so it is counted from the end of
  the body.
- idle: the longest gap between two chunks of a body, either way (httpx read/write timeouts).
- transfer: a deadline for the whole call, whatever the chunks do (a trickling peer).

What must not live here: retries and failover (engine.py), health (health.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from arkor.httpclient import LeanClient
from arkor.httpclient import Timeouts as LeanTimeouts


@dataclass(frozen=True)
class Timeouts:
    connect: float = 2.0
    first_byte: float = 5.0
    idle: float = 5.0
    transfer: float = 30.0

    @classmethod
    def uniform(cls, seconds: float) -> Timeouts:
        """One number for everything (tools and tests that pass a float), connect capped at 5 s."""
        return cls(connect=min(seconds, 5.0), first_byte=seconds, idle=seconds, transfer=seconds)

    @classmethod
    def from_config(cls, section: object, kind: str) -> Timeouts:
        """`kind` "replica" or "registry" of the `object` config section (its four keys)."""
        return cls(
            connect=float(getattr(section, f"{kind}ConnectTimeout")),
            first_byte=float(getattr(section, f"{kind}FirstByteTimeout")),
            idle=float(getattr(section, f"{kind}IdleTimeout")),
            transfer=float(getattr(section, f"{kind}Timeout")),
        )

    @classmethod
    def of(cls, value: float | Timeouts) -> Timeouts:
        return value if isinstance(value, Timeouts) else cls.uniform(float(value))

    def for_client(self, client: object) -> Any:  # LeanTimeouts | httpx.Timeout, by the client's kind
        """The form `client` takes: the roles call each other with the lean client; tests and
        tools may hand an httpx.AsyncClient they also use for other calls (first byte = read)."""
        return self.lean() if isinstance(client, LeanClient) else self.httpx(head=True)

    def lean(self) -> LeanTimeouts:
        """The lean internal client's form: connect (and the wait for a pooled connection), the
        answer's head within `first_byte` of the request being sent, `idle` between chunks."""
        return LeanTimeouts(connect=self.connect, read=self.idle, write=self.idle, pool=self.connect,
                            first_byte=self.first_byte)

    def httpx(self, *, head: bool = False) -> httpx.Timeout:
        """httpx timeouts: `head=True` when the first read is the response head after a sent body
        (read = first byte); otherwise reads are chunks of a body (read = idle) and the first byte
        is bounded by the caller (a `trio.fail_after` around the head)."""
        return httpx.Timeout(
            connect=self.connect,
            read=self.first_byte if head else self.idle,
            write=self.idle,
            pool=self.transfer,
        )
