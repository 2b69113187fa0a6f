"""S3 authentication against a real `arkor allinone` without anonymous loopback: every SigV4
failure answers its S3 error, presigned URLs work with curl, signed streaming bodies are verified
chunk by chunk (a bad chunk signature mid-stream stores nothing)."""

from __future__ import annotations

import datetime
import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import httpx
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from arkor.object.s3.sigv4 import SigV4Identity, chunk_signature, signing_key
from tests.s3.conftest import ACCESS_KEY, REGION, SECRET_KEY, S3Server, start_s3

READER_KEY, READER_SECRET = "AKIAREADONLY0000001", "reader-secret-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    users = [
        {"name": "tester", "accessKey": ACCESS_KEY, "secretKey": SECRET_KEY},
        {"name": "reader", "accessKey": READER_KEY, "secretKey": READER_SECRET,
         "read": ["*"], "write": ["reader-*"]},
    ]
    srv = start_s3(tmp_path_factory.mktemp("s3auth"),
                   auth={"anonymousLoopback": False, "users": users})
    client(srv).create_bucket(Bucket="authed")
    yield srv
    srv.proc.stop()


def client(server: S3Server, key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> Any:
    return boto3.client("s3", endpoint_url=server.s3_url, region_name=REGION,
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                      retries={"max_attempts": 1}))


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


@pytest.fixture
def clock_skew(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make botocore sign as if its clock were `minutes` off."""

    def skew(minutes: float) -> None:
        real = botocore.auth.get_current_datetime

        def shifted() -> datetime.datetime:
            return real() + datetime.timedelta(minutes=minutes)

        monkeypatch.setattr(botocore.auth, "get_current_datetime", shifted)

    return skew


def test_signed_requests_work_and_unsigned_are_refused(server: S3Server) -> None:
    s3 = client(server)
    s3.put_object(Bucket="authed", Key="k", Body=b"signed")
    assert s3.get_object(Bucket="authed", Key="k")["Body"].read() == b"signed"
    anonymous = httpx.get(f"{server.s3_url}/authed/k")
    assert anonymous.status_code == 403 and b"<Code>AccessDenied</Code>" in anonymous.content


def test_wrong_secret_is_signature_does_not_match(server: S3Server) -> None:
    with pytest.raises(ClientError) as exc:
        client(server, secret="not-the-secret").get_object(Bucket="authed", Key="k")
    assert code_of(exc) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as exc:
        client(server, secret="not-the-secret").put_object(Bucket="authed", Key="bad", Body=b"x")
    assert code_of(exc) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as exc:
        client(server).head_object(Bucket="authed", Key="bad")
    assert exc.value.response["Error"]["Code"] == "404"  # nothing stored


def test_unknown_access_key_is_invalid_access_key_id(server: S3Server) -> None:
    with pytest.raises(ClientError) as exc:
        client(server, key="AKIANOSUCHKEY000000").list_buckets()
    assert code_of(exc) == "InvalidAccessKeyId"


def test_clock_skew_over_15_minutes_is_refused(server: S3Server, clock_skew: Any) -> None:
    clock_skew(-20)
    with pytest.raises(ClientError) as exc:
        client(server).list_buckets()
    assert code_of(exc) == "RequestTimeTooSkewed"
    clock_skew(10)  # within 15 minutes (20 minutes back + 10 forward = 10 minutes back)
    client(server).list_buckets()


def test_permissions_of_a_read_only_user(server: S3Server) -> None:
    reader = client(server, READER_KEY, READER_SECRET)
    assert reader.get_object(Bucket="authed", Key="k")["Body"].read() == b"signed"
    with pytest.raises(ClientError) as exc:
        reader.put_object(Bucket="authed", Key="r", Body=b"x")
    assert code_of(exc) == "AccessDenied"
    reader.create_bucket(Bucket="reader-own")
    reader.put_object(Bucket="reader-own", Key="r", Body=b"mine")


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-s", "-S", "-w", "\n%{http_code}", *args],
                          capture_output=True, timeout=60)


def test_presigned_get_and_put_with_curl(server: S3Server, tmp_path: Path,
                                         clock_skew: Any) -> None:
    s3 = client(server)
    source = tmp_path / "upload.bin"
    source.write_bytes(b"presigned body " * 1000)
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "authed", "Key": "pre"},
                                        ExpiresIn=300)
    put = curl("-T", str(source), put_url)
    assert put.stdout.endswith(b"200"), put.stdout
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": "authed", "Key": "pre"},
                                        ExpiresIn=300)
    got = curl(get_url)
    assert got.stdout == source.read_bytes() + b"\n200"
    tampered = curl(get_url.replace("/pre?", "/k?"))
    assert tampered.stdout.endswith(b"403") and b"SignatureDoesNotMatch" in tampered.stdout
    clock_skew(-120)  # signed two hours ago, valid for one
    expired_url = s3.generate_presigned_url("get_object", Params={"Bucket": "authed", "Key": "pre"},
                                            ExpiresIn=3600)
    expired = curl(expired_url)
    assert expired.stdout.endswith(b"403") and b"<Code>AccessDenied</Code>" in expired.stdout


class _StreamingAuth(botocore.auth.S3SigV4Auth):
    """botocore's signer with the streaming payload literal as the payload hash."""

    def payload(self, request: AWSRequest) -> str:
        return "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


def _signed_streaming_put(server: S3Server, key: str, payload: bytes, chunk: int,
                          corrupt_chunk: int | None = None) -> httpx.Response:
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD upload as minio-go (restic) sends it."""
    url = f"{server.s3_url}/authed/{key}"
    framed_len = 0
    pieces = [payload[i:i + chunk] for i in range(0, len(payload), chunk)] + [b""]
    for piece in pieces:
        framed_len += len(f"{len(piece):x};chunk-signature=".encode()) + 64 + 2 + len(piece) + 2
    headers = {
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "x-amz-decoded-content-length": str(len(payload)),
        "content-encoding": "aws-chunked",
        "content-length": str(framed_len),
    }
    request = AWSRequest(method="PUT", url=url, headers=headers)
    _StreamingAuth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", REGION).add_auth(request)
    sent = {k.lower(): v for k, v in request.headers.items()}
    seed = sent["authorization"].rsplit("Signature=", 1)[1]
    amz_date = sent["x-amz-date"]
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    identity = SigV4Identity(ACCESS_KEY, signing_key(SECRET_KEY, amz_date[:8], REGION), scope,
                             amz_date, seed, headers["x-amz-content-sha256"], False)
    body = bytearray()
    previous = seed
    for index, piece in enumerate(pieces):
        signature = chunk_signature(identity, previous, hashlib.sha256(piece).hexdigest())
        previous = signature
        if index == corrupt_chunk:
            signature = "0" * 64
        body += f"{len(piece):x};chunk-signature={signature}\r\n".encode() + piece + b"\r\n"
    assert len(body) == framed_len
    return httpx.put(url, content=bytes(body), headers=sent, timeout=60)


def test_signed_streaming_upload_verifies_every_chunk(server: S3Server) -> None:
    payload = bytes(range(256)) * 1024  # 256 KiB in 64 KiB chunks
    ok = _signed_streaming_put(server, "streamed", payload, 65536)
    assert ok.status_code == 200, ok.text
    assert client(server).get_object(Bucket="authed", Key="streamed")["Body"].read() == payload
    bad = _signed_streaming_put(server, "tampered", payload, 65536, corrupt_chunk=2)
    assert bad.status_code == 403 and b"SignatureDoesNotMatch" in bad.content
    with pytest.raises(ClientError) as exc:
        client(server).head_object(Bucket="authed", Key="tampered")
    assert exc.value.response["Error"]["Code"] == "404"  # nothing stored
