"""A real `arkor allinone` for the client tests: one per test module, each test in its own bucket."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import ArkorProcess, free_port, write_config


def start_allinone(root: Path) -> ArkorProcess:
    """An allinone on free loopback ports with all its data under `root`."""
    ports = [free_port() for _ in range(5)]
    config = write_config(root / "runtime.yaml", {"run": {"logPath": str(root / "log")}})
    proc = ArkorProcess(
        "allinone",
        config,
        ports[0],
        log_path=root / "allinone.log",
        overrides=[
            f"allinone.objectPort={ports[0]}",
            f"allinone.registryPort={ports[1]}",
            f"allinone.dataPorts=[{ports[2]},{ports[3]},{ports[4]}]",
            f"allinone.dataDir={root / 'data'}",
        ],
    )
    return proc.start(wait=60)


@pytest.fixture(scope="module")
def allinone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArkorProcess]:
    proc = start_allinone(tmp_path_factory.mktemp("allinone"))
    try:
        yield proc
    finally:
        proc.stop()


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
