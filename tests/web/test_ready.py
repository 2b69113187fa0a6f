"""Ready means writable (issue 11): after a restart on existing data `arkor allinone ready` is
logged only once a write succeeds, a PUT right after that line is stored, and a PUT that arrives
while the group is still resyncing waits for it (`object.writableWait`) instead of failing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from tests.object.cluster import start_allinone


def wait_for_line(path: Path, text: str, start: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace")[start:]:
            return
        time.sleep(0.02)
    raise TimeoutError(f"{text!r} not logged:\n{path.read_text(errors='replace')[start:][-3000:]}")


def test_put_right_after_ready_on_restart_with_data(tmp_path: Path) -> None:
    proc = start_allinone(tmp_path, object={"fragmentSize": "64KiB", "writableWait": "30s"})
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as http:
            for i in range(20):
                assert http.put(f"/v1/ready/old{i}", content=os.urandom(100_000)).status_code == 201
        for _ in range(2):
            proc.kill()  # a crash: the replicas resync on start
            offset = len(proc.log_path.read_text(errors="replace"))
            proc.start(wait=0)
            proc.wait_ready(60)  # the object server answers; the group may still be resyncing
            early = httpx.put(proc.url + "/v1/ready/early", content=b"waits", timeout=30)
            assert early.status_code == 201, early.text  # waited for the group (writableWait)
            wait_for_line(proc.log_path, "arkor allinone ready", offset)
            with httpx.Client(base_url=proc.url, timeout=30) as http:
                assert http.get("/readyz").status_code == 200
                put = http.put("/v1/ready/new", content=b"written at once")
                assert put.status_code == 201, put.text
                assert http.get("/v1/ready/old7").status_code == 200
    finally:
        proc.stop()
