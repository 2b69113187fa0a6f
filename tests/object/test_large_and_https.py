"""A 2 GiB object through one PUT and one GET with the object server's memory bounded, and the
public API served over HTTPS with the seed's httpsCertFile / httpsKeyFile keys."""

from __future__ import annotations

import hashlib
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.object.cluster import start_allinone
from tests.procs import ArkorProcess, PeakRss, free_port, require_free_disk, write_config

MIB = 1024 * 1024
GIB = 1024 * MIB
BLOCK = bytes(range(256)) * 4096  # 1 MiB, and the content is position-dependent per block below


def blocks(total: int) -> Iterator[bytes]:
    for i in range(total // MIB):
        yield i.to_bytes(8, "little") + BLOCK[8:]


def test_two_gib_put_and_get_with_bounded_memory(tmp_path: Path) -> None:
    require_free_disk(tmp_path, 3 * 2 + 1)  # three replicas of 2 GiB, and headroom
    proc = start_allinone(tmp_path)
    try:
        expected = hashlib.md5()
        for block in blocks(2 * GIB):
            expected.update(block)
        peak = PeakRss(proc.pid or 0).start()
        with httpx.Client(timeout=300) as client:
            put = client.put(proc.url + "/v1/big/two-gib", content=blocks(2 * GIB),
                             headers={"content-length": str(2 * GIB)})
            assert put.status_code == 201, put.text
            assert put.json()["etag"] == expected.hexdigest() and put.json()["size"] == 2 * GIB
            got = hashlib.md5()
            size = 0
            with client.stream("GET", proc.url + "/v1/big/two-gib") as response:
                assert response.status_code == 200
                for chunk in response.iter_raw(MIB):
                    got.update(chunk)
                    size += len(chunk)
        rss = peak.stop()
        print(f"allinone peak RSS during a 2 GiB PUT and GET: {rss / MIB:.0f} MiB")
        assert size == 2 * GIB and got.hexdigest() == expected.hexdigest()
        # 8 MiB fragments, 4 in flight, 2 read ahead, three in-process data servers: far below 2 GiB.
        assert rss < 600 * MIB, f"peak RSS {rss / MIB:.0f} MiB"
    finally:
        proc.stop()


def make_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "arkor.crt", directory / "arkor.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def test_https_listen_mode_serves_the_api(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    ports = [free_port() for _ in range(5)]
    config = write_config(tmp_path / "https.yaml", {
        "run": {"runMode": "dev", "logPath": str(tmp_path / "logs")},
        # caFile: the roles call each other over https too, and must trust this self-signed cert.
        "http": {"listenMode": "https", "httpsCertFile": str(cert), "httpsKeyFile": str(key),
                 "caFile": str(cert)},
        "allinone": {"dataDir": str(tmp_path / "data"), "objectPort": ports[0],
                     "registryPort": ports[1], "dataPorts": ports[2:]},
    })
    proc = ArkorProcess("allinone", config, ports[0], log_path=tmp_path / "allinone.log")
    proc.url = f"https://127.0.0.1:{ports[0]}"
    proc.start(wait=0)
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=proc.url, verify=trust, timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, proc.tail_log()
                time.sleep(0.2)
            assert client.put("/v1/tls/hello", content=b"over tls").status_code == 201
            assert client.get("/v1/tls/hello").content == b"over tls"
        with httpx.Client(timeout=5) as plain:  # the port speaks TLS only
            try:
                refused = plain.get(f"http://127.0.0.1:{ports[0]}/healthz").status_code >= 400
            except httpx.HTTPError:
                refused = True
            assert refused
    finally:
        proc.stop()
