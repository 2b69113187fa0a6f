"""Captured internal requests cannot be replayed, nor reused with another body or URL, against real
`arkor registry` and `arkor data` processes (issue 11 item 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from arkor.checksum import crc32c
from arkor.fileid import FileID
from arkor.model import Fragment, ObjectRecord, ServerInfo
from arkor.security import CONTENT_SHA256_HEADER, SIGNATURE_HEADER, ClusterAuth
from arkor.transfer.registry_calls import ObjectCommit
from arkor.transfer.registry_client import HttpRegistry
from tests.data.conftest import SECRET as DATA_SECRET
from tests.data.conftest import start_data
from tests.procs import ArkorProcess
from tests.registry.conftest import SECRET as REGISTRY_SECRET
from tests.registry.conftest import registry_config, start_registry


def captured(secret: str, method: str, url: str, **kwargs: object) -> httpx.Request:
    """A request signed exactly as a role signs it, kept so it can be sent again."""
    request = httpx.Request(method, url, **kwargs)  # type: ignore[arg-type]
    return next(ClusterAuth(secret.encode()).auth_flow(request))


def resend(original: httpx.Request, **kwargs: object) -> httpx.Request:
    """The captured signature headers on another request (another body, URL...)."""
    headers = {k: v for k, v in original.headers.items()
               if k in (SIGNATURE_HEADER, CONTENT_SHA256_HEADER, "x-arkor-crc32c")}
    kwargs.setdefault("url", original.url)
    extra = dict(kwargs.pop("headers", {}))  # type: ignore[call-overload]
    return httpx.Request(original.method, headers={**headers, **extra}, **kwargs)  # type: ignore[arg-type]


def code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


@pytest.fixture
async def registry(tmp_path: Path, request: pytest.FixtureRequest,
                   unique_name: str) -> AsyncIterator[ArkorProcess]:
    proc = start_registry(tmp_path, registry_config(tmp_path, "sqlite-memory", request, unique_name))
    try:
        yield proc
    finally:
        proc.kill()


async def test_registry_refuses_replays_other_bodies_and_other_urls(registry: ArkorProcess) -> None:
    url = registry.url + "/internal/v1"
    async with httpx.AsyncClient(timeout=30) as client:
        # A lease: the captured request works once, then never again, whatever the body.
        lease = captured(REGISTRY_SECRET, "POST", url + "/leases", json={"count": 1})
        assert (await client.send(lease)).status_code == 200
        again = await client.send(lease)
        assert again.status_code == 403 and code(again) == "replayed_signature"
        bigger = await client.send(resend(lease, json={"count": 1000}))
        assert bigger.status_code == 403
        # Another body on a never-used signature: the body digest does not match.
        unused = captured(REGISTRY_SECRET, "POST", url + "/leases", json={"count": 1})
        swapped = await client.send(resend(unused, json={"count": 1000}))
        assert swapped.status_code == 403 and code(swapped) == "invalid_signature"
        # A signature moved to another path or query is refused too.
        moved = await client.send(resend(captured(REGISTRY_SECRET, "GET", url + "/groups"),
                                         url=url + "/reclaim"))
        assert moved.status_code == 403 and code(moved) == "invalid_signature"
        listing = captured(REGISTRY_SECRET, "GET", url + "/buckets/b", params={"prefix": "a"})
        other = await client.send(resend(listing, url=url + "/buckets/b?prefix=z"))
        assert other.status_code == 403 and code(other) == "invalid_signature"

        # A heartbeat replayed with another URL cannot take the member's place.
        member = ServerInfo(server_id="s1", url="http://127.0.0.1:9101", group=1)
        beat = captured(REGISTRY_SECRET, "POST", url + "/heartbeat", json=member.to_json())
        assert (await client.send(beat)).status_code == 200
        hijack = member.to_json() | {"url": "http://10.66.66.66:9101"}
        for forged in (resend(beat, json=hijack),
                       resend(beat, json=hijack, headers={CONTENT_SHA256_HEADER: ""})):
            assert (await client.send(forged)).status_code == 403
        registry_client = HttpRegistry(registry.url, REGISTRY_SECRET.encode(), client)
        (group,) = await registry_client.groups()
        assert [s.url.rstrip("/") for s in group.servers] == ["http://127.0.0.1:9101"]

        # A DELETE replayed after the object was created again removes nothing.
        frag = Fragment(fid=str(FileID.new(1, 77)), size=3, crc32c=1)
        record = ObjectRecord(bucket="b", key="k", size=3, etag="e1", fragments=[frag])
        await registry_client.commit_object(ObjectCommit(record))
        delete = captured(REGISTRY_SECRET, "DELETE", url + "/objects/b/k")
        assert (await client.send(delete)).status_code == 200
        again_frag = Fragment(fid=str(FileID.new(1, 78)), size=3, crc32c=1)
        again = ObjectRecord(bucket="b", key="k", size=3, etag="e2", fragments=[again_frag])
        await registry_client.commit_object(ObjectCommit(again))
        replayed = await client.send(delete)
        assert replayed.status_code == 403 and code(replayed) == "replayed_signature"
        assert (await registry_client.get_object("b", "k")).etag == "e2"


async def test_data_server_binds_needle_writes_to_their_crc32c(tmp_path: Path) -> None:
    proc = start_data(tmp_path)
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=30) as client:
            fid = FileID(1, 0x90, 0x1234)
            body, evil = b"the real needle" * 10, b"a substituted one" * 10
            put = captured(DATA_SECRET, "PUT", f"{proc.url}/needles/{fid}", content=body,
                           headers={"x-arkor-crc32c": str(crc32c(body))})
            # The signature names the CRC32C; another body under it fails the checksum...
            swapped = await client.send(resend(put, content=evil))
            assert swapped.status_code == 400 and code(swapped) == "checksum_mismatch"
            # ...and another CRC32C header breaks the signature.
            relabelled = await client.send(resend(put, content=evil,
                                                  headers={"x-arkor-crc32c": str(crc32c(evil))}))
            assert relabelled.status_code == 403 and code(relabelled) == "invalid_signature"
            assert (await client.get(f"/needles/{fid}")).status_code == 404
            first = captured(DATA_SECRET, "PUT", f"{proc.url}/needles/{fid}", content=body,
                             headers={"x-arkor-crc32c": str(crc32c(body))})
            assert (await client.send(first)).status_code == 201
            again = await client.send(first)
            assert again.status_code == 403 and code(again) == "replayed_signature"
            delete = captured(DATA_SECRET, "DELETE", f"{proc.url}/needles/{fid}")
            assert (await client.send(delete)).status_code == 200
            replayed = await client.send(delete)
            assert replayed.status_code == 403 and code(replayed) == "replayed_signature"
            # The signed listing covers its query: a captured page cannot be re-aimed.
            page = captured(DATA_SECRET, "GET", f"{proc.url}/needles", params={"after": "0", "limit": "1"})
            moved = await client.send(resend(page, url=f"{proc.url}/needles?after=0&limit=10000"))
            assert moved.status_code == 403 and code(moved) == "invalid_signature"
    finally:
        proc.stop()
