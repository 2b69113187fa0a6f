"""Internal request signatures (arkor/security.py): what a signature covers, replay refusal, the
bounded replay cache, and malformed headers answered as 4xx, never an exception."""

from __future__ import annotations

import httpx
import pytest

from arkor.errors import Forbidden, ServiceUnavailable, Unauthorized
from arkor.security import (
    SIGNATURE_HEADER,
    ClusterAuth,
    ReplayCache,
    Verifier,
    check_body,
    digest_of,
    sign,
)

SECRET = b"s" * 32
PATH = "/needles/1,100000001"


def fresh() -> Verifier:
    return Verifier(SECRET, ReplayCache(100))


def test_a_signature_covers_method_path_query_body_and_expiry() -> None:
    body = digest_of(b'{"count": 1}')
    header = sign(SECRET, "POST", "/internal/v1/leases", query="a=1", digest=body, now=1000.0)
    fresh().check("POST", "/internal/v1/leases", "a=1", header, body, now=1001.0)
    for method, path, query, digest, now in [
        ("PUT", "/internal/v1/leases", "a=1", body, 1001.0),
        ("POST", "/internal/v1/heartbeat", "a=1", body, 1001.0),
        ("POST", "/internal/v1/leases", "a=2", body, 1001.0),
        ("POST", "/internal/v1/leases", "a=1", digest_of(b'{"count": 9}'), 1001.0),
        ("POST", "/internal/v1/leases", "a=1", body, 2000.0),  # expired
        ("POST", "/internal/v1/leases", "a=1", body, 0.0),  # dated too far ahead
    ]:
        with pytest.raises(Forbidden) as info:
            fresh().check(method, path, query, header, digest, now=now)
        assert info.value.code == "invalid_signature"
    with pytest.raises(Forbidden):
        Verifier(b"t" * 32).check("POST", "/internal/v1/leases", "a=1", header, body, now=1001.0)


def test_a_needle_put_is_signed_over_its_crc32c() -> None:
    header = sign(SECRET, "PUT", PATH, digest=digest_of(b"", 1234), now=1000.0)
    fresh().check("PUT", PATH, "", header, digest_of(b"", 1234), now=1001.0)
    with pytest.raises(Forbidden):
        fresh().check("PUT", PATH, "", header, digest_of(b"", 1235), now=1001.0)


def test_a_nonce_is_accepted_once() -> None:
    verifier = fresh()
    header = sign(SECRET, "DELETE", PATH, now=1000.0)
    verifier.check("DELETE", PATH, "", header, digest_of(b""), now=1001.0)
    with pytest.raises(Forbidden) as info:
        verifier.check("DELETE", PATH, "", header, digest_of(b""), now=1002.0)
    assert info.value.code == "replayed_signature"
    verifier.check("DELETE", PATH, "", sign(SECRET, "DELETE", PATH, now=1000.0), digest_of(b""), now=1002.0)


def test_the_replay_cache_is_bounded_in_size_and_time() -> None:
    cache = ReplayCache(max_entries=3)
    for i in range(3):
        assert cache.add(f"n{i}", 1060, now=1000.0)
    with pytest.raises(ServiceUnavailable):  # full of live nonces: refuse, never forget one
        cache.add("n3", 1060, now=1000.0)
    assert cache.add("n3", 1200, now=1061.0)  # the first three expired and were dropped
    assert len(cache) == 1


@pytest.mark.parametrize("header", [
    "", "1000", "x:y:z", "١٠٠٠:nonce:abc", "¹²³:n:abc", "99999999999:n:é", "1000:n:abc:extra",
    "9" * 5000 + ":n:abc",
])
def test_malformed_signatures_are_4xx(header: str) -> None:
    with pytest.raises((Unauthorized, Forbidden)):
        fresh().check("GET", "/needles", "", header, digest_of(b""), now=1000.0)


def test_the_body_must_be_the_signed_one() -> None:
    check_body(b"abc", digest_of(b"abc").removeprefix("sha256:"))
    check_body(b"", None)
    for declared in (None, "00", "é"):
        with pytest.raises(Forbidden):
            check_body(b"abc", declared)


def test_cluster_auth_signs_what_goes_on_the_wire() -> None:
    request = httpx.Request("POST", "http://h/internal/v1/a%2Fb", params={"q": "1 2"}, json={"x": 1})
    flow = ClusterAuth(SECRET).auth_flow(request)
    signed = next(flow)
    digest = digest_of(signed.content)
    fresh().check("POST", "/internal/v1/a%2Fb", "q=1+2", signed.headers[SIGNATURE_HEADER], digest)
    needle = httpx.Request("PUT", "http://h" + PATH, content=b"data", headers={"x-arkor-crc32c": "77"})
    signed = next(ClusterAuth(SECRET).auth_flow(needle))
    fresh().check("PUT", PATH, "", signed.headers[SIGNATURE_HEADER], digest_of(b"", 77))
