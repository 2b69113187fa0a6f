"""What the SDK returns: object and bucket descriptions built from headers or JSON."""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from arkor.client.integrity import unquote_etag

META_PREFIX = "x-arkor-meta-"


def object_path(bucket: str, key: str) -> str:
    """The URL path of an object; `/` in keys stays a path separator."""
    return f"/v1/{quote(bucket, safe='')}/{quote(key, safe='/')}"


def bucket_path(bucket: str) -> str:
    return f"/v1/{quote(bucket, safe='')}"


def _timestamp(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class ObjectInfo:
    """One object (or, in a delimited listing, one common prefix with `is_prefix` set)."""

    bucket: str
    key: str
    size: int = 0
    etag: str = ""  # unquoted: MD5 hex, or MD5-of-part-MD5s + "-N" for multipart uploads
    content_type: str = ""
    last_modified: float | None = None  # Unix seconds
    metadata: Mapping[str, str] = field(default_factory=dict)
    version: str = ""
    is_prefix: bool = False

    @classmethod
    def from_headers(cls, bucket: str, key: str, headers: httpx.Headers) -> ObjectInfo:
        size = headers.get("content-length", "0")
        content_range = headers.get("content-range", "")
        if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
            size = content_range.rsplit("/", 1)[1]
        return cls(
            bucket=bucket,
            key=key,
            size=int(size) if str(size).isdigit() else 0,
            etag=unquote_etag(headers.get("etag")),
            content_type=headers.get("content-type", ""),
            last_modified=_timestamp(headers.get("last-modified")),
            metadata={
                name[len(META_PREFIX):].lower(): value
                for name, value in headers.items()
                if name.lower().startswith(META_PREFIX)
            },
            version=headers.get("x-arkor-version", ""),
        )

    @classmethod
    def from_json(cls, bucket: str, raw: Mapping[str, Any]) -> ObjectInfo:
        return cls(
            bucket=str(raw.get("bucket") or bucket),
            key=str(raw["key"]),
            size=int(raw.get("size") or 0),
            etag=unquote_etag(str(raw.get("etag") or "")),
            content_type=str(raw.get("content_type") or ""),
            last_modified=_timestamp(raw.get("last_modified") or raw.get("modified")),
            metadata={str(k).lower(): str(v) for k, v in (raw.get("metadata") or {}).items()},
            version=str(raw.get("version") or ""),
        )


@dataclass(frozen=True)
class BucketSummary:
    name: str
    created: float | None = None
    objects: int = 0
    bytes: int = 0

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> BucketSummary:
        return cls(
            name=str(raw["name"]),
            created=_timestamp(raw.get("created")),
            objects=int(raw.get("objects") or 0),
            bytes=int(raw.get("bytes") or 0),
        )
