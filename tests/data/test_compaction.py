"""Compaction with real `arkor data` processes: under concurrent reads, writes and deletes nothing
is lost; a crash at any point of it (SIGKILL, leftovers, stale index) leaves a consistent store."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import httpx
import trio

from arkor.fileid import FileID
from tests.data.conftest import delete, payload, put, put_headers, signed, start_data
from tests.data.test_durability import check_all


async def test_compaction_under_concurrent_reads_writes_deletes(tmp_path: Path) -> None:
    proc = start_data(tmp_path, volumeSize="1MiB")
    live: dict[FileID, bytes] = {}
    deleted: set[FileID] = set()
    deleting: set[FileID] = set()
    keys = iter(range(1, 10**9))
    errors: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=60) as client:

            async def write_one(rng: random.Random) -> None:
                key = next(keys)
                fid = FileID(1, key, rng.getrandbits(32))
                data = payload(key, rng.randrange(1, 60_000))
                r = await client.put(f"/needles/{fid}", content=data, headers=put_headers(fid, data))
                if r.status_code != 201:
                    errors.append(f"PUT {fid}: {r.status_code} {r.text}")
                live[fid] = data

            for i in range(150):  # a starting population spread over several volumes
                await write_one(random.Random(i))

            async def writer(seed: int, stop: trio.Event) -> None:
                rng = random.Random(seed)
                while not stop.is_set():
                    await write_one(rng)

            async def deleter(seed: int, stop: trio.Event) -> None:
                rng = random.Random(seed)
                while not stop.is_set():
                    if len(live) < 20:
                        await trio.sleep(0.01)
                        continue
                    fid = rng.choice(list(live))
                    if fid in deleting:
                        continue
                    deleting.add(fid)
                    path = f"/needles/{fid}"
                    r = await client.delete(path, headers=signed("DELETE", path))
                    if r.status_code != 200:
                        errors.append(f"DELETE {fid}: {r.status_code} {r.text}")
                    live.pop(fid, None)
                    deleted.add(fid)

            async def reader(seed: int, stop: trio.Event) -> None:
                rng = random.Random(seed)
                while not stop.is_set():
                    fid = rng.choice(list(live))
                    data = live.get(fid)
                    r = await client.get(f"/needles/{fid}")
                    if r.status_code == 404 and (fid in deleting or fid in deleted):
                        continue
                    if r.status_code != 200 or r.content != data:
                        errors.append(f"GET {fid}: {r.status_code} {r.text[:100]}")

            async def compactor(stop: trio.Event) -> None:
                for _ in range(6):
                    await trio.sleep(0.3)
                    r = await client.post("/compact", headers=signed("POST", "/compact"))
                    if r.status_code != 200:
                        errors.append(f"compact: {r.status_code} {r.text}")
                stop.set()

            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(writer, 10 + i, stop)
                    nursery.start_soon(reader, 20 + i, stop)
                nursery.start_soon(deleter, 30, stop)
                nursery.start_soon(compactor, stop)
            assert not errors, errors[:5]
            assert deleted

            r = await client.post("/compact", headers=signed("POST", "/compact"))
            assert r.status_code == 200
            status = (await client.get("/status")).json()
            sealed = [v for v in status["volumes"] if v["sealed"]]
            assert sealed and all(v["garbage_bytes"] == 0 for v in sealed)
            assert any(v["revision"] > 0 for v in status["volumes"])  # compaction really ran
            assert status["needles"] == len(live)

        for _ in range(2):  # now, and after a SIGKILL + restart from the compacted volumes
            await trio.to_thread.run_sync(check_all, proc.url, live, {})
            with httpx.Client(base_url=proc.url, timeout=30) as client:
                for fid in deleted:
                    assert client.get(f"/needles/{fid}").status_code == 404
            await trio.to_thread.run_sync(lambda: proc.restart(wait=60))
    finally:
        proc.stop()


def test_sigkill_during_compaction_and_leftovers(tmp_path: Path) -> None:
    proc = start_data(tmp_path, volumeSize="64MiB")
    live: dict[FileID, bytes] = {}
    key = 0
    rng = random.Random(7)
    try:
        for round_ in range(3):
            with httpx.Client(base_url=proc.url, timeout=60) as client:
                batch = []
                for _ in range(40):
                    key += 1
                    fid = FileID(1, key, key)
                    data = payload(key, rng.choice((300_000, 1_200_000)))
                    assert put(client, fid, data).status_code == 201
                    batch.append(fid)
                    live[fid] = data
                for fid in batch[::2]:
                    assert delete(client, fid).status_code == 200
                    live.pop(fid)

                def compact() -> None:
                    try:
                        with httpx.Client(base_url=proc.url, timeout=60) as c:
                            c.post("/compact", headers=signed("POST", "/compact"))
                    except httpx.HTTPError:
                        pass  # killed under us

                with trio_thread(compact):
                    if round_ == 0:  # kill while the compacted copy is being written
                        deadline = time.monotonic() + 30
                        while not list((tmp_path / "data").glob("*.cpd")) and time.monotonic() < deadline:
                            time.sleep(0.001)
                        assert list((tmp_path / "data").glob("*.cpd")), "compaction never started"
                    else:  # anywhere in or after it
                        time.sleep(rng.uniform(0.0, 0.1) * round_)
                    proc.kill()
            # also what a crash mid-compaction leaves on disk: temp files, to be discarded
            (tmp_path / "data" / "00000009.cpd").write_bytes(b"half-written compaction output")
            (tmp_path / "data" / "00000001.cpx").write_bytes(b"half-written compacted index")
            proc.start(wait=60)
            check_all(proc.url, live, {})
            assert not list((tmp_path / "data").glob("*.cp?"))
    finally:
        proc.stop()


def test_stale_index_after_compaction_is_rescanned(tmp_path: Path) -> None:
    """A crash between the two renames of a compaction leaves the new volume with the old index:
    its revision no longer matches, so the volume is rescanned instead of trusted."""
    proc = start_data(tmp_path, volumeSize="1MiB")
    live: dict[FileID, bytes] = {}
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            for key in range(1, 101):
                fid = FileID(1, key, key)
                live[fid] = payload(key, 20_000)
                assert put(client, fid, live[fid]).status_code == 201
            for key in range(1, 101, 2):
                assert delete(client, FileID(1, key, key)).status_code == 200
                live.pop(FileID(1, key, key))
        proc.stop()
        saved = tmp_path / "saved"
        saved.mkdir()
        for idx in (tmp_path / "data").glob("*.idx"):
            shutil.copy(idx, saved / idx.name)
        proc.start(wait=60)
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            assert client.post("/compact", headers=signed("POST", "/compact")).status_code == 200
        proc.stop()
        for idx in saved.glob("*.idx"):
            shutil.copy(idx, tmp_path / "data" / idx.name)
        proc.start(wait=60)
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            load = client.get("/status").json()["load"]
            assert load["scanned_needles"] > 0
        check_all(proc.url, live, {})
    finally:
        proc.stop()


class trio_thread:  # noqa: N801 - a tiny context manager: run `fn` in a thread, join on exit
    def __init__(self, fn) -> None:  # noqa: ANN001
        import threading

        self.thread = threading.Thread(target=fn)

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.thread.join(60)


def test_compaction_runs_by_itself(tmp_path: Path) -> None:
    """With data.compactInterval set, a volume that is mostly garbage is rewritten with no request."""
    proc = start_data(tmp_path, volumeSize="1MiB", compactInterval="1s", compactGarbageRatio=0.5)
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            fids = [FileID(1, key, key * 13 + 5) for key in range(1, 41)]
            for fid in fids:
                assert put(client, fid, payload(fid.key, 50_000)).status_code == 201
            before = client.get("/status").json()
            for fid in fids[:32]:
                assert delete(client, fid).status_code == 200
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                status = client.get("/status").json()
                if status["disk_bytes"] < before["disk_bytes"] / 2:
                    break
                time.sleep(0.3)
            else:
                raise AssertionError(f"no compaction: before {before}, now {status}")
            assert status["needles"] == 8
            for fid in fids[32:]:
                got = client.get(f"/needles/{fid}")
                assert got.status_code == 200 and got.content == payload(fid.key, 50_000)
            for fid in fids[:32]:
                assert client.get(f"/needles/{fid}").status_code == 404
    finally:
        proc.stop()
