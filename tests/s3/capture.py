"""Real boto3 clients whose requests are captured instead of sent: the signed requests (headers,
path, query, aws-chunked bodies) that the protocol unit tests verify."""

from __future__ import annotations

import io
from dataclasses import dataclass
from urllib.parse import urlsplit

import boto3
from botocore.awsrequest import AWSResponse
from botocore.config import Config

ACCESS_KEY = "AKIDARKORTEST"
SECRET_KEY = "arkor/secret+key/for/unit/tests"
REGION = "us-east-1"


@dataclass
class Captured:
    method: str
    raw_path: str
    raw_query: str
    headers: dict[str, str]  # lower-case names, as the server sees them
    body: bytes


class _EmptyBody(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        return 0

    def stream(self, **kw):  # type: ignore[no-untyped-def]
        return iter([b""])


def from_request(request) -> Captured:  # type: ignore[no-untyped-def]
    """A botocore AWSRequest (after signing) as the server receives it."""
    split = urlsplit(request.url)
    headers = {"host": split.netloc}
    for name, value in request.headers.items():
        headers[name.lower()] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    body = request.body
    if hasattr(body, "read"):
        body = body.read()
    if isinstance(body, str):
        body = body.encode()
    return Captured(request.method, split.path, split.query, headers, body or b"")


def client(endpoint: str = "https://127.0.0.1:8130", **config):  # type: ignore[no-untyped-def]
    """(boto3 S3 client with default settings, list that receives every request it would send)."""
    requests: list[Captured] = []

    def before_send(request, **kw):  # type: ignore[no-untyped-def]
        requests.append(from_request(request))
        return AWSResponse(request.url, 200, {"ETag": '"0"'}, _EmptyBody())

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", **config),
    )
    s3.meta.events.register("before-send", before_send)
    return s3, requests


def presigned(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> Captured:
    """A presigned URL as curl would send it."""
    split = urlsplit(url)
    return Captured(method, split.path, split.query, {"host": split.netloc, **(headers or {})}, b"")
