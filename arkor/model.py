"""Plain data types that cross role boundaries (registry <-> object server <-> data server).

These are the contract between roles: the registry stores and returns them, the transfer engine
produces and consumes them, and both HTTP and in-process clients carry them. Each has `to_json` /
`from_json` so the HTTP clients and servers agree on one wire form (documented in
docs/specs/Internal.md).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

_Decode = Callable[[dict[str, Any]], Any]


class _Wire:
    """`to_json` / `from_json` derived from a model's fields, so the wire form of every model
    follows one set of rules (docs/specs/Internal.md):

    - a field without a default must be present: ``T(raw[name])``;
    - a field with a default may be missing or empty: ``T(raw.get(name) or default)``;
    - a bool is ``bool(raw.get(name))``; an optional (``X | None``) passes as it is;
    - lists and dicts are never None on decode; a list of models nests their wire forms.
    """

    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        return _encode(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Self:
        return cls(**{name: decode(raw) for name, decode in _decoders(cls)})


class _Manifested(_Wire):
    """A model with a manifest; its wire form may leave the fragments out (listings)."""

    __slots__ = ()
    fragments: list[Fragment]

    def to_json(self, *, with_fragments: bool = True) -> dict[str, Any]:
        out = _encode(self, skip="fragments")
        if with_fragments:
            out["fragments"] = [f.to_json() for f in self.fragments]
        return out


def _encode(model: Any, skip: str = "") -> dict[str, Any]:
    return {
        name: _plain(getattr(model, name)) for name in _names(type(model)) if name != skip
    }


def _plain(value: Any) -> Any:
    if isinstance(value, _Wire):
        return value.to_json()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return dict(value)
    return value


_NAMES: dict[type, tuple[str, ...]] = {}
_DECODERS: dict[type, tuple[tuple[str, _Decode], ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _decoders(cls: type) -> tuple[tuple[str, _Decode], ...]:
    """(field name, decoder) per field, from the annotations; built once per model."""
    plan = _DECODERS.get(cls)
    if plan is None:
        hints = typing.get_type_hints(cls)
        plan = _DECODERS[cls] = tuple(
            (f.name, _decoder(f.name, hints[f.name], f.default)) for f in dataclasses.fields(cls)
        )
    return plan


def _decoder(name: str, hint: Any, default: Any) -> _Decode:
    origin = typing.get_origin(hint)
    if hint is bool:  # absent: the field's default (False when it has none)
        fallback = False if default is dataclasses.MISSING else default
        return lambda raw: bool(raw.get(name, fallback))
    if origin is types.UnionType:
        return lambda raw: raw.get(name)
    if origin is list:
        (item,) = typing.get_args(hint)
        convert: Callable[[Any], Any] = item.from_json if issubclass(item, _Wire) else item
        return lambda raw: [convert(v) for v in raw.get(name) or []]
    if origin is dict:
        return lambda raw: {str(k): str(v) for k, v in (raw.get(name) or {}).items()}
    if default is dataclasses.MISSING:
        return lambda raw: hint(raw[name])
    return lambda raw: hint(raw.get(name) or default)


@dataclass(slots=True)
class Fragment(_Wire):
    """One needle of an object's manifest: `fid` is the FileID text form."""

    fid: str
    size: int
    crc32c: int


@dataclass(slots=True)
class ObjectRecord(_Manifested):
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


@dataclass(slots=True)
class ListPage(_Wire):
    """One page of a bucket listing, in key order."""

    objects: list[ObjectRecord]
    common_prefixes: list[str]
    truncated: bool
    next_marker: str | None

    def to_json(self) -> dict[str, Any]:
        """Listed objects go without their manifests."""
        return {
            "objects": [o.to_json(with_fragments=False) for o in self.objects],
            "common_prefixes": list(self.common_prefixes),
            "truncated": self.truncated,
            "next_marker": self.next_marker,
        }


@dataclass(slots=True)
class BucketInfo(_Wire):
    name: str
    created: float = 0.0
    objects: int = 0
    bytes: int = 0


@dataclass(slots=True)
class ServerInfo(_Wire):
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


@dataclass(slots=True)
class GroupInfo(_Wire):
    """A replica group: writable only while all `replicas` members are up and it has room."""

    group: int
    servers: list[ServerInfo]
    writable: bool
    free: int = 0


@dataclass(slots=True)
class KeyRange(_Wire):
    """A lease of needle keys [start, start + count): never handed out again."""

    start: int
    count: int


@dataclass(slots=True)
class NeedleInfo(_Wire):
    """What a data server knows about one stored needle (HEAD and repair listings)."""

    fid: str
    size: int
    crc32c: int
    timestamp: float = 0.0


@dataclass(slots=True)
class PartInfo(_Manifested):
    """A multipart upload part: its own manifest; parts are concatenated on completion."""

    part_number: int
    size: int
    etag: str
    fragments: list[Fragment] = field(default_factory=list)
    modified: float = 0.0


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
class MultipartUpload(_Wire):
    upload_id: str
    bucket: str
    key: str
    content_type: str = "application/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)
    created: float = 0.0


@dataclass(slots=True)
class LfsLock(_Wire):
    """A Git LFS lock; `repo` is "namespace/repo"."""

    id: str
    repo: str
    path: str
    owner: str
    locked_at: float
    ref: str | None = None

