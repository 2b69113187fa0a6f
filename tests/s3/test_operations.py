"""Multipart, copies, batch deletes, conditional writes, checksums, ACL answers and bad input,
with boto3 (default settings) and raw HTTP against a real `arkor allinone`."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.s3.conftest import S3Server
from tests.s3.test_api import code_of, s3client

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def s3(s3server: S3Server) -> Any:
    client = s3client(s3server)
    client.create_bucket(Bucket="ops")
    return client


def exists(s3: Any, key: str, bucket: str = "ops") -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "404"
        return False


def test_multipart_upload_lifecycle(s3: Any) -> None:
    parts = [os.urandom(MIB + 1000), os.urandom(MIB + 2000), os.urandom(300)]
    upload = s3.create_multipart_upload(Bucket="ops", Key="mp/big", ContentType="text/csv",
                                        Metadata={"kind": "multi"})["UploadId"]
    etags = [s3.upload_part(Bucket="ops", Key="mp/big", UploadId=upload, PartNumber=i + 1,
                            Body=body)["ETag"] for i, body in enumerate(parts)]
    assert etags[0] == f'"{hashlib.md5(parts[0]).hexdigest()}"'
    listed = s3.list_parts(Bucket="ops", Key="mp/big", UploadId=upload)
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [
        (1, len(parts[0])), (2, len(parts[1])), (3, len(parts[2]))]
    uploads = s3.list_multipart_uploads(Bucket="ops")["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("mp/big", upload)]
    wrong_order = [{"PartNumber": 2, "ETag": etags[1]}, {"PartNumber": 1, "ETag": etags[0]}]
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket="ops", Key="mp/big", UploadId=upload,
                                     MultipartUpload={"Parts": wrong_order})
    assert code_of(exc) == "InvalidPartOrder"
    wrong_etag = [{"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}]
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket="ops", Key="mp/big", UploadId=upload,
                                     MultipartUpload={"Parts": wrong_etag})
    assert code_of(exc) == "InvalidPart"
    assert not exists(s3, "mp/big")
    done = s3.complete_multipart_upload(
        Bucket="ops", Key="mp/big", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert done["ETag"] == f'"{digest}-3"'
    got = s3.get_object(Bucket="ops", Key="mp/big")
    assert got["Body"].read() == b"".join(parts) and got["Metadata"] == {"kind": "multi"}
    assert got["ContentType"] == "text/csv"
    second = s3.get_object(Bucket="ops", Key="mp/big", PartNumber=2)
    assert second["Body"].read() == parts[1] and second["PartsCount"] == 3
    assert s3.list_multipart_uploads(Bucket="ops").get("Uploads", []) == []
    with pytest.raises(ClientError) as exc:
        s3.list_parts(Bucket="ops", Key="mp/big", UploadId=upload)
    assert code_of(exc) == "NoSuchUpload"


def test_abort_and_upload_part_copy_with_range(s3: Any) -> None:
    source = os.urandom(2 * MIB + 10)
    s3.put_object(Bucket="ops", Key="copy/src", Body=source)
    aborted = s3.create_multipart_upload(Bucket="ops", Key="copy/aborted")["UploadId"]
    s3.upload_part(Bucket="ops", Key="copy/aborted", UploadId=aborted, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket="ops", Key="copy/aborted", UploadId=aborted)
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket="ops", Key="copy/aborted", UploadId=aborted, PartNumber=2, Body=b"y")
    assert code_of(exc) == "NoSuchUpload"
    upload = s3.create_multipart_upload(Bucket="ops", Key="copy/joined")["UploadId"]
    first = s3.upload_part_copy(Bucket="ops", Key="copy/joined", UploadId=upload, PartNumber=1,
                                CopySource={"Bucket": "ops", "Key": "copy/src"},
                                CopySourceRange=f"bytes={MIB}-{2 * MIB - 1}")
    second = s3.upload_part_copy(Bucket="ops", Key="copy/joined", UploadId=upload, PartNumber=2,
                                 CopySource="ops/copy/src", CopySourceRange="bytes=0-99")
    with pytest.raises(ClientError) as exc:
        s3.upload_part_copy(Bucket="ops", Key="copy/joined", UploadId=upload, PartNumber=3,
                            CopySource="ops/copy/src", CopySourceRange=f"bytes=0-{3 * MIB}")
    assert code_of(exc) == "InvalidRange"
    s3.complete_multipart_upload(Bucket="ops", Key="copy/joined", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": first["CopyPartResult"]["ETag"]},
                  {"PartNumber": 2, "ETag": second["CopyPartResult"]["ETag"]}]})
    joined = s3.get_object(Bucket="ops", Key="copy/joined")["Body"].read()
    assert joined == source[MIB:2 * MIB] + source[:100]


def test_copy_object_directives_and_conditions(s3: Any) -> None:
    put = s3.put_object(Bucket="ops", Key="cp/a", Body=b"copy me", ContentType="text/plain",
                        Metadata={"m": "1"})
    s3.copy_object(Bucket="ops", Key="cp/b", CopySource="ops/cp/a")
    b = s3.get_object(Bucket="ops", Key="cp/b")
    assert b["Body"].read() == b"copy me" and b["Metadata"] == {"m": "1"}
    assert b["ContentType"] == "text/plain" and b["ETag"] == put["ETag"]
    s3.copy_object(Bucket="ops", Key="cp/c", CopySource="ops/cp/a", MetadataDirective="REPLACE",
                   Metadata={"n": "2"}, ContentType="application/json")
    c = s3.head_object(Bucket="ops", Key="cp/c")
    assert c["Metadata"] == {"n": "2"} and c["ContentType"] == "application/json"
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket="ops", Key="cp/d", CopySource="ops/cp/a", CopySourceIfMatch='"00"')
    assert code_of(exc) == "PreconditionFailed"
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket="ops", Key="cp/d", CopySource="ops/cp/a",
                       CopySourceIfNoneMatch=put["ETag"])
    assert code_of(exc) == "PreconditionFailed"
    assert not exists(s3, "cp/d")
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket="ops", Key="cp/a", CopySource="ops/cp/a")
    assert code_of(exc) == "InvalidRequest"
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket="ops", Key="cp/e", CopySource="ops/cp/missing")
    assert code_of(exc) == "NoSuchKey"


def test_delete_objects_batch_and_quiet(s3: Any, s3server: S3Server) -> None:
    keys = [f"del/{i}" for i in range(5)]
    for key in keys:
        s3.put_object(Bucket="ops", Key=key, Body=b"x")
    result = s3.delete_objects(Bucket="ops", Delete={
        "Objects": [{"Key": k} for k in keys[:3]] + [{"Key": "del/never-existed"}]})
    assert sorted(d["Key"] for d in result["Deleted"]) == sorted([*keys[:3], "del/never-existed"])
    quiet = s3.delete_objects(Bucket="ops", Delete={"Objects": [{"Key": k} for k in keys[3:]],
                                                    "Quiet": True})
    assert quiet.get("Deleted", []) == [] and quiet.get("Errors", []) == []
    assert not any(exists(s3, k) for k in keys)
    too_many = "".join(f"<Object><Key>k{i}</Key></Object>" for i in range(1001))
    response = httpx.post(f"{s3server.s3_url}/ops?delete",
                          content=f"<Delete>{too_many}</Delete>".encode())
    assert response.status_code == 400 and b"<Code>MalformedXML</Code>" in response.content
    response = httpx.post(f"{s3server.s3_url}/ops?delete", content=b"<Delete><Object><Key>")
    assert response.status_code == 400 and b"<Code>MalformedXML</Code>" in response.content
    bomb = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><Delete><Object><Key>&b;</Key></Object></Delete>')
    response = httpx.post(f"{s3server.s3_url}/ops?delete", content=bomb)
    assert response.status_code == 400 and b"<Code>MalformedXML</Code>" in response.content


def test_conditional_writes(s3: Any) -> None:
    first = s3.put_object(Bucket="ops", Key="lock", Body=b"state-1", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="ops", Key="lock", Body=b"state-2", IfNoneMatch="*")
    assert code_of(exc) == "PreconditionFailed"
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="ops", Key="lock", Body=b"state-2", IfMatch='"' + "1" * 32 + '"')
    assert code_of(exc) == "PreconditionFailed"
    s3.put_object(Bucket="ops", Key="lock", Body=b"state-2", IfMatch=first["ETag"])
    assert s3.get_object(Bucket="ops", Key="lock")["Body"].read() == b"state-2"
    upload = s3.create_multipart_upload(Bucket="ops", Key="lock")["UploadId"]
    etag = s3.upload_part(Bucket="ops", Key="lock", UploadId=upload, PartNumber=1,
                          Body=b"state-3")["ETag"]
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket="ops", Key="lock", UploadId=upload, IfNoneMatch="*",
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert code_of(exc) == "PreconditionFailed"
    assert s3.get_object(Bucket="ops", Key="lock")["Body"].read() == b"state-2"


def test_checksums_verified_stored_and_returned(s3: Any, s3server: S3Server) -> None:
    body = os.urandom(100_000)
    s3.put_object(Bucket="ops", Key="sum/ok", Body=body)  # boto3 default: CRC32
    crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    got = s3.get_object(Bucket="ops", Key="sum/ok", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32"] == crc and got["Body"].read() == body
    url = f"{s3server.s3_url}/ops/sum/bad"
    wrong_crc = base64.b64encode(b"\0\0\0\0").decode()
    response = httpx.put(url, content=body, headers={"x-amz-checksum-crc32": wrong_crc})
    assert response.status_code == 400 and b"<Code>BadDigest</Code>" in response.content
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    response = httpx.put(url, content=body, headers={"content-md5": wrong_md5})
    assert response.status_code == 400 and b"<Code>BadDigest</Code>" in response.content
    response = httpx.put(url, content=body, headers={"content-md5": "not base64!"})
    assert response.status_code == 400 and b"<Code>InvalidDigest</Code>" in response.content
    # aws-chunked with a wrong CRC32 trailer (as aws-cli frames its uploads)
    framed = (f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n"
              + f"x-amz-checksum-crc32:{wrong_crc}\r\n\r\n".encode())
    response = httpx.put(url, content=framed, headers={
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-trailer": "x-amz-checksum-crc32", "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(body))})
    assert response.status_code == 400 and b"<Code>BadDigest</Code>" in response.content
    assert not exists(s3, "sum/bad")
    good = framed.replace(wrong_crc.encode(), crc.encode())
    response = httpx.put(url, content=good, headers={
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-trailer": "x-amz-checksum-crc32", "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(body))})
    assert response.status_code == 200, response.text
    assert s3.get_object(Bucket="ops", Key="sum/bad")["Body"].read() == body  # no framing stored


def test_acl_answers(s3: Any) -> None:
    s3.put_object(Bucket="ops", Key="acl", Body=b"x", ACL="private")
    acl = s3.get_object_acl(Bucket="ops", Key="acl")
    assert [g["Permission"] for g in acl["Grants"]] == ["FULL_CONTROL"]
    assert s3.get_bucket_acl(Bucket="ops")["Grants"][0]["Permission"] == "FULL_CONTROL"
    s3.put_object_acl(Bucket="ops", Key="acl", ACL="private")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="ops", Key="public", Body=b"x", ACL="public-read")
    assert code_of(exc) == "NotImplemented"
    assert not exists(s3, "public")
    assert s3.get_bucket_versioning(Bucket="ops").get("Status") is None


def test_completing_into_a_deleted_bucket_is_no_such_bucket(s3: Any) -> None:
    s3.create_bucket(Bucket="gone")
    upload = s3.create_multipart_upload(Bucket="gone", Key="k")["UploadId"]
    etag = s3.upload_part(Bucket="gone", Key="k", UploadId=upload, PartNumber=1, Body=b"x")["ETag"]
    s3.delete_bucket(Bucket="gone")  # pending uploads do not keep a bucket
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket="gone", Key="k", UploadId=upload,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert code_of(exc) == "NoSuchBucket"
    assert "gone" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
