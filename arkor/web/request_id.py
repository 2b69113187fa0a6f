"""Request IDs for answers and logs: unique, not secret.

A random prefix per process and a counter. A per-request `secrets.token_hex` cost a system call
(getrandom) on every answer, about 2 % of an S3 GET's time on the loop. The prefix (32 random
bits, drawn again when the 32-bit counter wraps) tells processes and restarts apart.
"""

from __future__ import annotations

import secrets


class _Ids:
    def __init__(self) -> None:
        self.prefix = secrets.token_hex(4).upper()
        self.next = 0

    def new(self) -> str:
        if self.next > 0xFFFFFFFF:
            self.prefix, self.next = secrets.token_hex(4).upper(), 0
        n = self.next
        self.next = n + 1
        return f"{self.prefix}{n:08X}"


_IDS = _Ids()


def new_request_id() -> str:
    """16 upper-case hex digits, as S3 request IDs look; no two alike within a process."""
    return _IDS.new()
