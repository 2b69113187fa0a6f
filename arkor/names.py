"""Validation of bucket and object names, shared by the object server and the registry.

Buckets: 1-255 characters from ``A-Z a-z 0-9 . _ -``, not ``.`` or ``..`` (the seed lets a bucket be
"any string you like"; these are the strings that are safe in a URL path segment and a file name).
Objects: 1-1024 bytes of UTF-8, no control characters, no ``.`` or ``..`` path segment, no empty
leading segment (a name may contain ``/``).
"""

from __future__ import annotations

import re

from arkor.errors import BadRequest

MAX_BUCKET_LENGTH = 255
MAX_OBJECT_KEY_BYTES = 1024
_BUCKET = re.compile(r"[A-Za-z0-9._-]{1,255}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidBucketName(BadRequest):
    """The bucket name is not allowed."""

    code = "invalid_bucket_name"


class InvalidObjectName(BadRequest):
    """The object name is not allowed."""

    code = "invalid_object_name"


def check_bucket(name: str) -> str:
    if not _BUCKET.fullmatch(name) or name in (".", ".."):
        raise InvalidBucketName(
            f"bucket name {name[:80]!r} must be 1-{MAX_BUCKET_LENGTH} characters of "
            "A-Z a-z 0-9 . _ - and not '.' or '..'"
        )
    return name


def check_object_key(key: str) -> str:
    if not key:
        raise InvalidObjectName("object name must not be empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_OBJECT_KEY_BYTES:
        raise InvalidObjectName(f"object name is longer than {MAX_OBJECT_KEY_BYTES} bytes")
    if _CONTROL.search(key):
        raise InvalidObjectName("object name must not contain control characters")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidObjectName("object name must be valid UTF-8") from None
    segments = key.split("/")
    if any(seg in (".", "..") for seg in segments):
        raise InvalidObjectName("object name must not contain '.' or '..' segments")
    if key.startswith("/"):
        raise InvalidObjectName("object name must not start with '/'")
    return key
