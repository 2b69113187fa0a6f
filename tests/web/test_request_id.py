"""Request IDs: 16 upper-case hex digits, never repeated within a process, also across a wrap."""

from __future__ import annotations

import re

from arkor.web import request_id


def test_ids_are_unique_and_shaped_like_s3s() -> None:
    ids = [request_id.new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9A-F]{16}", i) for i in ids)


def test_a_wrapped_counter_draws_a_new_prefix() -> None:
    ids = request_id._Ids()
    first = ids.new()
    ids.next = 0xFFFFFFFF
    last = ids.new()
    wrapped = ids.new()
    assert last[:8] == first[:8] and wrapped[:8] != first[:8] and wrapped.endswith("00000000")
