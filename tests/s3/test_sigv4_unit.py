"""SigV4 verification against requests signed by botocore itself, and AWS's published examples."""

from __future__ import annotations

import calendar
import dataclasses
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arkor.object.s3.errors import S3Error
from arkor.object.s3.sigv4 import authenticate_sigv4, chunk_signature
from tests.mutation import mutate
from tests.s3.capture import ACCESS_KEY, REGION, SECRET_KEY, Captured, client, presigned


def secret_for(access_key: str) -> str | None:
    return {ACCESS_KEY: SECRET_KEY, "AKIAIOSFODNN7EXAMPLE": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}.get(
        access_key
    )


def verify(req: Captured, *, now: float | None = None, region: str = REGION, secrets=secret_for):
    return authenticate_sigv4(
        req.method, req.raw_path, req.raw_query, req.headers,
        secret_for=secrets, region=region, now=time.time() if now is None else now,
    )


def fails(req: Captured, code: str, status: int, **kw) -> S3Error:
    with pytest.raises(S3Error) as info:
        verify(req, **kw)
    assert (info.value.code, info.value.status) == (code, status), info.value
    return info.value


def with_headers(req: Captured, **changes: str) -> Captured:
    return dataclasses.replace(req, headers={**req.headers, **changes})


@pytest.fixture(scope="module")
def put_request() -> Captured:
    s3, sent = client()
    s3.put_object(Bucket="bkt", Key="dir/a b+c~!'()*é.txt", Body=b"hello", Metadata={"color": "blue"})
    return sent[-1]


@pytest.fixture(scope="module")
def list_request() -> Captured:
    s3, sent = client()
    s3.list_objects_v2(Bucket="bkt", Prefix="a b/+&=é", Delimiter="/", StartAfter="x~y", MaxKeys=7)
    return sent[-1]


# --- header auth ----------------------------------------------------------------------------------


def test_botocore_header_signatures_verify(put_request: Captured, list_request: Captured) -> None:
    for req in (put_request, list_request):
        identity = verify(req)
        assert identity is not None and not identity.presigned
        assert identity.access_key == ACCESS_KEY
        assert identity.scope.endswith(f"/{REGION}/s3/aws4_request")
        assert identity.seed_signature in req.headers["authorization"]
        assert identity.payload_hash == req.headers["x-amz-content-sha256"]


def test_every_change_breaks_the_signature(put_request: Captured, list_request: Captured) -> None:
    req = put_request
    fails(dataclasses.replace(req, method="POST"), "SignatureDoesNotMatch", 403)
    other_path = req.raw_path.replace("dir", "dir2")
    fails(dataclasses.replace(req, raw_path=other_path), "SignatureDoesNotMatch", 403)
    fails(dataclasses.replace(req, raw_query="acl"), "SignatureDoesNotMatch", 403)
    other_query = list_request.raw_query.replace("max-keys=7", "max-keys=8")
    fails(dataclasses.replace(list_request, raw_query=other_query), "SignatureDoesNotMatch", 403)
    fails(with_headers(req, **{"x-amz-meta-color": "red"}), "SignatureDoesNotMatch", 403)
    fails(with_headers(req, host="127.0.0.1:9999"), "SignatureDoesNotMatch", 403)
    fails(with_headers(req, **{"x-amz-content-sha256": "0" * 64}), "SignatureDoesNotMatch", 403)
    later = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() + 60))
    fails(with_headers(req, **{"x-amz-date": later}), "SignatureDoesNotMatch", 403)
    fails(req, "SignatureDoesNotMatch", 403, secrets=lambda key: "another secret")
    err = fails(req, "AuthorizationHeaderMalformed", 400, region="eu-west-1")
    assert "us-east-1" in err.message and err.headers["x-amz-bucket-region"] == "eu-west-1"
    fails(req, "InvalidAccessKeyId", 403, secrets=lambda key: None)


def test_clock_skew_over_fifteen_minutes(put_request: Captured) -> None:
    stamp = calendar.timegm(time.strptime(put_request.headers["x-amz-date"], "%Y%m%dT%H%M%SZ"))
    assert verify(put_request, now=stamp + 14 * 60) is not None
    assert verify(put_request, now=stamp - 14 * 60) is not None
    fails(put_request, "RequestTimeTooSkewed", 403, now=stamp + 16 * 60)
    fails(put_request, "RequestTimeTooSkewed", 403, now=stamp - 16 * 60)


def test_unsigned_amz_headers_are_refused(put_request: Captured) -> None:
    err = fails(with_headers(put_request, **{"x-amz-acl": "public-read"}), "AccessDenied", 403)
    assert "x-amz-acl" in err.message


def test_no_credentials_is_anonymous() -> None:
    assert verify(Captured("GET", "/bkt/key", "", {"host": "h"}, b"")) is None
    assert verify(Captured("GET", "/bkt/key", "prefix=a&list-type=2", {"host": "h"}, b"")) is None


def test_other_schemes_are_refused() -> None:
    for header in ("AWS AKID:c2lnbmF0dXJl", "Basic dTpw", "Bearer x"):
        fails(Captured("GET", "/b/k", "", {"host": "h", "authorization": header}, b""), "InvalidRequest", 400)
    fails(Captured("GET", "/b/k", "AWSAccessKeyId=AK&Signature=x&Expires=1", {"host": "h"}, b""),
          "InvalidRequest", 400)


def test_aws_documented_get_object_example() -> None:
    """docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html, "GET Object"."""
    headers = {
        "host": "examplebucket.s3.amazonaws.com",
        "range": "bytes=0-9",
        "x-amz-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "x-amz-date": "20130524T000000Z",
        "authorization": "AWS4-HMAC-SHA256 "
        "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    }
    now = calendar.timegm((2013, 5, 24, 0, 0, 0))
    identity = verify(Captured("GET", "/test.txt", "", headers, b""), now=now)
    assert identity is not None and identity.scope == "20130524/us-east-1/s3/aws4_request"
    fails(Captured("GET", "/test.txt", "", {**headers, "range": "bytes=0-10"}, b""),
          "SignatureDoesNotMatch", 403, now=now)


def test_aws_documented_chunked_seed_and_first_chunk() -> None:
    """docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html: the seed signature verifies and
    the first chunk's signature follows from it."""
    identity = verify(aws_streaming_example(), now=calendar.timegm((2013, 5, 24, 0, 0, 0)))
    assert identity is not None
    assert identity.seed_signature == "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    assert identity.payload_hash == "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    import hashlib

    first = chunk_signature(identity, identity.seed_signature, hashlib.sha256(b"a" * 65536).hexdigest())
    assert first == "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"


def aws_streaming_example() -> Captured:
    headers = {
        "host": "s3.amazonaws.com",
        "x-amz-date": "20130524T000000Z",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "authorization": "AWS4-HMAC-SHA256 "
        "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
        "x-amz-decoded-content-length;x-amz-storage-class,"
        "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": "66560",
        "content-length": "66824",
    }
    return Captured("PUT", "/examplebucket/chunkObject.txt", "", headers, b"")


# --- presigned URLs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def presigned_get() -> str:
    s3, _ = client()
    return s3.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "a b/ü~!"}, ExpiresIn=300)


def test_presigned_urls_verify(presigned_get: str) -> None:
    identity = verify(presigned(presigned_get))
    assert identity is not None and identity.presigned and identity.payload_hash == "UNSIGNED-PAYLOAD"
    s3, _ = client()
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "bkt", "Key": "k"}, ExpiresIn=60)
    assert verify(presigned(put_url, "PUT")) is not None
    fails(presigned(put_url, "GET"), "SignatureDoesNotMatch", 403)


def test_presigned_tampering_fails(presigned_get: str) -> None:
    req = presigned(presigned_get)
    fails(dataclasses.replace(req, raw_path="/bkt/other"), "SignatureDoesNotMatch", 403)
    fails(dataclasses.replace(req, raw_query=req.raw_query + "&response-content-type=text%2Fhtml"),
          "SignatureDoesNotMatch", 403)
    fails(dataclasses.replace(req, raw_query=req.raw_query.replace("X-Amz-Expires=300", "X-Amz-Expires=900")),
          "SignatureDoesNotMatch", 403)
    fails(with_headers(req, host="evil.example"), "SignatureDoesNotMatch", 403)
    fails(req, "SignatureDoesNotMatch", 403, secrets=lambda key: "wrong")
    fails(req, "InvalidAccessKeyId", 403, secrets=lambda key: None)
    fails(req, "AuthorizationQueryParametersError", 400, region="eu-west-1")
    both = with_headers(req, authorization="AWS4-HMAC-SHA256 Credential=x")
    fails(both, "InvalidArgument", 400)


def test_presigned_expiry(presigned_get: str) -> None:
    req = presigned(presigned_get)
    stamp = calendar.timegm(time.strptime(dict(
        p.split("=", 1) for p in req.raw_query.split("&"))["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
    assert verify(req, now=stamp + 299) is not None
    err = fails(req, "AccessDenied", 403, now=stamp + 301)
    assert "expired" in err.message
    fails(req, "AccessDenied", 403, now=stamp - 16 * 60)  # not valid yet
    s3, _ = client()
    week = s3.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"}, ExpiresIn=604800)
    assert verify(presigned(week)) is not None
    too_long = s3.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"}, ExpiresIn=604801)
    fails(presigned(too_long), "AccessDenied", 403)


def test_presigned_missing_parameters(presigned_get: str) -> None:
    req = presigned(presigned_get)
    for name in ("X-Amz-Algorithm", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Credential"):
        query = "&".join(p for p in req.raw_query.split("&") if not p.startswith(name + "="))
        fails(dataclasses.replace(req, raw_query=query), "AuthorizationQueryParametersError", 400)


# --- malformed input: always a clean S3Error, never another exception ------------------------------


def test_malformed_authorization_headers(put_request: Captured) -> None:
    base = put_request.headers["authorization"]
    cases = [
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 ",
        "AWS4-HMAC-SHA256 Credential=",
        "AWS4-HMAC-SHA256 Credential=a/b/c, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AK/20261203/us-east-1/s3/aws4_request, SignedHeaders=, Signature=0",
        "AWS4-HMAC-SHA256 Credential=AK/20261203/us-east-1/s3/aws4_request, SignedHeaders=date, Signature=0",
        base.replace("/s3/", "/ec2/"),
        base.replace("aws4_request", "aws5_request"),
        base + ", Signature=00",
        base.replace("Signature=", "Signature=\u00e9\u4e2d"),
        base.replace(";host;", ";HOST;"),
    ]
    for header in cases:
        with pytest.raises(S3Error) as info:
            verify(with_headers(put_request, authorization=header))
        assert info.value.status in (400, 403), (header, info.value)
    for date in ("", "2026-12-03T10:00:00Z", "99999999T999999Z", "20261203T100000"):
        fails(with_headers(put_request, **{"x-amz-date": date}), "AccessDenied", 403)
    fails(with_headers(put_request, **{"x-amz-content-sha256": "SHA256-SOMETHING"}), "InvalidArgument", 400)


def test_random_corruption_never_escapes_as_another_exception(
    put_request: Captured, presigned_get: str
) -> None:
    rng = random.Random(12)
    alphabet = "=&%/;, ,+\x00\xff\u00e9abcXYZ019-_.~"
    presigned_req = presigned(presigned_get)
    for _ in range(3000):
        req = rng.choice((put_request, presigned_req))
        field = "authorization" if req is put_request else "query"
        text = req.headers["authorization"] if field == "authorization" else req.raw_query
        chars = list(text)
        mutate(chars, rng, alphabet, rng.randint(1, 4), replace_below=0.4, delete_below=0.7)
        text = "".join(chars)
        mutated = (with_headers(req, authorization=text) if field == "authorization"
                   else dataclasses.replace(req, raw_query=text))
        try:
            verify(mutated)
        except S3Error as exc:
            assert exc.status in (400, 403)


def test_aws_cli_presign_verifies(tmp_path: Path) -> None:
    """`aws s3 presign`, the real CLI (no request is sent). aws-cli v1 presigns with SigV2 unless told
    s3v4: such URLs are refused as unsupported, never half-verified."""
    aws = Path(sys.executable).parent / "aws"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_DEFAULT_REGION": REGION, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}

    def presign(config: str) -> str:
        (tmp_path / "config").write_text(config)
        done = subprocess.run(
            [str(aws), "s3", "presign", "s3://bkt/dir/a b+c.txt", "--expires-in", "120",
             "--endpoint-url", "http://127.0.0.1:8130"],
            env={**env, "AWS_CONFIG_FILE": str(tmp_path / "config")}, capture_output=True, timeout=120,
            check=True)
        return done.stdout.decode().strip()

    url = presign("[default]\ns3 =\n    signature_version = s3v4\n")
    assert "X-Amz-Signature=" in url
    identity = verify(presigned(url))
    assert identity is not None and identity.presigned
    fails(presigned(url.replace("a%20b", "a%20c")), "SignatureDoesNotMatch", 403)
    fails(presigned(presign("")), "InvalidRequest", 400)
