"""Who is calling the public APIs (v1, Git LFS, S3) and what they may do: one authenticator, one
principal, one policy. Protocol modules only add their framing (LFS its challenge header and
transfer tokens, S3 its SigV4 over `user_for_access_key`); none parses users or decides loopback
trust on its own.

The policy (docs/security.md):
- credentials present: HTTP Basic ``accessKey:secretKey`` or ``Bearer <secretKey>``; they must
  match an `auth.users` entry, else 401 everywhere, dev loopback included (a typo is never
  silently anonymous); Basic without ``:``, bad base64, non-UTF-8 and unknown schemes are 401 too;
- no credentials: anonymous only in runMode dev with auth.anonymousLoopback from a loopback
  address (anonymous may do everything); otherwise 401;
- matching is constant time: users are found by access key in a dict and the secret is compared
  with `hmac.compare_digest` over SHA-256 digests (equal lengths), against a dummy secret when the
  key is unknown, so an unknown key and a wrong secret take the same time. Bearer secrets are
  found by their SHA-256, which reveals nothing about other users' secrets.
Rights: a user's `read` / `write` lists name buckets (v1, S3) or ``namespace/repo`` (LFS) with
shell-style wildcards (``*`` for all); write implies read; `admin: true` grants the "admin" action
(force-unlocking another user's LFS lock, listing the reserved git-lfs bucket).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from fnmatch import fnmatchcase

from arkor.config import AccessKey, Config
from arkor.errors import Forbidden, Unauthorized
from arkor.object.lfs.storage import LFS_BUCKET, lfs_repo_of_key
from arkor.web.asgi import Request

V1_CHALLENGE = {"www-authenticate": 'Basic realm="arkor"'}
ACTIONS = ("read", "write", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller; `user is None` means anonymous dev loopback (allowed everything).
    `name` is what locks and logs record."""

    name: str
    user: AccessKey | None = None

    @property
    def anonymous(self) -> bool:
        return self.user is None

    def may(self, action: str, resource: str) -> bool:
        """`action` ("read", "write" or "admin") on a bucket or ``namespace/repo``."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        if self.user is None:
            return True
        if action == "admin":
            return self.user.admin
        patterns = list(self.user.write)
        if action == "read":
            patterns += self.user.read  # write implies read
        return any(p == "*" or fnmatchcase(resource, p) for p in patterns)


@functools.lru_cache(maxsize=1024)  # per request; few distinct peers
def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _raw(text: str) -> bytes:
    """A header value's own bytes (the ASGI layer decodes headers as latin-1)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


class Authenticator:
    """Built once per object server from `auth.users` (validated: keys unique, see arkor.config)."""

    def __init__(self, config: Config) -> None:
        self.anonymous_loopback = config.auth.anonymousLoopback and not config.is_prod
        self._by_access = {u.accessKey: u for u in config.auth.users}
        self._by_secret = {_digest(u.secretKey.encode()): u for u in config.auth.users}
        # Compared against when the access key is unknown: same work, never matches.
        self._dummy = _digest(secrets.token_bytes(32))

    # --- the interface S3's SigV4 uses too ------------------------------------------------------
    def user_for_access_key(self, access_key: str) -> AccessKey | None:
        return self._by_access.get(access_key)

    def principal_for(self, user: AccessKey) -> Principal:
        return Principal(user.name or user.accessKey, user)

    def anonymous_principal(self, client_host: str) -> Principal | None:
        """The anonymous principal when dev anonymous loopback applies to this client, else None."""
        if self.anonymous_loopback and is_loopback(client_host):
            return Principal("anonymous", None)
        return None

    # --- credentials -----------------------------------------------------------------------------
    def match_secret(self, user: AccessKey | None, secret: bytes) -> bool:
        """Constant time whether `user` exists and `secret` is its secret key."""
        expected = _digest(user.secretKey.encode()) if user is not None else self._dummy
        return hmac.compare_digest(expected, _digest(secret)) and user is not None

    def _credentials(self, header: str) -> AccessKey | None:
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "basic":
            try:
                decoded = base64.b64decode(value.encode("latin-1"), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeError, ValueError):
                return None
            access, sep, secret = decoded.partition(":")
            if not sep:
                return None
            user = self.user_for_access_key(access)
            return user if self.match_secret(user, secret.encode()) else None
        if scheme == "bearer" and value:
            given = _raw(value)
            user = self._by_secret.get(_digest(given))
            return user if self.match_secret(user, given) else None
        return None

    def authenticate(
        self, authorization: str | None, client_host: str, challenge: dict[str, str] | None = None
    ) -> Principal:
        """The caller behind an ``Authorization`` header, or 401 carrying `challenge` headers."""
        challenge = V1_CHALLENGE if challenge is None else challenge
        if authorization:
            user = self._credentials(authorization)
            if user is None:
                raise Unauthorized("invalid credentials: unknown access key, wrong secret or "
                                   "malformed Authorization header", headers=dict(challenge))
            return self.principal_for(user)
        principal = self.anonymous_principal(client_host)
        if principal is None:
            raise Unauthorized("credentials required: HTTP Basic or Bearer access key",
                               headers=dict(challenge))
        return principal

    def authorize(self, request: Request, action: str, resource: str) -> Principal:
        """Authenticate a v1 request and check `action` on `resource`, else 401/403."""
        principal = self.authenticate(request.headers.get("authorization"), request.client_host)
        require(principal, action, resource)
        return principal

    def authorize_object(self, request: Request, action: str, bucket: str, key: str) -> Principal:
        """v1 access to one object. In the reserved git-lfs bucket the right checked is the one on
        the object's repository, the same as through the LFS API (a right on "git-lfs" is none)."""
        if bucket != LFS_BUCKET:
            return self.authorize(request, action, bucket)
        return self.authorize(request, action, lfs_repo_of_key(key))

    def authorize_listing(self, request: Request, bucket: str) -> Principal:
        """Listing a bucket: its read right; the git-lfs bucket spans every repository, so its
        listing needs the admin right."""
        if bucket != LFS_BUCKET:
            return self.authorize(request, "read", bucket)
        return self.authorize(request, "admin", bucket)


def require(principal: Principal, action: str, resource: str) -> None:
    """Forbidden (403) when the authenticated caller lacks the right."""
    if not principal.may(action, resource):
        raise Forbidden(f"{principal.name} may not {action} {resource}")
