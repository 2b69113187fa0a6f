"""A real `arkor allinone` for the client tests (tests/object/cluster.py starts it): one per test
module, each test in its own bucket."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.object.cluster import start_allinone
from tests.procs import ArkorProcess, stopped_after


@pytest.fixture(scope="module")
def allinone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArkorProcess]:
    yield from stopped_after(start_allinone(tmp_path_factory.mktemp("allinone")))


@pytest.fixture
def bucket(unique_name: str) -> str:
    return unique_name


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic incompressible-looking bytes where every 64 KiB block differs (so a misplaced
    range or part changes the checksum)."""
    block = hashlib.sha256(f"arkor-{seed}".encode()).digest() * 2048  # 64 KiB
    out = bytearray()
    for index in range(0, size, len(block)):
        out += index.to_bytes(8, "little") + block[8:]
    return bytes(out[:size])


def write_pattern_file(path: Path, size: int, seed: int = 0) -> str:
    """Write `size` bytes to `path` in 16 MiB pieces; returns their MD5 hex."""
    md5 = hashlib.md5()
    step = 16 * 1024 * 1024
    piece = pattern(step, seed)
    with open(path, "wb") as fh:
        for offset in range(0, size, step):
            data = (offset.to_bytes(8, "little") + piece[8:])[: min(step, size - offset)]
            fh.write(data)
            md5.update(data)
    return md5.hexdigest()


def file_md5(path: Path | str) -> str:
    md5 = hashlib.md5()
    with open(os.fspath(path), "rb") as fh:
        while block := fh.read(16 * 1024 * 1024):
            md5.update(block)
    return md5.hexdigest()
