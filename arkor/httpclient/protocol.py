"""HTTP/1.1 client framing with no I/O: request heads out, response heads and bodies in.

Charter: pure functions and small state machines over bytes, in the manner of h11, so they are
tested without a socket and reused by any transport. What lives here: building a request head,
parsing a response head (bounded), and decoding a body framed by Content-Length, chunked transfer
coding or the end of the connection. What must not: sockets, trio, timeouts, pooling (`pool.py`).

Only what Arkor's roles send each other is accepted; anything else is a `ProtocolError`, so a
confused or hostile peer costs a closed connection, never a wrong answer or unbounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HEAD = 64 * 1024
MAX_CHUNK_LINE = 1024


class ProtocolError(Exception):
    """The peer's bytes are not a response we can trust: the connection must be dropped."""


def request_head(method: str, target: str, host: str, headers: list[tuple[str, str]],
                 content_length: int | None) -> bytes:
    """The request line and headers. `content_length` None means a chunked body follows."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} carries a line break or a colon")
        lines.append(f"{name}: {value}")
    if content_length is None:
        lines.append("Transfer-Encoding: chunked")
    elif content_length or method not in ("GET", "HEAD", "DELETE"):
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked request body (empty data is the last chunk)."""
    return b"%x\r\n%b\r\n" % (len(data), data) if data else b"0\r\n\r\n"


@dataclass
class ResponseHead:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    keep_alive: bool
    framing: str  # "length" | "chunked" | "close" | "none"
    length: int  # for "length"


def parse_head(block: bytes, *, method: str) -> ResponseHead:
    """Parse a response head (the bytes before the blank line, without it)."""
    try:
        text = block.decode("latin-1")
    except UnicodeDecodeError:  # latin-1 decodes every byte; kept for clarity
        raise ProtocolError("undecodable head") from None
    lines = text.split("\r\n")
    version, _, rest = lines[0].partition(" ")
    status_text, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(status_text) != 3 or not status_text.isascii() \
            or not status_text.isdigit():
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    status = int(status_text)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise ProtocolError(f"bad header line {line[:80]!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    connection = headers.get("connection", "").lower()
    keep_alive = ("close" not in connection) if version == "HTTP/1.1" else ("keep-alive" in connection)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return ResponseHead(status, reason, headers, keep_alive, "none", 0)
    encoding = headers.get("transfer-encoding")
    if encoding is not None:
        if encoding.lower() != "chunked" or "content-length" in headers:
            raise ProtocolError(f"unsupported framing: Transfer-Encoding {encoding[:40]!r}")
        return ResponseHead(status, reason, headers, keep_alive, "chunked", 0)
    length_text = headers.get("content-length")
    if length_text is None:
        return ResponseHead(status, reason, headers, False, "close", 0)
    if not length_text.isascii() or not length_text.isdigit() or len(length_text) > 18:
        raise ProtocolError(f"bad Content-Length {length_text[:40]!r}")
    return ResponseHead(status, reason, headers, keep_alive, "length", int(length_text))


class ChunkedDecoder:
    """Incremental decoder of a chunked body: `feed` bytes, take the payload it yields; `done` once
    the last chunk and its (ignored) trailers have been read. `leftover` is what followed."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._remaining = 0  # payload bytes left in the current chunk
        self._state = "size"  # size | data | crlf | trailers | done
        self.leftover = b""

    @property
    def done(self) -> bool:
        return self._state == "done"

    def _line(self, limit: int, too_long: str) -> bytes | None:
        """The next CRLF-ended line, taken from the buffer without its CRLF; None while incomplete."""
        end = self._buf.find(b"\r\n")
        if end < 0:
            if len(self._buf) > limit:
                raise ProtocolError(too_long)
            return None
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    def feed(self, data: bytes) -> list[bytes]:
        if self._state == "done":  # bytes after the body belong to whatever follows it
            self.leftover += data
            return []
        self._buf += data
        out: list[bytes] = []
        while True:
            if self._state == "size":
                line = self._line(MAX_CHUNK_LINE, "chunk size line too long")
                if line is None:
                    return out
                size_text = line.split(b";", 1)[0].strip()
                if not size_text or len(size_text) > 16 or any(c not in b"0123456789abcdefABCDEF"
                                                               for c in size_text):
                    raise ProtocolError(f"bad chunk size {size_text[:20]!r}")
                self._remaining = int(size_text, 16)
                self._state = "data" if self._remaining else "trailers"
            elif self._state == "data":
                if not self._buf:
                    return out
                take = bytes(self._buf[: self._remaining])
                del self._buf[: len(take)]
                self._remaining -= len(take)
                out.append(take)
                if self._remaining == 0:
                    self._state = "crlf"
            elif self._state == "crlf":
                if len(self._buf) < 2:
                    return out
                if self._buf[:2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                del self._buf[:2]
                self._state = "size"
            elif self._state == "trailers":
                line = self._line(MAX_HEAD, "trailers too long")
                if line is None:
                    return out
                if not line:
                    self._state = "done"
                    self.leftover = bytes(self._buf)
                    self._buf.clear()
                    return out
            else:
                return out
