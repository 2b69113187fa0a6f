"""Large needles through `NeedleStore.get`: read and checked in one pass (header, data and
trailer in separate reads, the data handed out without a copy); every kind of damage is a
CorruptNeedle, never data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from arkor.data import needle as nd
from arkor.errors import CorruptNeedle
from arkor.fileid import FileID
from tests.data.conftest import payload
from tests.data.test_store import open_store, put

SIZE = 3 * 1024 * 1024 + 5


@pytest.mark.parametrize("where", ["data", "header", "trailer", "truncated"])
async def test_large_needle_reads_whole_and_in_ranges_and_refuses_damage(tmp_path: Path, where: str) -> None:
    store = await open_store(tmp_path)
    reported: list[FileID] = []
    store.on_corruption(reported.append)
    fid = FileID(1, 77, 5)
    data = payload(77, SIZE)
    try:
        assert await put(store, fid, data)
        assert await store.get(fid) == data
        assert await store.get(fid, 1_000_000, 12345) == data[1_000_000:1_012_345]
        entry = store.lookup(fid)
        path = tmp_path / "00000001.dat"
        fd = os.open(path, os.O_WRONLY)
        try:
            if where == "data":
                os.pwrite(fd, b"\xff", entry.offset + nd.HEADER_SIZE + SIZE - 3)
            elif where == "header":
                os.pwrite(fd, b"\xff\xff", entry.offset + 8)
            elif where == "trailer":
                os.pwrite(fd, b"\x00\x01\x02\x03", entry.offset + nd.HEADER_SIZE + SIZE)
            else:
                os.ftruncate(fd, entry.offset + nd.HEADER_SIZE + SIZE // 2)
        finally:
            os.close(fd)
        with pytest.raises(CorruptNeedle):
            await store.get(fid)
        with pytest.raises(CorruptNeedle):
            await store.get(fid, 10, 10)
        assert reported == [fid, fid]
    finally:
        await store.aclose()


async def test_local_replica_refuses_a_whole_read_whose_manifest_names_another_crc(tmp_path: Path) -> None:
    from arkor.checksum import crc32c
    from arkor.data.local import LocalReplica

    store = await open_store(tmp_path)
    try:
        fid = FileID(1, 9, 9)
        data = payload(9, 5000)
        assert await put(store, fid, data)
        replica = LocalReplica(store)
        assert await replica.get_needle(fid, crc32c=crc32c(data)) == data
        with pytest.raises(CorruptNeedle):
            await replica.get_needle(fid, crc32c=crc32c(data) ^ 1)
        assert await replica.get_needle(fid, 10, 20, crc32c=0) == data[10:30]  # a range: not whole
    finally:
        await store.aclose()
