"""Wire forms of the coalesced internal calls (docs/specs/Internal.md, "Batches").

A batch answers 200 with one outcome per item, in order: the item's value, or its error as
``{"status": 409, "error": {"code": ..., "message": ...}}`` (the single call's status and JSON
error body, so `errors.from_response` rebuilds the same exception the single call would raise).
A malformed batch is refused whole (4xx) and nothing in it takes effect.

Needle batch body (``POST /needle-batch`` on a data server): a 4-byte big-endian length, that many
bytes of JSON ``{"needles": [[fid, size, crc32c], ...]}``, then the needles' bytes back to back in
the same order. Binary, because needles are bytes; the whole body is covered by the cluster
signature (SHA-256) and each needle by its CRC32C, which the store checks before writing.

Needle read batch (``POST /needle-reads``): JSON ``{"reads": [[fid, offset, length], ...]}``; the
answer is the same 4-byte length and JSON ``{"results": [outcome, ...]}`` (a value is
``{"length", "size", "crc32c"}``), then the bytes of every item that succeeded, back to back.

Pure functions, no I/O: the client (`transfer/data_client.py`) and the server
(`dataserver/app.py`) share them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

from arkor.errors import ArkorError, BadRequest, from_response
from arkor.fileid import FileID

NEEDLE_BATCH_TYPE = "application/x-arkor-needle-batch"
MAX_BATCH_ITEMS = 256
MAX_HEAD_BYTES = 64 * 1024
_LENGTH = struct.Struct(">I")


def encode_needles(items: Sequence[tuple[FileID, bytes, int]]) -> bytes:
    """(fid, data, crc32c) items as one needle-batch body."""
    head = {"needles": [[str(fid), len(data), crc] for fid, data, crc in items]}
    return encode_framed(head, [data for _fid, data, _crc in items])


def decode_needles(body: bytes, *, max_needle: int) -> list[tuple[FileID, memoryview, int]]:
    """The (fid, data, crc32c) items of a needle-batch body; BadRequest (code invalid_batch) for
    anything malformed, so a bad batch stores nothing."""
    def bad(why: str) -> BadRequest:
        return BadRequest(f"malformed needle batch: {why}", code="invalid_batch")

    if len(body) >= _LENGTH.size and _LENGTH.unpack_from(body)[0] > MAX_HEAD_BYTES:
        raise bad("header length out of range")
    try:
        head, view = decode_framed(body)
        entries = head["needles"]
        if not isinstance(entries, list) or not 0 < len(entries) <= MAX_BATCH_ITEMS:
            raise bad(f"1 to {MAX_BATCH_ITEMS} needles per batch")
        parsed = [(FileID.parse(str(f)), int(s), int(c)) for f, s, c in entries]
    except ArkorError:
        raise
    except (ValueError, TypeError, KeyError, RecursionError):
        raise bad("the header is not a list of [fid, size, crc32c]") from None
    offset = 0
    items = []
    for fid, size, crc in parsed:
        if not 0 <= size <= max_needle or not 0 <= crc <= 0xFFFFFFFF:
            raise bad(f"needle {fid}: size or CRC32C out of range")
        items.append((fid, view[offset:offset + size], crc))
        offset += size
    if offset != len(view):
        raise bad(f"the sizes add up to {offset} bytes, the data has {len(view)}")
    return items


def decode_reads(raw: Any, *, max_length: int) -> list[tuple[FileID, int, int]]:
    """The (fid, offset, length) items of a read batch; BadRequest (invalid_batch) if malformed."""
    entries = raw.get("reads") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not 0 < len(entries) <= MAX_BATCH_ITEMS:
        raise BadRequest(f"a read batch is {{'reads': [1 to {MAX_BATCH_ITEMS} items]}}",
                         code="invalid_batch")
    items = []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                and all(isinstance(x, int) for x in entry[1:])):
            raise BadRequest("a read is [fid, offset, length]", code="invalid_batch")
        fid, offset, length = FileID.parse(entry[0]), entry[1], entry[2]
        if not (0 <= offset and 0 < length <= max_length):
            raise BadRequest(f"read of {fid}: offset or length out of range (length 1..{max_length})",
                             code="invalid_batch")
        items.append((fid, offset, length))
    return items


def encode_framed(head: Any, parts: Sequence[bytes | memoryview]) -> bytes:
    """A length-prefixed JSON head followed by `parts` (the needle batch's framing)."""
    raw = json.dumps(head, separators=(",", ":")).encode()
    return b"".join([_LENGTH.pack(len(raw)), raw, *parts])


def decode_framed(body: bytes) -> tuple[Any, memoryview]:
    """(JSON head, the bytes after it) of a length-prefixed body; ValueError when malformed."""
    if len(body) < _LENGTH.size:
        raise ValueError("shorter than its header")
    (head_len,) = _LENGTH.unpack_from(body)
    if _LENGTH.size + head_len > len(body):
        raise ValueError("header length out of range")
    head = json.loads(body[_LENGTH.size:_LENGTH.size + head_len])
    return head, memoryview(body)[_LENGTH.size + head_len:]


def outcome_json(outcome: Any) -> Any:
    """One item's outcome as it goes on the wire: the value's JSON, or the error's."""
    if isinstance(outcome, ArkorError):
        return {"status": outcome.status, **outcome.to_json()}
    if isinstance(outcome, BaseException):
        return {"status": 500, "error": {"code": "internal_error", "message": type(outcome).__name__}}
    return {"value": outcome}


def outcome_of(raw: Any) -> Any:
    """An outcome from the wire: the value, or the ArkorError the single call would raise."""
    if isinstance(raw, dict) and "value" in raw:
        return raw["value"]
    status = raw.get("status") if isinstance(raw, dict) else None
    return from_response(int(status) if isinstance(status, int) else 502, raw)


def outcomes_of(answer: Any, count: int) -> list[Any]:
    """Every item's outcome of a batch answer ``{"results": [...]}`` of `count` items."""
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list) or len(results) != count:
        raise ArkorError(f"a batch of {count} got a malformed answer", code="bad_gateway", status=502)
    return [outcome_of(raw) for raw in results]
