"""Re-chunking an async byte stream into fixed-size fragments.

Why: the transfer engine stores objects as needles of `fragment_size` bytes; the HTTP body (or an
SDK file) arrives in arbitrary pieces (64 KiB from hypercorn). Only one partial fragment is held
at a time, so memory stays at one fragment whatever the source sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


async def rechunk(source: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """Yield `size`-byte pieces of `source` in order; the last one may be shorter. An empty
    source yields nothing. Each piece is copied once (one join of the chunks it spans)."""
    if size <= 0:
        raise ValueError("fragment size must be positive")
    parts: list[bytes | memoryview] = []
    have = 0
    try:
        async for chunk in source:
            if not chunk:
                continue
            if not isinstance(chunk, bytes):
                chunk = bytes(chunk)  # a mutable buffer may be reused by its source: keep a copy
            if not parts and len(chunk) == size:
                yield chunk  # already exactly one fragment: no copy at all
                continue
            view = memoryview(chunk)
            while view:
                take = min(size - have, len(view))
                parts.append(view[:take])
                have += take
                view = view[take:]
                if have == size:
                    piece = b"".join(parts)
                    parts, have = [], 0
                    yield piece
        if parts:
            yield b"".join(parts)
    finally:
        # Free the partial fragment now: a failed upload's traceback keeps this frame (and a
        # full buffer) alive until the cyclic GC runs, which kept stalled uploads' memory.
        parts.clear()


async def iter_bytes(data: bytes, piece: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """An in-memory body as an async stream (small uploads, tests, copies of small objects)."""
    view = memoryview(data)
    for start in range(0, len(data), piece):
        yield bytes(view[start : start + piece])
