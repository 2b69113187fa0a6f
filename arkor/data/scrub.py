"""The scrubber: reads every live needle in the background and verifies its CRC32C.

It walks the index in key order a page at a time (so it never holds a copy of the index), verifies
each needle the same way a GET does (`NeedleStore.open_stream` checks header and CRC32C before any
byte is handed out), and sleeps so that it reads at most data.scrubRate bytes per second. A bad
copy is reported by the store itself to its corruption hook (the repairer, which replaces it from
a good replica), so the scrubber only counts it. When a cycle ends the next
one starts after `pause` seconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import trio

from arkor.data.repair import Throttle
from arkor.data.store import NeedleStore
from arkor.errors import CorruptNeedle, NotFound
from arkor.fileid import FileID
from arkor.metrics import SCRUB_NEEDLES

log = logging.getLogger(__name__)

PAGE = 256


@dataclass
class ScrubProgress:
    cycles: int = 0
    position: str = "0"  # hex key the current cycle has reached
    needles_checked: int = 0
    bytes_checked: int = 0
    corrupt_found: int = 0
    last_cycle_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Scrubber:
    def __init__(
        self,
        store: NeedleStore,
        *,
        group: int,
        rate: float,
        pause: float = 10.0,
    ) -> None:
        self.store = store
        self.group = group
        self.throttle = Throttle(rate)
        self.pause = pause
        self.progress = ScrubProgress()

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await self.cycle()
            self.progress.cycles += 1
            self.progress.last_cycle_seconds = round(time.monotonic() - started, 3)
            await trio.sleep(self.pause)

    async def cycle(self) -> int:
        """One pass over every live needle; returns how many were found corrupt."""
        label = self.store.label
        after = 0
        found = 0
        while True:
            page = self.store.list_entries(after, PAGE)
            for entry in page:
                self.progress.position = f"{entry.key:x}"
                if entry.deleted:
                    continue
                await self.throttle.consume(entry.size + 64)
                fid = FileID(self.group, entry.key, entry.cookie)
                try:
                    _entry, _chunks, close = await self.store.open_stream(fid, 0, 0)
                except NotFound:
                    continue  # deleted meanwhile
                except CorruptNeedle as exc:  # already reported to the store's corruption hook
                    found += 1
                    self.progress.corrupt_found += 1
                    log.debug("scrub: %s", exc)
                else:
                    await close()
                self.progress.needles_checked += 1
                self.progress.bytes_checked += entry.size
                SCRUB_NEEDLES.labels(label).inc()
            if len(page) < PAGE:
                return found
            after = page[-1].key
