"""The registry's behaviour, run against every backend combination (sqlite|mysql x memory|redis)."""

from __future__ import annotations

import random

import pytest
import trio

from arkor.errors import BadRequest, Conflict, Forbidden, NotFound, PreconditionFailed, Unprocessable
from arkor.fileid import FileID
from arkor.model import Fragment, ObjectRecord, PartInfo, ServerInfo
from arkor.registry.service import RegistryService
from arkor.transfer.registry_calls import MultipartCommit, ObjectCommit, Preconditions


async def fragments(svc: RegistryService, sizes: list[int], group: int = 1) -> list[Fragment]:
    lease = await svc.lease_keys(max(1, len(sizes)))
    return [
        Fragment(fid=str(FileID.new(group, lease.start + i)), size=size, crc32c=i)
        for i, size in enumerate(sizes)
    ]


async def put(svc: RegistryService, bucket: str, key: str, sizes: list[int] = (3,), **kw) -> ObjectRecord:  # type: ignore[assignment]
    frags = await fragments(svc, list(sizes))
    record = ObjectRecord(bucket=bucket, key=key, size=sum(sizes), etag=f"etag-{key}", fragments=frags)
    return await svc.commit_object(ObjectCommit(record, Preconditions(**kw)))


async def queued(svc: RegistryService) -> set[str]:
    return {fid for _, fid in await svc.due_reclaims(10_000)}


async def test_leases_never_overlap_under_concurrency(service: RegistryService) -> None:
    ranges = []

    async def lease(n: int) -> None:
        ranges.append(await service.lease_keys(n))

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(lease, 1 + i % 7)
    keys = [k for r in ranges for k in range(r.start, r.start + r.count)]
    assert len(keys) == len(set(keys))
    assert min(keys) >= 1
    with pytest.raises(BadRequest):
        await service.lease_keys(0)


async def test_commit_get_overwrite_delete_and_reclaim_queue(service: RegistryService) -> None:
    first = await put(service, "photos", "2024/cat.jpg", [5, 7])
    assert first.version and first.created == first.modified
    got = await service.get_object("photos", "2024/cat.jpg")
    assert got.fragments == first.fragments and got.size == 12
    assert await queued(service) == set()

    second = await put(service, "photos", "2024/cat.jpg", [4])
    assert second.version != first.version and second.created == first.created
    # The overwrite swapped the manifest and queued exactly the old fragments.
    assert (await service.get_object("photos", "2024/cat.jpg")).fragments == second.fragments
    assert await queued(service) == {f.fid for f in first.fragments}
    [bucket] = await service.list_buckets()
    assert (bucket.name, bucket.objects, bucket.bytes) == ("photos", 1, 4)

    deleted = await service.delete_object("photos", "2024/cat.jpg")
    assert deleted.version == second.version
    assert await queued(service) == {f.fid for f in first.fragments + second.fragments}
    with pytest.raises(NotFound) as info:
        await service.get_object("photos", "2024/cat.jpg")
    assert info.value.code == "no_such_key"
    with pytest.raises(NotFound) as info:
        await service.get_object("nosuchbucket", "x")
    assert info.value.code == "no_such_bucket"
    with pytest.raises(NotFound):
        await service.delete_object("photos", "2024/cat.jpg")


async def test_preconditions_are_checked_inside_the_commit(service: RegistryService) -> None:
    original = await put(service, "b", "k")
    with pytest.raises(PreconditionFailed):
        await put(service, "b", "k", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        await put(service, "b", "k", if_match="not-the-etag")
    with pytest.raises(PreconditionFailed):
        await put(service, "b", "absent", if_match="*")
    replaced = await put(service, "b", "k", [9], if_match=f'"{original.etag}"')
    assert (await service.get_object("b", "k")).version == replaced.version
    # Fragments of the refused commits were queued for reclaim, the committed ones were not.
    reclaim = await queued(service)
    assert not reclaim & {f.fid for f in replaced.fragments}
    assert len(reclaim) == 3 + 1 - 1 + 1  # 3 refused + the original's one fragment

    async def racer(results: list[str]) -> None:
        try:
            await put(service, "b", "once", if_none_match=True)
            results.append("ok")
        except PreconditionFailed:
            results.append("412")

    results: list[str] = []
    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(racer, results)
    assert sorted(results) == ["412"] * 5 + ["ok"]


async def test_concurrent_commits_each_get_their_own_outcome(service: RegistryService) -> None:
    """Many commits at once (SQLite group-commits them in one transaction): each caller sees its
    own result, a refused one changes nothing, and every acknowledged one is there."""
    outcomes: dict[int, str] = {}

    async def writer(i: int) -> None:
        try:
            await put(service, "mix", f"k{i:02d}", if_match="not-there" if i % 3 == 0 else None)
            outcomes[i] = "ok"
        except PreconditionFailed:
            outcomes[i] = "412"

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(writer, i)
    assert outcomes == {i: "412" if i % 3 == 0 else "ok" for i in range(40)}
    page = await service.list_objects("mix", limit=100)
    assert [o.key for o in page.objects] == [f"k{i:02d}" for i in range(40) if i % 3]


async def test_bad_input_is_rejected_with_stable_codes(service: RegistryService) -> None:
    frags = await fragments(service, [1])
    cases = [
        (ObjectRecord("bad/bucket", "k", 1, "e", fragments=frags), "invalid_bucket_name"),
        (ObjectRecord("b", "../x", 1, "e", fragments=frags), "invalid_object_name"),
        (ObjectRecord("b", "k", 2, "e", fragments=frags), "invalid_manifest"),
        (ObjectRecord("b", "k", 1, "e", metadata={"m": "x" * 9000}, fragments=frags),
         "metadata_too_large"),
        (ObjectRecord("b", "k", 1, "e", fragments=[Fragment("nonsense", 1, 0)]), "invalid_file_id"),
    ]
    for record, code in cases:
        with pytest.raises(BadRequest) as info:
            await service.commit_object(ObjectCommit(record))
        assert info.value.code == code and info.value.status == 400
    with pytest.raises(BadRequest):
        await service.list_objects("b", limit=0)
    assert await service.list_buckets() == []


async def test_delete_bucket_only_when_empty(service: RegistryService) -> None:
    await put(service, "full", "a")
    with pytest.raises(Conflict) as info:
        await service.delete_bucket("full")
    assert info.value.code == "bucket_not_empty"
    await service.delete_object("full", "a")
    await service.delete_bucket("full")
    with pytest.raises(NotFound) as info:
        await service.delete_bucket("full")
    assert info.value.code == "no_such_bucket"
    with pytest.raises(NotFound):
        await service.list_objects("full")


async def test_listing_prefix_delimiter_marker_in_bytewise_order(service: RegistryService) -> None:
    keys = ["a", "a/b/c", "a/b/d", "a/c", "b", "b/x", "c", "Z", "é", "z", "日本/x", "a-", "a/"]
    for key in keys:
        await put(service, "lst", key, [0])
    page = await service.list_objects("lst")
    assert [o.key for o in page.objects] == sorted(keys, key=lambda k: k.encode())
    assert not page.truncated and page.next_marker is None and page.objects[0].fragments == []

    page = await service.list_objects("lst", delimiter="/")
    assert [o.key for o in page.objects] == ["Z", "a", "a-", "b", "c", "z", "é"]
    assert page.common_prefixes == ["a/", "b/", "日本/"]

    page = await service.list_objects("lst", prefix="a/", delimiter="/")
    assert [o.key for o in page.objects] == ["a/", "a/c"] and page.common_prefixes == ["a/b/"]

    # Paging with delimiter: every entry exactly once, prefixes never repeated.
    seen: list[str] = []
    marker = ""
    while True:
        page = await service.list_objects("lst", delimiter="/", marker=marker, limit=2)
        entries = sorted([o.key for o in page.objects] + page.common_prefixes, key=str.encode)
        seen += entries
        if not page.truncated:
            break
        assert page.next_marker == entries[-1]
        marker = page.next_marker
    assert seen == ["Z", "a", "a-", "a/", "b", "b/", "c", "z", "é", "日本/"]


async def test_listing_pages_complete_under_concurrent_writes(service: RegistryService) -> None:
    stable = [f"k{i:04d}" for i in range(0, 300, 2)]
    for key in stable:
        await put(service, "busy", key, [0])
    listed: list[str] = []
    done = trio.Event()

    async def writer() -> None:
        rng = random.Random(7)
        while not done.is_set():
            key = f"k{rng.randrange(1, 300, 2):04d}"  # odd keys come and go
            if rng.random() < 0.6:
                await put(service, "busy", key, [0])
            else:
                try:
                    await service.delete_object("busy", key)
                except NotFound:
                    pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        nursery.start_soon(writer)
        marker = ""
        while True:
            page = await service.list_objects("busy", marker=marker, limit=17)
            listed += [o.key for o in page.objects]
            if not page.truncated:
                break
            marker = page.next_marker or ""
            await trio.lowlevel.checkpoint()
        done.set()
    assert listed == sorted(listed) and len(listed) == len(set(listed))
    assert set(stable) <= set(listed)


async def test_orphan_safety_committed_and_reclaimed_are_exclusive(service: RegistryService) -> None:
    committed = await put(service, "o", "k", [1, 1])
    orphan = await fragments(service, [1, 1])
    # The sweeper claims only keys no commit ever referenced.
    claimed = await service.claim_orphans([f.fid for f in committed.fragments + orphan])
    assert sorted(claimed) == sorted(f.fid for f in orphan)
    assert await service.still_reclaimed([f.fid for f in committed.fragments]) == set()
    # A commit naming a reclaimed needle fails and changes nothing.
    with pytest.raises(Conflict) as info:
        await service.commit_object(ObjectCommit(ObjectRecord("o", "late", 2, "e", fragments=orphan)))
    assert info.value.code == "fragment_reclaimed"
    with pytest.raises(NotFound):
        await service.get_object("o", "late")
    # Discarding fragments a committed manifest references is refused silently.
    await service.discard_fragments(committed.fragments)
    assert not await queued(service) & {f.fid for f in committed.fragments}
    # A commit retried with the very same manifest keeps the needles alive.
    again = ObjectRecord("o", "k", 2, committed.etag, fragments=committed.fragments)
    await service.commit_object(ObjectCommit(again))
    assert not await queued(service) & {f.fid for f in committed.fragments}


async def test_heartbeat_membership_and_expiry(service: RegistryService) -> None:
    service.heartbeat_timeout = 1.0
    for i in range(3):
        await service.heartbeat(ServerInfo(f"s{i}", f"http://127.0.0.1:{9000 + i}", 1, free=10**9))
    await service.heartbeat(ServerInfo("t0", "http://127.0.0.1:9100", 2, free=10**9))
    groups = {g.group: g for g in await service.groups()}
    assert groups[1].writable and [s.state for s in groups[1].servers] == ["up"] * 3
    assert not groups[2].writable  # one member of three
    # A group added at run time becomes writable as soon as it is complete.
    for i in (1, 2):
        await service.heartbeat(ServerInfo(f"t{i}", f"http://127.0.0.1:{9100 + i}", 2, free=10**9))
    assert {g.group: g.writable for g in await service.groups()} == {1: True, 2: True}
    # Silent servers go down after the timeout; the DB remembers them.
    with trio.fail_after(30):
        while True:
            await trio.sleep(0.3)
            for i in (1, 2):
                await service.heartbeat(ServerInfo(f"s{i}", f"http://127.0.0.1:{9000 + i}", 1, free=10**9))
            groups = {g.group: g for g in await service.groups()}
            if not groups[2].writable and not groups[1].writable:
                break
    states = {s.server_id: s.state for s in groups[1].servers}
    assert states == {"s0": "down", "s1": "up", "s2": "up"}
    await service.heartbeat(ServerInfo("s0", "http://127.0.0.1:9000", 1, free=10**9))
    assert {g.group: g.writable for g in await service.groups()}[1]
    with pytest.raises(BadRequest):
        await service.heartbeat(ServerInfo("", "http://x", 1))


async def test_multipart_complete_and_abort(service: RegistryService) -> None:
    upload = await service.create_multipart("mp", "big.bin", "text/plain", {"a": "1"})
    assert (await service.get_multipart(upload.upload_id)).key == "big.bin"
    parts = {}
    for n in (1, 2, 3):
        frags = await fragments(service, [4, 4])
        parts[n] = PartInfo(part_number=n, size=8, etag=f"p{n}", fragments=frags)
        await service.put_part(upload.upload_id, parts[n])
    replaced = parts[2]
    parts[2] = PartInfo(2, 8, "p2b", await fragments(service, [8]))
    await service.put_part(upload.upload_id, parts[2])
    assert await queued(service) == {f.fid for f in replaced.fragments}
    assert [p.etag for p in await service.list_parts(upload.upload_id)] == ["p1", "p2b", "p3"]
    assert [u.upload_id for u in await service.list_multipart("mp")] == [upload.upload_id]

    with pytest.raises(Unprocessable) as info:
        await service.complete_multipart(MultipartCommit(upload.upload_id, [(1, "p1"), (2, "p2")], "x-2"))
    assert info.value.code == "invalid_part"
    with pytest.raises(Unprocessable):
        await service.complete_multipart(MultipartCommit(upload.upload_id, [(3, "p3"), (1, "p1")], "x-2"))
    listed = [(1, '"p1"'), (3, "p3")]
    record = await service.complete_multipart(MultipartCommit(upload.upload_id, listed, "x-2"))
    assert record.size == 16 and record.content_type == "text/plain"
    assert record.metadata == {"a": "1", ":parts": "8*2"}  # user metadata + the part layout
    assert record.fragments == parts[1].fragments + parts[3].fragments
    assert (await service.get_object("mp", "big.bin")).etag == "x-2"
    # The unlisted part's needles are reclaimed, the listed ones are not.
    assert await queued(service) == {f.fid for f in replaced.fragments + parts[2].fragments}
    with pytest.raises(NotFound) as nf:
        await service.get_multipart(upload.upload_id)
    assert nf.value.code == "no_such_upload"

    other = await service.create_multipart("mp", "gone.bin", "", {})
    frags = await fragments(service, [1])
    await service.put_part(other.upload_id, PartInfo(1, 1, "e", frags))
    await service.abort_multipart(other.upload_id)
    assert frags[0].fid in await queued(service)
    with pytest.raises(NotFound):
        await service.put_part(other.upload_id, PartInfo(1, 1, "e", await fragments(service, [1])))
    assert await service.list_multipart("mp") == []


async def test_lfs_locks(service: RegistryService) -> None:
    first = await service.create_lock("ns/repo", "assets/a.psd", "alice", "refs/heads/main")
    with pytest.raises(Conflict) as info:
        await service.create_lock("ns/repo", "assets/a.psd", "bob", None)
    assert info.value.code == "lock_exists" and first.id in info.value.message
    ids = [first.id]
    for i in range(4):
        ids.append((await service.create_lock("ns/repo", f"f{i}", "bob", None)).id)
    await service.create_lock("other/repo", "assets/a.psd", "bob", None)
    pages, cursor = [], None
    while True:
        locks, cursor = await service.list_locks("ns/repo", cursor=cursor, limit=2)
        pages.append([lock.id for lock in locks])
        if cursor is None:
            break
    assert [i for p in pages for i in p] == sorted(ids) and len(pages) == 3
    found, _ = await service.list_locks("ns/repo", path="assets/a.psd")
    assert [lock.id for lock in found] == [first.id]
    with pytest.raises(Forbidden):
        await service.delete_lock("ns/repo", first.id, "bob")
    assert (await service.delete_lock("ns/repo", first.id, "bob", force=True)).owner == "alice"
    with pytest.raises(NotFound):
        await service.delete_lock("ns/repo", first.id, "alice")
