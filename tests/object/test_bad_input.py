"""Bad input to every role of a real `arkor allinone` (issue 11 items 7 and 8): each is a 4xx with
the JSON error body, never a 500, and nothing is stored by it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from arkor.checksum import crc32c
from arkor.fileid import FileID
from arkor.security import ClusterAuth
from tests.object.cluster import start_allinone
from tests.procs import ArkorProcess

SECRET = "bad-input-test-cluster-secret"
LFS = "/team/repo.git/info/lfs"
LFS_JSON = {"content-type": "application/vnd.git-lfs+json", "accept": "application/vnd.git-lfs+json"}
DEEP = b"[" * 100_000 + b"]" * 100_000


class Roles:
    def __init__(self, proc: ArkorProcess) -> None:
        self.proc = proc
        cfg = yaml.safe_load(Path(proc.config_path).read_text())["allinone"]
        self.object = proc.url
        self.registry = f"http://127.0.0.1:{cfg['registryPort']}"
        self.data = f"http://127.0.0.1:{cfg['dataPorts'][0]}"


@pytest.fixture(scope="module")
def roles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Roles]:
    proc = start_allinone(tmp_path_factory.mktemp("bad-input"), cluster={"secret": SECRET})
    try:
        yield Roles(proc)
    finally:
        proc.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


AUTH = ClusterAuth(SECRET.encode())  # signs path, query and body digest as sent


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].split(";")[0].endswith("json"), response.headers
    body = response.json()
    error = body["error"] if isinstance(body.get("error"), dict) else {"code": None}
    if code is not None:
        assert error["code"] == code, body


def test_non_ascii_digits_in_numeric_headers_and_queries(roles: Roles, http: httpx.Client) -> None:
    path = f"/needles/{FileID(1, 0xABC, 0x1234)}"
    for bad in ("²", "٣", "9" * 5000):
        headers = {"x-arkor-size": bad.encode(), "x-arkor-crc32c": "0", "transfer-encoding": "chunked"}
        response = http.put(roles.data + path, headers=headers, content=iter([b"abc"]), auth=AUTH)
        assert_error(response, 400, "invalid_header")
        # v1 listing, registry listing and LFS lock listing limits
        assert_error(http.get(roles.object + "/v1/b", params={"limit": bad}), 400, "invalid_argument")
        rpath = "/internal/v1/buckets/b"
        assert_error(http.get(roles.registry + rpath, params={"limit": bad}, auth=AUTH),
                     400, "invalid_argument")
        assert_error(http.get(roles.object + LFS + "/locks", params={"limit": bad}, headers=LFS_JSON),
                     400, "invalid_limit")
        response = http.put(roles.object + "/v1/b/mp", params={"uploadId": "x", "partNumber": bad},
                            content=b"x")
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_part"
    assert http.head(roles.data + path).status_code == 404  # nothing was stored


def test_range_of_5000_digits(roles: Roles, http: httpx.Client) -> None:
    assert http.put(roles.object + "/v1/rng/o", content=b"0123456789").status_code == 201
    huge = "9" * 5000
    whole = http.get(roles.object + "/v1/rng/o", headers={"range": f"bytes=2-{huge}"})
    assert whole.status_code == 206 and whole.content == b"23456789"
    assert whole.headers["content-range"] == "bytes 2-9/10"
    beyond = http.get(roles.object + "/v1/rng/o", headers={"range": f"bytes={huge}-"})
    assert_error(beyond, 416, "invalid_range")
    assert beyond.headers["content-range"] == "bytes */10"
    tail = http.get(roles.object + "/v1/rng/o", headers={"range": f"bytes=-{huge}"})
    assert tail.status_code == 206 and tail.content == b"0123456789"


def test_malformed_range_is_ignored_by_every_role(roles: Roles, http: httpx.Client) -> None:
    """RFC 9110 (settled in API.md): a syntactically invalid Range is ignored (200, whole body)."""
    body = b"abcdefghij"
    assert http.put(roles.object + "/v1/rng/m", content=body).status_code == 201
    path = f"/needles/{FileID(1, 0xBEEF, 0x77)}"
    put = http.put(roles.data + path, content=body, headers={"x-arkor-crc32c": str(crc32c(body))},
                   auth=AUTH)
    assert put.status_code == 201, put.text
    for url in (roles.object + "/v1/rng/m", roles.data + path):
        for header in ("bytes=5-2", "bytes=x-y", "items=0-1", "bytes=²-3", "bytes=0-1,3-4"):
            response = http.get(url, headers={"range": header.encode()})
            assert response.status_code == 200 and response.content == body, (url, header)
        response = http.get(url, headers={"range": "bytes=10-"})
        assert_error(response, 416, "invalid_range")
        assert response.headers["content-range"] == "bytes */10"
        response = http.get(url, headers={"range": "bytes=8-20"})
        assert response.status_code == 206 and response.content == b"ij"
        assert response.headers["content-range"] == "bytes 8-9/10"


def test_deeply_nested_json(roles: Roles, http: httpx.Client) -> None:
    upload = http.post(roles.object + "/v1/b/nested?uploads").json()["upload_id"]
    response = http.post(roles.object + "/v1/b/nested", params={"uploadId": upload}, content=DEEP)
    assert_error(response, 400, "malformed_json")
    assert_error(http.post(roles.object + LFS + "/objects/batch", headers=LFS_JSON, content=DEEP),
                 400, "malformed_json")
    for path in ("/internal/v1/heartbeat", "/internal/v1/locks", "/internal/v1/uploads"):
        response = http.post(roles.registry + path, content=DEEP, auth=AUTH)
        assert_error(response, 400, "malformed_json")
    assert http.head(roles.object + "/v1/b/nested").status_code == 404


def test_invalid_utf8_object_names_are_refused(roles: Roles, http: httpx.Client) -> None:
    """%FF and %FE used to be stored under the same name (U+FFFD) and alias each other."""
    for name in ("%FF", "a/%FE", "%C3%28", "%ED%A0%80x"):  # lone byte, bad continuation, surrogate
        response = http.put(roles.object + f"/v1/utf/{name}", content=b"x")
        assert_error(response, 400, "invalid_object_name")
        assert_error(http.get(roles.object + f"/v1/utf/{name}"), 400, "invalid_object_name")
    copy = http.put(roles.object + "/v1/utf/dst", headers={"x-arkor-copy-source": "/utf/%FF"})
    assert_error(copy, 400, "invalid_object_name")
    # A real U+FFFD (sent as its UTF-8 bytes) is a valid name of its own.
    assert http.put(roles.object + "/v1/utf/%EF%BF%BD", content=b"ok").status_code == 201
    listing = http.get(roles.object + "/v1/utf").json()
    assert [o["key"] for o in listing["objects"]] == ["\ufffd"]


def test_encoded_slash_in_a_bucket_name_is_refused(roles: Roles, http: httpx.Client) -> None:
    """`/v1/a%2Fb/k` used to be stored as bucket `a`, key `b/k` (the decoded path was split)."""
    assert_error(http.put(roles.object + "/v1/sl%2Fash/k", content=b"x"), 400, "invalid_bucket_name")
    assert_error(http.get(roles.object + "/v1/sl%2Fash/k"), 400, "invalid_bucket_name")
    assert http.get(roles.object + "/v1/sl").status_code == 404  # nothing stored under bucket "sl"
    # In a key, %2F is a slash like any other (keys may contain '/').
    assert http.put(roles.object + "/v1/sl/a%2Fb", content=b"x").status_code == 201
    assert http.get(roles.object + "/v1/sl/a/b").content == b"x"


def test_registry_numbers_out_of_range_are_400(roles: Roles, http: httpx.Client) -> None:
    """A JSON number that overflows an int (1e999 is a float infinity) is a 400, not a 500."""
    for path, body in (("/internal/v1/leases", b'{"count": 1e999}'),
                       ("/internal/v1/heartbeat", b'{"server_id": "x", "url": "http://h", "group": 1e999}')):
        response = http.post(roles.registry + path, content=body, auth=AUTH)
        assert_error(response, 400, "invalid_request")
