"""A one-line progress bar (bytes, rate, ETA) for transfers, drawn only on a terminal.

Why a callable: the SDK reports progress as ``progress(nbytes)`` after each part, range or write
batch; the CLI passes a `ProgressBar`, scripts pass their own function or nothing. When stderr is
not a TTY (pipes, CI logs) the bar stays silent so output is not polluted.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(value: float) -> str:
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressBar:
    """Call with the number of bytes just transferred; `close()` draws the final line."""

    def __init__(
        self, label: str, total: int | None, *, stream: TextIO | None = None, enabled: bool | None = None,
        interval: float = 0.2,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.interval = interval
        self.done = 0
        self.started = time.monotonic()
        self._drawn = 0.0

    def __call__(self, nbytes: int) -> None:
        self.done += nbytes
        now = time.monotonic()
        if self.enabled and now - self._drawn >= self.interval:
            self._drawn = now
            self._draw(now)

    def render(self, now: float | None = None) -> str:
        elapsed = max(1e-6, (now if now is not None else time.monotonic()) - self.started)
        rate = self.done / elapsed
        parts = [self.label[-40:]]
        if self.total:
            fraction = min(1.0, self.done / self.total)
            filled = int(fraction * 20)
            parts.append(f"{fraction * 100:3.0f}% [{'#' * filled}{'.' * (20 - filled)}]")
            parts.append(f"{human_bytes(self.done)} / {human_bytes(self.total)}")
        else:
            parts.append(human_bytes(self.done))
        parts.append(f"{human_bytes(rate)}/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {_clock((self.total - self.done) / rate)}")
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        self.stream.write("\r" + self.render(now) + "\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
