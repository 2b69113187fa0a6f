"""Shared fixtures: real MariaDB / Redis when available (required in CI), scratch directories.

`ARKOR_TEST_MYSQL_URL` (``mysql://user:password@host:port/database``) and `ARKOR_TEST_REDIS_URL`
(``redis://host:port/db``) name the servers; `.ci/run` sets them and `ARKOR_TEST_REQUIRE_SERVICES=1`,
which turns "server not reachable" from a skip into a failure. Locally the defaults are the
machine's own 127.0.0.1:3306 (root, no password) and 127.0.0.1:6379.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

DEFAULT_MYSQL_URL = "mysql://root:@127.0.0.1:3306/arkor_test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _service_or_skip(env_name: str, default: str, what: str) -> str:
    url = os.environ.get(env_name, default)
    parsed = urlparse(url)
    if not _reachable(parsed.hostname or "127.0.0.1", parsed.port or 0):
        message = f"{what} not reachable at {parsed.hostname}:{parsed.port} (set {env_name})"
        if os.environ.get("ARKOR_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(message + "; required because ARKOR_TEST_REQUIRE_SERVICES=1")
        pytest.skip(message)
    return url


@pytest.fixture
def mysql_url() -> str:
    """Base URL of a reachable MariaDB/MySQL; tests create their own uniquely named database."""
    return _service_or_skip("ARKOR_TEST_MYSQL_URL", DEFAULT_MYSQL_URL, "MariaDB/MySQL")


@pytest.fixture
def redis_url() -> str:
    return _service_or_skip("ARKOR_TEST_REDIS_URL", DEFAULT_REDIS_URL, "Redis")


@pytest.fixture
def unique_name() -> Iterator[str]:
    """A short unique name for databases, key prefixes and buckets of one test."""
    yield "t" + uuid.uuid4().hex[:12]


def pytest_report_header() -> str:
    """Say how much disk the run starts with: a data server refuses writes (507) once free space
    falls below its reserve, so a nearly full disk shows up as many unrelated failures."""
    scratch = tempfile.gettempdir()
    return f"arkor: {shutil.disk_usage(scratch).free / 1024**3:.1f} GiB free in {scratch}"

