"""No built-in secret (issue 11 item 2): a role run as its own process refuses to start without
`cluster.secret`, with one line naming the key; allinone makes up a random one (tested over HTTP
in test_auth_http.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.procs import free_port, run_cli, write_config


@pytest.mark.parametrize("role", ["registry", "data", "object"])
def test_a_separate_role_needs_the_cluster_secret(tmp_path: Path, role: str) -> None:
    config = write_config(tmp_path / "c.yaml", {
        "run": {"runMode": "dev", "logPath": str(tmp_path / "log")},
        "registry": {"port": free_port(), "dataDir": str(tmp_path / "r")},
        "data": {"port": free_port(), "dir": str(tmp_path / "d"), "registry": ""},
        "object": {"port": free_port(), "registry": "http://127.0.0.1:9"},
    })
    done = run_cli(role, "--config", str(config), timeout=30)
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert stderr.startswith("arkor: config error: cluster.secret:") and stderr.count("\n") == 1, stderr
