"""Who is calling and what they may do with a repository; short-lived transfer tokens.

git-lfs authenticates with HTTP Basic (so credential helpers work). The rules:
- credentials present: they must match an `auth.users` entry (access key + secret key, or a
  Bearer secret key), else 401 - even in dev mode, so a typo is never silently anonymous;
- no credentials: anonymous read-write only in runMode dev with auth.anonymousLoopback from a
  loopback address; otherwise 401 "credentials needed";
- 401 always carries ``LFS-Authenticate: Basic realm=...`` and is only raised by endpoints that
  exist (an unsupported endpoint answers 404/405 before any authentication: a 401 there would make
  the client reject and forget its stored credentials).

Batch responses hand out transfer actions carrying an HMAC token bound to the method, the exact
path (repository + oid) and an expiry, keyed by the cluster secret under its own domain tag so it
can never pass as an internal request signature. The transfer endpoints accept the token or the
same Basic credentials as the API.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass

from arkor.config import AccessKey, Config
from arkor.errors import Forbidden, Unauthorized
from arkor.security import configured_secret

REALM = "Git LFS (Arkor)"
ANONYMOUS_OWNER = "anonymous"
TOKEN_HEADER = "x-arkor-lfs-token"
TOKEN_VALIDITY = 900  # seconds; the client asks for a fresh batch when an action expires
_TOKEN_DOMAIN = b"arkor-git-lfs-transfer-v1"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: `name` is the lock owner; `user` is None for anonymous callers."""

    name: str
    user: AccessKey | None = None

    @property
    def anonymous(self) -> bool:
        return self.user is None


def unauthorized(message: str) -> Unauthorized:
    return Unauthorized(message, headers={"lfs-authenticate": f'Basic realm="{REALM}"'})


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_basic(value: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _find_user(config: Config, access_key: str | None, secret: str) -> AccessKey | None:
    """Constant-time over every user, so timing does not reveal which keys exist."""
    found: AccessKey | None = None
    for user in config.auth.users:
        key_ok = access_key is None or hmac.compare_digest(
            user.accessKey.encode(), access_key.encode()
        )
        secret_ok = hmac.compare_digest(user.secretKey.encode(), secret.encode())
        if key_ok and secret_ok and found is None:
            found = user
    return found


def authenticate(config: Config, authorization: str | None, client_host: str) -> Principal:
    """The caller behind an ``Authorization`` header; Unauthorized (401) when needed or wrong."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        user: AccessKey | None = None
        if scheme.lower() == "basic":
            pair = _parse_basic(value)
            if pair is not None:
                user = _find_user(config, pair[0], pair[1])
        elif scheme.lower() == "bearer" and value.strip():
            user = _find_user(config, None, value.strip())
        if user is None:
            raise unauthorized("invalid credentials")
        return Principal(user.name or user.accessKey, user)
    if anonymous_allowed(config, client_host):
        return Principal(ANONYMOUS_OWNER)
    raise unauthorized("credentials needed")


def anonymous_allowed(config: Config, client_host: str) -> bool:
    return not config.is_prod and config.auth.anonymousLoopback and is_loopback(client_host)


def _listed(patterns: list[str], repo: str) -> bool:
    return any(fnmatch.fnmatchcase(repo, pattern) for pattern in patterns)


def can_read(principal: Principal, repo: str) -> bool:
    if principal.user is None:
        return True
    return _listed(principal.user.read, repo) or _listed(principal.user.write, repo)


def can_write(principal: Principal, repo: str) -> bool:
    if principal.user is None:
        return True
    return _listed(principal.user.write, repo)


def authorize(principal: Principal, repo: str, *, write: bool) -> None:
    """Forbidden (403) when the authenticated caller lacks the access."""
    allowed = can_write(principal, repo) if write else can_read(principal, repo)
    if not allowed:
        what = "push (write)" if write else "pull (read)"
        raise Forbidden(f"{principal.name} has no {what} access to {repo}")


# --- transfer tokens ---------------------------------------------------------------------------


def _token_mac(secret: bytes, method: str, path: str, expires: int) -> str:
    message = b"\n".join((_TOKEN_DOMAIN, method.upper().encode(), path.encode(), str(expires).encode()))
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def make_token(config: Config, method: str, path: str, *, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + TOKEN_VALIDITY)
    return f"{expires}:{_token_mac(configured_secret(config.cluster.secret), method, path, expires)}"


def check_token(
    config: Config, method: str, path: str, token: str | None, *, now: float | None = None
) -> bool:
    """True when `token` authorises `method path` now."""
    if not token:
        return False
    expires_text, sep, mac = token.partition(":")
    if not sep or not expires_text.isdigit():
        return False
    expires = int(expires_text)
    current = now if now is not None else time.time()
    if expires < current or expires > current + TOKEN_VALIDITY + 60:
        return False
    expected = _token_mac(configured_secret(config.cluster.secret), method, path, expires)
    return hmac.compare_digest(mac, expected)
