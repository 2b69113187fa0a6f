"""Fixtures for data server tests: a real `arkor data` process on a free port, signed requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from arkor.checksum import crc32c
from arkor.fileid import FileID
from arkor.security import SIGNATURE_HEADER, effective_secret, sign
from tests.procs import ArkorProcess, free_port, write_config

SECRET = "data-test-cluster-secret"


def data_config(tmp_path: Path, port: int, **data: Any) -> Path:
    config = {
        "run": {"logPath": str(tmp_path / "log")},
        "cluster": {"secret": SECRET},
        "data": {"port": port, "dir": str(tmp_path / "data"), "registry": "", **data},
    }
    return write_config(tmp_path / "runtime.yaml", config)


def start_data(tmp_path: Path, **data: Any) -> ArkorProcess:
    port = free_port()
    proc = ArkorProcess("data", data_config(tmp_path, port, **data), port, log_path=tmp_path / "data.log")
    return proc.start(wait=60)


@pytest.fixture
def data_server(tmp_path: Path) -> Iterator[ArkorProcess]:
    proc = start_data(tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


def signed(method: str, path: str) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign(effective_secret(SECRET), method, path)}


def put_headers(fid: FileID, data: bytes) -> dict[str, str]:
    return {**signed("PUT", f"/needles/{fid}"), "x-arkor-crc32c": str(crc32c(data))}


def put(client: httpx.Client, fid: FileID, data: bytes) -> httpx.Response:
    return client.put(f"/needles/{fid}", content=data, headers=put_headers(fid, data))


def delete(client: httpx.Client, fid: FileID) -> httpx.Response:
    return client.delete(f"/needles/{fid}", headers=signed("DELETE", f"/needles/{fid}"))


def payload(key: int, size: int) -> bytes:
    """Deterministic, key-dependent content (so a needle served for the wrong key is caught)."""
    seed = key.to_bytes(8, "little") * 8
    return (seed * (size // len(seed) + 1))[:size]
