"""The arguments of the `Registry` calls that travel together, as one value each.

A write's preconditions, an object commit, a multipart completion, a listing and a lock query are
built once by the caller and passed unchanged through the object service, the HTTP client, the
registry's HTTP app and the in-process service. Each value owns its wire form (`to_json` /
`from_json` for a JSON body, `params` / `options_from_params` for a query string), so the encoding
of a call lives in one place; the forms are those of docs/specs/Internal.md. Path parts (bucket, key,
upload id) are not in the body: the HTTP layer puts them in the URL and hands them back to
`from_json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from arkor.model import ObjectRecord

DEFAULT_LIST_LIMIT = 1000
DEFAULT_LOCK_LIMIT = 100


@dataclass(frozen=True)
class Preconditions:
    """An S3 conditional write: `if_match` (an ETag or "*") must be the current ETag, and with
    `if_none_match` there must be no current object. PreconditionFailed otherwise."""

    if_match: str | None = None
    if_none_match: bool = False

    @property
    def conditional(self) -> bool:
        return self.if_match is not None or self.if_none_match

    def to_json(self) -> dict[str, Any]:
        return {"if_match": self.if_match, "if_none_match": self.if_none_match}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Preconditions:
        if_match = raw.get("if_match")
        return cls(None if if_match is None else str(if_match), bool(raw.get("if_none_match")))


@dataclass(frozen=True)
class ObjectCommit:
    """Make `record` the current version of its (bucket, key) when `when` holds.
    `create_bucket=False` (S3): NotFound no_such_bucket instead of creating the bucket."""

    record: ObjectRecord
    when: Preconditions = Preconditions()
    create_bucket: bool = True

    def to_json(self) -> dict[str, Any]:
        body = {"record": self.record.to_json(), **self.when.to_json()}
        if not self.create_bucket:
            body["create_bucket"] = False
        return body

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], bucket: str, key: str) -> ObjectCommit:
        record = ObjectRecord.from_json({**raw["record"], "bucket": bucket, "key": key})
        return cls(record, Preconditions.from_json(raw), bool(raw.get("create_bucket", True)))


@dataclass(frozen=True)
class MultipartCommit:
    """Commit the listed (part_number, etag) parts of `upload_id`, in order, as one object with
    ETag `etag`, when `when` holds."""

    upload_id: str
    parts: list[tuple[int, str]]
    etag: str
    when: Preconditions = Preconditions()

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"parts": [[int(n), str(e)] for n, e in self.parts], "etag": self.etag}
        if self.when.conditional:
            body.update(self.when.to_json())
        return body

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], upload_id: str) -> MultipartCommit:
        parts = [(int(n), str(e)) for n, e in raw["parts"]]
        return cls(upload_id, parts, str(raw["etag"]), Preconditions.from_json(raw))


class ListOptions(TypedDict, total=False):
    """The optional arguments of `list_objects`, typed once for every implementation
    (`**options: Unpack[ListOptions]`); `ListQuery` fills in the defaults."""

    prefix: str
    delimiter: str
    marker: str
    limit: int


@dataclass(frozen=True)
class ListQuery:
    """One page of a bucket in key order: keys strictly after `marker` that start with `prefix`,
    those with `delimiter` after the prefix rolled up into common prefixes."""

    bucket: str
    prefix: str = ""
    delimiter: str = ""
    marker: str = ""
    limit: int = DEFAULT_LIST_LIMIT

    def params(self) -> dict[str, str]:
        return {"prefix": self.prefix, "delimiter": self.delimiter, "marker": self.marker,
                "limit": str(self.limit)}

    @staticmethod
    def options_from_params(query: Mapping[str, str], limit: int) -> ListOptions:
        """The options `params` sent (the bucket is in the path); `limit` is the query's limit as
        parsed (and refused when malformed) by the HTTP layer."""
        return ListOptions(prefix=query.get("prefix", ""), delimiter=query.get("delimiter", ""),
                           marker=query.get("marker", ""), limit=limit)


class LockOptions(TypedDict, total=False):
    """The optional arguments of `list_locks`, typed once for every implementation."""

    path: str | None
    lock_id: str | None
    cursor: str | None
    limit: int
    ref: str | None


_LOCK_FILTERS = {"path": "path", "lock_id": "id", "cursor": "cursor", "ref": "ref"}  # name: wire


@dataclass(frozen=True)
class LockQuery:
    """Locks of `repo` ordered by id from `cursor` on, optionally only those of one path, one
    id or usable on one ref (a lock without a ref holds on every ref)."""

    repo: str
    path: str | None = None
    lock_id: str | None = None
    cursor: str | None = None
    limit: int = DEFAULT_LOCK_LIMIT
    ref: str | None = None

    def params(self) -> dict[str, str]:
        wire = {_LOCK_FILTERS[name]: value for name in _LOCK_FILTERS if (value := getattr(self, name))}
        return {"repo": self.repo, "limit": str(self.limit), **wire}

    @staticmethod
    def options_from_params(query: Mapping[str, str], limit: int) -> LockOptions:
        """The options `params` sent (the repo is its own parameter); `limit` is the query's
        limit as parsed (and refused when malformed) by the HTTP layer."""
        return LockOptions(path=query.get("path") or None, lock_id=query.get("id") or None,
                           cursor=query.get("cursor") or None, limit=limit, ref=query.get("ref") or None)
