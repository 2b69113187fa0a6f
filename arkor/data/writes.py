"""The verified write: a needle body is checked against its declared size and CRC32C as it arrives.

`NeedleStore._write` is the one entrance (PUT and repair's rewrite): small bodies are gathered and
checked here, then written with their header in one thread call; large ones stream through
`write_streaming`, which checks size on every chunk and the CRC32C before the trailer that makes the
needle complete is written. A body that fails raises before anything is acknowledged, and the
store aborts the reservation. An idempotent retry's body is checked too (`read_body(keep=False)`).

What lives here: body checks and the streaming writer. What must not: reservation, commit or
index publication (the store's), or reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any

from arkor.checksum import crc32c
from arkor.data import needle as nd
from arkor.data.volume import COPY_CHUNK, Volume
from arkor.errors import BodySizeMismatch, ChecksumMismatch

Runner = Callable[..., Awaitable[Any]]


class SizeMismatch(BodySizeMismatch):
    """The body is shorter or longer than the declared size (the data server's wire code)."""

    code = "size_mismatch"


def _too_long(size: int) -> SizeMismatch:
    return SizeMismatch(f"body is longer than the declared {size} bytes")


def _check_end(received: int, size: int, running: int, crc: int) -> None:
    if received != size:
        raise SizeMismatch(f"body has {received} bytes, the declared size is {size}")
    if running != crc:
        raise ChecksumMismatch(f"body CRC32C {running} does not match the declared {crc}")


async def read_body(chunks: AsyncIterable[bytes], size: int, crc: int, *, keep: bool) -> bytes:
    """The whole body, checked (or b"" with `keep=False`: only checked, for an idempotent retry)."""
    parts = []
    received = 0
    running = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > size:
            raise _too_long(size)
        running = crc32c(chunk, running)
        if keep:
            parts.append(chunk)
    _check_end(received, size, running, crc)
    return b"".join(parts)


async def write_streaming(
    run: Runner, volume: Volume, offset: int, header: nd.Header, chunks: AsyncIterable[bytes], crc: int
) -> None:
    """Write the data and trailer of a needle whose header is already reserved at `offset`.
    CRC32C is computed in the worker thread together with each 1 MiB write."""
    pos = offset + nd.HEADER_SIZE
    running = 0
    received = 0
    buffer = bytearray()
    async for chunk in chunks:
        received += len(chunk)
        if received > header.size:
            raise _too_long(header.size)
        if not buffer and len(chunk) >= COPY_CHUNK:  # a whole fragment in one piece: no copy
            running = await run(_write_crc, volume, chunk, pos, running)
            pos += len(chunk)
            continue
        buffer += chunk
        if len(buffer) >= COPY_CHUNK:
            full, buffer = buffer, bytearray()  # handed over, not copied
            running = await run(_write_crc, volume, full, pos, running)
            pos += len(full)
    running = crc32c(buffer, running)
    _check_end(received, header.size, running, crc)
    await run(volume.write_at, bytes(buffer) + nd.trailer(running, header.size), pos)


def _write_crc(volume: Volume, data: bytes | bytearray, offset: int, running: int) -> int:
    volume.write_at(data, offset)
    return crc32c(data, running)
