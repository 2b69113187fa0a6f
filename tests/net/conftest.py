"""The net suite's bed: one for the package (built when a net test runs, gone after its last one).

Needs root, `ip`, `iptables` and `tc` (Makefile `system-deps` installs them). Elsewhere the tests
skip with the reason; `.ci/run` sets ARKOR_TEST_REQUIRE_NET=1, which makes that reason a failure.
The registry uses MariaDB + Redis of 127.0.0.1 (through relays in its namespace) when they answer,
as they must in CI (ARKOR_TEST_REQUIRE_SERVICES=1); otherwise SQLite + the in-process KV.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
import trio

from tests.chaos.cluster import backend_config, drop_backends
from tests.net.bed import Bed
from tests.net.load import Ledger
from tests.net.netns import can_create_namespaces

MYSQL_URL = os.environ.get("ARKOR_TEST_MYSQL_URL", "mysql://root:@127.0.0.1:3306/arkor_test")
REDIS_URL = os.environ.get("ARKOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(url: str) -> bool:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), timeout=1.0):
            return True
    except OSError:
        return False


def _services() -> tuple[str | None, str | None]:
    mysql = MYSQL_URL if _reachable(MYSQL_URL) else None
    redis = REDIS_URL if _reachable(REDIS_URL) else None
    if os.environ.get("ARKOR_TEST_REQUIRE_SERVICES") == "1" and not (mysql and redis):
        pytest.fail("MariaDB and Redis are required (ARKOR_TEST_REQUIRE_SERVICES=1)")
    return mysql, redis


@pytest.fixture(scope="package")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    reason = can_create_namespaces()
    if reason:
        if os.environ.get("ARKOR_TEST_REQUIRE_NET") == "1":
            pytest.fail(reason + "; required because ARKOR_TEST_REQUIRE_NET=1")
        pytest.skip(reason)
    mysql, redis = _services()
    unique = f"netbed{os.getpid()}"
    sql, kv, _ = backend_config(mysql, redis, unique)
    prefix = f"arkor-netbed:{unique}:"
    bed = Bed(tmp_path_factory.mktemp("netbed"), sql=sql, kv=kv, kv_prefix=prefix)
    try:
        bed.build()
        bed.start()

        async def healthy() -> float:
            async with bed.client() as client:
                return await bed.wait_healthy(client, 120)

        print(f"net bed up on {bed.backend} in {trio.run(healthy):.1f}s")
        yield bed
    finally:
        bed.close()
        trio.run(drop_backends, sql, kv, prefix)


@pytest.fixture(scope="package")
def ledger() -> Ledger:
    return Ledger()
