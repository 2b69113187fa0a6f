"""Registry operations on membership: heartbeats, the server list, removal, groups and writability.

Must not: touch objects or needles."""


import json
import logging
import time
from typing import Any

from arkor.errors import (
    BadRequest,
    Conflict,
    NotFound,
)
from arkor.model import (
    GroupInfo,
    ServerInfo,
)
from arkor.registry.ops_base import (
    RegistryBase,
)
from arkor.registry.store import Tx

log = logging.getLogger(__name__)


class MembershipOps(RegistryBase):
    # ------------------------------------------------------------------ membership

    async def heartbeat(self, server: ServerInfo) -> None:
        if not server.server_id or len(server.server_id) > 191:
            raise BadRequest("server_id must be 1-191 characters", code="invalid_server")
        if not server.url.startswith(("http://", "https://")) or len(server.url) > 512:
            raise BadRequest("url must be an http(s) URL", code="invalid_server")
        if server.group < 1:
            raise BadRequest("group must be at least 1", code="invalid_server")
        now = time.time()
        cached = await self.kv.get("server:" + server.server_id)
        fresh = ServerInfo.from_json({**server.to_json(), "last_seen": now, "state": "up"})
        await self.kv.set(
            "server:" + server.server_id,
            json.dumps(fresh.to_json()).encode(),
            ttl=max(60.0, 6 * self.heartbeat_timeout),
        )
        identity_changed = True
        if cached is not None:
            old = ServerInfo.from_json(json.loads(cached))
            identity_changed = (old.url, old.group, old.repair_needed) != (
                server.url, server.group, server.repair_needed,
            )
        # The DB copy (shared by every registry process) is refreshed at most every third of the
        # timeout unless something that matters changed: fresh enough for every process to judge
        # up/down, without one DB write per heartbeat.
        if not identity_changed and not await self.kv.set_nx(
            "hbdb:" + server.server_id, b"1", ttl=self.heartbeat_timeout / 3
        ):
            return
        cols = ("server_id", "url", "grp", "capacity", "free", "needles", "used", "repair_needed",
                "last_seen", "registered")
        sql = self._dialect.upsert("servers", cols, ("server_id",))

        async def body(tx: Tx) -> None:
            # A server replaced under the same URL (new disk, new id) replaces the old member.
            await tx.execute(
                "DELETE FROM servers WHERE url = ? AND server_id <> ?", (server.url, server.server_id)
            )
            existing = await tx.query(
                "SELECT registered FROM servers WHERE server_id = ?", (server.server_id,)
            )
            registered = float(existing[0][0]) if existing else now
            await tx.execute(
                sql,
                (server.server_id, server.url, server.group, server.capacity, server.free,
                 server.needles, server.used, int(server.repair_needed), now, registered),
            )

        await self.store.write(body)

    async def servers(self) -> list[ServerInfo]:
        """Every known data server with its state (DB rows refreshed by the KV cache)."""

        async def body(tx: Tx) -> list[tuple[Any, ...]]:
            return await tx.query(
                "SELECT server_id, url, grp, capacity, free, needles, used, repair_needed, last_seen "
                "FROM servers ORDER BY grp, url"
            )

        rows = await self.store.read(body)
        cached = await self.kv.get_many(["server:" + str(r[0]) for r in rows])
        now = time.time()
        out: list[ServerInfo] = []
        for row, raw in zip(rows, cached, strict=True):
            info = ServerInfo(
                server_id=str(row[0]), url=str(row[1]), group=int(row[2]), capacity=int(row[3]),
                free=int(row[4]), needles=int(row[5]), used=int(row[6]),
                repair_needed=bool(row[7]), last_seen=float(row[8]),
            )
            if raw is not None:
                fresh = ServerInfo.from_json(json.loads(raw))
                if fresh.last_seen > info.last_seen and fresh.url == info.url:
                    info = fresh
            if now - info.last_seen > self.heartbeat_timeout:
                info.state = "down"
            elif info.repair_needed:
                info.state = "repairing"
            else:
                info.state = "up"
            out.append(info)
        return out

    async def remove_server(self, server_id: str, *, force: bool = False) -> ServerInfo:
        """Forget a data server that is gone for good, so that its group can take a new member
        under another URL (the newcomer fills itself from the peers, then the group is writable).
        A server that is still heartbeating is refused unless `force`: it would re-register anyway.
        """
        found = [s for s in await self.servers() if s.server_id == server_id]
        if not found:
            raise NotFound(f"no data server {server_id!r}", code="no_such_server")
        if found[0].state != "down" and not force:
            raise Conflict(f"data server {server_id!r} is {found[0].state}; stop it first or force",
                           code="server_not_down")

        async def body(tx: Tx) -> None:
            await tx.execute("DELETE FROM servers WHERE server_id = ?", (server_id,))

        await self.store.write(body)
        log.info("data server %s (%s, group %d) removed", server_id, found[0].url, found[0].group)
        return found[0]

    async def groups(self) -> list[GroupInfo]:
        by_group: dict[int, list[ServerInfo]] = {}
        for info in await self.servers():
            by_group.setdefault(info.group, []).append(info)
        out = []
        for group in sorted(by_group):
            members = by_group[group]
            free = min(s.free for s in members)
            writable = (
                len(members) >= self.replicas
                # "repairing" members (still being filled from their peers) block writes too
                and all(s.state == "up" for s in members)
                and free > self.min_free_bytes
            )
            out.append(GroupInfo(group=group, servers=members, writable=writable, free=free))
        return out

