"""`arkor.supervisor.supervise`: a failing role is restarted (bounded, with backoff, counted) and
the roles beside it keep running; over fakes that fail on cue."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
import trio
import trio.testing

from arkor.supervisor import ROLE_RESTARTS, Current, RoleFailed, supervise


class FakeRole:
    """Starts, reports its instance number, then fails whenever `crash` is set."""

    def __init__(self) -> None:
        self.starts = 0
        self.crash = trio.Event()
        self.started: dict[int, trio.Event] = defaultdict(trio.Event)

    async def __call__(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.starts += 1
        task_status.started(self.starts)
        self.started[self.starts].set()
        await self.crash.wait()
        self.crash = trio.Event()
        raise RuntimeError(f"instance {self.starts} crashed")


def restarts(role: str) -> float:
    return ROLE_RESTARTS.labels(role)._value.get()


async def test_a_failing_role_is_restarted_and_its_neighbour_keeps_running() -> None:
    failing, steady = FakeRole(), FakeRole()
    current = Current()
    before = restarts("fake-a")
    async with trio.open_nursery() as nursery:
        first = await nursery.start(lambda task_status: supervise(
            "fake-a", failing, on_started=lambda v: setattr(current, "target", v),
            first_backoff=0.01, task_status=task_status))
        await nursery.start(lambda task_status: supervise("fake-b", steady, task_status=task_status))
        assert first == 1 and current.target == 1
        for n in (2, 3):
            failing.crash.set()
            with trio.fail_after(5):
                await failing.started[n].wait()
            await trio.testing.wait_all_tasks_blocked()
            assert current.target == n  # the new instance is what `Current` forwards to
        assert steady.starts == 1  # never touched
        assert restarts("fake-a") == before + 2
        nursery.cancel_scope.cancel()


async def test_restarts_are_bounded() -> None:
    starts = 0

    async def crashing(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal starts
        starts += 1
        task_status.started()
        await trio.sleep(0.001)
        raise RuntimeError("crashed")

    with pytest.raises(RoleFailed, match="fake-c failed 3 times"), trio.fail_after(10):
        await supervise("fake-c", crashing, max_restarts=2, first_backoff=0.001)
    assert starts == 3


async def test_a_start_up_failure_is_raised_not_retried() -> None:
    async def broken(*, task_status: Any) -> None:
        raise OSError("address already in use")

    with pytest.raises(OSError, match="already in use"):
        await supervise("fake-d", broken, first_backoff=0.001)
