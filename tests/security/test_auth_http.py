"""One policy on a real `arkor allinone` (dev mode, anonymous loopback on): wrong or malformed
credentials are 401 with a JSON error in v1 and Git LFS alike, LFS rights hold in the reserved
git-lfs bucket, and force-unlocking another user's lock needs the admin right (issues 10, 11)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.object.cluster import start_allinone
from tests.procs import ArkorProcess

LFS = {"accept": "application/vnd.git-lfs+json", "content-type": "application/vnd.git-lfs+json"}
USERS = [
    {"name": "alice", "accessKey": "alice", "secretKey": "alice-secret", "read": ["*"], "write": ["*"]},
    {"name": "bob", "accessKey": "bob", "secretKey": "bob-secret", "read": ["*"], "write": ["*"]},
    {"name": "root", "accessKey": "root", "secretKey": "root-secret", "read": [], "write": ["*"],
     "admin": True},
    {"name": "bucketwide", "accessKey": "bw", "secretKey": "bw-secret", "read": ["git-lfs"], "write": []},
    {"name": "repo-reader", "accessKey": "rr", "secretKey": "rr-secret", "read": ["ns/repo"], "write": []},
]


def basic(access: str, secret: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{access}:{secret}".encode()).decode()}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArkorProcess]:
    proc = start_allinone(tmp_path_factory.mktemp("auth-http"), auth={"users": USERS})
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def client(server: ArkorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def test_wrong_and_malformed_credentials_are_401_in_v1_and_lfs(client: httpx.Client) -> None:
    assert client.put("/v1/open/k", content=b"x").status_code == 201  # dev loopback, no credentials
    raw = "Basic " + base64.b64encode(b"alice").decode()  # no ':'
    for headers in (
        basic("alice", "wrong"), basic("nobody", "alice-secret"), {"authorization": raw},
        {"authorization": "Bearer wrong"}, {"authorization": "Bearer s\u00e9cret".encode()},  # type: ignore[dict-item]
        {"authorization": "Basic " + base64.b64encode("alicé:sécret".encode()).decode()},
        {"authorization": "Basic " + base64.b64encode(b"alice:\xff").decode()},
    ):
        for method, url, extra in (
            ("GET", "/v1/open/k", {}),
            ("POST", "/ns/repo.git/info/lfs/objects/batch", LFS),
        ):
            body = b'{"operation": "download", "objects": []}' if method == "POST" else None
            response = client.request(method, url, headers={**headers, **extra}, content=body)
            assert response.status_code == 401, (headers, url, response.text)
            assert response.json()["message" if method == "POST" else "error"], response.text
            challenge = "lfs-authenticate" if method == "POST" else "www-authenticate"
            assert response.headers[challenge].startswith("Basic realm="), response.headers
    assert client.get("/v1/open/k", headers=basic("alice", "alice-secret")).content == b"x"


def _s3_get(server: ArkorProcess, access: str, secret: str, key: str) -> int:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{server.s3_port}", region_name="us-east-1",
                      aws_access_key_id=access, aws_secret_access_key=secret,
                      config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    try:
        s3.get_object(Bucket="git-lfs", Key=key)["Body"].read()
    except ClientError as exc:
        return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
    return 200


def test_lfs_rights_hold_in_the_git_lfs_bucket(server: ArkorProcess, client: httpx.Client) -> None:
    data = b"large file content"
    oid = hashlib.sha256(data).hexdigest()
    lfs_path = f"/ns/repo.git/info/lfs/objects/{oid}"
    stored = client.put(lfs_path, content=data, headers=basic("alice", "alice-secret"))
    assert stored.status_code == 200, stored.text
    key = f"/v1/git-lfs/ns/repo/{oid}"
    denied = client.get(key, headers=basic("bw", "bw-secret"))  # a right on "git-lfs" is no repo right
    assert denied.status_code == 403, denied.text
    assert client.get(key, headers=basic("rr", "rr-secret")).content == data
    assert client.get(lfs_path, headers=basic("rr", "rr-secret")).content == data
    # S3 reads of the bucket follow the same rule.
    assert _s3_get(server, "bw", "bw-secret", f"ns/repo/{oid}") == 403
    assert _s3_get(server, "rr", "rr-secret", f"ns/repo/{oid}") == 200
    # Listing spans every repository: admin only.
    assert client.get("/v1/git-lfs", headers=basic("rr", "rr-secret")).status_code == 403
    assert client.get("/v1/git-lfs", headers=basic("alice", "alice-secret")).status_code == 403
    listing = client.get("/v1/git-lfs", headers=basic("root", "root-secret"))
    assert listing.status_code == 200 and [o["key"] for o in listing.json()["objects"]] == [f"ns/repo/{oid}"]


def test_force_unlock_of_anothers_lock_needs_admin(client: httpx.Client) -> None:
    base = "/ns/locked.git/info/lfs/locks"
    created = client.post(base, json={"path": "a.bin"}, headers={**LFS, **basic("alice", "alice-secret")})
    assert created.status_code == 201, created.text
    lock_id = created.json()["lock"]["id"]
    unlock = f"{base}/{lock_id}/unlock"
    refused = client.post(unlock, json={"force": True}, headers={**LFS, **basic("bob", "bob-secret")})
    assert refused.status_code == 403 and "admin" in refused.json()["message"], refused.text
    assert client.get(base, headers=basic("bob", "bob-secret")).json()["locks"][0]["id"] == lock_id
    forced = client.post(unlock, json={"force": True}, headers={**LFS, **basic("root", "root-secret")})
    assert forced.status_code == 200, forced.text
    assert client.get(base, headers=basic("bob", "bob-secret")).json()["locks"] == []
    # Anyone may force-release their own lock.
    own = client.post(base, json={"path": "b.bin"}, headers={**LFS, **basic("bob", "bob-secret")}).json()
    released = client.post(f"{base}/{own['lock']['id']}/unlock", json={"force": True},
                           headers={**LFS, **basic("bob", "bob-secret")})
    assert released.status_code == 200, released.text


def test_nothing_is_signed_with_a_built_in_secret(server: ArkorProcess, tmp_path: Path) -> None:
    """allinone with no cluster.secret: the old public dev constant forges neither an LFS transfer
    token nor an internal request (issue 11 item 2)."""
    import hmac
    import time

    dev_secret = b"arkor-dev-cluster-secret"
    data = b"forged upload"
    oid = hashlib.sha256(data).hexdigest()
    path = f"/victim/repo.git/info/lfs/objects/{oid}"
    expires = int(time.time()) + 600
    for domain, message in (
        (b"arkor-git-lfs-transfer-v1", b"\n".join((b"PUT", path.encode(), str(expires).encode()))),
        (b"arkor-git-lfs-transfer-v2", b"\n".join((b"PUT", b"victim/repo", oid.encode(),
                                                   str(expires).encode()))),
    ):
        mac = hmac.new(dev_secret, domain + b"\n" + message, hashlib.sha256).hexdigest()
        response = httpx.put(server.url + path, content=data, timeout=30,
                             headers={"x-arkor-lfs-token": f"{expires}:{mac}", **basic("x", "y")})
        assert response.status_code == 401, response.text
    registry = f"http://127.0.0.1:{_registry_port(tmp_path, server)}"
    internal = "/internal/v1/leases"
    mac = hmac.new(dev_secret, f"POST\n{internal}\n{expires}".encode(), hashlib.sha256).hexdigest()
    forged = httpx.post(registry + internal, json={"count": 1}, timeout=30,
                        headers={"x-arkor-signature": f"{expires}:{mac}"})
    assert forged.status_code in (401, 403), forged.text


def _registry_port(tmp_path: Path, server: ArkorProcess) -> int:
    import yaml

    return int(yaml.safe_load(server.config_path.read_text())["allinone"]["registryPort"])
