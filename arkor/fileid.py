"""File IDs: the name of one needle, spec in docs/specs/FileID.md.

Text form ``<group>,<key><cookie>``: the group in decimal, then the key in lowercase hex (1 to 16
digits, no leading zeros) immediately followed by the cookie as exactly 8 hex digits, e.g.
``3,1a2b00c0ffee``: group 3, key 0x1a2b, cookie 0x00c0ffee. The group lets any holder find the
replicas; the key (allocated by the registry, never reused) indexes the needle on a data server; the
random cookie makes IDs unguessable, and a read with the wrong cookie is answered as not found.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from arkor.errors import BadRequest

MAX_GROUP = 2**32 - 1
MAX_KEY = 2**64 - 1
_PATTERN = re.compile(r"([1-9][0-9]{0,9}),([0-9a-f]{9,24})")


class InvalidFileID(BadRequest):
    """The file ID is malformed."""

    code = "invalid_file_id"


@dataclass(frozen=True, slots=True)
class FileID:
    group: int
    key: int
    cookie: int

    def __post_init__(self) -> None:
        if not 1 <= self.group <= MAX_GROUP:
            raise InvalidFileID(f"group {self.group} out of range")
        if not 1 <= self.key <= MAX_KEY:
            raise InvalidFileID(f"key {self.key} out of range")
        if not 0 <= self.cookie <= 0xFFFFFFFF:
            raise InvalidFileID(f"cookie {self.cookie} out of range")

    @classmethod
    def new(cls, group: int, key: int) -> FileID:
        """A file ID with a fresh random cookie."""
        return cls(group, key, secrets.randbits(32))

    @classmethod
    def parse(cls, text: str) -> FileID:
        match = _PATTERN.fullmatch(text)
        if not match:
            raise InvalidFileID(f"malformed file ID {text[:64]!r}")
        digits = match.group(2)
        key_hex, cookie_hex = digits[:-8], digits[-8:]
        if key_hex.startswith("0"):
            raise InvalidFileID(f"malformed file ID {text[:64]!r}: key has leading zeros")
        if int(match.group(1)) > MAX_GROUP:
            raise InvalidFileID(f"malformed file ID {text[:64]!r}: group out of range")
        return cls(int(match.group(1)), int(key_hex, 16), int(cookie_hex, 16))

    def __str__(self) -> str:
        return f"{self.group},{self.key:x}{self.cookie:08x}"
