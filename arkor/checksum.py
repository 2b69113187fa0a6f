"""CRC32C (Castagnoli) for needles and fragments, hardware accelerated by the `crc32c` package.

The package releases the GIL for large buffers, so hashing can run in worker threads in parallel.
"""

from __future__ import annotations

import crc32c as _crc32c


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC32C of `data`, continuing from `value` (the CRC of what came before)."""
    return _crc32c.crc32c(data, value)
