"""Credentials from arguments, environment and the client config file against a server that requires
them; the blocking `SyncClient` for scripts without trio."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from arkor.client import ArkorClient
from arkor.client.sync import SyncClient
from arkor.errors import Unauthorized
from tests.client.conftest import pattern
from tests.object.cluster import start_allinone
from tests.procs import ArkorProcess, run_cli, stopped_after

ACCESS, SECRET = "ci-user", "ci-secret-0123456789"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArkorProcess]:
    auth = {"anonymousLoopback": False, "users": [{"name": "ci", "accessKey": ACCESS, "secretKey": SECRET}]}
    yield from stopped_after(start_allinone(tmp_path_factory.mktemp("secured"), auth=auth))


async def test_sdk_needs_and_uses_credentials(secured: ArkorProcess, bucket: str) -> None:
    async with ArkorClient(secured.url, retries=1) as anonymous:
        with pytest.raises(Unauthorized) as exc:
            await anonymous.put(bucket, "k", b"v")
        assert exc.value.code == "unauthorized"
    async with ArkorClient(secured.url, access_key=ACCESS, secret_key="wrong", retries=1) as wrong:
        with pytest.raises(Unauthorized):
            await wrong.head(bucket, "k")
    async with ArkorClient(secured.url, access_key=ACCESS, secret_key=SECRET) as basic:
        await basic.put(bucket, "k", b"v")
    async with ArkorClient(secured.url, secret_key=SECRET) as bearer:
        assert await bearer.get(bucket, "k") == b"v"


def test_cli_credentials_from_environment_and_config_file(
    secured: ArkorProcess, bucket: str, tmp_path: Path
) -> None:
    no_file = str(tmp_path / "absent.yaml")
    denied = run_cli("cp", "-", f"arkor://{bucket}/k", input=b"v",
                     env={"ARKOR_ENDPOINT": secured.url, "ARKOR_CLIENT_CONFIG": no_file})
    assert denied.returncode == 1 and b"unauthorized" in denied.stderr
    env = {"ARKOR_ENDPOINT": secured.url, "ARKOR_ACCESS_KEY": ACCESS, "ARKOR_SECRET_KEY": SECRET,
           "ARKOR_CLIENT_CONFIG": no_file}
    assert run_cli("cp", "-", f"arkor://{bucket}/k", input=b"v", env=env).returncode == 0
    cfg = tmp_path / "client.yaml"
    cfg.write_text(f"endpoint: {secured.url}\naccessKey: {ACCESS}\nsecretKey: {SECRET}\n")
    got = run_cli("cp", f"arkor://{bucket}/k", "-", env={"ARKOR_CLIENT_CONFIG": str(cfg),
                                                          "ARKOR_ENDPOINT": ""})
    assert got.returncode == 0 and got.stdout == b"v", got.stderr


def test_sync_client_round_trip(secured: ArkorProcess, bucket: str, tmp_path: Path) -> None:
    data = pattern(2 * 1024 * 1024 + 1, seed=12)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    with SyncClient(secured.url, access_key=ACCESS, secret_key=SECRET, part_size=512 * 1024,
                    multipart_threshold=1024 * 1024) as arkor:
        info = arkor.put_file(bucket, "f", src)
        assert info.etag.endswith("-5")
        arkor.put(bucket, "b", b"bytes")
        assert arkor.get(bucket, "b") == b"bytes"
        arkor.get_file(bucket, "f", dst, concurrency=3)
        assert hashlib.md5(dst.read_bytes()).digest() == hashlib.md5(data).digest()
        assert [e.key for e in arkor.list(bucket, page_size=1)] == ["b", "f"]
        assert arkor.head(bucket, "b").size == 5
        arkor.delete(bucket, "b")
        assert not arkor.exists(bucket, "b")
