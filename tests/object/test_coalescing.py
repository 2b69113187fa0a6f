"""Coalesced internal calls with real processes: needle batches on a real `arkor data`, lookup and
commit batches on a real `arkor registry`, and a cluster under concurrent small PUTs while a data
server is SIGKILLed (batches crossing a replica failure are retried on the other group and nothing
acknowledged is lost)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from arkor import batchwire
from arkor.checksum import crc32c
from arkor.errors import ChecksumMismatch, CorruptNeedle, NotFound, PreconditionFailed
from arkor.fileid import FileID
from arkor.model import ObjectRecord
from arkor.security import ClusterAuth
from arkor.transfer.data_client import HttpReplica
from arkor.transfer.registry_calls import ObjectCommit, Preconditions
from arkor.transfer.registry_client import HttpRegistry
from tests.object.cluster import CLUSTER_SECRET, Cluster, start_cluster

SECRET = CLUSTER_SECRET.encode()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    found = start_cluster(tmp_path_factory.mktemp("coalesce"), groups=2)
    yield found
    found.stop()


def fid_for(group: int) -> FileID:
    return FileID.new(group, int.from_bytes(os.urandom(6), "big"))


async def test_needle_batch_stores_good_needles_and_refuses_a_bad_one_alone(cluster: Cluster) -> None:
    url = cluster.data[0].url  # group 1
    good = [(fid_for(1), os.urandom(1000 + i), 0) for i in range(5)]
    good = [(fid, data, crc32c(data)) for fid, data, _ in good]
    bad_fid = fid_for(1)
    bad = (bad_fid, b"damaged in transit", crc32c(b"what was sent"))
    async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:
        replica = HttpReplica(url, SECRET, client, 10.0, nursery=nursery)
        outcomes = await replica._put_batch([*good[:2], bad, *good[2:]])  # one POST /needle-batch
        assert [o is None for o in outcomes] == [True, True, False, True, True, True]
        assert isinstance(outcomes[2], ChecksumMismatch)
        for fid, data, _crc in good:
            assert await replica.get_needle(fid) == data
        with pytest.raises(NotFound):
            await replica.get_needle(bad_fid)
        # Idempotent: the same batch again succeeds and changes nothing.
        again = await replica._put_batch(good)
        assert again == [None] * len(good)
        nursery.cancel_scope.cancel()


async def test_read_batch_answers_each_read_and_checks_whole_needles(cluster: Cluster) -> None:
    url = cluster.data[0].url
    stored = [(fid_for(1), os.urandom(3000 + i)) for i in range(3)]
    async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:
        replica = HttpReplica(url, SECRET, client, 10.0, nursery=nursery)
        assert await replica._put_batch([(f, d, crc32c(d)) for f, d in stored]) == [None] * 3
        missing = fid_for(1)
        (f0, d0), (f1, d1), (f2, d2) = stored
        outcomes = await replica._get_batch([
            (f0, 0, None, None), (f1, 100, 50, None), (missing, 0, None, None), (f2, 10_000, 10, None),
            (f2, 0, None, crc32c(d2)),
        ])
        assert outcomes[0] == d0 and outcomes[1] == d1[100:150] and outcomes[4] == d2
        assert isinstance(outcomes[2], NotFound)
        assert outcomes[3] == b""  # past the end: nothing, as a single ranged GET answers
        # Through the coalescer, concurrently, with the manifest's size as the hint.
        got: dict[int, bytes] = {}

        async def read(i: int) -> None:
            fid, data = stored[i % 3]
            got[i] = await replica.get_needle(fid, size=len(data))

        async with trio.open_nursery() as readers:
            for i in range(30):
                readers.start_soon(read, i)
        assert all(got[i] == stored[i % 3][1] for i in range(30))
        # A whole read names the CRC32C its manifest holds: another one is a CorruptNeedle, in a
        # batch and alone, and the engine then tries the next replica.
        wrong = (crc32c(d0) + 1) & 0xFFFFFFFF
        outcomes = await replica._get_batch([(f0, 0, None, wrong), (f1, 0, None, crc32c(d1))])
        assert isinstance(outcomes[0], CorruptNeedle) and outcomes[1] == d1
        with pytest.raises(CorruptNeedle):
            await HttpReplica(url, SECRET, client, 10.0).get_needle(f0, crc32c=wrong)
        assert await HttpReplica(url, SECRET, client, 10.0).get_needle(f0, crc32c=crc32c(d0)) == d0
        for bad in ({"reads": []}, {"reads": [[str(f0), 0, 0]]}, {"reads": [[str(f0), -1, 5]]},
                    {"reads": [["not-a-fid", 0, 5]]}, {"reads": [[str(f0), 0, 10**9]]}, [1, 2]):
            answer = await client.post(url + "/needle-reads", json=bad)
            assert answer.status_code == 400, (bad, answer.text)
            assert answer.json()["error"]["code"] in ("invalid_batch", "invalid_file_id")
        nursery.cancel_scope.cancel()


async def test_needle_batch_refuses_unsigned_tampered_and_malformed_bodies(cluster: Cluster) -> None:
    url = cluster.data[0].url
    fid = fid_for(1)
    data = os.urandom(512)
    body = batchwire.encode_needles([(fid, data, crc32c(data)), (fid_for(1), b"x", crc32c(b"x"))])
    headers = {"content-type": batchwire.NEEDLE_BATCH_TYPE}
    auth = ClusterAuth(SECRET)
    async with httpx.AsyncClient() as client:
        unsigned = await client.post(url + "/needle-batch", content=body, headers=headers)
        assert unsigned.status_code == 401
        # Signed over one body, sent with another: the signature covers the bytes.
        signed = client.build_request("POST", url + "/needle-batch", content=body, headers=headers)
        signed = next(auth.auth_flow(signed))
        tampered = body[:-1] + b"y"
        swapped = await client.post(url + "/needle-batch", content=tampered,
                                    headers={**headers, **{k: v for k, v in signed.headers.items()
                                                           if k.startswith("x-arkor")}})
        assert swapped.status_code == 403
        assert swapped.json()["error"]["code"] == "invalid_signature"
        for broken in (body[:-3], b"\x00\x00\x00\x05{{{{{", body + b"extra"):
            answer = await client.post(url + "/needle-batch", content=broken, headers=headers, auth=auth)
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["code"] == "invalid_batch"
        wrong_group = batchwire.encode_needles([(fid_for(2), data, crc32c(data))])
        answer = await client.post(url + "/needle-batch", content=wrong_group, headers=headers, auth=auth)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "wrong_group"
        replica = HttpReplica(url, SECRET, client, 10.0)
        with pytest.raises(NotFound):
            await replica.get_needle(fid)  # nothing of any refused batch was stored


async def test_registry_lookup_and_commit_batches_answer_each_member(cluster: Cluster) -> None:
    async with httpx.AsyncClient() as client:
        async with trio.open_nursery() as nursery:
            plain = HttpRegistry(cluster.registry.url, SECRET, client, 10.0)
            registry = HttpRegistry(cluster.registry.url, SECRET, client, 10.0, nursery=nursery)
            await plain.create_bucket("batches")
            empty_md5 = "d41d8cd98f00b204e9800998ecf8427e"
            records = [ObjectRecord(bucket="batches", key=f"k{i}", size=0, etag=empty_md5)
                       for i in range(6)]
            await plain.commit_object(ObjectCommit(records[0]))
            commits = [ObjectCommit(records[0], Preconditions(if_none_match=True))]  # exists: 412
            commits += [ObjectCommit(r) for r in records[1:]]
            outcomes = await registry._commit_batch(commits)
            assert isinstance(outcomes[0], PreconditionFailed)
            assert all(isinstance(o, ObjectRecord) for o in outcomes[1:])
            names = [("batches", "k1"), ("batches", "missing"), ("batches", "k5")]
            found = await registry._lookup_batch(names)
            assert isinstance(found[0], ObjectRecord) and found[0].key == "k1"
            assert isinstance(found[1], NotFound) and found[1].code == "no_such_key"
            assert isinstance(found[2], ObjectRecord) and found[2].key == "k5"
            # Through the coalescers, concurrently: every caller gets its own record.
            got: dict[str, str] = {}

            async def lookup(key: str) -> None:
                got[key] = (await registry.get_object("batches", key)).key

            async with trio.open_nursery() as callers:
                for i in range(1, 6):
                    callers.start_soon(lookup, f"k{i}")
            assert got == {f"k{i}": f"k{i}" for i in range(1, 6)}
            nursery.cancel_scope.cancel()
        answer = await client.post(cluster.registry.url + "/internal/v1/lookups",
                                   json={"objects": []}, auth=ClusterAuth(SECRET))
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_batch"


def batches_seen(metrics: str, kind: str) -> tuple[float, float]:
    """(batches, items) of one coalescer kind from the object server's /metrics."""
    def value(suffix: str) -> float:
        match = re.search(rf'arkor_coalesced_batch_items_{suffix}{{kind="{kind}"}} ([0-9.e+]+)', metrics)
        return float(match.group(1)) if match else 0.0
    return value("count"), value("sum")


def test_concurrent_small_puts_survive_a_replica_kill_and_are_coalesced(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path, groups=2, object_sections={"replicaTimeout": "5s"})
    try:
        acked, refused = trio.run(_load_with_a_kill, cluster)
        assert len(acked) >= 300, (len(acked), refused[:5])
        with httpx.Client(base_url=cluster.url, timeout=30) as client:
            metrics = client.get("/metrics").text  # before the one-by-one reads below
            for key, data in acked.items():
                answer = client.get(f"/v1/coalesce/{key}")
                assert answer.status_code == 200 and answer.content == data, key
        batches, items = batches_seen(metrics, "needle_write")
        assert batches > 0 and items / batches > 1.5, (batches, items)
        for kind in ("registry_lookup", "needle_read"):  # reads are quick: fewer merge
            batches, items = batches_seen(metrics, kind)
            assert batches > 0 and items > batches, (kind, batches, items)
        batches, items = batches_seen(metrics, "registry_commit")
        assert batches > 0 and items / batches > 1.5, (batches, items)
    finally:
        cluster.stop()


async def _load_with_a_kill(cluster: Cluster) -> tuple[dict[str, bytes], list[str]]:
    acked: dict[str, bytes] = {}
    refused: list[str] = []
    todo = iter(range(600))
    victim = cluster.data[1]  # group 1, replica 2

    async def writer(client: httpx.AsyncClient) -> None:
        for i in todo:
            if i == 200:
                victim.kill()
            data = os.urandom(4096)
            answer = await client.put(f"/v1/coalesce/k{i}", content=data)
            if answer.status_code == 201:
                acked[f"k{i}"] = data
            else:
                assert answer.status_code == 503, answer.text
                refused.append(answer.text)
        # Reads of everything acknowledged so far go through the lookup batches too.
        for key, data in list(acked.items())[:50]:
            got = await client.get(f"/v1/coalesce/{key}")
            assert got.status_code == 200 and got.content == data

    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=cluster.url, timeout=60, limits=limits) as client:
        async with trio.open_nursery() as nursery:
            for _ in range(32):
                nursery.start_soon(writer, client)
    return acked, refused
