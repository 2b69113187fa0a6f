"""Every role is wired the same way (arkor.web.role.role_app): control routes on its QuartTrio app,
answered with the JSON error body, and a control answer to `Connection: close` closes at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.object.cluster import start_allinone
from tests.web.rawhttp import exchange


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    proc = start_allinone(tmp_path_factory.mktemp("roles"))
    try:
        cfg = yaml.safe_load(Path(proc.config_path).read_text())["allinone"]
        yield {"object": proc.port, "registry": cfg["registryPort"], "data": cfg["dataPorts"][0]}
    finally:
        proc.stop()


def test_control_routes_close_on_request(ports: dict[str, int]) -> None:
    """Quart's body reader used to keep these connections open until hypercorn's keep-alive
    timeout (5 s; the data server's /healthz on main)."""
    request = b"GET /healthz HTTP/1.1\r\nHost: arkor\r\nConnection: close\r\n\r\n"
    for role, port in ports.items():
        started = time.monotonic()
        got = exchange(port, request, timeout=10)
        assert got.statuses == [200] and got.closed, (role, got)
        assert time.monotonic() - started < 2.0, role


def test_every_role_answers_control_and_unknown_paths_alike(ports: dict[str, int]) -> None:
    with httpx.Client(timeout=10) as http:
        for role, port in ports.items():
            base = f"http://127.0.0.1:{port}"
            assert http.get(base + "/healthz").status_code == 200, role
            assert http.head(base + "/healthz").status_code == 200, role
            assert http.get(base + "/readyz").status_code in (200, 503), role
            assert http.get(base + "/metrics").text.startswith("#"), role
            missing = http.get(base + "/no/such/endpoint/at/all")
            assert missing.status_code == 404, role
            assert missing.json()["error"]["code"] == "not_found", role
        repair = http.get(f"http://127.0.0.1:{ports['data']}/repair")  # a control route of the data role
        assert repair.status_code == 200 and "repair_needed" in repair.json(), repair.text
