"""Who is calling the S3 API: SigV4 (header or presigned query) against `auth.users`, or the dev
anonymous-loopback caller; nothing else is accepted.

Lives here: turning a request into a `Principal` (+ the SigV4 identity that streaming bodies verify
their chunk signatures with). Not here: signature maths (`sigv4`), per-bucket permission checks
(`S3Call.allow`).
"""

from __future__ import annotations

import time
from typing import Any

from arkor.object.auth import Authenticator, Principal
from arkor.object.s3.errors import S3Error
from arkor.object.s3.sigv4 import authenticate_sigv4
from arkor.web.asgi import Request


def authenticate(auth: Authenticator, request: Request, region: str) -> tuple[Principal, Any]:
    """(principal, SigV4Identity or None); S3Error 403 for bad or missing credentials."""

    def secret_for(access_key: str) -> str | None:
        user = auth.user_for_access_key(access_key)
        return user.secretKey if user is not None else None

    query = request.scope.get("query_string", b"").decode("latin-1")
    identity = authenticate_sigv4(
        request.method, request.raw_path, query, request.headers,
        secret_for=secret_for, region=region, now=time.time(),
    )
    if identity is None:
        principal = auth.anonymous_principal(request.client_host)
        if principal is None:
            raise S3Error("AccessDenied", "anonymous access is not allowed: sign with SigV4", 403)
        return principal, None
    user = auth.user_for_access_key(identity.access_key)
    if user is None:  # removed between the two look-ups
        raise S3Error("InvalidAccessKeyId", "unknown access key", 403)
    return auth.principal_for(user), identity
