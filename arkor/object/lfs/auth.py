"""What Git LFS adds to the one authenticator (arkor/object/auth.py): its challenge header and its
transfer tokens. Users, credentials, loopback trust and rights are decided there, not here.

- A 401 carries ``LFS-Authenticate: Basic realm=...`` (so git asks its credential helper) and is
  only raised by endpoints that exist (an unsupported endpoint answers 404/405 before any
  authentication: a 401 there would make the client reject and forget its stored credentials).
- Batch responses hand out transfer actions carrying a token: HMAC-SHA256 under the cluster secret
  with its own domain tag (so it can never pass as an internal request signature, nor one as it),
  over the method, the repository, the oid and the expiry. The transfer endpoints accept the token
  or the same credentials as the API.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from arkor.config import Config
from arkor.errors import Forbidden, Unauthorized
from arkor.object.auth import Authenticator, Principal

REALM = "Git LFS (Arkor)"
CHALLENGE = {"lfs-authenticate": f'Basic realm="{REALM}"'}
TOKEN_HEADER = "x-arkor-lfs-token"
TOKEN_VALIDITY = 900  # seconds; the client asks for a fresh batch when an action expires
_TOKEN_DOMAIN = b"arkor-git-lfs-transfer-v2"


def unauthorized(message: str) -> Unauthorized:
    return Unauthorized(message, headers=dict(CHALLENGE))


def authenticate(authenticator: Authenticator, authorization: str | None, client_host: str) -> Principal:
    """The caller, or 401 with the LFS challenge."""
    return authenticator.authenticate(authorization, client_host, CHALLENGE)


def authorize(principal: Principal, repo: str, *, write: bool) -> None:
    """Forbidden (403) when the caller may not pull (read) or push (write) `repo`, in git's words."""
    if not principal.may("write" if write else "read", repo):
        what = "push (write)" if write else "pull (read)"
        raise Forbidden(f"{principal.name} has no {what} access to {repo}")


# --- transfer tokens ---------------------------------------------------------------------------


def _token_mac(secret: bytes, method: str, repo: str, oid: str, expires: int) -> bytes:
    message = b"\n".join((_TOKEN_DOMAIN, method.upper().encode(), repo.encode(), oid.encode(),
                          str(expires).encode()))
    return hmac.new(secret, message, hashlib.sha256).hexdigest().encode()


def _secret(config: Config) -> bytes:
    if not config.cluster.secret:  # never a built-in one (allinone makes up a random secret)
        raise RuntimeError("Git LFS transfer tokens need cluster.secret")
    return config.cluster.secret.encode()


def make_token(config: Config, method: str, repo: str, oid: str, *, now: float | None = None) -> str:
    """A token authorising `method` ("GET" or "PUT") on object `oid` of `repo` for a while."""
    expires = int((now if now is not None else time.time()) + TOKEN_VALIDITY)
    return f"{expires}:{_token_mac(_secret(config), method, repo, oid, expires).decode()}"


def check_token(
    config: Config, method: str, repo: str, oid: str, token: str | None, *, now: float | None = None
) -> bool:
    """True when `token` authorises `method` on `repo`'s `oid` now; False for anything else,
    malformed or non-ASCII tokens included."""
    if not token:
        return False
    expires_text, sep, mac = token.partition(":")
    if (not sep or not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12
            or not mac.isascii()):
        return False
    expires = int(expires_text)
    current = now if now is not None else time.time()
    if expires < current or expires > current + TOKEN_VALIDITY + 60:
        return False
    return hmac.compare_digest(mac.encode(), _token_mac(_secret(config), method, repo, oid, expires))
