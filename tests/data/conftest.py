"""Fixtures for data server tests: a real `arkor data` process on a free port, signed requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from arkor.checksum import crc32c
from arkor.fileid import FileID
from arkor.security import ClusterAuth, signed_headers
from tests.procs import ArkorProcess, free_port, stopped_after, write_config

SECRET = "data-test-cluster-secret"
AUTH = ClusterAuth(SECRET.encode())  # signs whatever httpx sends (path, query, body digest)


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
    yield from stopped_after(start_data(tmp_path))


def signed(method: str, path: str, *, crc: int | None = None) -> dict[str, str]:
    """Signature headers for a body-less request, or a needle PUT signed over its CRC32C."""
    return signed_headers(SECRET.encode(), method, path, crc32c=crc)


def put_headers(fid: FileID, data: bytes, crc: int | None = None) -> dict[str, str]:
    crc = crc32c(data) if crc is None else crc
    return {**signed("PUT", f"/needles/{fid}", crc=crc), "x-arkor-crc32c": str(crc)}


def put(client: httpx.Client, fid: FileID, data: bytes) -> httpx.Response:
    return client.put(f"/needles/{fid}", content=data, headers=put_headers(fid, data))


def delete(client: httpx.Client, fid: FileID) -> httpx.Response:
    return client.delete(f"/needles/{fid}", headers=signed("DELETE", f"/needles/{fid}"))


def payload(key: int, size: int) -> bytes:
    """Deterministic, key-dependent content (so a needle served for the wrong key is caught)."""
    seed = key.to_bytes(8, "little") * 8
    return (seed * (size // len(seed) + 1))[:size]
