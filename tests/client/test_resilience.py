"""Cancellation and server restarts: nothing half-done is left, and retries carry transfers through."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from arkor.client import ArkorClient, ConnectionFailed
from tests.client.conftest import pattern
from tests.object.cluster import start_allinone

KiB, MiB = 1024, 1024 * 1024


async def test_cancel_mid_upload_leaves_no_object_and_no_open_upload(
    allinone: object, bucket: str
) -> None:
    url = allinone.url  # type: ignore[attr-defined]
    parts_sent = trio.Event()
    sent: list[int] = []

    def progress(n: int) -> None:
        sent.append(n)
        if len(sent) >= 3:
            parts_sent.set()

    async def endless() -> AsyncIterator[bytes]:
        piece = pattern(256 * KiB, seed=1)
        while True:  # never ends: only cancellation stops this upload
            yield piece
            await trio.sleep(0.01)

    async with ArkorClient(url, part_size=256 * KiB, concurrency=3) as arkor:
        await arkor.put(bucket, "other", b"keeps the bucket listable")
        async with trio.open_nursery() as nursery:

            async def upload() -> None:
                await arkor.put(bucket, "cancelled", endless(), progress=progress)

            nursery.start_soon(upload)
            with trio.fail_after(120):
                await parts_sent.wait()
            # The server holds an open multipart upload with parts now.
            assert [u["key"] for u in await arkor.list_uploads(bucket)] == ["cancelled"]
            nursery.cancel_scope.cancel()
        assert len(sent) >= 3
        assert not await arkor.exists(bucket, "cancelled")
        assert await arkor.list_uploads(bucket) == []
        assert [e.key async for e in arkor.list(bucket)] == ["other"]


@pytest.mark.slow
async def test_transfers_retry_across_a_killed_and_restarted_server(
    tmp_path: Path, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="arkor.client.http")
    server = await trio.to_thread.run_sync(start_allinone, tmp_path / "cluster")
    try:
        data = pattern(6 * MiB + 5, seed=2)
        halfway = trio.Event()
        resume = trio.Event()

        async def stalls_after_two_parts() -> AsyncIterator[bytes]:
            for index, start in enumerate(range(0, len(data), 512 * KiB)):
                if index == 2:
                    halfway.set()
                    await resume.wait()
                yield data[start : start + 512 * KiB]

        async with ArkorClient(server.url, part_size=512 * KiB, concurrency=2, retries=40,
                               backoff_base=0.1, backoff_cap=1.0, timeout=30) as arkor:
            await arkor.put(bucket, "before", b"x" * 1000)
            async with trio.open_nursery() as nursery:
                result: dict[str, object] = {}

                async def upload() -> None:
                    result["info"] = await arkor.put(bucket, "across-restart", stalls_after_two_parts())

                nursery.start_soon(upload)
                with trio.fail_after(120):
                    await halfway.wait()
                await trio.to_thread.run_sync(server.kill)
                resume.set()  # the next parts now hit a dead server and must be retried

                async def read_while_down() -> None:
                    result["read"] = await arkor.get(bucket, "before")

                nursery.start_soon(read_while_down)
                await trio.sleep(1.0)
                await trio.to_thread.run_sync(lambda: server.start(wait=60))
            assert result["read"] == b"x" * 1000
            assert any("retrying" in r.getMessage() for r in caplog.records)  # it did fail over
            assert await arkor.get(bucket, "across-restart") == data
            assert await arkor.list_uploads(bucket) == []
    finally:
        await trio.to_thread.run_sync(server.stop)


async def test_unreachable_server_fails_with_connection_error_after_retries() -> None:
    from tests.procs import free_port

    async with ArkorClient(f"http://127.0.0.1:{free_port()}", retries=3, backoff_base=0.01) as arkor:
        with pytest.raises(ConnectionFailed) as exc:
            await arkor.head("b", "k")
    assert exc.value.code == "connection_failed"


async def test_cancelled_download_leaves_no_file(allinone: object, bucket: str, tmp_path: Path) -> None:
    url = allinone.url  # type: ignore[attr-defined]
    async with ArkorClient(url, part_size=256 * KiB, concurrency=2) as arkor:
        await arkor.put(bucket, "obj", pattern(4 * MiB, seed=3))
        for concurrency in (1, 2):
            with trio.CancelScope() as scope:
                # cancelled as soon as the first bytes are written, from inside the transfer
                await arkor.get_file(bucket, "obj", tmp_path / "out", concurrency=concurrency,
                                     progress=lambda n: scope.cancel())
            assert scope.cancelled_caught
            assert await trio.to_thread.run_sync(lambda: list(tmp_path.iterdir())) == []
