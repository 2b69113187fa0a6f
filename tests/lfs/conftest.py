"""One real `arkor allinone` per module and mode (dev: anonymous loopback; prod: Basic auth)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lfs.gitlfs import require_git_lfs, start_allinone
from tests.procs import ArkorProcess, stopped_after


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArkorProcess]:
    require_git_lfs()
    yield from stopped_after(start_allinone(tmp_path_factory.mktemp("lfs-dev"), prod=False))


@pytest.fixture(scope="module")
def prod_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArkorProcess]:
    require_git_lfs()
    yield from stopped_after(start_allinone(tmp_path_factory.mktemp("lfs-prod"), prod=True))
