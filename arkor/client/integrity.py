"""ETags and their checks: MD5 of a whole object, or MD5 of part MD5s plus ``-N`` for multipart.

Why here: uploads send Content-MD5 and compare the ETag the server returns; downloads recompute what
the ETag promises. A multipart ETag can only be checked when the part size is known: the SDK stores it
as metadata (`PART_SIZE_META`) on its own multipart uploads, so its downloads verify every part;
other multipart objects are checked by size only.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence

from arkor.client.errors import IntegrityError
from arkor.web import semantics

# Metadata key (X-Arkor-Meta-Arkor-Part-Size) recording the part size of an SDK multipart upload.
PART_SIZE_META = "arkor-part-size"
MAX_PARTS = 10_000
_MULTIPART_ETAG = re.compile(r"[0-9a-f]{32}-([0-9]+)")
_PLAIN_ETAG = re.compile(r"[0-9a-f]{32}")


def unquote_etag(value: str | None) -> str:
    """The tag of an ETag header, lower-cased (our ETags are hex digests)."""
    return semantics.unquote_etag(value or "").lower()


def content_md5(digest: bytes) -> str:
    """The Content-MD5 header value (base64 of the raw digest)."""
    return base64.b64encode(digest).decode("ascii")


def multipart_etag(part_digests: Sequence[bytes]) -> str:
    return f"{hashlib.md5(b''.join(part_digests)).hexdigest()}-{len(part_digests)}"


def etag_parts(etag: str) -> int | None:
    """Number of parts of a multipart ETag; None for a plain MD5 ETag or an unknown form."""
    match = _MULTIPART_ETAG.fullmatch(etag)
    return int(match.group(1)) if match else None


def is_plain_md5(etag: str) -> bool:
    return bool(_PLAIN_ETAG.fullmatch(etag))


def choose_part_size(size: int | None, part_size: int) -> int:
    """The requested part size, grown so that `size` bytes fit into MAX_PARTS parts."""
    if size is None:
        return part_size
    return max(part_size, -(-size // MAX_PARTS))


def check_etag(expected: str, actual: str, what: str) -> None:
    if unquote_etag(expected) != unquote_etag(actual):
        raise IntegrityError(
            f"{what}: ETag {unquote_etag(actual)!r} does not match {unquote_etag(expected)!r}"
        )


def check_size(expected: int, actual: int, what: str) -> None:
    if expected != actual:
        raise IntegrityError(f"{what}: got {actual} bytes, expected {expected}")


class StreamVerifier:
    """Checks bytes fed in order against an object's ETag and size.

    Plain ETag: one running MD5. Multipart ETag with a known part size: an MD5 per part and the
    composite at the end. Otherwise only the size.
    """

    def __init__(self, etag: str, size: int, part_size: int | None = None) -> None:
        self.etag = unquote_etag(etag)
        self.size = size
        self.seen = 0
        self._whole = hashlib.md5() if is_plain_md5(self.etag) else None
        parts = etag_parts(self.etag)
        self._part_size = part_size if parts is not None and part_size else None
        if self._part_size and -(-size // self._part_size) != parts:
            self._part_size = None  # the recorded part size does not fit this ETag: size only
        self._part = hashlib.md5()
        self._part_fill = 0
        self._digests: list[bytes] = []

    @property
    def checks_content(self) -> bool:
        return self._whole is not None or self._part_size is not None

    def update(self, data: bytes | memoryview) -> None:
        self.seen += len(data)
        if self._whole is not None:
            self._whole.update(data)
        elif self._part_size:
            view = memoryview(data)
            while view:
                take = min(len(view), self._part_size - self._part_fill)
                self._part.update(view[:take])
                self._part_fill += take
                view = view[take:]
                if self._part_fill == self._part_size:
                    self._digests.append(self._part.digest())
                    self._part, self._part_fill = hashlib.md5(), 0

    def finish(self, what: str) -> None:
        check_size(self.size, self.seen, what)
        if self._whole is not None:
            check_etag(self.etag, self._whole.hexdigest(), what)
        elif self._part_size:
            if self._part_fill:
                self._digests.append(self._part.digest())
            check_etag(self.etag, multipart_etag(self._digests), what)
