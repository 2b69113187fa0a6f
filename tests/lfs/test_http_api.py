"""The LFS HTTP API on a real `arkor allinone`, request by request (what the client relies on)."""

from __future__ import annotations

import base64
import hashlib
import os

import httpx
import pytest

from tests.lfs.gitlfs import USERS
from tests.procs import ArkorProcess

LFS = "application/vnd.git-lfs+json"
HEADERS = {"Accept": LFS, "Content-Type": f"{LFS}; charset=utf-8"}


def _oid(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _base(server: ArkorProcess, repo: str) -> str:
    return f"{server.url}/{repo}.git/info/lfs"


def _batch(client: httpx.Client, base: str, operation: str, objects: list[dict],
           headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"operation": operation, "transfers": ["basic"], "objects": objects}
    return client.post(f"{base}/objects/batch", json=body, headers=headers or HEADERS)


def _is_lfs(response: httpx.Response) -> bool:
    return response.headers["content-type"].startswith(LFS)


def _upload(client: httpx.Client, base: str, data: bytes) -> dict:
    """Batch + basic upload + verify, as the client does it; returns the batch object."""
    oid = _oid(data)
    response = _batch(client, base, "upload", [{"oid": oid, "size": len(data)}])
    assert response.status_code == 200 and _is_lfs(response), response.text
    (obj,) = response.json()["objects"]
    actions = obj.get("actions") or {}
    if "upload" in actions:
        up = actions["upload"]
        put = client.put(up["href"], content=data, headers=up.get("header", {}))
        assert put.status_code == 200, put.text
        verify = actions["verify"]
        checked = client.post(verify["href"], json={"oid": oid, "size": len(data)},
                              headers={**HEADERS, **verify.get("header", {})})
        assert checked.status_code == 200, checked.text
    return obj


@pytest.fixture
def client() -> httpx.Client:
    with httpx.Client(timeout=60) as http:
        yield http


def test_batch_upload_download_and_already_stored(dev_server: ArkorProcess, client: httpx.Client) -> None:
    base = _base(dev_server, "api/one")
    data = os.urandom(300_000)
    oid = _oid(data)
    first = _upload(client, base, data)
    assert "upload" in first["actions"] and first["authenticated"] is True
    # Stored: an upload batch for it carries no actions at all.
    second = _batch(client, base, "upload", [{"oid": oid, "size": len(data)}]).json()
    assert second["transfer"] == "basic" and "actions" not in second["objects"][0]
    # Download action points back at this server, with its own token.
    response = _batch(client, base, "download", [{"oid": oid, "size": len(data)}])
    assert response.status_code == 200 and _is_lfs(response)
    download = response.json()["objects"][0]["actions"]["download"]
    assert download["href"] == f"{base}/objects/{oid}"
    got = client.get(download["href"], headers=download["header"])
    assert got.status_code == 200 and got.content == data
    # Range -> 206 with Content-Range.
    part = client.get(download["href"], headers={**download["header"], "Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == data[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    tail = client.get(download["href"], headers={"Range": "bytes=-10"})  # anonymous loopback
    assert tail.status_code == 206 and tail.content == data[-10:]
    beyond = client.get(download["href"], headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"
    # The `<remote>/info/lfs` form (without .git) is the same repository.
    plain = _batch(client, f"{dev_server.url}/api/one/info/lfs", "download",
                   [{"oid": oid, "size": len(data)}])
    assert "download" in plain.json()["objects"][0]["actions"]


def test_missing_objects_and_repository_isolation(dev_server: ArkorProcess, client: httpx.Client) -> None:
    data = os.urandom(5000)
    _upload(client, _base(dev_server, "api/a"), data)
    # The same oid in another repository is not there: per-object 404 inside a 200.
    response = _batch(client, _base(dev_server, "api/b"), "download",
                      [{"oid": _oid(data), "size": len(data)}, {"oid": "0" * 64, "size": 1}])
    assert response.status_code == 200 and _is_lfs(response)
    for obj in response.json()["objects"]:
        assert obj["error"]["code"] == 404 and "actions" not in obj
    direct = client.get(f"{_base(dev_server, 'api/b')}/objects/{_oid(data)}")
    assert direct.status_code == 404 and _is_lfs(direct) and "message" in direct.json()


def test_corrupted_or_short_upload_is_refused_and_nothing_stored(
    dev_server: ArkorProcess, client: httpx.Client
) -> None:
    base = _base(dev_server, "api/corrupt")
    good = os.urandom(100_000)
    oid = _oid(good)
    bad = bytearray(good)
    bad[50_000] ^= 0xFF
    put = client.put(f"{base}/objects/{oid}", content=bytes(bad))
    assert put.status_code == 422 and _is_lfs(put), put.text
    assert put.json()["error"]["code"] == "checksum_mismatch" and put.json()["message"]
    short = client.put(f"{base}/objects/{oid}", content=good[:-1])
    assert short.status_code == 422, short.text
    response = _batch(client, base, "download", [{"oid": oid, "size": len(good)}])
    assert response.json()["objects"][0]["error"]["code"] == 404
    verify = client.post(f"{base}/verify", json={"oid": oid, "size": len(good)}, headers=HEADERS)
    assert verify.status_code == 404 and _is_lfs(verify)
    # The right bytes are then accepted.
    assert client.put(f"{base}/objects/{oid}", content=good).status_code == 200
    wrong_size = client.post(f"{base}/verify", json={"oid": oid, "size": 1}, headers=HEADERS)
    assert wrong_size.status_code == 422


def test_batch_validation_errors(dev_server: ArkorProcess, client: httpx.Client) -> None:
    base = _base(dev_server, "api/validation")
    too_many = [{"oid": f"{i:064x}", "size": 1} for i in range(1001)]
    for objects, status in (
        (too_many, 413),
        ([{"oid": "xyz", "size": 1}], 422),
        ([{"oid": "0" * 64, "size": -5}], 422),
    ):
        response = _batch(client, base, "upload", objects)
        assert response.status_code == status and _is_lfs(response), response.text
        assert response.json()["message"] and response.json()["request_id"]
    bad_op = client.post(f"{base}/objects/batch", json={"operation": "x", "objects": []}, headers=HEADERS)
    assert bad_op.status_code == 422 and _is_lfs(bad_op)
    not_json = client.post(f"{base}/objects/batch", content=b"{", headers=HEADERS)
    assert not_json.status_code == 400 and _is_lfs(not_json)
    # Unsupported endpoints: 404 / 405, never 401.
    assert client.get(f"{base}/objects/batch").status_code == 405
    assert client.get(f"{base}/nothing/here").status_code == 404


def test_lock_api(dev_server: ArkorProcess, client: httpx.Client) -> None:
    base = _base(dev_server, "api/locks")
    empty = client.get(f"{base}/locks", headers=HEADERS)
    assert empty.status_code == 200 and _is_lfs(empty) and empty.json()["locks"] == []
    created = client.post(f"{base}/locks", json={"path": "a.bin"}, headers=HEADERS)
    assert created.status_code == 201 and _is_lfs(created), created.text
    lock = created.json()["lock"]
    assert lock["path"] == "a.bin" and lock["owner"]["name"] == "anonymous" and lock["locked_at"]
    clash = client.post(f"{base}/locks", json={"path": "a.bin"}, headers=HEADERS)
    assert clash.status_code == 409 and clash.json()["lock"]["id"] == lock["id"]
    ids = [lock["id"]]
    for i in range(4):
        made = client.post(f"{base}/locks", json={"path": f"dir/{i}.bin", "ref": {"name": "refs/heads/main"}},
                           headers=HEADERS)
        ids.append(made.json()["lock"]["id"])
    # Paging with limit + cursor returns every lock once.
    seen, cursor = [], ""
    while True:
        page = client.get(f"{base}/locks", params={"limit": 2, "cursor": cursor}, headers=HEADERS).json()
        assert len(page["locks"]) <= 2
        seen += [lk["id"] for lk in page["locks"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert sorted(seen) == sorted(ids)
    by_path = client.get(f"{base}/locks", params={"path": "dir/2.bin"}, headers=HEADERS).json()["locks"]
    assert [lk["id"] for lk in by_path] == [ids[3]]
    by_id = client.get(f"{base}/locks", params={"id": ids[0]}, headers=HEADERS).json()["locks"]
    assert [lk["path"] for lk in by_id] == ["a.bin"]
    verify = client.post(f"{base}/locks/verify", json={}, headers=HEADERS).json()
    assert sorted(lk["id"] for lk in verify["ours"]) == sorted(ids) and verify["theirs"] == []
    unknown = client.post(f"{base}/locks/does-not-exist/unlock", json={}, headers=HEADERS)
    assert unknown.status_code == 404 and _is_lfs(unknown)
    gone = client.post(f"{base}/locks/{ids[0]}/unlock", json={}, headers=HEADERS)
    assert gone.status_code == 200 and gone.json()["lock"]["id"] == ids[0]
    # Locks are per repository.
    assert client.get(f"{_base(dev_server, 'api/other')}/locks", headers=HEADERS).json()["locks"] == []


def _basic(name: str, secret: str | None = None) -> dict[str, str]:
    user = next(u for u in USERS if u["name"] == name)
    token = base64.b64encode(f"{user['accessKey']}:{secret or user['secretKey']}".encode()).decode()
    return {**HEADERS, "Authorization": f"Basic {token}"}


def test_prod_authentication(prod_server: ArkorProcess, client: httpx.Client) -> None:
    base = _base(prod_server, "team/authz")
    obj = [{"oid": "1" * 64, "size": 1}]
    for headers in (HEADERS, _basic("alice", "wrong-secret")):
        denied = _batch(client, base, "download", obj, headers=headers)
        assert denied.status_code == 401 and _is_lfs(denied)
        assert denied.headers["lfs-authenticate"].startswith("Basic realm=")
    # Unsupported endpoint without credentials: 404, not 401 (the client would drop its creds).
    missing = client.get(f"{base}/not-an-endpoint")
    assert missing.status_code == 404 and "lfs-authenticate" not in missing.headers
    # Read-only carol: download yes, upload / lock no (403).
    assert _batch(client, base, "download", obj, headers=_basic("carol")).status_code == 200
    assert _batch(client, base, "upload", obj, headers=_basic("carol")).status_code == 403
    lock = client.post(f"{base}/locks", json={"path": "x"}, headers=_basic("carol"))
    assert lock.status_code == 403 and _is_lfs(lock)
    # Alice and Bob own their locks; Bob cannot unlock Alice's without force.
    created = client.post(f"{base}/locks", json={"path": "x"}, headers=_basic("alice")).json()["lock"]
    assert created["owner"]["name"] == "alice"
    verify = client.post(f"{base}/locks/verify", json={}, headers=_basic("bob")).json()
    assert verify["ours"] == [] and [lk["id"] for lk in verify["theirs"]] == [created["id"]]
    unlock = f"{base}/locks/{created['id']}/unlock"
    assert client.post(unlock, json={}, headers=_basic("bob")).status_code == 403
    forced = client.post(unlock, json={"force": True}, headers=_basic("bob"))
    assert forced.status_code == 403 and forced.json()["error"]["code"] == "admin_required"
    assert client.post(unlock, json={"force": True}, headers=_basic("dave")).status_code == 200
    # Transfer URLs need the batch's token or credentials.
    data = b"secret bytes"
    up = _batch(client, base, "upload", [{"oid": _oid(data), "size": len(data)}], headers=_basic("alice"))
    href = up.json()["objects"][0]["actions"]["upload"]["href"]
    assert client.put(href, content=data).status_code == 401
    token = up.json()["objects"][0]["actions"]["upload"]["header"]
    assert client.put(href, content=data, headers=token).status_code == 200
    assert client.get(href, headers=token).status_code == 401  # an upload token does not read
    assert client.get(href, headers=_basic("carol")).content == data
