"""Re-chunking an async byte stream into fixed-size fragments.

Why: the transfer engine stores objects as needles of `fragment_size` bytes; the HTTP body (or an
SDK file) arrives in arbitrary pieces (64 KiB from hypercorn). Only one partial fragment is held
at a time, so memory stays at one fragment whatever the source sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


async def rechunk(source: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """Yield `size`-byte pieces of `source` in order; the last one may be shorter. An empty
    source yields nothing. The partial fragment is one bytearray (one allocation, returned to the
    system as a whole when an upload stalls and dies; a list of the source's small chunks was
    not), and each piece is copied out of it once."""
    if size <= 0:
        raise ValueError("fragment size must be positive")
    buf = bytearray()
    try:
        async for chunk in source:
            if not chunk:
                continue
            if not buf and len(chunk) == size:
                yield bytes(chunk)  # already exactly one fragment: no copy into the buffer
                continue
            buf += chunk
            while len(buf) >= size:
                with memoryview(buf) as view:
                    piece = bytes(view[:size])
                del buf[:size]
                yield piece
        if buf:
            yield bytes(buf)
    finally:
        # Free the partial fragment now: a failed upload's traceback keeps this frame (and a
        # full buffer) alive until the cyclic GC runs, which kept stalled uploads' memory.
        buf.clear()


async def iter_bytes(data: bytes, piece: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """An in-memory body as an async stream (small uploads, tests, copies of small objects)."""
    view = memoryview(data)
    for start in range(0, len(data), piece):
        yield bytes(view[start : start + piece])
