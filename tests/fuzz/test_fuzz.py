"""Bounded fuzz of every role of a real `arkor allinone` (issue 11 "Must show").

A seeded generator (fixed seed, a case count and a time budget) sends malformed requests to the
object server (v1 and Git LFS), the registry's internal routes and a data server: broken heads and
framing over raw sockets; bad names, numbers, ranges, signatures, headers and JSON bodies over
httpx. Every write carries at least one defect that must make it fail, so:
- no answer is a 5xx; an answer to a write is a 4xx; a 4xx (not to HEAD) has a JSON error body;
- a framing error gets a 4xx or a closed connection, never a hang;
- every role still serves afterwards, and nothing was stored (listings and HEADs are empty).

Reproduce a failure with the same seed: each case is printed in the assertion message.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import yaml

from arkor.checksum import crc32c
from arkor.fileid import FileID
from arkor.security import SIGNATURE_HEADER, signed_headers
from tests.object.cluster import start_allinone
from tests.procs import ArkorProcess

SEED = int(os.environ.get("ARKOR_FUZZ_SEED", "20261203"))
MAX_CASES = int(os.environ.get("ARKOR_FUZZ_CASES", "1500"))
TIME_BUDGET = 40.0  # seconds of sending, whatever the machine's load
SECRET = "fuzz-test-cluster-secret-0123456789"
BUCKET = "fuzz"
LFS = "/fuzz/repo.git/info/lfs"
LFS_TYPE = "application/vnd.git-lfs+json"
OID = "a" * 64


@dataclass
class Case:
    """One request; `write` means it must be refused (4xx) and store nothing."""

    role: str
    method: str
    path: str  # raw (already percent-encoded) path with query
    headers: dict[str, bytes] = field(default_factory=dict)
    body: bytes = b""
    write: bool = False
    chunked: bool = False

    def __str__(self) -> str:
        headers = {k: v[:60] for k, v in self.headers.items()}
        more = "..." if len(self.body) > 80 else ""
        return f"{self.role} {self.method} {self.path[:120]!r} {headers=} body={self.body[:80]!r}{more}"


@dataclass
class Roles:
    object: str
    registry: str
    data: str
    group: int


# --- ingredients ---------------------------------------------------------------------------------
BAD_DIGITS = ["²", "٣", "-1", "1e3", "0x10", " ", "", "9" * 5000, "1_0", "+5", "1.5"]
# httpx removes literal dot segments from a URL: those are sent over raw sockets (RAW_HEADS).
BAD_NAMES = ["%FF", "a/%FE/b", "%C0%AF", "%ED%A0%80", "%2E%2E", "a/%2E/b", "%2e%2e/x", "%00", "a%1Fb",
             "x" * 1100, "/lead", "%F0%9F%98"]
BAD_BUCKETS = ["b%FF", "a%20b", "%2E", "%2E%2E", "x" * 300, "%00", "b%2Fc", "%C3%A9"]
BAD_SIGNATURES = ["", "abc", "1:" + "a" * 64, f"{int(time.time()) + 60}:{'0' * 64}", ":", "1:"]
# Parsed by the `auth` engineer's code (arkor/security.py, arkor/object/auth.py), fuzzed by
# `test_fuzz_credentials` only.
ODD_SIGNATURES = ["²:abc", "٣:" + "0" * 64, "9" * 5000 + ":x", "\xff\xfe:zz"]
ODD_AUTHORIZATION = ["Basic ²²", "Basic " + "A" * 5000, "Bearer \xff", "Basic //79", "Digest x"]
RANGES = ["bytes=" + "9" * 5000 + "-", "bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000, "bytes=²-3",
          "bytes=5-2", "bytes=x-y", "items=0-1", "bytes=0-1,2-3", "bytes=-0", "bytes=", "bytes=--1",
          "bytes=1-2-3", "\xff\xfe", "bytes=٣-"]
DATES = ["yesterday", "Thu, 01 Jan 99999999 00:00:00 GMT", "9" * 5000, "\xff", "Mon, 32 Foo 2026"]
ETAGS = ['"', "W/", "\xff", '"a", W/"b",,,', "*" * 5000]


def deep_json(rng: random.Random) -> bytes:
    depth = rng.choice([70, 1000, 100_000])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    tail = b"1" if opener != b"[" else b""
    return opener * depth + tail + closer * depth * rng.randint(0, 1)


def bad_json(rng: random.Random) -> bytes:
    return rng.choice([
        deep_json(rng), b"", b"{", b"\xff\xfe{}", b"nul", b'{"a": NaN}', b"[1, 2", b'"' * 1000,
        json.dumps({"x": "\ud800"}).encode(), b"1e999999", b'{"parts": [{"part_number": 1e999}]}',
        b'{"count": 1e999}', b'{"count": "\xc2\xb2"}', b"[]", b"null", b'{"objects": "x"}',
        rng.randbytes(rng.randint(1, 300)),
    ])


def hdr(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


class Generator:
    """Builds cases from a seeded RNG; `signed` adds a valid cluster signature."""

    def __init__(self, rng: random.Random, roles: Roles, *, credentials: bool = False) -> None:
        self.rng = rng
        self.roles = roles
        self.credentials = credentials  # also odd signatures and Authorization headers
        self.fid = str(FileID(roles.group, 0xF0F0, 0x1234))

    def signed(self, method: str, path: str, body: bytes = b"", crc: int | None = None) -> dict[str, bytes]:
        """A valid signature over the path, its query, and the body (or a needle's CRC32C)."""
        raw, _, query = path.partition("?")
        headers = signed_headers(SECRET.encode(), method, raw, query=query, body=body, crc32c=crc)
        return {k: v.encode() for k, v in headers.items()}

    def bad_signature(self) -> dict[str, bytes]:
        pool = BAD_SIGNATURES + (ODD_SIGNATURES if self.credentials else [])
        return {SIGNATURE_HEADER: hdr(self.rng.choice(pool))}

    # object server, public API v1 --------------------------------------------------------------
    def v1_write(self) -> Case:
        rng = self.rng
        name, bucket = f"k{rng.randint(0, 9)}", BUCKET
        headers: dict[str, bytes] = {}
        query, body, method = "", rng.randbytes(rng.randint(0, 2000)), "PUT"
        defect = rng.randrange(9)
        if defect == 0:
            name = rng.choice(BAD_NAMES)
        elif defect == 1:
            bucket = rng.choice(BAD_BUCKETS)
        elif defect == 2:
            headers["content-md5"] = hdr(rng.choice(["abc", "²", "AAAAAAAAAAAAAAAAAAAAAA==", "=" * 30]))
        elif defect == 3:
            headers[rng.choice(["x-arkor-meta-a_b", "x-arkor-meta-" + "m" * 200])] = b"v"
        elif defect == 4:
            headers["if-none-match"] = hdr(rng.choice(ETAGS + ['"abc"']))
        elif defect == 5:
            headers["x-arkor-copy-source"] = hdr(rng.choice(["nosl", "/b/%FF", "/../x", "/%FF/k", "\xff",
                                                             f"/{BUCKET}/absent"]))
            body = b""
        elif defect == 6:
            query = f"?uploadId={rng.choice(['x', '%FF', '9' * 500])}&partNumber={rng.choice(BAD_DIGITS)}"
        elif defect == 7:
            method = "POST"
            query = rng.choice(["", "?uploadId=nope", "?uploadId=%FF"])
            body = bad_json(rng)
        else:
            method = "DELETE"
            name = rng.choice(BAD_NAMES)
            body = b""
        if rng.random() < 0.3:
            headers["x-arkor-meta-ok"] = hdr(rng.choice(["\xff", "v" * 100]))
        return Case("object", method, f"/v1/{bucket}/{name}{query}", headers, body, write=True,
                    chunked=method == "PUT" and rng.random() < 0.3)

    def v1_read(self) -> Case:
        rng = self.rng
        headers: dict[str, bytes] = {}
        choice = rng.randrange(4 if self.credentials else 3)
        if choice == 0:
            q = rng.choice(["limit", "prefix", "marker", "delimiter"])
            value = rng.choice(BAD_DIGITS + ["%FF", "\x00", "x" * 3000])
            return Case("object", rng.choice(["GET", "HEAD"]), f"/v1/{BUCKET}?{q}={value}")
        if choice == 1:
            headers["range"] = hdr(rng.choice(RANGES))
        elif choice == 2:
            name = rng.choice(["if-match", "if-none-match", "if-modified-since", "if-unmodified-since"])
            headers[name] = hdr(rng.choice(DATES + ETAGS))
        else:
            headers["authorization"] = hdr(rng.choice(ODD_AUTHORIZATION))
        name = rng.choice(["present", "absent", *BAD_NAMES])
        return Case("object", rng.choice(["GET", "HEAD"]), f"/v1/{BUCKET}/{name}", headers)

    # object server, Git LFS --------------------------------------------------------------------
    def lfs(self) -> Case:
        rng = self.rng
        headers = {"content-type": LFS_TYPE.encode(), "accept": LFS_TYPE.encode()}
        choice = rng.randrange(6)
        if choice == 0:
            obj = {"oid": rng.choice([OID, "zz", "A" * 64]), "size": rng.choice([-1, 1e999, "²", 2**70])}
            batch = json.dumps({"operation": "upload", "objects": [obj]}).encode()
            bodies = [bad_json(rng), batch.replace(b"Infinity", b"1e999")]
            return Case("object", "POST", LFS + "/objects/batch", headers, rng.choice(bodies))
        if choice == 1:  # an upload whose bytes are not the oid
            data = rng.randbytes(rng.randint(1, 500))
            oid = rng.choice([OID, "zz", "%FF", "a" * 5000])
            headers = {"content-type": b"application/octet-stream"}
            return Case("object", "PUT", f"{LFS}/objects/{oid}", headers, data, write=True)
        if choice == 2:
            value = rng.choice(BAD_DIGITS + ["0", "%FF"])
            cursor = rng.choice(["x", "%FF"])
            return Case("object", "GET", f"{LFS}/locks?limit={value}&cursor={cursor}", headers)
        if choice == 3:
            bodies = [bad_json(rng), json.dumps({"path": rng.choice(["", "a\x01b", "p" * 5000])}).encode(),
                      b'{"path": 5}', b'{"path": "x", "ref": 7}']
            return Case("object", "POST", LFS + "/locks", headers, rng.choice(bodies), write=True)
        if choice == 4:  # /locks/verify only reads: unknown fields are ignored there
            path = rng.choice(["/locks/verify", "/verify"])
            return Case("object", "POST", LFS + path, headers, bad_json(rng), write=path == "/verify")
        lock = rng.choice(["nope", "%FF", "9" * 3000])
        body = rng.choice([b"{}", bad_json(rng)])
        return Case("object", "POST", f"{LFS}/locks/{lock}/unlock", headers, body, write=True)

    # registry internal routes --------------------------------------------------------------------
    REGISTRY_WRITES = [
        ("POST", "/internal/v1/heartbeat"), ("POST", "/internal/v1/leases"),
        ("PUT", f"/internal/v1/objects/{BUCKET}/k"), ("DELETE", f"/internal/v1/objects/{BUCKET}/%FF"),
        ("POST", "/internal/v1/discard"), ("POST", "/internal/v1/uploads"),
        ("PUT", "/internal/v1/uploads/nope/parts/1"), ("POST", "/internal/v1/uploads/nope/complete"),
        ("POST", "/internal/v1/locks"), ("POST", "/internal/v1/locks/nope/unlock"),
        ("PUT", f"/internal/v1/objects/{BUCKET}/%FF"), ("PUT", "/internal/v1/uploads/x/parts/" + "9" * 5000),
    ]

    def registry(self) -> Case:
        rng = self.rng
        if rng.random() < 0.25:
            q = rng.choice(BAD_DIGITS)
            path = rng.choice([f"/internal/v1/buckets/{BUCKET}?limit={q}",
                               f"/internal/v1/locks?repo=r&limit={q}"])
            return Case("registry", "GET", path, self.signed("GET", path))
        method, path = rng.choice(self.REGISTRY_WRITES)
        body = rng.choice([bad_json(rng), b'{"count": 1e999}', b'{"count": -3}', b'{"count": "x"}',
                           b'{"record": {"size": 1e999}}', b'{"record": []}', b'{"fragments": [1]}',
                           b'{"group": "x", "url": 5}', b'{"repo": 1}',
                           b'{"parts": [[1e999, "x"]], "etag": 1}'])
        if path.endswith("/nope/complete") or path.endswith("/parts/1"):
            body = bad_json(rng)  # a valid body would be answered 404: also a refusal, but keep it malformed
        headers = self.signed(method, path, body) if rng.random() < 0.7 else self.bad_signature()
        return Case("registry", method, path, headers, body, write=True)

    # data server -----------------------------------------------------------------------------------
    def data(self) -> Case:
        rng = self.rng
        choice = rng.randrange(5)
        fid = rng.choice([self.fid, "zz", "%FF", "1," + "f" * 5000, "0,0,0", str(FileID(99, 1, 1))])
        path = f"/needles/{fid}"
        if choice == 0:  # read with odd ranges
            return Case("data", rng.choice(["GET", "HEAD"]), path, {"range": hdr(rng.choice(RANGES))})
        if choice == 1:
            q = f"?after={rng.choice(['%FF', 'zz', 'f' * 40, '-1', '²'])}&limit={rng.choice(BAD_DIGITS)}"
            return Case("data", "GET", "/needles" + q, self.signed("GET", "/needles" + q))
        if choice == 2:
            path = "/compact?minGarbageRatio=" + rng.choice(["x", "²", "\xff", "%FF"])
            return Case("data", "POST", path, self.signed("POST", path), write=True)
        data = rng.randbytes(rng.randint(1, 3000))
        method = rng.choice(["PUT", "DELETE"])
        crc = crc32c(data) if method == "PUT" else None
        headers = self.signed(method, path, crc=crc) if choice == 3 else self.bad_signature()
        defect = rng.randrange(4)
        headers["x-arkor-crc32c"] = str(crc32c(data)).encode()
        if defect == 0:
            headers["x-arkor-crc32c"] = str((crc32c(data) + 1) % 2**32).encode()  # wrong checksum
        elif defect == 1:
            headers["x-arkor-size"] = hdr(rng.choice(BAD_DIGITS + [str(len(data) + 1)]))
        elif defect == 2:
            headers["x-arkor-crc32c"] = hdr(rng.choice(BAD_DIGITS + ["0x" + "f" * 20, "0x²"]))
        else:
            headers.update(self.bad_signature())
        method = "PUT" if rng.random() < 0.85 else "DELETE"
        if method == "DELETE":
            headers.update(self.bad_signature())  # a signed DELETE of an absent needle is a success
        return Case("data", method, path, headers, data if method == "PUT" else b"", write=True,
                    chunked=method == "PUT" and "x-arkor-size" in headers)

    def case(self) -> Case:
        kind = self.rng.choices([self.v1_write, self.v1_read, self.lfs, self.registry, self.data],
                                weights=[3, 2, 2, 2, 2])[0]
        return kind()


# --- raw-socket framing cases ----------------------------------------------------------------------
RAW_HEADS = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: \xc2\xb2\r\n\r\n",
    b"PUT /v1/fuzz/raw HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
    b"PUT /v1/fuzz/raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"PUT /v1/fuzz/raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"9" * 5000 + b"\r\n",
    b"PUT /v1/fuzz/raw HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"PUT /v1/fuzz/raw HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PUT /v1/fuzz/raw HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",  # then EOF: truncated
    b"PUT /needles/1,f0f0,1234 HTTP/1.1\r\nHost: x\r\nX-Arkor-Size: \xc2\xb2\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"PUT /v1/fuzz/a/../b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
    b"PUT /v1/../fuzz/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
    b"\r\n\r\n\r\n",
]


def raw_exchange(url: str, payload: bytes, timeout: float = 15.0) -> bytes:
    """Send `payload`, half-close, and return the response head (b"" if the server just closed)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server closed first: a valid outcome for a framing error
        data = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
        assert time.monotonic() < deadline, f"server neither answered nor closed: {payload[:80]!r}"
        return data


# --- the test ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def roles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Roles]:
    proc: ArkorProcess = start_allinone(tmp_path_factory.mktemp("fuzz"), cluster={"secret": SECRET},
                                        object={"bodyTimeout": "3s"})
    try:
        cfg = yaml.safe_load(Path(proc.config_path).read_text())["allinone"]
        yield Roles(object=proc.url, registry=f"http://127.0.0.1:{cfg['registryPort']}",
                    data=f"http://127.0.0.1:{cfg['dataPorts'][0]}", group=1)
    finally:
        proc.stop()


def _encoded(path: str) -> bytes:
    """The request target as sent: non-ASCII and control characters percent-encoded (their
    UTF-8 bytes), deliberate escapes such as ``%FF`` kept."""
    return quote(path, safe="/%?&=,:;+*-._~!$'()@").encode("ascii")


def _check(case: Case, response: httpx.Response) -> None:
    status = response.status_code
    assert status < 500, f"{status} {response.text[:200]!r} for {case}"
    if case.write:
        assert 400 <= status < 500, f"a malformed write was accepted ({status}) : {case}"
    if status >= 400 and case.method != "HEAD":
        content_type = response.headers.get("content-type", "").split(";")[0]
        assert content_type.endswith("json"), f"{status} not JSON: {case}"
        body = response.json()
        assert isinstance(body.get("error"), dict) and body["error"].get("code"), f"{body} for {case}"


def _still_serving(http: httpx.Client, roles: Roles) -> None:
    for url in (roles.object, roles.registry, roles.data):
        assert http.get(url + "/healthz").status_code == 200, url


def test_fuzz_every_role(roles: Roles) -> None:
    _fuzz(roles, credentials=False)


def test_fuzz_credentials(roles: Roles) -> None:
    """The same, with odd signatures and Authorization headers in the mix."""
    _fuzz(roles, credentials=True)


def _fuzz(roles: Roles, *, credentials: bool) -> None:
    rng = random.Random(SEED + credentials)
    gen = Generator(rng, roles, credentials=credentials)
    started = time.monotonic()
    sent = raw = 0
    with httpx.Client(timeout=30) as http:
        assert http.put(f"{roles.object}/v1/fuzzref/present", content=b"0123456789").status_code // 100 == 2
        for payload in RAW_HEADS:
            for url in (roles.object, roles.registry, roles.data):
                head = raw_exchange(url, payload)
                if head:
                    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", head)
                    assert match, f"not an HTTP response: {head[:200]!r} for raw {payload[:80]!r} to {url}"
                    status = int(match.group(1))
                    assert 400 <= status < 500, f"{head[:200]!r} for raw {payload[:80]!r} to {url}"
                raw += 1
        _still_serving(http, roles)
        while sent < MAX_CASES and time.monotonic() - started < TIME_BUDGET:
            case = gen.case()
            content: bytes | Callable[[], Iterator[bytes]] = case.body
            headers = dict(case.headers)
            if case.chunked:
                content = iter([case.body])  # type: ignore[assignment]
            base = getattr(roles, case.role)
            request = http.build_request(case.method, base + "/", headers=headers, content=content)
            request.url = request.url.copy_with(raw_path=_encoded(case.path))
            try:
                response = http.send(request)
            except httpx.LocalProtocolError:
                continue  # not even sendable by the client (h11 refuses the header)
            except httpx.RemoteProtocolError:
                response = None  # the server closed a connection it could not frame: allowed
            if response is not None:
                _check(case, response)
            sent += 1
            if sent % 100 == 0:
                _still_serving(http, roles)
        _still_serving(http, roles)
        # Nothing was stored: no fuzz object, upload, lock or needle.
        listing = http.get(f"{roles.object}/v1/{BUCKET}")
        assert listing.status_code == 404 or listing.json()["objects"] == [], listing.text
        uploads = http.get(f"{roles.object}/v1/{BUCKET}?uploads")
        assert uploads.status_code == 404 or uploads.json()["uploads"] == [], uploads.text
        buckets = {b["name"] for b in http.get(f"{roles.object}/v1").json()["buckets"]}
        assert buckets <= {"fuzzref"}, buckets
        locks = http.get(f"{roles.object}{LFS}/locks", headers={"accept": LFS_TYPE}).json()
        assert locks["locks"] == [], locks
        assert http.head(f"{roles.data}/needles/{gen.fid}").status_code == 404
        assert http.head(f"{roles.object}{LFS}/objects/{OID}").status_code == 404
        # ... and what was stored before is intact.
        assert http.get(f"{roles.object}/v1/fuzzref/present").content == b"0123456789"
    elapsed = time.monotonic() - started
    print(f"fuzz: {raw} raw exchanges and {sent} requests in {elapsed:.1f} s (seed {SEED})")
    assert sent >= 100, f"only {sent} fuzz requests in the time budget"
