"""The floor reference: a hypercorn trio worker with a bare ASGI app and no storage behind it.

Why: every Arkor role is served by hypercorn's trio worker, so this is the most the stack allows on
one core (STACK-NOTES: about 0.47 ms of CPU per small request). Benchmarks start it in the same run
as Arkor and report Arkor's figures as ratios to it, so a slower or faster machine does not change
the verdict. It answers:

- ``GET <any>``: ``--size`` bytes (default 4 KiB) with a Content-Length, like an object GET;
- ``PUT <any>``: drains the body chunk by chunk (back-pressure kept, nothing buffered) and answers
  201 with a small JSON body, like an object PUT that stores nothing.

Run: ``python -m bench.floor --port 8199 [--size 4096]`` (a ready line is printed when listening).
Must not: import anything of Arkor's (it is the reference, not the subject).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve


def _response(status: int, body: bytes, content_type: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two ASGI messages of a whole response, built once and sent as they are."""
    head = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", content_type)],
    }
    return head, {"type": "http.response.body", "body": body}


def make_app(body: bytes) -> Any:
    get_head, get_body = _response(200, body, b"application/octet-stream")
    put_head, put_body = _response(201, b'{"stored":true}', b"application/json")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["method"] in ("PUT", "POST"):
            drained = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return
                drained += len(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            await send(put_head)
            await send(put_body)
            return
        while (await receive()).get("more_body", False):
            pass
        await send(get_head)
        await send(get_body)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="hypercorn trio worker + bare ASGI app (the floor)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args()
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.keep_alive_timeout = 75.0
    config.keep_alive_max_requests = 100_000
    config.accesslog = None
    print(f"floor listening on 127.0.0.1:{args.port}", flush=True)
    trio.run(serve, make_app(os.urandom(args.size)), config)


if __name__ == "__main__":
    main()
