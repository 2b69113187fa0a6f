"""Raw-socket HTTP/1.1 for framing tests: send exact bytes, read what comes back until EOF or a
timeout, split the responses."""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass


@dataclass
class Exchange:
    data: bytes  # everything the server sent
    closed: bool  # the server closed the connection (EOF) before the timeout
    seconds: float

    @property
    def statuses(self) -> list[int]:
        return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3})", self.data)]


def exchange(port: int, *parts: bytes, timeout: float = 5.0, pause: float = 0.0) -> Exchange:
    """Send `parts` (with `pause` seconds between them), then read until EOF or `timeout`."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for i, part in enumerate(parts):
            if i and pause:
                time.sleep(pause)
            try:
                sock.sendall(part)
            except OSError:
                break
        out = bytearray()
        deadline = started + timeout
        closed = False
        while time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            out += chunk
    return Exchange(bytes(out), closed, time.monotonic() - started)
