"""One real `arkor allinone` with the S3 listener per test module, and clients pointed at it.

Credentials: ACCESS_KEY / SECRET_KEY are an `auth.users` entry; dev anonymous loopback stays on
(as on a developer's machine) unless a module asks otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.object.cluster import start_allinone
from tests.procs import ArkorProcess

ACCESS_KEY = "AKIAARKORTEST000001"
SECRET_KEY = "arkor-test-secret-key-0123456789abcdef"
REGION = "us-east-1"
VHOST_DOMAIN = "s3.arkor.test"  # virtual-hosted style: Host: <bucket>.s3.arkor.test


@dataclass
class S3Server:
    proc: ArkorProcess
    s3_url: str

    @property
    def v1_url(self) -> str:
        return self.proc.url


def start_s3(tmp: Path, **sections: dict[str, Any]) -> S3Server:
    sections.setdefault("auth", {}).setdefault(
        "users", [{"name": "tester", "accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]
    )
    sections.setdefault("object", {}).setdefault("fragmentSize", "1MiB")
    sections.setdefault("s3", {}).setdefault("domain", VHOST_DOMAIN)
    proc = start_allinone(tmp, **sections)
    return S3Server(proc, f"http://127.0.0.1:{proc.s3_port}")


@pytest.fixture(scope="module")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3(tmp_path_factory.mktemp("s3"))
    yield server
    server.proc.stop()
