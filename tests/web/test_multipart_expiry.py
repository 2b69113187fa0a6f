"""Multipart uploads never completed expire (`object.multipartExpiry`): the registry's reaper
aborts them and their parts' needles go through the durable deletion queue (issue 11)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from tests.object.cluster import start_allinone


def reclaimed(http: httpx.Client) -> float:
    text = http.get("/metrics").text
    match = re.search(r'^arkor_reclaimed_fragments_total\{reason="queue"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_idle_multipart_upload_expires_and_is_reclaimed(tmp_path: Path) -> None:
    proc = start_allinone(
        tmp_path, object={"fragmentSize": "64KiB", "multipartExpiry": "2s"},
        registry={"reaperInterval": "0.3s"},
    )
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as http:
            before = reclaimed(http)
            idle = http.post("/v1/mp/idle?uploads").json()["upload_id"]
            part = http.put(f"/v1/mp/idle?uploadId={idle}&partNumber=1", content=b"p" * 150_000)
            assert part.status_code == 200, part.text  # three 64 KiB fragments
            busy = http.post("/v1/mp/busy?uploads").json()["upload_id"]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                # `busy` keeps storing parts, so it is never idle for 2 s.
                assert http.put(f"/v1/mp/busy?uploadId={busy}&partNumber=1",
                                content=b"b").status_code == 200
                gone = http.get(f"/v1/mp/idle?uploadId={idle}").status_code == 404
                if gone and reclaimed(http) >= before + 3:
                    break
                time.sleep(0.3)
            listed = http.get(f"/v1/mp/idle?uploadId={idle}")
            assert listed.status_code == 404 and listed.json()["error"]["code"] == "no_such_upload"
            assert reclaimed(http) >= before + 3  # the part's needles deleted from the replicas
            assert http.get(f"/v1/mp/busy?uploadId={busy}").status_code == 200
            done = http.post(f"/v1/mp/busy?uploadId={busy}",
                             json={"parts": [{"part_number": 1, "etag": "92eb5ffee6ae2fec3ad71c777531578f"}]})
            assert done.status_code == 201, done.text
    finally:
        proc.stop()
