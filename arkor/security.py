"""Signed internal requests between roles, keyed by the cluster secret.

A request carries ``X-Arkor-Signature: <expires>:<hex HMAC-SHA256(secret, METHOD\\nPATH\\nexpires)>``
where PATH is the raw request path without the query string. A signature is valid until `expires`
(Unix seconds), at most `MAX_VALIDITY` ahead, so a captured signature is only replayable for a short
time and only for the same method and path (data-server writes are idempotent, so a replay cannot
change stored content).

In runMode dev without a configured secret every role falls back to `DEV_SECRET`, so a cluster of
separate dev processes works with no set-up; runMode prod refuses to start without a real secret.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "x-arkor-signature"
DEFAULT_VALIDITY = 300.0
MAX_VALIDITY = 900.0
DEV_SECRET = "arkor-dev-cluster-secret"


def effective_secret(configured: str) -> bytes:
    return (configured or DEV_SECRET).encode()


def _mac(secret: bytes, method: str, path: str, expires: int) -> str:
    message = f"{method.upper()}\n{path}\n{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(secret: bytes, method: str, path: str, *, now: float | None = None) -> str:
    """The header value that authorises `method path` for DEFAULT_VALIDITY seconds."""
    expires = int((now if now is not None else time.time()) + DEFAULT_VALIDITY)
    return f"{expires}:{_mac(secret, method, path, expires)}"


def verify(
    secret: bytes, method: str, path: str, header: str | None, *, now: float | None = None
) -> bool:
    """True when `header` is a current signature of `method path` under `secret`."""
    if not header:
        return False
    expires_text, sep, mac = header.partition(":")
    if not sep or not expires_text.isdigit():
        return False
    expires = int(expires_text)
    current = now if now is not None else time.time()
    if expires < current or expires > current + MAX_VALIDITY:
        return False
    return hmac.compare_digest(mac, _mac(secret, method, path, expires))
