"""The data server's internal HTTP API against a real `arkor data` process: happy paths, and bad
input that must get a clear 4xx JSON error and store nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
import trio.lowlevel

from arkor.checksum import crc32c
from arkor.errors import ChecksumMismatch, Conflict, NotFound
from arkor.fileid import FileID
from arkor.transfer.data_client import HttpReplica
from tests.data.conftest import AUTH, SECRET, delete, payload, put, put_headers, start_data
from tests.procs import ArkorProcess


def error_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()["error"]["code"]


@pytest.fixture
def client(data_server: ArkorProcess) -> httpx.Client:
    with httpx.Client(base_url=data_server.url, timeout=30) as c:
        yield c


def test_put_get_head_range_delete(client: httpx.Client) -> None:
    fid = FileID(1, 0x1234, 0xC0FFEE01)
    data = payload(0x1234, 100_000)
    r = put(client, fid, data)
    assert r.status_code == 201, r.text
    assert r.json()["created"] is True

    r = client.get(f"/needles/{fid}")
    assert r.status_code == 200 and r.content == data
    assert int(r.headers["x-arkor-crc32c"]) == crc32c(data)

    r = client.get(f"/needles/{fid}", headers={"range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(data)}"
    r = client.get(f"/needles/{fid}", headers={"range": "bytes=-5"})
    assert r.status_code == 206 and r.content == data[-5:]
    r = client.get(f"/needles/{fid}", headers={"range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and error_code(r) == "invalid_range"

    r = client.head(f"/needles/{fid}")
    assert r.status_code == 200 and int(r.headers["x-arkor-size"]) == len(data)
    assert r.content == b""

    # identical re-PUT (a retry) succeeds without storing again; other content under the key: 409
    r = put(client, fid, data)
    assert r.status_code == 200 and r.json()["created"] is False
    r = put(client, fid, data[:-1] + b"X")
    assert r.status_code == 409 and error_code(r) == "conflict"

    r = delete(client, fid)
    assert r.status_code == 200 and r.json()["deleted"] is True
    r = client.get(f"/needles/{fid}")
    assert r.status_code == 404 and error_code(r) == "not_found"
    assert delete(client, fid).status_code == 200  # deleting again is fine
    # a key is never reused: writing a deleted key is refused
    assert put(client, fid, data).status_code == 409


def test_hex_checksum_header_and_empty_needle(client: httpx.Client) -> None:
    fid = FileID(1, 0x99, 0x1)
    data = b"hex checksum"
    headers = {**put_headers(fid, data), "x-arkor-crc32c": hex(crc32c(data))}
    assert client.put(f"/needles/{fid}", content=data, headers=headers).status_code == 201
    assert client.get(f"/needles/{fid}").content == data
    empty = FileID(1, 0x9A, 0x2)
    assert put(client, empty, b"").status_code == 201
    r = client.get(f"/needles/{empty}")
    assert r.status_code == 200 and r.content == b""


def assert_absent(client: httpx.Client, fid: FileID) -> None:
    r = client.get(f"/needles/{fid}")
    assert r.status_code == 404, r.text
    status = client.get("/status").json()
    assert status["needles"] == 0 and status["bytes"] == 0


def test_bad_input_gets_4xx_json_and_stores_nothing(client: httpx.Client) -> None:
    fid = FileID(1, 0x42, 0xDEADBEEF)
    data = payload(0x42, 5000)
    path = f"/needles/{fid}"

    for bad in ("1,xyz", "0,1200000001", "1,0012000000", "1,12", "abc"):
        r = client.put(f"/needles/{bad}", content=data, headers=put_headers(fid, data))
        assert r.status_code == 400 and error_code(r) == "invalid_file_id", bad
        r = client.get(f"/needles/{bad}")
        assert r.status_code == 400 and error_code(r) == "invalid_file_id", bad

    r = client.put(path, content=data, headers={"x-arkor-crc32c": str(crc32c(data))})
    assert r.status_code == 401 and error_code(r) == "unauthorized"
    forged = {"x-arkor-signature": "9999999999:00", "x-arkor-crc32c": str(crc32c(data))}
    r = client.put(path, content=data, headers=forged)
    assert r.status_code == 403 and error_code(r) == "invalid_signature"
    other_path = {**put_headers(FileID(1, 0x43, 1), data)}  # signed for another needle
    assert client.put(path, content=data, headers=other_path).status_code == 403

    r = client.put(path, content=data, headers=put_headers(fid, data, crc=1234))
    assert r.status_code == 400 and error_code(r) == "checksum_mismatch"
    r = client.put(path, content=data, headers={**put_headers(fid, data), "x-arkor-crc32c": "nope"})
    assert r.status_code == 400 and error_code(r) == "invalid_checksum"
    headers = {k: v for k, v in put_headers(fid, data).items() if k != "x-arkor-crc32c"}
    r = client.put(path, content=data, headers=headers)
    assert r.status_code == 400 and error_code(r) == "missing_checksum"

    # chunked bodies declare their size in X-Arkor-Size: shorter or longer than that is a 400
    def chunked(body: bytes):  # noqa: ANN202
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    for body in (data[:100], data + b"tail"):
        headers = {**put_headers(fid, data), "x-arkor-size": str(len(data))}
        r = client.put(path, content=chunked(body), headers=headers)
        assert r.status_code == 400 and error_code(r) == "size_mismatch", r.text
    headers = {**put_headers(fid, data), "x-arkor-size": str(len(data) + 1)}
    r = client.put(path, content=data, headers=headers)  # disagrees with Content-Length
    assert r.status_code == 400 and error_code(r) == "size_mismatch"
    r = client.put(path, content=chunked(data), headers=put_headers(fid, data))
    assert r.status_code == 411 and error_code(r) == "length_required"

    wrong_group = FileID(7, 0x42, 0xDEADBEEF)
    r = put(client, wrong_group, data)
    assert r.status_code == 400 and error_code(r) == "wrong_group"

    r = client.delete(path)
    assert r.status_code == 401
    assert_absent(client, fid)

    r = client.post("/compact")
    assert r.status_code == 401 and error_code(r) == "unauthorized"
    r = client.get("/needles")
    assert r.status_code == 401 and error_code(r) == "unauthorized"
    r = client.get("/needles", params={"limit": "x"}, auth=AUTH)
    assert r.status_code == 400 and error_code(r) == "invalid_argument"
    r = client.get("/no/such/endpoint")
    assert r.status_code == 404 and error_code(r) == "not_found"


def test_size_mismatch_longer_body_stores_nothing(data_server: ArkorProcess) -> None:
    """A declared Content-Length smaller than what the writer meant: the CRC no longer matches."""
    fid = FileID(1, 0x50, 0x5)
    data = payload(0x50, 3000)
    with httpx.Client(base_url=data_server.url, timeout=30) as client:
        headers = put_headers(fid, data, crc=crc32c(data + b"more"))
        r = client.put(f"/needles/{fid}", content=data, headers=headers)
        assert r.status_code == 400 and error_code(r) == "checksum_mismatch"
        assert_absent(client, fid)


def test_wrong_cookie_is_not_found(client: httpx.Client) -> None:
    fid = FileID(1, 0x77, 0x11111111)
    assert put(client, fid, b"secret").status_code == 201
    guessed = FileID(1, 0x77, 0x22222222)
    for method in ("GET", "HEAD"):
        r = client.request(method, f"/needles/{guessed}")
        assert r.status_code == 404
    assert delete(client, guessed).status_code == 404
    assert client.get(f"/needles/{fid}").content == b"secret"


def test_listing_status_and_disk_full(tmp_path: Path) -> None:
    """data.reserveBytes larger than the free space triggers the disk-full path (no tiny
    filesystem is available here): 507, and what is stored stays readable."""
    proc = start_data(tmp_path)
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            fids = [FileID(1, k, k * 7) for k in range(1, 31)]
            for fid in fids:
                assert put(client, fid, payload(fid.key, 300)).status_code == 201
            assert delete(client, fids[0]).status_code == 200
            seen = []
            after = "0"
            while after is not None:
                r = client.get("/needles", params={"after": after, "limit": 7}, auth=AUTH)
                assert r.status_code == 200, r.text
                seen += r.json()["needles"]
                after = r.json()["next_after"]
            assert [n["fid"] for n in seen] == [str(f) for f in fids]
            assert seen[0]["deleted"] and not any(n["deleted"] for n in seen[1:])
            assert seen[1]["crc32c"] == crc32c(payload(2, 300)) and seen[1]["size"] == 300
            status = client.get("/status").json()
            assert status["needles"] == 29 and status["free"] > 0 and status["capacity"] > status["free"]
            free = status["free"]
        proc.stop()
        proc.overrides = [f"data.reserveBytes={free + 10 * 1024**3}"]
        proc.start(wait=60)
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            fid = FileID(1, 100, 1)
            r = put(client, fid, payload(100, 1000))
            assert r.status_code == 507 and error_code(r) == "insufficient_storage"
            assert client.get(f"/needles/{fid}").status_code == 404
            for f in fids[1:]:
                assert client.get(f"/needles/{f}").content == payload(f.key, 300)
            assert delete(client, fids[1]).status_code == 200  # deletes still work on a full disk
    finally:
        proc.stop()


async def test_http_replica_maps_errors(data_server: ArkorProcess) -> None:
    async with httpx.AsyncClient() as http:
        replica = HttpReplica(data_server.url, SECRET.encode(), http, 30.0)
        fid = FileID(1, 0xABC, 0x1234)
        data = payload(0xABC, 3 * 1024 * 1024 + 17)  # streamed path (> 1 MiB)
        await replica.put_needle(fid, data, crc32c(data))
        assert await replica.get_needle(fid) == data
        assert await replica.get_needle(fid, 1_000_000, 2_000_000) == data[1_000_000:3_000_000]
        info = await replica.head_needle(fid)
        assert info.size == len(data) and info.crc32c == crc32c(data)
        with pytest.raises(ChecksumMismatch):
            await replica.put_needle(FileID(1, 0xABD, 1), data, crc32c(data) ^ 1)
        with pytest.raises(Conflict):
            await replica.put_needle(fid, b"other", crc32c(b"other"))
        with pytest.raises(NotFound):
            await replica.head_needle(FileID(1, 0xABC, 0x9999))
        await replica.delete_needle(fid)
        with pytest.raises(NotFound):
            await replica.get_needle(fid)
        wrong = HttpReplica(data_server.url, b"not the secret", http, 30.0)
        with pytest.raises(Exception) as info_:
            await wrong.delete_needle(FileID(1, 0xABD, 1))
        assert getattr(info_.value, "status", None) == 403
    # a dead server is ServiceUnavailable so callers fail over
    from arkor.errors import ServiceUnavailable

    data_server.kill()
    async with httpx.AsyncClient() as http:
        replica = HttpReplica(data_server.url, SECRET.encode(), http, 5.0)
        with pytest.raises(ServiceUnavailable):
            await replica.get_needle(FileID(1, 0xABC, 0x1234))
    await trio.lowlevel.checkpoint()
