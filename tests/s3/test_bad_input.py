"""Bad input to the S3 API of a real `arkor allinone`: every case is a clear S3 XML error (the code S3
gives, RequestId equal to x-amz-request-id) and nothing is stored or changed (checked with GET/list).

Requests with hand-made bodies are signed by botocore's own SigV4 signer; the chunk signatures of
signed streaming bodies come from `sigv4.chunk_signature`, checked against AWS's published vectors in
test_chunked_unit.py.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.auth
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from arkor.object.s3.sigv4 import SigV4Identity, chunk_signature, signing_key
from tests.s3.conftest import ACCESS_KEY, REGION, SECRET_KEY, S3Server, start_s3

BUCKET = "bad-input"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3(tmp_path_factory.mktemp("s3-bad-input"))
    yield server
    server.proc.stop()


@pytest.fixture(scope="module")
def s3(server: S3Server) -> Any:
    client = boto3.client(
        "s3", endpoint_url=server.s3_url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="module")
def http(server: S3Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.s3_url, timeout=30) as client:
        yield client


def signed_headers(url: str, method: str, *, body: bytes = b"", payload_hash: str | None = None,
                   headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers of a request signed by botocore (the payload hash as given, else the body's)."""
    request = AWSRequest(method=method, url=url, data=body, headers={
        **(headers or {}), "X-Amz-Content-SHA256": payload_hash or hashlib.sha256(body).hexdigest()})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", REGION).add_auth(request)
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}


def send(http: httpx.Client, server: S3Server, method: str, path: str, *, body: bytes = b"",
         payload_hash: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    url = server.s3_url + path
    all_headers = signed_headers(url, method, body=body, payload_hash=payload_hash, headers=headers)
    return http.request(method, path, content=body, headers=all_headers)


def s3_error(response: httpx.Response, code: str, status: int) -> ET.Element:
    """The response is the S3 XML error `code` with `status`, and names its request id."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    root = ET.fromstring(response.content)
    assert root.tag == "Error" and root.findtext("Code") == code, response.text[:500]
    assert root.findtext("Message")
    assert root.findtext("RequestId") == response.headers["x-amz-request-id"]
    return root


def client_error(exc: pytest.ExceptionInfo[ClientError], code: str) -> None:
    assert exc.value.response["Error"]["Code"] == code, exc.value.response
    assert exc.value.response["ResponseMetadata"]["RequestId"]


def absent(s3: Any, key: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=BUCKET, Key=key)
    client_error(exc, "NoSuchKey")
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=key).get("Contents", [])
    assert [o["Key"] for o in listed if o["Key"] == key] == []


def stored(s3: Any, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


# --- XML bodies ----------------------------------------------------------------------------------


def test_malformed_xml_bodies(s3: Any, server: S3Server, http: httpx.Client) -> None:
    s3.put_object(Bucket=BUCKET, Key="xml/keep", Body=b"keep")
    bodies = [
        b"",
        b"<Delete><Object><Key>xml/keep</Key></Object>",  # unterminated
        b"not xml",
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
        b"<Delete><Object><Key>&b;</Key></Object></Delete>",
        b'<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><Delete><Object><Key>&x;</Key></Object></Delete>',
        b"<Delete><Object><Key>xml/keep</Key></Object></Nope>",
        b"<Delete></Delete>",  # no Object at all
    ]
    for body in bodies:
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        response = send(http, server, "POST", f"/{BUCKET}?delete", body=body, headers={"Content-MD5": md5})
        s3_error(response, "MalformedXML", 400)
    assert stored(s3, "xml/keep") == b"keep"
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="xml/mpu")["UploadId"]
    for body in bodies[:6]:
        response = send(http, server, "POST", f"/{BUCKET}/xml/mpu?uploadId={upload}", body=body)
        s3_error(response, "MalformedXML", 400)
    s3.list_parts(Bucket=BUCKET, Key="xml/mpu", UploadId=upload)  # the upload is untouched
    absent(s3, "xml/mpu")
    s3.abort_multipart_upload(Bucket=BUCKET, Key="xml/mpu", UploadId=upload)


def test_wrong_part_orders_complete_nothing(s3: Any) -> None:
    key = "mpu/order"
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    etags = [s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=n,
                            Body=bytes([n]) * 1000)["ETag"] for n in (1, 2, 3)]
    cases = {
        "InvalidPartOrder": [[(2, 1), (1, 0), (3, 2)], [(1, 0), (1, 0), (2, 1)], [(3, 2), (2, 1)]],
        "InvalidPart": [[(1, 0), (2, 1), (4, 2)], [(1, 1), (2, 1)]],  # missing part, wrong ETag
    }
    for code, orders in cases.items():
        for order in orders:
            parts = [{"PartNumber": n, "ETag": etags[i]} for n, i in order]
            with pytest.raises(ClientError) as exc:
                s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload,
                                             MultipartUpload={"Parts": parts})
            client_error(exc, code)
            absent(s3, key)
    assert len(s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload)["Parts"]) == 3
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2, 3), etags, strict=True)]})
    assert stored(s3, key) == b"\x01" * 1000 + b"\x02" * 1000 + b"\x03" * 1000


def test_delete_objects_over_1000_keys(s3: Any, server: S3Server, http: httpx.Client) -> None:
    s3.put_object(Bucket=BUCKET, Key="many/0", Body=b"0")
    objects = "".join(f"<Object><Key>many/{i}</Key></Object>" for i in range(1001))
    body = f"<Delete>{objects}</Delete>".encode()
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    response = send(http, server, "POST", f"/{BUCKET}?delete", body=body, headers={"Content-MD5": md5})
    s3_error(response, "MalformedXML", 400)
    assert stored(s3, "many/0") == b"0"
    with pytest.raises(ClientError) as exc:
        s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": f"many/{i}"} for i in range(1001)]})
    client_error(exc, "MalformedXML")
    assert stored(s3, "many/0") == b"0"


# --- digests -------------------------------------------------------------------------------------


def test_bad_content_md5_and_checksums_store_nothing(s3: Any) -> None:
    body = b"payload " * 1000
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=BUCKET, Key="digest/md5", Body=body, ContentMD5=wrong_md5)
    client_error(exc, "BadDigest")
    absent(s3, "digest/md5")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=BUCKET, Key="digest/md5", Body=body, ContentMD5="not-base64!")
    client_error(exc, "InvalidDigest")
    absent(s3, "digest/md5")
    wrong_crc = base64.b64encode(zlib.crc32(b"other").to_bytes(4, "big")).decode()
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=BUCKET, Key="digest/crc", Body=body, ChecksumCRC32=wrong_crc)
    client_error(exc, "BadDigest")
    absent(s3, "digest/crc")
    wrong_sha = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=BUCKET, Key="digest/sha", Body=body, ChecksumSHA256=wrong_sha)
    client_error(exc, "BadDigest")
    absent(s3, "digest/sha")
    # an overwrite that fails leaves the old object as it was
    s3.put_object(Bucket=BUCKET, Key="digest/keep", Body=b"old")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=BUCKET, Key="digest/keep", Body=body, ContentMD5=wrong_md5)
    client_error(exc, "BadDigest")
    assert stored(s3, "digest/keep") == b"old"


def test_malformed_checksum_headers_and_payload_hash(s3: Any, server: S3Server, http: httpx.Client) -> None:
    body = b"x" * 100
    for headers, code in (
        ({"x-amz-checksum-crc32": "AAAA"}, "InvalidRequest"),
        ({"x-amz-checksum-crc32": "AAAAAA==", "x-amz-checksum-sha1": "A" * 27 + "="}, "InvalidRequest"),
    ):
        response = send(http, server, "PUT", f"/{BUCKET}/digest/hdr", body=body, headers=headers)
        s3_error(response, code, 400)
    # the signed payload hash says another body: XAmzContentSHA256Mismatch
    response = send(http, server, "PUT", f"/{BUCKET}/digest/hdr", body=body,
                    payload_hash=hashlib.sha256(b"other").hexdigest())
    s3_error(response, "XAmzContentSHA256Mismatch", 400)
    absent(s3, "digest/hdr")


# --- aws-chunked bodies ----------------------------------------------------------------------------


def streaming_request(server: S3Server, path: str, chunks: list[bytes], *, corrupt: int | None = None,
                      decoded_length: int | None = None) -> tuple[dict[str, str], bytes]:
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD upload as minio-go (restic) sends it; `corrupt` spoils the
    signature of that chunk (0-based)."""
    total = sum(len(c) for c in chunks)
    headers = signed_headers(server.s3_url + path, "PUT", payload_hash="STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                             headers={"Content-Encoding": "aws-chunked",
                                      "x-amz-decoded-content-length": str(decoded_length or total)})
    amz_date = headers["X-Amz-Date"]
    seed = headers["Authorization"].rsplit("Signature=", 1)[1]
    identity = SigV4Identity(ACCESS_KEY, signing_key(SECRET_KEY, amz_date[:8], REGION),
                             f"{amz_date[:8]}/{REGION}/s3/aws4_request", amz_date, seed,
                             "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", False)
    out, previous = [], seed
    for i, chunk in enumerate([*chunks, b""]):
        previous = chunk_signature(identity, previous, hashlib.sha256(chunk).hexdigest())
        sent = previous if i != corrupt else ("0" if previous[0] != "0" else "1") + previous[1:]
        out.append(b"%x;chunk-signature=%s\r\n%s\r\n" % (len(chunk), sent.encode(), chunk))
    return headers, b"".join(out)


def test_signed_streaming_upload_stores_only_the_payload(
    s3: Any, server: S3Server, http: httpx.Client
) -> None:
    chunks = [b"a" * 65536, b"b" * 65536, b"c" * 100]
    headers, body = streaming_request(server, f"/{BUCKET}/chunked/good", chunks)
    response = http.put(f"/{BUCKET}/chunked/good", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert stored(s3, "chunked/good") == b"".join(chunks)


def test_bad_chunk_signature_mid_stream_stores_nothing(s3: Any, server: S3Server, http: httpx.Client) -> None:
    chunks = [b"a" * 65536, b"b" * 65536, b"c" * 65536]
    for corrupt in (1, 3):  # a middle chunk, the final empty chunk
        headers, body = streaming_request(server, f"/{BUCKET}/chunked/bad", chunks, corrupt=corrupt)
        response = http.put(f"/{BUCKET}/chunked/bad", content=body, headers=headers)
        s3_error(response, "SignatureDoesNotMatch", 403)
        absent(s3, "chunked/bad")
    # the data of a chunk changed under its valid signature
    headers, body = streaming_request(server, f"/{BUCKET}/chunked/bad", chunks)
    tampered = body.replace(b"b" * 100, b"B" * 100, 1)
    response = http.put(f"/{BUCKET}/chunked/bad", content=tampered, headers=headers)
    s3_error(response, "SignatureDoesNotMatch", 403)
    absent(s3, "chunked/bad")


def test_decoded_length_mismatch_stores_nothing(s3: Any, server: S3Server, http: httpx.Client) -> None:
    chunks = [b"a" * 1000]
    for declared, code in ((1001, "IncompleteBody"), (999, "InvalidRequest")):
        headers, body = streaming_request(server, f"/{BUCKET}/chunked/len", chunks, decoded_length=declared)
        response = http.put(f"/{BUCKET}/chunked/len", content=body, headers=headers)
        s3_error(response, code, 400)
        absent(s3, "chunked/len")


def test_unsigned_trailer_checksum_mismatch_stores_nothing(
    s3: Any, server: S3Server, http: httpx.Client
) -> None:
    payload = b"t" * 5000
    for crc, expect in ((zlib.crc32(b"other"), "BadDigest"), (zlib.crc32(payload), None)):
        trailer = base64.b64encode(crc.to_bytes(4, "big")).decode()
        body = b"%x\r\n%s\r\n0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % (len(payload), payload, trailer.encode())
        path = f"/{BUCKET}/chunked/trailer"
        headers = signed_headers(
            server.s3_url + path, "PUT", payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            headers={"Content-Encoding": "aws-chunked", "x-amz-trailer": "x-amz-checksum-crc32",
                     "x-amz-decoded-content-length": str(len(payload))})
        response = http.put(path, content=body, headers=headers)
        if expect:
            s3_error(response, expect, 400)
            absent(s3, "chunked/trailer")
        else:
            assert response.status_code == 200, response.text
            assert stored(s3, "chunked/trailer") == payload


def test_auth_failures_are_s3_errors(
    server: S3Server, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = f"/{BUCKET}/auth/x"
    headers = signed_headers(server.s3_url + path, "GET")
    bad = {**headers, "Authorization": headers["Authorization"][:-4] + "0000"}
    s3_error(http.get(path, headers=bad), "SignatureDoesNotMatch", 403)
    unknown = {**headers, "Authorization": headers["Authorization"].replace(ACCESS_KEY, "AKIDUNKNOWN0000000")}
    s3_error(http.get(path, headers=unknown), "InvalidAccessKeyId", 403)
    # a client whose clock is an hour behind
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: past)
    skewed = signed_headers(server.s3_url + path, "GET")
    monkeypatch.undo()
    assert skewed["X-Amz-Date"] == past.strftime("%Y%m%dT%H%M%SZ")
    s3_error(http.get(path, headers=skewed), "RequestTimeTooSkewed", 403)
