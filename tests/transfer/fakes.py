"""In-memory replicas and registry for engine tests, failing on cue.

`MemoryReplica.mode`: "ok"; "fail" (every call raises ServiceUnavailable at once); "hang" (every call
waits forever: a black-holed peer); "corrupt" (reads return flipped bytes, as a damaged copy or
transfer would); `delay` adds seconds to every call (a slow peer). `MemoryRegistry` serves the
group list and key leases (optionally hanging) and records what is handed to the reclaim queue.
Both count calls, so tests can say which replica was (not) asked.
"""

from __future__ import annotations

from collections import Counter

import trio

from arkor.checksum import crc32c as crc32c_of
from arkor.errors import ChecksumMismatch, CorruptNeedle, NotFound, ServiceUnavailable
from arkor.fileid import FileID
from arkor.model import Fragment, GroupInfo, KeyRange, NeedleInfo, ServerInfo


class MemoryReplica:
    def __init__(self, url: str) -> None:
        self.url = url
        self.needles: dict[str, bytes] = {}
        self.mode = "ok"
        self.delay = 0.0
        self.calls: Counter[str] = Counter()
        self.cancelled: Counter[str] = Counter()

    async def _gate(self, op: str) -> None:
        self.calls[op] += 1
        if self.mode == "fail":
            raise ServiceUnavailable(f"{self.url} is failing on cue")
        try:
            if self.mode == "hang":
                await trio.sleep_forever()
            if self.delay:
                await trio.sleep(self.delay)
        except trio.Cancelled:
            self.cancelled[op] += 1
            raise

    async def put_needle(self, fid: FileID, data: bytes, crc: int) -> None:
        await self._gate("put")
        if crc32c_of(data) != crc:
            raise ChecksumMismatch("body does not match its CRC32C")
        self.needles[str(fid)] = bytes(data)

    async def get_needle(
        self, fid: FileID, offset: int = 0, length: int | None = None, *, size: int | None = None,
        crc32c: int | None = None,
    ) -> bytes:
        await self._gate("get")
        data = self.needles.get(str(fid))
        if data is None:
            raise NotFound(f"no needle {fid}")
        data = data[offset: None if length is None else offset + length]
        if self.mode == "corrupt" and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if crc32c is not None and offset == 0 and length is None and crc32c_of(data) != crc32c:
            raise CorruptNeedle(f"needle {fid} does not match the CRC32C asked for")
        return data

    async def head_needle(self, fid: FileID) -> NeedleInfo:
        await self._gate("head")
        data = self.needles.get(str(fid))
        if data is None:
            raise NotFound(f"no needle {fid}")
        return NeedleInfo(fid=str(fid), size=len(data), crc32c=crc32c_of(data))

    async def delete_needle(self, fid: FileID) -> None:
        await self._gate("delete")
        self.needles.pop(str(fid), None)


class MemoryRegistry:
    """Groups of `MemoryReplica`s; `replica(server)` is the engine's replica factory."""

    def __init__(self, groups: int = 2, replicas: int = 3) -> None:
        self.replicas: dict[str, MemoryReplica] = {}
        self.servers: dict[int, list[ServerInfo]] = {}
        for g in range(1, groups + 1):
            self.servers[g] = []
            for r in range(1, replicas + 1):
                url = f"mem://g{g}r{r}"
                self.replicas[url] = MemoryReplica(url)
                self.servers[g].append(ServerInfo(server_id=f"g{g}r{r}", url=url, group=g,
                                                  capacity=1 << 40, free=1 << 40))
        self.writable = set(self.servers)
        self.next_key = 1
        self.discarded: list[Fragment] = []
        self.hang = False
        self.calls: Counter[str] = Counter()

    def replica(self, server: ServerInfo) -> MemoryReplica:
        return self.replicas[server.url]

    def group_replicas(self, group: int) -> list[MemoryReplica]:
        return [self.replicas[s.url] for s in self.servers[group]]

    def stored(self) -> set[str]:
        """Every needle held by any replica."""
        return {fid for r in self.replicas.values() for fid in r.needles}

    async def _gate(self, op: str) -> None:
        self.calls[op] += 1
        if self.hang:
            await trio.sleep_forever()

    async def groups(self) -> list[GroupInfo]:
        await self._gate("groups")
        return [GroupInfo(group=g, servers=list(s), writable=g in self.writable, free=1 << 40)
                for g, s in self.servers.items()]

    async def lease_keys(self, count: int) -> KeyRange:
        await self._gate("lease_keys")
        start, self.next_key = self.next_key, self.next_key + count
        return KeyRange(start=start, count=count)

    async def discard_fragments(self, fragments: list[Fragment]) -> None:
        await self._gate("discard")
        self.discarded.extend(fragments)
