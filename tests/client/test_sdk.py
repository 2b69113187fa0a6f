"""The async SDK against a real `arkor allinone`: round trips, multipart, ranges, listing, errors."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from arkor.client import ArkorClient
from arkor.client.integrity import PART_SIZE_META, multipart_etag
from arkor.errors import ArkorError, BadRequest, Conflict, NotFound, PreconditionFailed
from tests.client.conftest import file_md5, pattern, write_pattern_file
from tests.procs import ArkorProcess

KiB, MiB = 1024, 1024 * 1024


def temp_files(directory: Path) -> list[str]:
    """Temporary download files (`.NAME.arkor-XXXX`) left in `directory`."""
    return [p.name for p in directory.iterdir() if ".arkor-" in p.name]


def small_parts(url: str, **options: object) -> ArkorClient:
    """A client that switches to multipart early, so tests exercise parts with little data."""
    return ArkorClient(url, part_size=256 * KiB, multipart_threshold=512 * KiB, **options)  # type: ignore[arg-type]


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await trio.lowlevel.checkpoint()


@pytest.mark.parametrize("size", [0, 1, 65_537, 512 * KiB, 512 * KiB + 1, 3 * MiB + 17])
async def test_bytes_round_trip_every_size(allinone: ArkorProcess, bucket: str, size: int) -> None:
    data = pattern(size, seed=size)
    async with small_parts(allinone.url) as arkor:
        info = await arkor.put(bucket, f"obj-{size}", data, content_type="application/x-test",
                               metadata={"owner": "tests"})
        assert info.size == size
        if size > 512 * KiB:  # multipart: ETag of the part MD5s
            parts = [hashlib.md5(data[i : i + 256 * KiB]).digest() for i in range(0, size, 256 * KiB)]
            assert info.etag == multipart_etag(parts)
        else:
            assert info.etag == hashlib.md5(data).hexdigest()
        assert await arkor.get(bucket, f"obj-{size}") == data
        head = await arkor.head(bucket, f"obj-{size}")
        assert (head.size, head.etag, head.content_type) == (size, info.etag, "application/x-test")
        assert head.metadata["owner"] == "tests"


async def test_stream_upload_and_ranged_reads(allinone: ArkorProcess, bucket: str) -> None:
    data = pattern(2 * MiB + 333, seed=7)
    async with small_parts(allinone.url) as arkor:
        info = await arkor.put(bucket, "dir/streamed", chunks(data, 100_000))
        assert info.size == len(data)
        assert info.etag.endswith("-9")  # 2 MiB + 333 in 256 KiB parts
        async with arkor.open_read(bucket, "dir/streamed", offset=1000, length=300_000) as reader:
            assert await reader.read_all() == data[1000:301_000]
        async with arkor.open_read(bucket, "dir/streamed", offset=len(data) - 10) as reader:
            assert await reader.read_all() == data[-10:]
        # a short stream goes up as one PUT with a plain MD5 ETag
        small = await arkor.put(bucket, "dir/short", chunks(b"hello world", 3))
        assert small.etag == hashlib.md5(b"hello world").hexdigest()


async def test_file_multipart_concurrent_and_ranged_download(
    allinone: ArkorProcess, bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "src.bin"
    digest = await trio.to_thread.run_sync(write_pattern_file, src, 40 * MiB + 5, 3)
    seen: list[int] = []
    async with ArkorClient(allinone.url, part_size=4 * MiB, concurrency=6) as arkor:
        info = await arkor.put_file(bucket, "big", src, progress=seen.append)
        assert sum(seen) == 40 * MiB + 5 and len(seen) == 11
        assert info.etag.endswith("-11")
        head = await arkor.head(bucket, "big")
        assert head.metadata[PART_SIZE_META] == str(4 * MiB)
        for concurrency in (1, 6):
            dst = tmp_path / f"dst-{concurrency}.bin"
            await arkor.get_file(bucket, "big", dst, concurrency=concurrency)
            assert await trio.to_thread.run_sync(file_md5, dst) == digest
        # A plain-MD5 object (one PUT, e.g. from curl) downloaded by concurrent ranges is checked
        # against its whole-object MD5 by hashing the ranges in order.
        plain = pattern(9 * MiB, seed=9)
        async with ArkorClient(allinone.url, multipart_threshold=64 * MiB) as single:
            await single.put(bucket, "plain", plain)
        dst = tmp_path / "plain.bin"
        await arkor.get_file(bucket, "plain", dst, concurrency=4, part_size=1 * MiB)
        assert dst.read_bytes() == plain
    assert not temp_files(tmp_path)


@pytest.mark.slow
async def test_one_gib_round_trip(allinone: ArkorProcess, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "gib.bin"
    digest = await trio.to_thread.run_sync(write_pattern_file, src, 1024 * MiB, 11)
    async with ArkorClient(allinone.url, concurrency=8, part_size=16 * MiB, timeout=120) as arkor:
        info = await arkor.put_file(bucket, "gib", src)
        assert info.size == 1024 * MiB and info.etag.endswith("-64")
        src.unlink()
        dst = tmp_path / "gib.out"
        await arkor.get_file(bucket, "gib", dst)  # verified per part against the ETag
    assert await trio.to_thread.run_sync(file_md5, dst) == digest


async def test_listing_pages_prefixes_copy_delete(allinone: ArkorProcess, bucket: str) -> None:
    async with ArkorClient(allinone.url) as arkor:
        keys = [f"a/{i:02d}" for i in range(23)] + ["b/x", "b/y/z", "top"]
        async with trio.open_nursery() as nursery:
            for key in keys:
                nursery.start_soon(arkor.put, bucket, key, key.encode())
        listed = [e.key async for e in arkor.list(bucket, page_size=5)]
        assert listed == sorted(keys)
        level = [(e.key, e.is_prefix) async for e in arkor.list(bucket, delimiter="/", page_size=2)]
        assert level == [("a/", True), ("b/", True), ("top", False)]
        assert [e.key async for e in arkor.list(bucket, "b/")] == ["b/x", "b/y/z"]
        assert any(b.name == bucket for b in await arkor.list_buckets())

        copied = await arkor.copy(bucket, "b/y/z", bucket, "copy/of z")
        assert copied.etag == hashlib.md5(b"b/y/z").hexdigest()
        assert await arkor.get(bucket, "copy/of z") == b"b/y/z"

        with pytest.raises(Conflict) as exc:
            await arkor.remove_bucket(bucket)
        assert exc.value.code == "bucket_not_empty"
        for key in [*keys, "copy/of z"]:
            await arkor.delete(bucket, key)
        assert not await arkor.exists(bucket, "top")
        await arkor.remove_bucket(bucket)


async def test_typed_errors_carry_server_codes(allinone: ArkorProcess, bucket: str) -> None:
    async with ArkorClient(allinone.url, retries=2) as arkor:
        await arkor.put(bucket, "exists", b"x")
        with pytest.raises(NotFound) as missing:
            await arkor.get(bucket, "nope")
        assert missing.value.code == "no_such_key" and missing.value.status == 404
        with pytest.raises(NotFound):
            await arkor.delete(bucket, "nope")
        with pytest.raises(BadRequest) as bad:
            await arkor.put("bad bucket!", "k", b"x")
        assert bad.value.code == "invalid_bucket_name"
        with pytest.raises(ArkorError) as rng:
            async with arkor.open_read(bucket, "exists", offset=10) as reader:
                await reader.read_all()
        assert rng.value.code == "invalid_range" and rng.value.status == 416
        with pytest.raises(PreconditionFailed):
            await arkor.transport.request(
                "GET", f"/v1/{bucket}/exists", headers={"If-Match": '"0123"'}, ok=(200,)
            )
