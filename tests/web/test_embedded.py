"""`arkor.embedded` (issue 10 item 8): a whole node inside this trio program, the SDK against it,
and its object API mounted under a prefix of another ASGI server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

import arkor
from arkor.config import HttpConfig
from arkor.web.serve import serve_app


async def host_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The embedding program's own routes."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"host"})


async def test_embedded_node_sdk_and_mounted_api(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with arkor.embedded(data_dir=tmp_path / "node") as node:
            assert node.s3_url and node.s3_url != node.url
            async with node.client() as client:
                await client.put("emb", "greeting.txt", b"hello from the SDK")
                assert await client.get("emb", "greeting.txt") == b"hello from the SDK"

            storage = node.asgi_app("/storage")

            async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
                if scope["type"] == "http" and scope["path"].startswith("/storage/"):
                    await storage(scope, receive, send)
                else:
                    await host_app(scope, receive, send)

            async with trio.open_nursery() as nursery:
                urls = await nursery.start(serve_app, app, HttpConfig(), "127.0.0.1:0")
                async with httpx.AsyncClient(base_url=urls[0]) as http:
                    assert (await http.get("/")).text == "host"
                    got = await http.get("/storage/v1/emb/greeting.txt")
                    assert got.status_code == 200 and got.content == b"hello from the SDK"
                    put = await http.put("/storage/v1/emb/mounted", content=b"through the mount")
                    assert put.status_code == 201, put.text
                nursery.cancel_scope.cancel()
            async with httpx.AsyncClient(base_url=node.url) as http:
                assert (await http.get("/v1/emb/mounted")).content == b"through the mount"
                s3 = await http.get(node.s3_url + "/")  # the S3 listener answers (S3 XML)
                assert s3.content.startswith(b"<?xml"), s3.text
