"""The S3 API with boto3 against a real `arkor allinone`: buckets, objects, listings, errors, and
the same objects seen through the v1 API."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import boto3
import httpx
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.s3.conftest import ACCESS_KEY, REGION, SECRET_KEY, VHOST_DOMAIN, S3Server


def s3client(server: S3Server, *, anonymous: bool = False, **config: Any) -> Any:
    """boto3 with the current release's defaults (CRC32 checksums, aws-chunked trailers)."""
    config.setdefault("retries", {"max_attempts": 1})
    if anonymous:
        config["signature_version"] = UNSIGNED
    return boto3.client(
        "s3", endpoint_url=server.s3_url, region_name=REGION,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, **config),
    )


@pytest.fixture(scope="module")
def s3(s3server: S3Server) -> Any:
    return s3client(s3server)


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def test_bucket_lifecycle(s3: Any) -> None:
    s3.create_bucket(Bucket="life")
    assert "life" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket="life")  # an empty bucket exists
    assert s3.get_bucket_location(Bucket="life")["LocationConstraint"] is None  # us-east-1
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket="life")
    assert code_of(exc) == "BucketAlreadyOwnedByYou"
    s3.put_object(Bucket="life", Key="k", Body=b"x")
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket="life")
    assert code_of(exc) == "BucketNotEmpty"
    s3.delete_object(Bucket="life", Key="k")
    s3.delete_bucket(Bucket="life")
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket="life")
    assert exc.value.response["Error"]["Code"] == "404"
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket="Bad_Name")
    assert code_of(exc) == "InvalidBucketName"


def test_put_to_missing_bucket_is_no_such_bucket(s3: Any, s3server: S3Server) -> None:
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="never-created", Key="k", Body=b"data")
    assert code_of(exc) == "NoSuchBucket"
    error = exc.value.response
    assert error["ResponseMetadata"]["RequestId"] == error["ResponseMetadata"]["HTTPHeaders"][
        "x-amz-request-id"]
    with pytest.raises(ClientError) as exc:  # a large body is refused before it is read
        s3.put_object(Bucket="never-created", Key="big", Body=os.urandom(3 * 1024 * 1024))
    assert code_of(exc) == "NoSuchBucket"
    # nothing was stored, and the bucket was not created on the side
    assert "never-created" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_put_get_head_delete(s3: Any) -> None:
    s3.create_bucket(Bucket="objs")
    body = os.urandom(3 * 1024 * 1024 + 17)  # several 1 MiB fragments
    put = s3.put_object(Bucket="objs", Key="dir/file.bin", Body=body, ContentType="image/png",
                        Metadata={"color": "red"}, CacheControl="max-age=60")
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = s3.get_object(Bucket="objs", Key="dir/file.bin")
    assert got["Body"].read() == body
    assert got["ContentType"] == "image/png" and got["Metadata"] == {"color": "red"}
    assert got["CacheControl"] == "max-age=60"
    head = s3.head_object(Bucket="objs", Key="dir/file.bin")
    assert head["ContentLength"] == len(body) and head["ETag"] == put["ETag"]
    part = s3.get_object(Bucket="objs", Key="dir/file.bin", Range="bytes=1048570-1048589")
    assert part["Body"].read() == body[1048570:1048590]
    assert part["ContentRange"] == f"bytes 1048570-1048589/{len(body)}"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket="objs", Key="dir/file.bin", IfNoneMatch=put["ETag"])
    assert exc.value.response["Error"]["Code"] == "304"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket="objs", Key="dir/file.bin", IfMatch='"0000"')
    assert code_of(exc) == "PreconditionFailed"
    over = s3.get_object(Bucket="objs", Key="dir/file.bin", ResponseContentType="text/plain",
                         ResponseContentDisposition="attachment")
    assert over["ContentType"] == "text/plain" and over["ContentDisposition"] == "attachment"
    with pytest.raises(ClientError) as exc:  # not representable in a header: 400, not 500
        s3.get_object(Bucket="objs", Key="dir/file.bin", ResponseContentDisposition="naïve\u2603")
    assert code_of(exc) == "InvalidArgument"
    s3.delete_object(Bucket="objs", Key="dir/file.bin")
    s3.delete_object(Bucket="objs", Key="dir/file.bin")  # deleting an absent key succeeds
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket="objs", Key="dir/file.bin")
    assert code_of(exc) == "NoSuchKey"
    empty = s3.put_object(Bucket="objs", Key="empty", Body=b"")
    assert empty["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    assert s3.get_object(Bucket="objs", Key="empty")["Body"].read() == b""


def test_list_objects_v2_paging_and_delimiter(s3: Any) -> None:
    s3.create_bucket(Bucket="listing")
    keys = [f"a/{i:02d}" for i in range(7)] + ["b/x", "b/y", "top", "sp ace+plus"]
    for key in keys:
        s3.put_object(Bucket="listing", Key=key, Body=key.encode())
    seen: list[str] = []
    token: dict[str, str] = {}
    pages = 0
    while True:
        page = s3.list_objects_v2(Bucket="listing", MaxKeys=3, **token)
        pages += 1
        seen += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = {"ContinuationToken": page["NextContinuationToken"]}
    assert seen == sorted(keys) and pages == 4
    top = s3.list_objects_v2(Bucket="listing", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "b/"]
    assert [o["Key"] for o in top["Contents"]] == ["sp ace+plus", "top"]
    after = s3.list_objects_v2(Bucket="listing", Prefix="a/", StartAfter="a/04")
    assert [o["Key"] for o in after["Contents"]] == ["a/05", "a/06"]
    v1 = s3.list_objects(Bucket="listing", Prefix="b/", MaxKeys=1)
    assert [o["Key"] for o in v1["Contents"]] == ["b/x"] and v1["IsTruncated"]
    v1 = s3.list_objects(Bucket="listing", Prefix="b/", Marker="b/x")
    assert [o["Key"] for o in v1["Contents"]] == ["b/y"] and not v1["IsTruncated"]
    versions = s3.list_object_versions(Bucket="listing", Prefix="b/")
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in versions["Versions"]] == [
        ("b/x", "null", True), ("b/y", "null", True)]
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket="no-such-listing")
    assert code_of(exc) == "NoSuchBucket"


def test_s3_and_v1_see_the_same_objects(s3: Any, s3server: S3Server) -> None:
    s3.create_bucket(Bucket="shared")
    s3.put_object(Bucket="shared", Key="from-s3.txt", Body=b"written by S3",
                  Metadata={"origin": "s3"})
    with httpx.Client(base_url=s3server.v1_url, timeout=30) as v1:
        got = v1.get("/v1/shared/from-s3.txt")
        assert got.status_code == 200 and got.content == b"written by S3"
        assert got.headers["x-arkor-meta-origin"] == "s3"
        put = v1.put("/v1/shared/from-v1.txt", content=b"written by v1",
                     headers={"x-arkor-meta-origin": "v1"})
        assert put.status_code == 201
    obj = s3.get_object(Bucket="shared", Key="from-v1.txt")
    assert obj["Body"].read() == b"written by v1" and obj["Metadata"] == {"origin": "v1"}


def test_unsupported_operations_answer_not_implemented(s3: Any, s3server: S3Server) -> None:
    s3.create_bucket(Bucket="unsup")
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_policy(Bucket="unsup")
    assert code_of(exc) == "NotImplemented"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    response = httpx.put(f"{s3server.s3_url}/unsup/k?tagging", content=b"<Tagging/>")
    assert response.status_code == 501 and b"<Code>NotImplemented</Code>" in response.content
    request_id = response.headers["x-amz-request-id"]
    assert f"<RequestId>{request_id}</RequestId>".encode() in response.content


def test_git_lfs_bucket_is_read_only(s3: Any) -> None:
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="git-lfs", Key="x", Body=b"x")
    assert code_of(exc) == "AccessDenied"


def test_anonymous_loopback_in_dev_mode(s3server: S3Server) -> None:
    anon = s3client(s3server, anonymous=True, request_checksum_calculation="when_required")
    anon.create_bucket(Bucket="anon")
    anon.put_object(Bucket="anon", Key="k", Body=b"unsigned")
    assert anon.get_object(Bucket="anon", Key="k")["Body"].read() == b"unsigned"


def test_virtual_hosted_style(s3: Any, s3server: S3Server) -> None:
    s3.create_bucket(Bucket="vhost")
    port = s3server.s3_url.rsplit(":", 1)[1]
    host = {"host": f"vhost.{VHOST_DOMAIN}:{port}"}
    put = httpx.put(f"{s3server.s3_url}/dir/key.txt", content=b"virtual", headers=host)
    assert put.status_code == 200, put.text
    assert s3.get_object(Bucket="vhost", Key="dir/key.txt")["Body"].read() == b"virtual"
    listing = httpx.get(f"{s3server.s3_url}/?list-type=2", headers=host)
    assert b"<Key>dir/key.txt</Key>" in listing.content
    signed = boto3.client("s3", endpoint_url=f"http://{VHOST_DOMAIN}:{port}", region_name=REGION,
                          aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                          config=Config(s3={"addressing_style": "virtual"}, proxies={}))
    signed.meta.events.register("before-send", _to_loopback)
    assert signed.get_object(Bucket="vhost", Key="dir/key.txt")["Body"].read() == b"virtual"


def _to_loopback(request: Any, **_: Any) -> None:
    """Send a virtual-hosted request to 127.0.0.1, keeping its (signed) Host header."""
    from urllib.parse import urlsplit, urlunsplit

    split = urlsplit(request.url)
    request.headers["host"] = split.netloc
    request.url = urlunsplit(split._replace(netloc=f"127.0.0.1:{split.port}"))


def test_s3_requests_are_counted_on_the_object_servers_metrics(s3: Any, s3server: S3Server) -> None:
    s3.list_buckets()
    metrics = httpx.get(f"{s3server.v1_url}/metrics").text
    assert 'arkor_http_requests_total{method="GET",role="s3",status="200"}' in metrics
    assert httpx.get(f"{s3server.s3_url}/metrics").headers["content-type"] == "application/xml"
