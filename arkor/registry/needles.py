"""Registry operations on needle keys: leasing key ranges, discarding fragments, the durable
reclaim queue the reaper drains, and the orphan sweep's claims.

Must not: change manifests (objects and multipart do)."""


import time
from typing import Any

from arkor.errors import (
    BadRequest,
)
from arkor.fileid import FileID
from arkor.model import (
    Fragment,
    KeyRange,
)
from arkor.registry.ops_base import (
    MAX_LEASE,
    RegistryBase,
    chunked,
    in_list,
)
from arkor.registry.store import Tx


class NeedleOps(RegistryBase):
    # ------------------------------------------------------------------ file IDs

    async def lease_keys(self, count: int) -> KeyRange:
        if not 1 <= count <= MAX_LEASE:
            raise BadRequest(f"count must be between 1 and {MAX_LEASE}", code="invalid_count")

        async def body(tx: Tx) -> int:
            return await self._dialect.bump_sequence(tx, "needle", count)

        end = await self.store.write(body)
        return KeyRange(start=end - count, count=count)

    async def discard_fragments(self, fragments: list[Fragment]) -> None:
        self._check_fragments(fragments)
        by_key = {FileID.parse(f.fid).key: f.fid for f in fragments}
        if not by_key:
            return

        async def body(tx: Tx) -> None:
            now = time.time()
            keys = sorted(by_key)
            for chunk in chunked(keys):
                rows = await tx.query(
                    f"SELECT nkey, refs, state FROM needles WHERE nkey IN {in_list(len(chunk))}",
                    chunk,
                )
                known = {int(r[0]): (int(r[1]), str(r[2])) for r in rows}
                queue: list[tuple[Any, ...]] = []
                for key in chunk:
                    if key not in known:
                        await self._claim_unknown(tx, key, by_key[key], "discard", now)
                    elif known[key] == (0, "live") or known[key][0] < 0:
                        queue.append((key, by_key[key]))
                await self._queue_reclaim(tx, queue, "discard", now)

        await self.store.write(body)

    async def _claim_unknown(self, tx: Tx, key: int, fid: str, reason: str, now: float) -> bool:
        """Give a key that no commit ever referenced a final 'reclaimed' row and queue its needle,
        so no later commit can name it; False when the key has a row already (a commit or another
        claim got there first: it is theirs)."""
        if not await tx.execute(
            f"{self._dialect.insert_ignore} INTO needles (nkey, fid, refs, state, updated) "
            "VALUES (?, ?, 0, 'reclaimed', ?)",
            (key, fid, now),
        ):
            return False
        await tx.execute(
            "INSERT INTO reclaim (fid, reason, queued, next_try, attempts) VALUES (?, ?, ?, ?, 0)",
            (fid, reason, now, now),
        )
        return True

    # ------------------------------------------------------------------ reclaim queue (reaper)

    async def due_reclaims(self, limit: int) -> list[tuple[int, str]]:
        """Queued needles whose next attempt is due, that no manifest references (re-checked)."""

        async def body(tx: Tx) -> list[tuple[int, str]]:
            rows = await tx.query(
                "SELECT r.id, r.fid FROM reclaim r WHERE r.next_try <= ? ORDER BY r.next_try LIMIT ?",
                (time.time(), limit),
            )
            return [(int(r[0]), str(r[1])) for r in rows]

        return await self.store.read(body)

    async def still_reclaimed(self, fids: list[str]) -> set[str]:
        """The subset of `fids` whose needle row is (still) 'reclaimed': only those are deleted."""
        keys = {FileID.parse(f).key: f for f in fids}
        out: set[str] = set()

        async def body(tx: Tx) -> None:
            for chunk in chunked(sorted(keys)):
                rows = await tx.query(
                    f"SELECT nkey FROM needles WHERE state = 'reclaimed' AND refs <= 0 "
                    f"AND nkey IN {in_list(len(chunk))}",
                    chunk,
                )
                out.update(keys[int(r[0])] for r in rows)

        await self.store.read(body)
        return out

    async def finish_reclaims(self, ids: list[int]) -> None:
        async def body(tx: Tx) -> None:
            for chunk in chunked(ids):
                await tx.execute(f"DELETE FROM reclaim WHERE id IN {in_list(len(chunk))}", chunk)

        if ids:
            await self.store.write(body)

    async def postpone_reclaims(self, ids: list[int], delay: float) -> None:
        async def body(tx: Tx) -> None:
            for chunk in chunked(ids):
                await tx.execute(
                    f"UPDATE reclaim SET attempts = attempts + 1, next_try = ? "
                    f"WHERE id IN {in_list(len(chunk))}",
                    [time.time() + delay, *chunk],
                )

        if ids:
            await self.store.write(body)

    async def reclaim_backlog(self) -> int:
        async def body(tx: Tx) -> int:
            return int((await tx.query("SELECT COUNT(*) FROM reclaim"))[0][0])

        return await self.store.read(body)

    async def claim_orphans(self, fids: list[str]) -> list[str]:
        """Queue for reclaim those of `fids` (old needles found on data servers) whose key has no
        `needles` row, i.e. that no commit ever referenced; returns the ones queued."""
        self._check_fragments([Fragment(fid=f, size=0, crc32c=0) for f in fids])
        by_key = {FileID.parse(f).key: f for f in fids}
        claimed: list[str] = []

        async def body(tx: Tx) -> None:
            claimed.clear()
            now = time.time()
            for key in sorted(by_key):
                if await self._claim_unknown(tx, key, by_key[key], "orphan", now):
                    claimed.append(by_key[key])

        if by_key:
            await self.store.write(body)
        return claimed

