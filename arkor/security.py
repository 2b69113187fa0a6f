"""Signed internal requests between roles, keyed by the cluster secret: the one place they are
signed and verified (registry /internal/v1/..., data-server needle writes, listing, compaction).

A signed request carries ``X-Arkor-Signature: <expires>:<nonce>:<hex MAC>`` where MAC is
HMAC-SHA256(secret) over, one per line::

    arkor-internal-v2
    METHOD
    raw path (percent-encoded, as sent, without the query)
    raw query string (as sent, without '?'; empty when none)
    body digest: "crc32c:<decimal>" when the request carries X-Arkor-Crc32c (needle bodies: the
                 checksum the data path computes anyway, checked against the body by the data
                 server), else "sha256:<hex>" of the body, also sent as X-Arkor-Content-Sha256
    nonce (16 random bytes, hex)
    expires (Unix seconds)

Verifiers check the MAC (constant time), the expiry (not past, at most MAX_VALIDITY ahead), then
record the nonce in a per-process `ReplayCache` until its expiry, so a captured request cannot be
replayed, even with the same body. The receiving route checks the body against the signed digest
(`check_body`, or the needle CRC32C check of the store). There is no built-in secret: a role
without `cluster.secret` refuses to start, except allinone (`process_secret`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Generator, Mapping

import httpx

from arkor.errors import ArkorError, Forbidden, ServiceUnavailable, Unauthorized

SIGNATURE_HEADER = "x-arkor-signature"
CONTENT_SHA256_HEADER = "x-arkor-content-sha256"
CRC_HEADER = "x-arkor-crc32c"
DEFAULT_VALIDITY = 60.0  # a signature is used at once; the margin covers queueing only
MAX_VALIDITY = 300.0  # how far ahead an expiry may be (clock skew between hosts)
REPLAY_CACHE_SIZE = 250_000  # > 2k signed requests/s (one process' ceiling) x DEFAULT_VALIDITY
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_DOMAIN = "arkor-internal-v2"


def process_secret(configured: str) -> bytes:
    """The configured cluster secret, or a random one for this process (allinone only: every role
    then lives in this process, so nothing outside it needs to know the secret)."""
    return configured.encode() if configured else secrets.token_bytes(32)


def configured_secret(configured: str) -> bytes:
    """The cluster secret of a role that talks to other processes; ArkorError when none is set
    (start-up checks in arkor.config refuse earlier, with the key named)."""
    if not configured:
        raise ArkorError("cluster.secret is required to sign or verify internal requests",
                         code="no_cluster_secret")
    return configured.encode()


def digest_of(body: bytes, crc32c: int | None = None) -> str:
    """The body digest a signature covers."""
    if crc32c is not None:
        return f"crc32c:{crc32c}"
    return "sha256:" + (hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256)


def _wire(text: str) -> bytes:
    """The bytes a path or query string stood for: servers decode them as latin-1; a signer may
    hold text that only UTF-8 can carry (it goes on the wire as UTF-8)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _mac(secret: bytes, method: str, path: str, query: str, digest: str, nonce: str, expires: int) -> str:
    message = _wire("\n".join((_DOMAIN, method.upper(), path, query, digest, nonce, str(expires))))
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(
    secret: bytes, method: str, path: str, *, query: str = "", digest: str = "sha256:" + EMPTY_SHA256,
    now: float | None = None, nonce: str | None = None,
) -> str:
    """The X-Arkor-Signature value authorising this one request for DEFAULT_VALIDITY seconds."""
    expires = int((now if now is not None else time.time()) + DEFAULT_VALIDITY)
    nonce = nonce or os.urandom(16).hex()
    return f"{expires}:{nonce}:{_mac(secret, method, path, query, digest, nonce, expires)}"


def signed_headers(
    secret: bytes, method: str, path: str, *, query: str = "", body: bytes = b"", crc32c: int | None = None
) -> dict[str, str]:
    """Headers for a request built by hand: the signature, plus the body's SHA-256 when it has one
    (a needle PUT is covered by its X-Arkor-Crc32c instead, which the caller sends itself)."""
    digest = digest_of(body, crc32c)
    headers = {SIGNATURE_HEADER: sign(secret, method, path, query=query, digest=digest)}
    if crc32c is None:
        headers[CONTENT_SHA256_HEADER] = digest.removeprefix("sha256:")
    return headers


class ClusterAuth(httpx.Auth):
    """httpx auth hook signing every request of an internal client over exactly what goes on
    the wire (path, query, body digest), so no caller can sign one thing and send another."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def headers_for(self, method: str, path: str, query: str, body: bytes,
                    headers: Mapping[str, str]) -> dict[str, str]:
        """The signature headers for a request as it goes on the wire (the lean internal client
        calls this; `auth_flow` is the same for httpx). A needle PUT is signed over its CRC32C."""
        crc = next((v for k, v in headers.items() if k.lower() == CRC_HEADER), None)
        digest = digest_of(b"" if crc is not None else body, int(crc, 0) if crc is not None else None)
        signed = {SIGNATURE_HEADER: sign(self.secret, method, path, query=query, digest=digest)}
        if crc is None:
            signed[CONTENT_SHA256_HEADER] = digest.removeprefix("sha256:")
        return signed

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # A needle PUT is signed over its CRC32C header: its (possibly streamed) body is not read.
        body = b"" if CRC_HEADER in request.headers else request.content
        request.headers.update(self.headers_for(
            request.method, request.url.raw_path.split(b"?", 1)[0].decode("ascii"),
            request.url.query.decode("ascii"), body, request.headers,
        ))
        yield request


class ReplayCache:
    """Nonces seen within their validity, per process: bounded in time (an entry lives until its
    signature expires) and in size (full of live entries, it refuses rather than forgets)."""

    def __init__(self, max_entries: int = REPLAY_CACHE_SIZE) -> None:
        self.max_entries = max_entries
        self._by_expiry: dict[int, set[str]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def _purge(self, now: float) -> None:
        for expires in [e for e in self._by_expiry if e < now]:
            self._count -= len(self._by_expiry.pop(expires))

    def add(self, nonce: str, expires: int, now: float) -> bool:
        """Record a nonce; False when it was already seen (a replay)."""
        seen = self._by_expiry.get(expires)
        if seen is not None and nonce in seen:
            return False
        if self._count >= self.max_entries:
            self._purge(now)
            if self._count >= self.max_entries:
                raise ServiceUnavailable("too many signed requests in flight (replay cache full)",
                                         code="replay_cache_full")
        self._by_expiry.setdefault(expires, set()).add(nonce)
        self._count += 1
        if len(self._by_expiry) > MAX_VALIDITY + 2:  # keep the per-second buckets few
            self._purge(now)
        return True


class Verifier:
    """Checks signatures for one role (one per process, with its replay cache)."""

    def __init__(self, secret: bytes, cache: ReplayCache | None = None) -> None:
        self.secret = secret
        self.cache = cache if cache is not None else ReplayCache()

    def check(
        self, method: str, path: str, query: str, header: str | None, digest: str, *, now: float | None = None
    ) -> None:
        """Raise 401 (no signature), 403 invalid_signature (wrong, expired, malformed) or 403
        replayed_signature (nonce already used); return when the request is authorised."""
        if not header:
            raise Unauthorized("this operation needs the cluster signature (X-Arkor-Signature)")
        expires_text, nonce, mac = _split(header)
        current = now if now is not None else time.time()
        if (not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12
                or not nonce or not mac.isascii()):
            raise Forbidden("malformed cluster signature", code="invalid_signature")
        expires = int(expires_text)
        expected = _mac(self.secret, method, path, query, digest, nonce, expires)
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            raise Forbidden("the cluster signature does not match this request", code="invalid_signature")
        if expires < current or expires > current + MAX_VALIDITY:
            raise Forbidden("the cluster signature is expired (or dated too far ahead)",
                            code="invalid_signature")
        if not self.cache.add(nonce, expires, current):
            raise Forbidden("this signed request was already used (replay)", code="replayed_signature")


def _split(header: str) -> tuple[str, str, str]:
    parts = header.strip().split(":")
    if len(parts) != 3:
        return "", "", ""
    return parts[0], parts[1], parts[2]


def check_body(body: bytes, declared: str | None) -> None:
    """The body must be the one the signature covers (X-Arkor-Content-Sha256, empty if absent)."""
    actual = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    if not hmac.compare_digest(actual.encode(), (declared or EMPTY_SHA256).encode("latin-1")):
        raise Forbidden("the request body is not the one the cluster signature covers",
                        code="invalid_signature")


def declared_digest(headers: dict[str, str]) -> str:
    """What a signed control request says its body is (checked later by `check_body`)."""
    return "sha256:" + (headers.get(CONTENT_SHA256_HEADER) or EMPTY_SHA256)
