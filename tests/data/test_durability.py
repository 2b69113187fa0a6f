"""Crash safety of the volume engine with real `arkor data` processes: SIGKILL mid-write, torn
tails, flipped bits, restart from (and without) the index files."""

from __future__ import annotations

import os
import random
from pathlib import Path

import httpx
import trio

from arkor.data import needle as nd
from arkor.fileid import FileID
from tests.data.conftest import delete, payload, put, put_headers, start_data

SIZES = (1, 100, 1000, 4096, 70_000, 1_500_000)  # the last one takes the streamed write path


async def aput(client: httpx.AsyncClient, fid: FileID, data: bytes) -> httpx.Response:
    return await client.put(f"/needles/{fid}", content=data, headers=put_headers(fid, data))


def volume_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "data").glob("*.dat"))


def check_all(url: str, expected: dict[FileID, bytes], maybe: dict[FileID, bytes]) -> None:
    """Every acknowledged needle intact; an unacknowledged one is absent or intact, never torn."""
    with httpx.Client(base_url=url, timeout=60) as client:
        for fid, data in expected.items():
            r = client.get(f"/needles/{fid}")
            assert r.status_code == 200, (fid, r.status_code, r.text[:200])
            assert r.content == data, fid
        for fid, data in maybe.items():
            r = client.get(f"/needles/{fid}")
            assert r.status_code in (200, 404), (fid, r.status_code, r.text[:200])
            if r.status_code == 200:
                assert r.content == data, fid


async def test_sigkill_during_concurrent_writes(tmp_path: Path) -> None:
    proc = start_data(tmp_path, volumeSize="4MiB")
    acked: dict[FileID, bytes] = {}
    attempted: dict[FileID, bytes] = {}
    next_key = iter(range(1, 10**9))
    try:
        for round_ in range(2):
            enough = trio.Event()
            async with httpx.AsyncClient(base_url=proc.url, timeout=60) as client:

                async def writer(seed: int, enough: trio.Event, target: int) -> None:
                    rng = random.Random(seed)
                    while True:
                        key = next(next_key)
                        fid = FileID(1, key, rng.getrandbits(32))
                        data = payload(key, rng.choice(SIZES))
                        attempted[fid] = data
                        try:
                            r = await aput(client, fid, data)
                        except httpx.HTTPError:
                            return  # the server died under us
                        assert r.status_code == 201, r.text
                        acked[fid] = data
                        if len(acked) >= target:
                            enough.set()

                async with trio.open_nursery() as nursery:
                    for i in range(16):
                        nursery.start_soon(writer, round_ * 100 + i, enough, 150 * (round_ + 1))
                    # let writes run, then kill -9 while they are in flight
                    await enough.wait()
                    await trio.to_thread.run_sync(proc.kill)
            assert acked
            await trio.to_thread.run_sync(lambda: proc.start(wait=60))
            maybe = {f: d for f, d in attempted.items() if f not in acked}
            await trio.to_thread.run_sync(check_all, proc.url, acked, maybe)
        assert len(volume_files(tmp_path)) > 1  # writes crossed volume boundaries
    finally:
        proc.stop()


def test_torn_tail_is_cut_and_never_served(tmp_path: Path) -> None:
    proc = start_data(tmp_path)
    fids = [FileID(1, k, k) for k in range(1, 21)]
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            for fid in fids:
                data = payload(fid.key, 5000)
                assert put(client, fid, data).status_code == 201
        proc.stop()
        (dat,) = volume_files(tmp_path)
        size = dat.stat().st_size
        # a torn write: the last needle only half on disk, plus a header with no data behind it
        with open(dat, "r+b") as f:
            f.truncate(size - nd.padded_length(5000) // 2)
            f.seek(0, os.SEEK_END)
            f.write(nd.pack_header(nd.Header(999, 1, 100_000, 1)) + b"partial")
        proc.start(wait=60)
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            assert client.get(f"/needles/{fids[-1]}").status_code == 404
            assert client.get(f"/needles/{FileID(1, 999, 1)}").status_code == 404
            for fid in fids[:-1]:
                assert client.get(f"/needles/{fid}").content == payload(fid.key, 5000)
            load = client.get("/status").json()["load"]
            assert load["truncated_bytes"] > 0
            # the space is reused: a new write lands where the torn needle was, and survives restart
            fid = FileID(1, 500, 5)
            data = payload(500, 777)
            assert put(client, fid, data).status_code == 201
        assert dat.stat().st_size == size - nd.padded_length(5000) + nd.padded_length(777)
        proc.restart(wait=60)
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            assert client.get(f"/needles/{fid}").content == data
    finally:
        proc.stop()


def test_flipped_bits_are_detected_on_read(tmp_path: Path) -> None:
    proc = start_data(tmp_path)
    small, big, other = FileID(1, 1, 11), FileID(1, 2, 22), FileID(1, 3, 33)
    sizes = {small: 10_000, big: 3_000_000, other: 10_000}
    try:
        with httpx.Client(base_url=proc.url, timeout=60) as client:
            for fid, size in sizes.items():
                data = payload(fid.key, size)
                assert put(client, fid, data).status_code == 201
            (dat,) = volume_files(tmp_path)
            offset = nd.SUPERBLOCK_SIZE
            with open(dat, "r+b") as f:  # flip one bit inside each of the first two needles' data
                for fid in (small, big):
                    pos = offset + nd.HEADER_SIZE + sizes[fid] // 2
                    f.seek(pos)
                    byte = f.read(1)[0]
                    f.seek(pos)
                    f.write(bytes([byte ^ 0x10]))
                    offset += nd.padded_length(sizes[fid])
            for _ in range(2):  # while running (page cache), then after a restart from the index
                for fid in (small, big):
                    r = client.get(f"/needles/{fid}")
                    assert r.status_code == 500, r.status_code
                    assert r.json()["error"]["code"] == "corrupt_needle"
                    r = client.get(f"/needles/{fid}", headers={"range": "bytes=0-9"})
                    assert r.status_code == 500  # a range is verified against the whole needle
                assert client.get(f"/needles/{other}").content == payload(3, 10_000)
                proc.restart(wait=60)
    finally:
        proc.stop()


def test_restart_from_index_file_and_rebuild_without_it(tmp_path: Path) -> None:
    proc = start_data(tmp_path, volumeSize="1MiB")
    expected: dict[FileID, bytes] = {}
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            for key in range(1, 601):
                fid = FileID(1, key, key * 3)
                data = payload(key, 2000 + key)
                assert put(client, fid, data).status_code == 201
                expected[fid] = data
            for key in range(1, 601, 10):
                assert delete(client, FileID(1, key, key * 3)).status_code == 200
                expected.pop(FileID(1, key, key * 3))
        proc.stop()
        volumes = len(volume_files(tmp_path))
        assert volumes > 1
        proc.start(wait=60)
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            status = client.get("/status").json()
            assert status["load"]["scanned_needles"] == 0  # everything came from the index files
            assert status["load"]["indexed_needles"] == 600 + 60
            assert status["needles"] == len(expected)
        check_all(proc.url, expected, {})
        proc.stop()
        for idx in (tmp_path / "data").glob("*.idx"):
            idx.unlink()
        proc.start(wait=60)
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            load = client.get("/status").json()["load"]
            assert load["scanned_needles"] == 660 and load["indexed_needles"] == 0
        check_all(proc.url, expected, {f: b"" for f in []})
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            for key in range(1, 601, 10):  # tombstones were recovered too
                assert client.get(f"/needles/{FileID(1, key, key * 3)}").status_code == 404
        # the index files were rewritten by the scan: the next start uses them again
        proc.stop()
        proc.start(wait=60)
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            assert client.get("/status").json()["load"]["scanned_needles"] == 0
    finally:
        proc.stop()
