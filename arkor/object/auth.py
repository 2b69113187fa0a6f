"""Who is calling the public API: anonymous on loopback in dev, else an access key.

Accepted credentials (docs/specs/API.md): HTTP Basic ``accessKey:secretKey`` or
``Authorization: Bearer <secretKey>``. A user's `read` / `write` lists name what it may touch:
``*`` for everything, otherwise bucket names (v1 API) or ``namespace/repo`` (Git LFS), with
shell-style wildcards.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from fnmatch import fnmatchcase

from arkor.config import AccessKey, Config
from arkor.errors import Forbidden, Unauthorized
from arkor.web.asgi import Request

LOOPBACK = ("127.", "::1", "localhost")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller; `user is None` means anonymous loopback (allowed everything)."""

    name: str
    user: AccessKey | None

    def may(self, action: str, resource: str) -> bool:
        if self.user is None:
            return True
        patterns = self.user.read if action == "read" else self.user.write
        if action == "read":
            patterns = [*patterns, *self.user.write]  # write implies read
        return any(p == "*" or fnmatchcase(resource, p) for p in patterns)


def _unauthorized(message: str) -> Unauthorized:
    return Unauthorized(message, headers={"www-authenticate": 'Basic realm="arkor"'})


class Authenticator:
    def __init__(self, config: Config) -> None:
        self.anonymous_loopback = config.auth.anonymousLoopback and not config.is_prod
        self.users = list(config.auth.users)

    def _match(self, access: str | None, secret: str) -> AccessKey | None:
        for user in self.users:
            if access is not None and not hmac.compare_digest(user.accessKey, access):
                continue
            if hmac.compare_digest(user.secretKey, secret):
                return user
        return None

    # --- the plug-in the S3 API authenticates through (it verifies SigV4 itself) ---------------
    def user_for_access_key(self, access_key: str) -> AccessKey | None:
        for user in self.users:
            if hmac.compare_digest(user.accessKey, access_key):
                return user
        return None

    def principal_for(self, user: AccessKey) -> Principal:
        return Principal(user.name or user.accessKey, user)

    def anonymous_principal(self, client_host: str) -> Principal | None:
        """The anonymous caller when dev anonymous loopback applies, else None."""
        if self.anonymous_loopback and client_host.startswith(LOOPBACK):
            return Principal("anonymous", None)
        return None

    def authenticate(self, request: Request) -> Principal:
        """The caller, or Unauthorized (401 with WWW-Authenticate)."""
        header = request.headers.get("authorization", "")
        if not header:
            if self.anonymous_loopback and request.client_host.startswith(LOOPBACK):
                return Principal("anonymous", None)
            raise _unauthorized("credentials required: HTTP Basic or Bearer access key")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        user: AccessKey | None = None
        if scheme == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise _unauthorized("malformed Basic credentials") from None
            access, sep, secret = decoded.partition(":")
            if sep:
                user = self._match(access, secret)
        elif scheme == "bearer":
            user = self._match(None, value.strip())
        else:
            raise _unauthorized(f"unsupported authorization scheme {scheme[:20]!r}")
        if user is None:
            if self.anonymous_loopback and request.client_host.startswith(LOOPBACK):
                # Git LFS sends whatever a credential helper offers; dev loopback stays open.
                return Principal("anonymous", None)
            raise _unauthorized("unknown access key or wrong secret")
        return Principal(user.name or user.accessKey, user)

    def authorize(self, request: Request, action: str, resource: str) -> Principal:
        """Authenticate and check `action` ("read" or "write") on `resource`, else 401/403."""
        principal = self.authenticate(request)
        if not principal.may(action, resource):
            raise Forbidden(f"{principal.name} may not {action} {resource}")
        return principal
