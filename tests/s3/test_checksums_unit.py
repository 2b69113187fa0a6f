"""Upload checksums: what boto3 computes must verify; every mismatch and malformed value is refused."""

from __future__ import annotations

import base64
import hashlib

import pytest

from arkor.object.s3.checksums import UploadChecksums
from arkor.object.s3.errors import S3Error
from tests.s3.capture import client

BODY = b"The quick brown fox jumps over the lazy dog" * 1000


def sent_headers(**params) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Headers of a real boto3 PutObject over http (header checksums, signed payload)."""
    s3, sent = client("http://127.0.0.1:8130")
    s3.put_object(Bucket="bkt", Key="k", Body=BODY, **params)
    return sent[-1].headers


def check(headers: dict[str, str], body: bytes = BODY, trailers: dict[str, str] | None = None, **kw):
    checks = UploadChecksums.from_headers(headers, **kw)
    for i in range(0, len(body), 4096):
        checks.update(body[i : i + 4096])
    return checks.verify(trailers or {})


def refused(code: str, headers: dict[str, str], body: bytes = BODY, trailers=None, **kw) -> S3Error:
    with pytest.raises(S3Error) as info:
        check(headers, body, trailers, **kw)
    assert (info.value.code, info.value.status) == (code, 400), info.value
    return info.value


# CRC32C needs awscrt in botocore; AWS's published trailer example covers it (test_chunked_unit).
@pytest.mark.parametrize("algorithm", ["CRC32", "SHA1", "SHA256"])
def test_boto3_checksums_verify_and_are_returned(algorithm: str) -> None:
    headers = sent_headers(ChecksumAlgorithm=algorithm)
    name = f"x-amz-checksum-{algorithm.lower()}"
    assert name in headers and len(headers["x-amz-content-sha256"]) == 64
    assert check(headers) == {algorithm.lower(): headers[name]}
    err = refused("BadDigest", headers, BODY[:-1] + b"!")
    assert algorithm in err.message


def test_default_boto3_put_and_content_md5() -> None:
    headers = sent_headers()  # current boto3: CRC32 by default
    assert check(headers) == {"crc32": headers["x-amz-checksum-crc32"]}
    md5 = base64.b64encode(hashlib.md5(BODY).digest()).decode()
    headers = sent_headers(ContentMD5=md5)
    assert headers["content-md5"] == md5
    check(headers)
    refused("BadDigest", {"content-md5": md5}, BODY + b"x")
    # the payload hash of a signed request is checked against the body too
    refused("XAmzContentSHA256Mismatch", {"x-amz-content-sha256": hashlib.sha256(b"other").hexdigest()})
    assert check({"x-amz-content-sha256": hashlib.sha256(BODY).hexdigest().upper()}) == {}


def test_digests_left_to_the_engine() -> None:
    md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    sha = hashlib.sha256(b"other").hexdigest()
    checks = UploadChecksums.from_headers({"content-md5": md5, "x-amz-content-sha256": sha}, md5=False,
                                          sha256=False)
    assert not checks.active
    assert checks.content_md5 == hashlib.md5(b"other").digest() and checks.content_sha256 == sha
    checks.update(BODY)
    assert checks.verify({}) == {}


def test_trailer_checksums() -> None:
    crc = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    headers = {"x-amz-trailer": "x-amz-checksum-sha256", "x-amz-sdk-checksum-algorithm": "SHA256"}
    assert check(headers, trailers={"x-amz-checksum-sha256": crc}) == {"sha256": crc}
    refused("BadDigest", headers, BODY + b"x", trailers={"x-amz-checksum-sha256": crc})
    refused("InvalidRequest", headers, trailers={})  # announced, never sent
    refused("InvalidRequest", headers, trailers={"x-amz-checksum-sha256": "not base64!"})
    refused("InvalidRequest", headers, trailers={"x-amz-checksum-sha256": "AAAAAA=="})  # wrong size


def test_algorithm_named_without_a_value_is_computed() -> None:
    result = check({"x-amz-sdk-checksum-algorithm": "crc32c"})
    assert set(result) == {"crc32c"} and len(base64.b64decode(result["crc32c"])) == 4
    assert UploadChecksums.from_headers({}).active is False
    assert check({}) == {}


def test_malformed_declarations() -> None:
    def bad(code: str, headers: dict[str, str]) -> None:
        with pytest.raises(S3Error) as info:
            UploadChecksums.from_headers(headers)
        assert (info.value.code, info.value.status) == (code, 400), (headers, info.value)

    bad("InvalidDigest", {"content-md5": "not base64"})
    bad("InvalidDigest", {"content-md5": base64.b64encode(b"short").decode()})
    bad("InvalidRequest", {"x-amz-checksum-crc32": "AAAA"})  # 3 bytes
    bad("InvalidRequest", {"x-amz-checksum-sha1": "é"})
    bad("InvalidRequest", {"x-amz-checksum-crc32": "AAAAAA==", "x-amz-checksum-crc32c": "AAAAAA=="})
    bad("InvalidRequest", {"x-amz-checksum-crc64nvme": "AAAAAAAAAAA="})
    bad("InvalidRequest", {"x-amz-sdk-checksum-algorithm": "MD5"})
    bad("InvalidRequest", {"x-amz-sdk-checksum-algorithm": "CRC32", "x-amz-checksum-sha1": "A" * 27 + "="})
    bad("InvalidRequest", {"x-amz-trailer": "x-amz-meta-foo"})
    bad("InvalidRequest", {"x-amz-trailer": "x-amz-checksum-crc32,x-amz-checksum-crc32c"})
    bad("InvalidRequest", {"x-amz-trailer": "x-amz-checksum-crc32", "x-amz-checksum-crc32": "AAAAAA=="})
    bad("InvalidArgument", {"x-amz-content-sha256": "abc"})
