"""HTTP semantics shared by every role and the SDK: Range, ETags, HTTP dates, numbers and bodies.

One place for each HTTP idea (RFC 9110), so the object API, Git LFS and the data server agree:
- numbers in headers and query strings are ASCII digits only (``str.isdigit`` accepts ``'²'`` and
  ``'٣'``), and a number too long for any size we store is not an error of the server;
- a ``Range`` that is syntactically invalid (other unit, several ranges, ``b < a``, not digits) is
  ignored (200, RFC 9110 14.2); a valid one that selects nothing is 416 ``invalid_range`` with
  ``Content-Range: bytes */size``;
- ETags are compared after unquoting, strong for ``If-Match`` and weak for ``If-None-Match``;
- a body that disagrees with its declared size is ``BodySizeMismatch`` (400 ``incomplete_body``);
- JSON bodies are decoded with their nesting bounded (a 400, never a RecursionError).

Everything here is pure (no I/O, no framework) and unit-tested in tests/unit/test_semantics.py.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from arkor.errors import BadRequest, BodySizeMismatch, RangeNotSatisfiable

__all__ = ["BodySizeMismatch"]  # re-exported: the body helpers of `arkor.web.asgi` raise it

# 19 digits hold every value below 10**19 > 2**63: longer numbers are "beyond anything stored".
MAX_DIGITS = 19
BEYOND = 1 << 63
MAX_JSON_DEPTH = 64
DEPTH_SCAN_BYTES = 1024 * 1024


# --- numbers -------------------------------------------------------------------------------------
def is_ascii_digits(text: str) -> bool:
    """True for a non-empty run of ``0-9`` (and nothing else: no sign, space, ``_`` or ``'²'``)."""
    return text.isascii() and text.isdigit()


def ascii_uint(value: str | None) -> int | None:
    """The non-negative integer that `value` spells in ASCII digits (surrounding blanks allowed);
    None when it is absent, malformed or longer than `MAX_DIGITS` digits."""
    if value is None:
        return None
    text = value.strip(" \t")
    if len(text) > MAX_DIGITS or not is_ascii_digits(text):
        return None
    return int(text)


def parse_uint(
    value: str | None, what: str, *, default: int | None = None, code: str = "invalid_argument",
    minimum: int = 0, maximum: int | None = None,
) -> int:
    """`value` as an integer in [minimum, maximum]; 400 `code` naming `what` otherwise.
    An absent or empty value is `default` (400 when there is none)."""
    if (value is None or value == "") and default is not None:
        return default
    number = ascii_uint(value)
    if number is None or number < minimum or (maximum is not None and number > maximum):
        bounds = f"{minimum}-{maximum}" if maximum is not None else f">= {minimum}"
        shown = "" if value is None else repr(value[:40])
        raise BadRequest(f"{what} must be an integer {bounds} in ASCII digits, got {shown}", code=code)
    return number


def _position(digits: str) -> int:
    return BEYOND if len(digits) > MAX_DIGITS else int(digits)


# --- Range ---------------------------------------------------------------------------------------
def unsatisfiable(size: int, header: str = "") -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"range {header[:60]!r} selects nothing of {size} bytes",
        headers={"content-range": f"bytes */{size}"},
    )


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte positions, both inclusive, of a single ``bytes=`` range over `size`
    bytes; None to serve the whole representation (no Range, or one RFC 9110 lets us ignore).

    Blanks around the numbers are tolerated. Raises RangeNotSatisfiable (416) for a valid range
    that selects nothing: a start at or past the end, or the suffix ``-0``."""
    if not header:
        return None
    unit, eq, spec = header.strip().partition("=")
    if not eq or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.partition("-")
    first, last = first.strip(" \t"), last.strip(" \t")
    if not dash or not (first or last):
        return None
    if (first and not is_ascii_digits(first)) or (last and not is_ascii_digits(last)):
        return None
    if not first:  # suffix: the last N bytes
        suffix = _position(last)
        if suffix == 0:
            raise unsatisfiable(size, header)
        if size == 0:
            return None  # nothing to select from: the whole (empty) representation
        return max(0, size - suffix), size - 1
    start = _position(first)
    end = _position(last) if last else BEYOND
    if end < start:
        return None  # an invalid range-spec: ignored (RFC 9110 14.1.1)
    if start >= size:
        raise unsatisfiable(size, header)
    return start, min(end, size - 1)


def content_range(first: int, last: int, size: int) -> str:
    return f"bytes {first}-{last}/{size}"


# --- ETags ---------------------------------------------------------------------------------------
def quote_etag(etag: str) -> str:
    return f'"{etag}"'


def unquote_etag(value: str) -> str:
    """The opaque tag of ``"abc"``, ``W/"abc"`` or a bare ``abc``."""
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def etag_matches(header: str, etag: str, *, weak: bool = True) -> bool:
    """True when an ``If-Match`` / ``If-None-Match`` list names `etag` or is ``*``.

    `weak=False` is RFC 9110's strong comparison (``If-Match``): a ``W/`` tag never matches."""
    for item in header.split(","):
        item = item.strip()
        if item == "*":
            return True
        if not weak and item.startswith("W/"):
            continue
        if item and unquote_etag(item) == etag:
            return True
    return False


# --- dates ---------------------------------------------------------------------------------------
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@functools.lru_cache(maxsize=4096)
def _imf_fixdate(second: int) -> str:
    t = time.gmtime(second)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon]} {t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")


def http_date(ts: float) -> str:
    """IMF-fixdate (``Thu, 03 Dec 2026 10:00:00 GMT``). Every GET and HEAD formats one: cached by
    second, about ten times cheaper than `email.utils.formatdate`."""
    return _imf_fixdate(int(ts))


def parse_http_date(value: str) -> float | None:
    """The timestamp of an HTTP date; None when invalid (RFC 9110: then the condition is ignored)."""
    if len(value) > 64:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


# --- bodies --------------------------------------------------------------------------------------
def declared_length(headers: Mapping[str, str], name: str = "content-length") -> int | None:
    """A declared body size header; None when absent, 400 `invalid_header` when malformed."""
    value = headers.get(name)
    if value is None:
        return None
    number = ascii_uint(value)
    if number is None:
        raise BadRequest(f"invalid {name} {value[:40]!r}: ASCII digits expected", code="invalid_header")
    return number


def loads_json(body: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode a JSON body; 400 `malformed_json` when it is not JSON or nests past `max_depth`.

    The depth is checked before decoding when the body has more than `max_depth` opening
    brackets at all (one ``count``) and is at most `DEPTH_SCAN_BYTES` long (the scan costs about
    40 ms per MiB); larger bodies (registry manifests) rely on the decoder's RecursionError."""
    raw = body.encode() if isinstance(body, str) else bytes(body)
    if (len(raw) <= DEPTH_SCAN_BYTES and raw.count(b"[") + raw.count(b"{") > max_depth
            and _too_deep(raw, max_depth)):
        raise BadRequest(f"JSON nests deeper than {max_depth} levels", code="malformed_json")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("request body is not valid JSON", code="malformed_json") from None


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _too_deep(raw: bytes, max_depth: int) -> bool:
    """True when the brackets outside strings nest deeper than `max_depth` (or do not pair up):
    each pass removes the innermost ``[]`` / ``{}`` pairs, so `max_depth` passes empty any body
    that nests no deeper."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    for _ in range(max_depth):
        if not brackets:
            return False
        shorter = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if len(shorter) == len(brackets):
            return True  # unpaired: not JSON anyway
        brackets = shorter
    return bool(brackets)
