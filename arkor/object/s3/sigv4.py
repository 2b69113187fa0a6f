"""AWS Signature Version 4 for S3: verify the Authorization header and presigned URLs.

Lives here: parsing SigV4 credentials, the canonical request, the signing key and the chunk and
trailer signatures of streaming uploads (`chunked` verifies those with the functions below). Must not
live here: where secrets come from (`secret_for`), what the caller may do (authorization), or I/O.

Cost: a SHA-256 of the canonical request and one HMAC per request (tens of microseconds in all, on
the loop); derived signing keys are cached per (secret, day, region).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_tz
from urllib.parse import quote, unquote_to_bytes

from arkor.object.s3.errors import S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
MAX_SKEW = 15 * 60  # seconds between the request's date and ours
MAX_PRESIGNED_EXPIRES = 7 * 24 * 3600
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
PAYLOAD_LITERALS = frozenset(
    {UNSIGNED_PAYLOAD, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER}
)

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_SPACES = re.compile(r"  +")
_SIGNED_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_QUERY_AUTH = ("x-amz-algorithm", "x-amz-credential", "x-amz-signature")
_KEY_CACHE: dict[tuple[str, str, str, str], bytes] = {}
_KEY_CACHE_SIZE = 256


@dataclass(frozen=True)
class SigV4Identity:
    """Who signed, and what the body decoders need to go on verifying (streaming chunks)."""

    access_key: str
    signing_key: bytes  # the derived key of the credential scope
    scope: str  # "20261203/us-east-1/s3/aws4_request"
    amz_date: str  # "20261203T102000Z"
    seed_signature: str  # the request's own signature: the "previous signature" of chunk 1
    payload_hash: str  # x-amz-content-sha256 as sent: hex sha256, UNSIGNED-PAYLOAD, STREAMING-...
    presigned: bool


def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """The SigV4 key of one day, region and service (derived keys are cached: four HMACs saved on
    every request; the cache is bounded and keyed by the secret, so a changed secret misses)."""
    cache_key = (secret, date, region, service)
    key = _KEY_CACHE.get(cache_key)
    if key is None:
        key = _hmac(("AWS4" + secret).encode("utf-8"), date.encode())
        key = _hmac(key, region.encode("utf-8"))
        key = _hmac(key, service.encode("utf-8"))
        key = _hmac(key, b"aws4_request")
        if len(_KEY_CACHE) >= _KEY_CACHE_SIZE:
            del _KEY_CACHE[next(iter(_KEY_CACHE))]  # the oldest entry
        _KEY_CACHE[cache_key] = key
    return key


def chunk_signature(identity: SigV4Identity, previous: str, chunk_sha256_hex: str) -> str:
    """Signature of one aws-chunked chunk, chained from the previous chunk's (or the seed)."""
    string_to_sign = "\n".join(
        ("AWS4-HMAC-SHA256-PAYLOAD", identity.amz_date, identity.scope, previous, EMPTY_SHA256,
         chunk_sha256_hex)
    )
    return _hmac(identity.signing_key, string_to_sign.encode()).hex()


def trailer_signature(identity: SigV4Identity, previous: str, canonical_trailers: bytes) -> str:
    """Signature of the trailer section ("name:value\\n" per trailer), chained from the last chunk."""
    string_to_sign = "\n".join(
        ("AWS4-HMAC-SHA256-TRAILER", identity.amz_date, identity.scope, previous,
         hashlib.sha256(canonical_trailers).hexdigest())
    )
    return _hmac(identity.signing_key, string_to_sign.encode()).hex()


def signatures_equal(expected: str, given: str) -> bool:
    """Constant-time comparison that never raises (compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(expected.encode("utf-8", "surrogateescape"),
                               given.encode("utf-8", "surrogateescape"))


def authenticate_sigv4(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    *,
    secret_for: Callable[[str], str | None],
    region: str,
    now: float,
) -> SigV4Identity | None:
    """Verify a SigV4 request; None when it carries no credentials at all (anonymous).

    `headers` have lower-case names; `raw_path` is the path as sent (percent-encoded, no query).
    Raises S3Error for every failure, never another exception type.
    """
    try:
        authorization = headers.get("authorization")
        query = _parse_query(raw_query)
        names = {k.lower() for k, _ in query}
        presigned = any(n in names for n in _QUERY_AUTH)
        if authorization is not None and presigned:
            raise S3Error("InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm "
                          "query parameter or the Authorization header should be specified", 400)
        if "signature" in names and "awsaccesskeyid" in names and not presigned:
            raise S3Error("InvalidRequest", "The authorization mechanism you have provided is not "
                          f"supported. Please use {ALGORITHM}.", 400)
        if presigned:
            return _authenticate_query(method, raw_path, query, headers, secret_for, region, now)
        if authorization is None:
            return None
        return _authenticate_header(method, raw_path, query, headers, authorization, secret_for,
                                    region, now)
    except S3Error:
        raise
    except Exception as exc:  # malformed input that slipped past the checks: still a clean 400
        raise S3Error("InvalidArgument", f"malformed authentication data ({type(exc).__name__})",
                      400) from None


# --- internals ----------------------------------------------------------------------------------


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.digest(key, msg, "sha256")


def _parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs in order; '+' means a space, as in form encoding."""
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((_unquote(name), _unquote(value)))
    return pairs


def _unquote(text: str) -> str:
    raw = unquote_to_bytes(text.replace("+", " ").encode("latin-1", "surrogateescape"))
    return raw.decode("utf-8", "surrogateescape")


def _uri_encode(text: str, safe: str) -> str:
    return quote(text.encode("utf-8", "surrogateescape"), safe=safe)


def _header_bytes(value: str) -> bytes:
    """The header's bytes as received (the server decoded them as latin-1)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")


def _parse_amz_date(text: str) -> int | None:
    """Epoch seconds of "20130524T000000Z", None if malformed (strptime is slow: parsed by hand)."""
    if not _AMZ_DATE.fullmatch(text):
        return None
    try:
        stamp = datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[9:11]),
                         int(text[11:13]), int(text[13:15]), tzinfo=UTC)
    except ValueError:
        return None
    return int(stamp.timestamp())


def _request_date(headers: Mapping[str, str]) -> tuple[str, int]:
    """(amz_date, epoch seconds) from X-Amz-Date, else from the Date header."""
    amz = headers.get("x-amz-date")
    if amz is not None:
        stamp = _parse_amz_date(amz.strip())
        if stamp is not None:
            return amz.strip(), stamp
    else:
        date = headers.get("date")
        parsed = parsedate_tz(date) if date else None
        if parsed is not None:
            try:
                stamp = calendar.timegm(parsed[:9]) - (parsed[9] or 0)
                return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(stamp)), stamp
            except (ValueError, OverflowError):
                pass
    raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header", 403)


def _check_scope(credential: str, region: str, amz_date: str, error_code: str) -> tuple[str, str]:
    """(access_key, scope) from "AKID/20130524/us-east-1/s3/aws4_request"."""
    parts = credential.split("/")
    if len(parts) != 5 or not parts[0]:
        raise S3Error(error_code, f"the credential {credential[:200]!r} is malformed; expecting "
                      "\"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\"", 400)
    access_key, date, cred_region, service, terminal = parts
    if cred_region != region:
        raise S3Error(error_code, f"the region {cred_region[:64]!r} is wrong; expecting {region!r}",
                      400, headers={"x-amz-bucket-region": region})
    if service != SERVICE or terminal != "aws4_request":
        raise S3Error(error_code, "the credential scope must name service 's3' and 'aws4_request'",
                      400)
    if date != amz_date[:8]:
        raise S3Error(error_code, "the credential date does not match the request date "
                      f"({date[:16]!r} vs {amz_date[:8]!r})", 400)
    return access_key, "/".join(parts[1:])


def _signed_header_names(text: str, error_code: str) -> list[str]:
    names = text.split(";")
    if not names or any(not _SIGNED_HEADER_NAME.fullmatch(n) for n in names):
        raise S3Error(error_code, f"malformed SignedHeaders {text[:200]!r}", 400)
    if "host" not in names:
        raise S3Error(error_code, "the host header must be signed", 400)
    return names


def _check_unsigned_amz_headers(headers: Mapping[str, str], signed: list[str], presigned: bool) -> None:
    """Every x-amz-* header present must be signed: a signature covers what it authorizes."""
    unsigned = [
        name for name in headers
        if name.startswith("x-amz-") and name not in signed
        and not (presigned and name == "x-amz-content-sha256")
    ]
    if unsigned:
        raise S3Error("AccessDenied", "There were headers present in the request which were not "
                      f"signed: {', '.join(sorted(unsigned))[:300]}", 403)


def _payload_hash(value: str | None) -> str:
    if value is None:
        raise S3Error("InvalidRequest",
                      "Missing required header for this request: x-amz-content-sha256", 400)
    if value in PAYLOAD_LITERALS or _HEX64.fullmatch(value):
        return value
    raise S3Error("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                  "STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER] "
                  "or a hex SHA-256", 400)


def _canonical_uris(raw_path: str) -> list[str]:
    """AWS's encoding of the decoded path (single encoding, no normalization), and the path as
    sent when that differs (a client may leave e.g. '!' unencoded and sign what it sent)."""
    raw = raw_path or "/"
    decoded = unquote_to_bytes(raw.encode("latin-1", "surrogateescape"))
    canonical = quote(decoded, safe="/-_.~")
    return [canonical] if canonical == raw else [canonical, raw]


def _verify(
    method: str,
    raw_path: str,
    query: list[tuple[str, str]],
    headers: Mapping[str, str],
    signed: list[str],
    payload_hash: str,
    amz_date: str,
    scope: str,
    key: bytes,
    signature: str,
) -> None:
    """The signature must be that of the canonical request, under one of the path's URIs."""
    encoded = sorted((_uri_encode(k, "-_.~"), _uri_encode(v, "-_.~")) for k, v in query)
    after_uri = ["&".join(f"{k}={v}" for k, v in encoded).encode()]
    for name in signed:
        value = _SPACES.sub(" ", headers.get(name, "").strip())
        after_uri.append(name.encode() + b":" + _header_bytes(value))
    after_uri += [b"", ";".join(signed).encode(), payload_hash.encode()]
    for uri in _canonical_uris(raw_path):
        request = b"\n".join([method.encode(), uri.encode(), *after_uri])
        string_to_sign = "\n".join(
            (ALGORITHM, amz_date, scope, hashlib.sha256(request).hexdigest())
        ).encode()
        if signatures_equal(_hmac(key, string_to_sign).hex(), signature.lower()):
            return
    raise S3Error("SignatureDoesNotMatch", "The request signature we calculated does not match the "
                  "signature you provided. Check your key and signing method.", 403)


def _secret(secret_for: Callable[[str], str | None], access_key: str) -> str:
    secret = secret_for(access_key)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in "
                      "our records.", 403)
    return secret


def _authenticate_header(
    method: str,
    raw_path: str,
    query: list[tuple[str, str]],
    headers: Mapping[str, str],
    authorization: str,
    secret_for: Callable[[str], str | None],
    region: str,
    now: float,
) -> SigV4Identity:
    code = "AuthorizationHeaderMalformed"
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme != ALGORITHM:
        raise S3Error("InvalidRequest", "The authorization mechanism you have provided is not "
                      f"supported. Please use {ALGORITHM}.", 400)
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name in fields:
            raise S3Error(code, "The authorization header is malformed", 400)
        fields[name] = value.strip()
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        raise S3Error(code, "The authorization header must hold Credential, SignedHeaders and "
                      "Signature", 400)
    amz_date, stamp = _request_date(headers)
    access_key, scope = _check_scope(fields["Credential"], region, amz_date, code)
    signed = _signed_header_names(fields["SignedHeaders"], code)
    _check_unsigned_amz_headers(headers, signed, presigned=False)
    payload_hash = _payload_hash(headers.get("x-amz-content-sha256"))
    secret = _secret(secret_for, access_key)
    if abs(now - stamp) > MAX_SKEW:
        raise S3Error("RequestTimeTooSkewed", "The difference between the request time and the "
                      "current time is too large.", 403)
    key = signing_key(secret, amz_date[:8], region)
    signature = fields["Signature"]
    _verify(method, raw_path, query, headers, signed, payload_hash, amz_date, scope, key, signature)
    return SigV4Identity(access_key, key, scope, amz_date, signature.lower(), payload_hash, False)


def _authenticate_query(
    method: str,
    raw_path: str,
    query: list[tuple[str, str]],
    headers: Mapping[str, str],
    secret_for: Callable[[str], str | None],
    region: str,
    now: float,
) -> SigV4Identity:
    code = "AuthorizationQueryParametersError"
    params: dict[str, str] = {}
    for name, value in query:
        if name.startswith("X-Amz-"):
            if name in params:
                raise S3Error(code, f"{name[:40]} is given twice", 400)
            params[name] = value
    required = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                "X-Amz-SignedHeaders", "X-Amz-Signature")
    missing = [n for n in required if n not in params]
    if missing:
        raise S3Error(code, "Query-string authentication version 4 requires the X-Amz-Algorithm, "
                      "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and "
                      f"X-Amz-Expires parameters (missing: {', '.join(missing)})", 400)
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise S3Error(code, f"X-Amz-Algorithm only supports {ALGORITHM!r}", 400)
    amz_date = params["X-Amz-Date"]
    stamp = _parse_amz_date(amz_date)
    if stamp is None:
        raise S3Error(code, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
                      400)
    expires_text = params["X-Amz-Expires"]
    if not expires_text.isdigit() or not expires_text.isascii() or len(expires_text) > 12:
        raise S3Error(code, "X-Amz-Expires should be a number of seconds", 400)
    expires = int(expires_text)
    if expires > MAX_PRESIGNED_EXPIRES:
        raise S3Error("AccessDenied", "X-Amz-Expires must be less than a week (in seconds) that is; "
                      "604800", 403)
    access_key, scope = _check_scope(params["X-Amz-Credential"], region, amz_date, code)
    signed = _signed_header_names(params["X-Amz-SignedHeaders"], code)
    _check_unsigned_amz_headers(headers, signed, presigned=True)
    payload_hash = params.get("X-Amz-Content-Sha256", UNSIGNED_PAYLOAD)
    if payload_hash not in (UNSIGNED_PAYLOAD,) and not _HEX64.fullmatch(payload_hash):
        raise S3Error(code, "X-Amz-Content-Sha256 must be UNSIGNED-PAYLOAD or a hex SHA-256", 400)
    secret = _secret(secret_for, access_key)
    if now < stamp - MAX_SKEW:
        raise S3Error("AccessDenied", "Request is not valid yet", 403)
    if now > stamp + expires:
        raise S3Error("AccessDenied", "Request has expired", 403)
    key = signing_key(secret, amz_date[:8], region)
    signature = params["X-Amz-Signature"]
    unsigned_query = [(k, v) for k, v in query if k != "X-Amz-Signature"]
    _verify(method, raw_path, unsigned_query, headers, signed, payload_hash, amz_date, scope, key,
            signature)
    return SigV4Identity(access_key, key, scope, amz_date, signature.lower(), payload_hash, True)
