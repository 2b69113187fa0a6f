"""`rechunk`: fixed-size fragments from any chunking of a body, and a source's reused buffer
never leaks into a fragment."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator

import pytest

from arkor.transfer.streams import rechunk


async def pieces(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    pos = 0
    for n in sizes:
        yield data[pos:pos + n]
        pos += n
    if pos < len(data):
        yield data[pos:]


@pytest.mark.parametrize("seed", range(20))
async def test_any_chunking_gives_exact_fragments(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([1, 7, 64, 1000])
    data = os.urandom(rng.randrange(0, 5000))
    sizes = [rng.choice([0, 1, size - 1 or 1, size, size + 1, 3 * size + 5, rng.randrange(1, 300)])
             for _ in range(rng.randrange(0, 60))]
    out = [piece async for piece in rechunk(pieces(data, sizes), size)]
    assert b"".join(out) == data
    assert all(len(p) == size for p in out[:-1])
    assert not out or 0 < len(out[-1]) <= size
    assert all(isinstance(p, bytes) for p in out)


async def test_a_reused_source_buffer_does_not_change_fragments() -> None:
    async def reusing() -> AsyncIterator[bytes]:
        buf = bytearray(10)
        for value in range(5):
            buf[:] = bytes([value]) * 10
            yield buf  # type: ignore[misc]  # the same object, refilled each time

    out = [piece async for piece in rechunk(reusing(), 15)]
    assert b"".join(out) == b"".join(bytes([v]) * 10 for v in range(5))
