"""Public API v1 against a real `arkor allinone` process: every header and error of issue 4."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.object.cluster import start_allinone
from tests.procs import ArkorProcess, stopped_after

FRAGMENT = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArkorProcess]:
    tmp = tmp_path_factory.mktemp("api")
    yield from stopped_after(start_allinone(tmp, object={"fragmentSize": "64KiB", "bodyTimeout": "2s"}))


@pytest.fixture
def http(server: ArkorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def error_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()["error"]["code"]


def test_put_get_head_delete_with_headers(http: httpx.Client) -> None:
    body = os.urandom(3 * FRAGMENT + 123)  # four fragments
    md5 = hashlib.md5(body).hexdigest()
    put = http.put(
        "/v1/hdr/dir/sub/obj.bin",
        content=body,
        headers={"content-type": "image/png", "x-arkor-meta-color": "red", "X-Arkor-Meta-Owner": "ann"},
    )
    assert put.status_code == 201, put.text
    assert put.headers["etag"] == f'"{md5}"'
    assert put.json()["size"] == len(body) and put.json()["etag"] == md5
    get = http.get("/v1/hdr/dir/sub/obj.bin")
    assert get.status_code == 200 and get.content == body
    assert get.headers["etag"] == f'"{md5}"'
    assert get.headers["content-type"] == "image/png"
    assert get.headers["x-arkor-meta-color"] == "red" and get.headers["x-arkor-meta-owner"] == "ann"
    assert get.headers["last-modified"].endswith("GMT")
    assert get.headers["accept-ranges"] == "bytes"
    head = http.head("/v1/hdr/dir/sub/obj.bin")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(body))
    assert http.delete("/v1/hdr/dir/sub/obj.bin").status_code == 204
    missing = http.get("/v1/hdr/dir/sub/obj.bin")
    assert missing.status_code == 404 and error_code(missing) == "no_such_key"
    assert error_code(http.delete("/v1/hdr/dir/sub/obj.bin")) == "no_such_key"


def test_overwrite_replaces_content(http: httpx.Client) -> None:
    assert http.put("/v1/ow/k", content=b"first version").status_code == 201
    assert http.put("/v1/ow/k", content=b"second").status_code == 201
    assert http.get("/v1/ow/k").content == b"second"


def test_empty_object(http: httpx.Client) -> None:
    put = http.put("/v1/empty/e", content=b"")
    assert put.status_code == 201, put.text
    assert put.json()["etag"] == hashlib.md5(b"").hexdigest()
    get = http.get("/v1/empty/e")
    assert get.status_code == 200 and get.content == b""
    assert http.get("/v1/empty/e", headers={"range": "bytes=0-0"}).status_code == 416


def test_ranges(http: httpx.Client) -> None:
    body = os.urandom(5 * FRAGMENT)
    assert http.put("/v1/rng/o", content=body).status_code == 201
    cases = {
        "bytes=0-0": (0, 0),
        f"bytes={FRAGMENT - 10}-{2 * FRAGMENT + 10}": (FRAGMENT - 10, 2 * FRAGMENT + 10),
        "bytes=-100": (len(body) - 100, len(body) - 1),
        f"bytes={4 * FRAGMENT}-": (4 * FRAGMENT, len(body) - 1),
        f"bytes=10-{10 * len(body)}": (10, len(body) - 1),
    }
    for header, (start, end) in cases.items():
        response = http.get("/v1/rng/o", headers={"range": header})
        assert response.status_code == 206, (header, response.text)
        assert response.content == body[start : end + 1], header
        assert response.headers["content-range"] == f"bytes {start}-{end}/{len(body)}"
    for bad in (f"bytes={len(body)}-", "bytes=-0"):
        response = http.get("/v1/rng/o", headers={"range": bad})
        assert response.status_code == 416, bad
        assert error_code(response) == "invalid_range"
        assert response.headers["content-range"] == f"bytes */{len(body)}"
    for ignored in ("bytes=5-2", "bytes=x-y", "items=0-1", "bytes=0-1,5-6"):  # RFC 9110: ignored
        response = http.get("/v1/rng/o", headers={"range": ignored})
        assert response.status_code == 200 and len(response.content) == len(body), ignored


def test_conditionals(http: httpx.Client) -> None:
    put = http.put("/v1/cond/o", content=b"conditional")
    etag, modified = put.headers["etag"], http.head("/v1/cond/o").headers["last-modified"]
    assert http.get("/v1/cond/o", headers={"if-none-match": etag}).status_code == 304
    assert http.get("/v1/cond/o", headers={"if-none-match": '"other"'}).status_code == 200
    assert http.head("/v1/cond/o", headers={"if-modified-since": modified}).status_code == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert http.get("/v1/cond/o", headers={"if-modified-since": old}).status_code == 200
    failed = http.get("/v1/cond/o", headers={"if-match": '"other"'})
    assert failed.status_code == 412 and error_code(failed) == "precondition_failed"
    assert http.get("/v1/cond/o", headers={"if-match": etag}).status_code == 200
    # If-Match on PUT: only replaces the version the client saw.
    stale = http.put("/v1/cond/o", content=b"lost update", headers={"if-match": '"0000"'})
    assert stale.status_code == 412
    ok = http.put("/v1/cond/o", content=b"new", headers={"if-match": etag})
    assert ok.status_code == 201
    assert http.get("/v1/cond/o").content == b"new"


def test_create_only(http: httpx.Client) -> None:
    first = http.put("/v1/once/o", content=b"one", headers={"if-none-match": "*"})
    assert first.status_code == 201
    second = http.put("/v1/once/o", content=b"two", headers={"if-none-match": "*"})
    assert second.status_code == 412 and error_code(second) == "precondition_failed"
    assert http.get("/v1/once/o").content == b"one"


def test_content_md5(http: httpx.Client) -> None:
    body = os.urandom(2 * FRAGMENT + 5)
    good = base64.b64encode(hashlib.md5(body).digest()).decode()
    assert http.put("/v1/md5/good", content=body, headers={"content-md5": good}).status_code == 201
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    bad = http.put("/v1/md5/bad", content=body, headers={"content-md5": wrong})
    assert bad.status_code == 400 and error_code(bad) == "bad_digest"
    assert http.get("/v1/md5/bad").status_code == 404
    junk = http.put("/v1/md5/bad", content=body, headers={"content-md5": "not base64!"})
    assert junk.status_code == 400 and error_code(junk) == "bad_digest"


def test_chunked_upload(http: httpx.Client) -> None:
    pieces = [os.urandom(40_000) for _ in range(7)]
    response = http.put("/v1/chunk/o", content=iter(pieces))  # no length: chunked encoding
    assert response.status_code == 201, response.text
    assert http.get("/v1/chunk/o").content == b"".join(pieces)


def raw_request(server: ArkorProcess, head: bytes, body: bytes = b"", *, wait: float = 30) -> bytes:
    """Send bytes on a plain socket and return everything the server answers before closing."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        sock.sendall(head + body)
        out = b""
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            out += data
            if b"\r\n\r\n" in out:
                headers, _, rest = out.partition(b"\r\n\r\n")
                for line in headers.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        if len(rest) >= int(line.split(b":")[1]):
                            return out
        return out


def test_expect_100_continue(server: ArkorProcess) -> None:
    body = os.urandom(100_000)
    head = (
        b"PUT /v1/expect/o HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        interim = sock.recv(100)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
    assert answer.split(b"\r\n")[0].startswith(b"HTTP/1.1 201"), answer
    assert httpx.get(server.url + "/v1/expect/o").content == body


def test_short_body_times_out_and_stores_nothing(server: ArkorProcess) -> None:
    """The seed's `curl -H "Content-Length:13" -d 'testcontent1'` sends 12 bytes."""
    answer = raw_request(
        server,
        b"PUT /v1/short/o HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n",
        b"testcontent1",
    )
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request_timeout" in answer and b"12 of 13" in answer
    assert httpx.get(server.url + "/v1/short/o").status_code == 404


def test_long_body_is_rejected(server: ArkorProcess) -> None:
    answer = raw_request(
        server, b"PUT /v1/long/o HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n", b"abcdef"
    )
    # h11 stops at Content-Length: the object holds exactly the declared 3 bytes, or none at all.
    assert answer.startswith(b"HTTP/1.1 201") or answer.startswith(b"HTTP/1.1 400"), answer
    got = httpx.get(server.url + "/v1/long/o")
    assert got.status_code == 404 or got.content == b"abc"


def test_missing_length(server: ArkorProcess) -> None:
    answer = raw_request(server, b"PUT /v1/len/o HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 411"), answer
    assert b"length_required" in answer


def test_copy(http: httpx.Client) -> None:
    body = os.urandom(3 * FRAGMENT)
    http.put("/v1/cp/src", content=body, headers={"content-type": "text/x-a", "x-arkor-meta-a": "1"})
    copied = http.put("/v1/cp2/dst", headers={"x-arkor-copy-source": "/cp/src"})
    assert copied.status_code == 201, copied.text
    get = http.get("/v1/cp2/dst")
    assert get.content == body
    assert get.headers["content-type"] == "text/x-a" and get.headers["x-arkor-meta-a"] == "1"
    http.delete("/v1/cp/src")
    assert http.get("/v1/cp2/dst").content == body  # independent of the source
    missing = http.put("/v1/cp2/x", headers={"x-arkor-copy-source": "/cp/nothing"})
    assert missing.status_code == 404


def test_listing_and_buckets(http: httpx.Client) -> None:
    for key in ("a/1", "a/2", "b/1", "c"):
        assert http.put(f"/v1/lst/{key}", content=key.encode()).status_code == 201
    page = http.get("/v1/lst").json()
    assert [o["key"] for o in page["objects"]] == ["a/1", "a/2", "b/1", "c"]
    assert page["objects"][0]["size"] == 3 and page["objects"][0]["etag"]
    folders = http.get("/v1/lst", params={"delimiter": "/"}).json()
    assert folders["common_prefixes"] == ["a/", "b/"] and [o["key"] for o in folders["objects"]] == ["c"]
    prefixed = http.get("/v1/lst", params={"prefix": "a/"}).json()
    assert [o["key"] for o in prefixed["objects"]] == ["a/1", "a/2"]
    first = http.get("/v1/lst", params={"limit": 2}).json()
    assert first["truncated"] and len(first["objects"]) == 2
    rest = http.get("/v1/lst", params={"marker": first["next_marker"]}).json()
    assert [o["key"] for o in rest["objects"]] == ["b/1", "c"]
    assert http.get("/v1/lst", params={"limit": 0}).status_code == 400
    assert http.get("/v1/lst", params={"limit": "x"}).status_code == 400
    names = [b["name"] for b in http.get("/v1/").json()["buckets"]]
    assert "lst" in names
    busy = http.delete("/v1/lst")
    assert busy.status_code == 409 and error_code(busy) == "bucket_not_empty"
    for key in ("a/1", "a/2", "b/1", "c"):
        http.delete(f"/v1/lst/{key}")
    assert http.delete("/v1/lst").status_code == 204
    assert "lst" not in [b["name"] for b in http.get("/v1/").json()["buckets"]]
    unknown = http.get("/v1/no-such-bucket-here")
    assert unknown.status_code == 404 and error_code(unknown) == "no_such_bucket"
    assert http.delete("/v1/no-such-bucket-here").status_code == 404


def test_multipart(http: httpx.Client) -> None:
    init = http.post("/v1/mp/big?uploads", headers={"content-type": "video/mp4"})
    assert init.status_code == 200, init.text
    upload = init.json()["upload_id"]
    parts = [os.urandom(2 * FRAGMENT + 1), os.urandom(FRAGMENT), os.urandom(77)]
    etags = []
    for number, data in enumerate(parts, 1):
        response = http.put(f"/v1/mp/big?uploadId={upload}&partNumber={number}", content=data)
        assert response.status_code == 200, response.text
        etags.append(response.json()["etag"])
    listed = http.get(f"/v1/mp/big?uploadId={upload}").json()["parts"]
    assert [p["part_number"] for p in listed] == [1, 2, 3]
    assert [u["upload_id"] for u in http.get("/v1/mp?uploads").json()["uploads"]] == [upload]
    assert http.get("/v1/mp/big").status_code == 404  # not visible before completion
    done = http.post(
        f"/v1/mp/big?uploadId={upload}",
        json={"parts": [{"part_number": n, "etag": e} for n, e in enumerate(etags, 1)]},
    )
    assert done.status_code == 201, done.text
    expected = hashlib.md5(b"".join(bytes.fromhex(e) for e in etags)).hexdigest() + "-3"
    assert done.json()["etag"] == expected
    get = http.get("/v1/mp/big")
    assert get.content == b"".join(parts) and get.headers["content-type"] == "video/mp4"
    ranged = http.get("/v1/mp/big", headers={"range": f"bytes={2 * FRAGMENT}-{2 * FRAGMENT + 10}"})
    assert ranged.content == b"".join(parts)[2 * FRAGMENT : 2 * FRAGMENT + 11]
    # abort and bad part numbers
    other = http.post("/v1/mp/x?uploads").json()["upload_id"]
    assert http.put(f"/v1/mp/x?uploadId={other}&partNumber=0", content=b"a").status_code == 400
    assert http.put(f"/v1/mp/x?uploadId={other}&partNumber=z", content=b"a").status_code == 400
    assert http.delete(f"/v1/mp/x?uploadId={other}").status_code == 204
    gone = http.put(f"/v1/mp/x?uploadId={other}&partNumber=1", content=b"a")
    assert gone.status_code == 404 and error_code(gone) == "no_such_upload"
    bad_json = http.post(f"/v1/mp/big?uploadId={upload}", content=b"{not json")
    assert bad_json.status_code in (400, 404)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/b%2Fc/key",  # '/' is not allowed in a bucket name... it becomes a key separator
        "/v1/bad%00bucket/k",
        "/v1/bucket/a%00b",
        "/v1/bucket/a%01b",
        "/v1/bucket//lead",
        "/v1/bucket/x/../y",
        "/v1/bucket/./y",
        "/v1/" + "b" * 256 + "/k",
        "/v1/bucket/" + "k" * 1025,
        "/v1/b*d/k",
    ],
)
def test_bad_names_are_4xx(server: ArkorProcess, path: str) -> None:
    head = f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n".encode()
    answer = raw_request(server, head, b"x")
    status = int(answer.split(b" ")[1])
    if path.startswith("/v1/b%2Fc"):
        assert status in (201, 400), answer  # decoded to bucket "b", key "c/key"
        return
    assert 400 <= status < 500, answer
    assert b'"code"' in answer


def test_oversized_headers_and_metadata(server: ArkorProcess, http: httpx.Client) -> None:
    huge = http.get("/v1/hdr/x", headers={"x-junk": "a" * 40_000})
    assert 400 <= huge.status_code < 500
    meta = {f"x-arkor-meta-k{i}": "v" * 500 for i in range(20)}  # 10 KB > 8 KiB limit
    response = http.put("/v1/meta/o", content=b"x", headers=meta)
    assert response.status_code == 400 and error_code(response) == "metadata_too_large"
    assert http.get("/v1/meta/o").status_code == 404
    bad_name = http.put("/v1/meta/o", content=b"x", headers={"x-arkor-meta-a_b": "1"})
    assert bad_name.status_code == 400


def test_unknown_paths_and_methods(http: httpx.Client) -> None:
    assert http.get("/nothing/here").status_code == 404
    assert http.put("/v1/", content=b"x").status_code == 405
    assert http.post("/v1/bucket/k").status_code == 400
    assert http.get("/healthz").json()["status"] == "ok"
    assert http.get("/readyz").status_code == 200


def test_lfs_bucket_is_read_only_through_v1(http: httpx.Client) -> None:
    """The git-lfs bucket holds objects whose SHA-256 the LFS API checked: v1 cannot write there."""
    oid = "0" * 64
    for response in (
        http.put(f"/v1/git-lfs/ns/repo/{oid}", content=b"not what the oid says"),
        http.post(f"/v1/git-lfs/ns/repo/{oid}?uploads"),
        http.delete(f"/v1/git-lfs/ns/repo/{oid}"),
        http.delete("/v1/git-lfs"),
        http.put("/v1/git-lfs/x", headers={"x-arkor-copy-source": "/other/k"}),
    ):
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "reserved_bucket"
    assert http.get(f"/v1/git-lfs/ns/repo/{oid}").status_code == 404


def test_seed_readme_curl(server: ArkorProcess, tmp_path: Path) -> None:
    """The seed's quick start, with real curl."""
    import subprocess

    url = f"{server.url}/v1/testbucket/test1"
    put = subprocess.run(
        ["curl", "-s", "-X", "PUT", "-d", "testcontent1", url], capture_output=True, timeout=60
    )
    assert b'"etag"' in put.stdout, put
    get = subprocess.run(["curl", "-s", "-X", "GET", url], capture_output=True, timeout=60)
    assert get.stdout == b"testcontent1"
    # The seed's own line declares 13 bytes and sends 12: a clear error, nothing replaced.
    short = subprocess.run(
        ["curl", "-s", "-X", "PUT", "-H", "Content-Length:13", "-d", "testcontent2", url],
        capture_output=True,
        timeout=60,
    )
    assert b"request_timeout" in short.stdout, short
    assert subprocess.run(["curl", "-s", url], capture_output=True, timeout=60).stdout == b"testcontent1"
