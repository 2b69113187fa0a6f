"""Wire forms of the coalesced internal calls (docs/specs/Internal.md, "Batches").

A batch answers 200 with one outcome per item, in order: the item's value, or its error as
``{"status": 409, "error": {"code": ..., "message": ...}}`` (the single call's status and JSON
error body, so `errors.from_response` rebuilds the same exception the single call would raise).
A malformed batch is refused whole (4xx) and nothing in it takes effect.

Needle batch body (``POST /needle-batch`` on a data server): a 4-byte big-endian length, that many
bytes of JSON ``{"needles": [[fid, size, crc32c], ...]}``, then the needles' bytes back to back in
the same order. Binary, because needles are bytes; the whole body is covered by the cluster
signature (SHA-256) and each needle by its CRC32C, which the store checks before writing.

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
    head = json.dumps({"needles": [[str(fid), len(data), crc] for fid, data, crc in items]},
                      separators=(",", ":")).encode()
    return b"".join([_LENGTH.pack(len(head)), head, *(data for _fid, data, _crc in items)])


def decode_needles(body: bytes, *, max_needle: int) -> list[tuple[FileID, memoryview, int]]:
    """The (fid, data, crc32c) items of a needle-batch body; BadRequest (code invalid_batch) for
    anything malformed, so a bad batch stores nothing."""
    def bad(why: str) -> BadRequest:
        return BadRequest(f"malformed needle batch: {why}", code="invalid_batch")

    if len(body) < _LENGTH.size:
        raise bad("shorter than its header")
    (head_len,) = _LENGTH.unpack_from(body)
    if head_len > MAX_HEAD_BYTES or _LENGTH.size + head_len > len(body):
        raise bad("header length out of range")
    try:
        head = json.loads(body[_LENGTH.size:_LENGTH.size + head_len])
        entries = head["needles"]
        if not isinstance(entries, list) or not 0 < len(entries) <= MAX_BATCH_ITEMS:
            raise bad(f"1 to {MAX_BATCH_ITEMS} needles per batch")
        parsed = [(FileID.parse(str(f)), int(s), int(c)) for f, s, c in entries]
    except ArkorError:
        raise
    except (ValueError, TypeError, KeyError, RecursionError):
        raise bad("the header is not a list of [fid, size, crc32c]") from None
    view = memoryview(body)
    offset = _LENGTH.size + head_len
    items = []
    for fid, size, crc in parsed:
        if not 0 <= size <= max_needle or not 0 <= crc <= 0xFFFFFFFF:
            raise bad(f"needle {fid}: size or CRC32C out of range")
        items.append((fid, view[offset:offset + size], crc))
        offset += size
    if offset != len(body):
        raise bad(f"the sizes add up to {offset} bytes, the body has {len(body)}")
    return items


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
