"""Plain data types that cross role boundaries (registry <-> object server <-> data server).

These are the contract between roles: the registry stores and returns them, the transfer engine
produces and consumes them, and both HTTP and in-process clients carry them. Each has `to_json` /
`from_json` so the HTTP clients and servers agree on one wire form (documented in
docs/specs/Internal.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class Fragment:
    """One needle of an object's manifest: `fid` is the FileID text form."""

    fid: str
    size: int
    crc32c: int

    def to_json(self) -> dict[str, Any]:
        return {"fid": self.fid, "size": self.size, "crc32c": self.crc32c}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Fragment:
        return cls(fid=str(raw["fid"]), size=int(raw["size"]), crc32c=int(raw["crc32c"]))


@dataclass(slots=True)
class ObjectRecord:
    """A committed object: metadata plus the ordered manifest of fragments.

    `etag` is the lowercase hex MD5 of the content (multipart: MD5 of the part MD5s + "-N"),
    unquoted. `version` is unique per commit, so an overwrite is distinguishable from the original.
    Times are Unix seconds (float).
    """

    bucket: str
    key: str
    size: int
    etag: str
    content_type: str = "application/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    modified: float = 0.0
    version: str = ""
    fragments: list[Fragment] = field(default_factory=list)

    def to_json(self, *, with_fragments: bool = True) -> dict[str, Any]:
        out = asdict(self)
        if with_fragments:
            out["fragments"] = [f.to_json() for f in self.fragments]
        else:
            out.pop("fragments")
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ObjectRecord:
        return cls(
            bucket=str(raw["bucket"]),
            key=str(raw["key"]),
            size=int(raw["size"]),
            etag=str(raw["etag"]),
            content_type=str(raw.get("content_type") or "application/octet-stream"),
            metadata={str(k): str(v) for k, v in (raw.get("metadata") or {}).items()},
            created=float(raw.get("created") or 0.0),
            modified=float(raw.get("modified") or 0.0),
            version=str(raw.get("version") or ""),
            fragments=[Fragment.from_json(f) for f in raw.get("fragments") or []],
        )


@dataclass(slots=True)
class ListPage:
    """One page of a bucket listing, in key order."""

    objects: list[ObjectRecord]
    common_prefixes: list[str]
    truncated: bool
    next_marker: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "objects": [o.to_json(with_fragments=False) for o in self.objects],
            "common_prefixes": list(self.common_prefixes),
            "truncated": self.truncated,
            "next_marker": self.next_marker,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ListPage:
        return cls(
            objects=[ObjectRecord.from_json(o) for o in raw.get("objects") or []],
            common_prefixes=[str(p) for p in raw.get("common_prefixes") or []],
            truncated=bool(raw.get("truncated")),
            next_marker=raw.get("next_marker"),
        )


@dataclass(slots=True)
class BucketInfo:
    name: str
    created: float
    objects: int = 0
    bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> BucketInfo:
        return cls(
            name=str(raw["name"]),
            created=float(raw.get("created") or 0.0),
            objects=int(raw.get("objects") or 0),
            bytes=int(raw.get("bytes") or 0),
        )


@dataclass(slots=True)
class ServerInfo:
    """A data server as it reports itself in a heartbeat, plus what the registry derives.

    `state` is set by the registry: "up" (heartbeating), "down" (missed heartbeats for longer than
    registry.heartbeatTimeout), or "repairing" (up, but still being filled from its peers).
    """

    server_id: str
    url: str
    group: int
    capacity: int = 0
    free: int = 0
    needles: int = 0
    used: int = 0
    state: str = "up"
    last_seen: float = 0.0
    repair_needed: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ServerInfo:
        return cls(
            server_id=str(raw["server_id"]),
            url=str(raw["url"]),
            group=int(raw["group"]),
            capacity=int(raw.get("capacity") or 0),
            free=int(raw.get("free") or 0),
            needles=int(raw.get("needles") or 0),
            used=int(raw.get("used") or 0),
            state=str(raw.get("state") or "up"),
            last_seen=float(raw.get("last_seen") or 0.0),
            repair_needed=bool(raw.get("repair_needed")),
        )


@dataclass(slots=True)
class GroupInfo:
    """A replica group: writable only while all `replicas` members are up and it has room."""

    group: int
    servers: list[ServerInfo]
    writable: bool
    free: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "servers": [s.to_json() for s in self.servers],
            "writable": self.writable,
            "free": self.free,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> GroupInfo:
        return cls(
            group=int(raw["group"]),
            servers=[ServerInfo.from_json(s) for s in raw.get("servers") or []],
            writable=bool(raw.get("writable")),
            free=int(raw.get("free") or 0),
        )


@dataclass(slots=True)
class KeyRange:
    """A lease of needle keys [start, start + count): never handed out again."""

    start: int
    count: int

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "count": self.count}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> KeyRange:
        return cls(start=int(raw["start"]), count=int(raw["count"]))


@dataclass(slots=True)
class NeedleInfo:
    """What a data server knows about one stored needle (HEAD and repair listings)."""

    fid: str
    size: int
    crc32c: int
    timestamp: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> NeedleInfo:
        return cls(
            fid=str(raw["fid"]),
            size=int(raw["size"]),
            crc32c=int(raw["crc32c"]),
            timestamp=float(raw.get("timestamp") or 0.0),
        )


@dataclass(slots=True)
class PartInfo:
    """A multipart upload part: its own manifest; parts are concatenated on completion."""

    part_number: int
    size: int
    etag: str
    fragments: list[Fragment] = field(default_factory=list)
    modified: float = 0.0

    def to_json(self, *, with_fragments: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "part_number": self.part_number,
            "size": self.size,
            "etag": self.etag,
            "modified": self.modified,
        }
        if with_fragments:
            out["fragments"] = [f.to_json() for f in self.fragments]
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PartInfo:
        return cls(
            part_number=int(raw["part_number"]),
            size=int(raw["size"]),
            etag=str(raw["etag"]),
            fragments=[Fragment.from_json(f) for f in raw.get("fragments") or []],
            modified=float(raw.get("modified") or 0.0),
        )


# System metadata of a completed multipart object: its part sizes, run-length encoded
# ("8388608*3,1024"), so S3 GetObject?partNumber=N can serve part N. Keys starting with ":" are
# never user metadata.
PARTS_META = ":parts"
MAX_LAYOUT_CHARS = 2048


def part_layout(sizes: list[int]) -> str:
    """The run-length text of `sizes`; "" when it would be longer than MAX_LAYOUT_CHARS."""
    runs: list[list[int]] = []
    for size in sizes:
        if runs and runs[-1][0] == size:
            runs[-1][1] += 1
        else:
            runs.append([size, 1])
    text = ",".join(f"{s}*{n}" if n > 1 else str(s) for s, n in runs)
    return text if len(text) <= MAX_LAYOUT_CHARS else ""


def parse_part_layout(text: str) -> list[int] | None:
    """The part sizes of a `part_layout` text; None when malformed."""
    sizes: list[int] = []
    try:
        for item in text.split(","):
            size, _, count = item.partition("*")
            n = int(count) if count else 1
            if n < 1 or len(sizes) + n > 10_000:
                return None
            sizes += [int(size)] * n
    except ValueError:
        return None
    return sizes


@dataclass(slots=True)
class MultipartUpload:
    upload_id: str
    bucket: str
    key: str
    content_type: str = "application/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)
    created: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> MultipartUpload:
        return cls(
            upload_id=str(raw["upload_id"]),
            bucket=str(raw["bucket"]),
            key=str(raw["key"]),
            content_type=str(raw.get("content_type") or "application/octet-stream"),
            metadata={str(k): str(v) for k, v in (raw.get("metadata") or {}).items()},
            created=float(raw.get("created") or 0.0),
        )


@dataclass(slots=True)
class LfsLock:
    """A Git LFS lock; `repo` is "namespace/repo"."""

    id: str
    repo: str
    path: str
    owner: str
    locked_at: float
    ref: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LfsLock:
        return cls(
            id=str(raw["id"]),
            repo=str(raw["repo"]),
            path=str(raw["path"]),
            owner=str(raw["owner"]),
            locked_at=float(raw["locked_at"]),
            ref=raw.get("ref"),
        )
