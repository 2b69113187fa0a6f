"""arkor.web.semantics: the one Range / ETag / date / number / JSON module, without a server."""

from __future__ import annotations

import pytest

from arkor.errors import BadRequest, RangeNotSatisfiable
from arkor.web import semantics as s


def test_ascii_uint_refuses_what_isdigit_accepts() -> None:
    assert s.ascii_uint("42") == 42 and s.ascii_uint(" 7\t") == 7 and s.ascii_uint("0") == 0
    for bad in ("²", "٣", "1²", "-1", "+1", "1_000", "", " ", "0x10", "1.0", "9" * 20, None):
        assert s.ascii_uint(bad) is None, bad
    assert s.ascii_uint("9" * 19) == int("9" * 19)


def test_parse_uint_bounds_and_codes() -> None:
    assert s.parse_uint(None, "limit", default=5) == 5 and s.parse_uint("", "limit", default=5) == 5
    assert s.parse_uint("3", "limit", minimum=1, maximum=3) == 3
    for bad in ("0", "4", "٣", "²", "9" * 5000):
        with pytest.raises(BadRequest) as info:
            s.parse_uint(bad, "limit", minimum=1, maximum=3, code="invalid_limit")
        assert info.value.code == "invalid_limit" and info.value.status == 400


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=2-5", 10, (2, 5)),
        ("bytes=2-", 10, (2, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=5-100", 10, (5, 9)),
        ("Bytes = 1 - 2", 10, (1, 2)),
        (f"bytes=0-{'9' * 5000}", 10, (0, 9)),  # a huge last position is clamped
        (f"bytes=-{'9' * 5000}", 10, (0, 9)),
        # Syntactically invalid or unsupported: ignored, the whole body is served (RFC 9110 14.2).
        ("bytes=0-1,4-5", 10, None),
        ("items=0-1", 10, None),
        ("bytes=5-2", 10, None),
        ("bytes=x-y", 10, None),
        ("bytes=²-5", 10, None),
        ("bytes=٣-", 10, None),
        ("bytes=-", 10, None),
        ("bytes 0-1", 10, None),
        ("bytes=-5", 0, None),  # a suffix of an empty body: the empty body
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert s.parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=10-", 10), ("bytes=10-20", 10), ("bytes=-0", 10), ("bytes=0-0", 0),
     (f"bytes={'9' * 5000}-", 10), (f"bytes={'9' * 5000}-{'9' * 5000}", 10)],
)
def test_unsatisfiable_range_is_416_with_size(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        s.parse_range(header, size)
    assert info.value.status == 416 and info.value.code == "invalid_range"
    assert info.value.headers["content-range"] == f"bytes */{size}"


def test_etags() -> None:
    assert s.unquote_etag(' W/"abc" ') == "abc" and s.unquote_etag("abc") == "abc"
    assert s.quote_etag("abc") == '"abc"'
    assert s.etag_matches('"x", "abc"', "abc") and s.etag_matches("*", "abc")
    assert s.etag_matches('W/"abc"', "abc")  # weak comparison (If-None-Match)
    assert not s.etag_matches('W/"abc"', "abc", weak=False)  # strong comparison (If-Match)
    assert not s.etag_matches('"abd"', "abc") and not s.etag_matches("", "abc")


def test_http_dates() -> None:
    assert s.http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert s.parse_http_date("Thu, 01 Jan 1970 00:00:10 GMT") == 10
    for bad in ("yesterday", "", "Thu, 01 Jan 99999999999 00:00:00 GMT", "x" * 5000):
        assert s.parse_http_date(bad) is None


def test_declared_length() -> None:
    assert s.declared_length({"content-length": "12"}) == 12
    assert s.declared_length({}) is None
    assert s.declared_length({"x-arkor-size": "3"}, "x-arkor-size") == 3
    for bad in ("²", "٣", "-1", "1e3", "9" * 5000):
        with pytest.raises(BadRequest) as info:
            s.declared_length({"x-arkor-size": bad}, "x-arkor-size")
        assert info.value.code == "invalid_header"


def test_loads_json_bounds_nesting() -> None:
    assert s.loads_json(b'{"a": [1, {"b": "[[[[[[[[[[[[[[[["}]}') == {"a": [1, {"b": "[" * 16}]}
    nested = b"[" * 64 + b"]" * 64
    assert s.loads_json(nested, max_depth=64) is not None
    for bad in (b"[" * 65 + b"]" * 65, b"[" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        with pytest.raises(BadRequest) as info:
            s.loads_json(bad)
        assert info.value.code == "malformed_json"
    # Past the scanned size the decoder's own recursion guard still answers 400, never a crash.
    with pytest.raises(BadRequest):
        s.loads_json(b"[" * (s.DEPTH_SCAN_BYTES + 1))
    for bad in (b"", b"{", b"\xff\xfe", b"nul"):
        with pytest.raises(BadRequest):
            s.loads_json(bad)
