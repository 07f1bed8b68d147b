"""OwnedTaskGroup: the task group a primitive opens in __aenter__ and closes in __aexit__."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup, TaskStatus

from throttlekit._tasks import OwnedTaskGroup
from throttlekit.testing import run

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


class Owner:
    """A minimal primitive that owns one task, the way the watcher and the pool do."""

    def __init__(self, *, fail_start: BaseException | None = None) -> None:
        self.tasks = OwnedTaskGroup("Owner")
        self.fail_start = fail_start
        self.running = 0
        self.ended = 0

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.running += 1
        try:
            if self.fail_start is not None:
                raise self.fail_start
            task_status.started()
            await anyio.sleep_forever()
        finally:
            self.running -= 1
            self.ended += 1

    async def __aenter__(self) -> Owner:
        await self.tasks.open(lambda task_group: task_group.start(self.serve))
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self.tasks.close(*exc_info, cancel=True)


@pytest.mark.anyio
async def test_open_runs_tasks_until_close_cancels_them() -> None:
    """Between open and close the tasks run; close(cancel=True) ends them, nothing is left."""
    owner = Owner()
    with anyio.fail_after(5):
        async with owner:
            assert owner.tasks.is_open and owner.running == 1
            assert isinstance(owner.tasks.task_group, TaskGroup)
            await anyio.sleep(1)
    assert (owner.tasks.is_open, owner.running, owner.ended) == (False, 0, 1)
    with pytest.raises(RuntimeError, match="this Owner is not running"):
        owner.tasks.task_group  # noqa: B018 - the property raises
    with pytest.raises(RuntimeError, match="this Owner is not running"):
        await owner.tasks.close(None, None, None)


@pytest.mark.anyio
async def test_close_without_cancel_waits_for_the_tasks() -> None:
    """close() without cancel waits for the group's tasks, as async with does."""
    tasks = OwnedTaskGroup("Owner")
    done: list[float] = []

    async def work() -> None:
        await anyio.sleep(3)
        done.append(anyio.current_time())

    with anyio.fail_after(10):
        start = anyio.current_time()
        task_group = await tasks.open()
        task_group.start_soon(work)
        await tasks.close(None, None, None)
    assert done == [start + 3]


@pytest.mark.anyio
async def test_entered_once_by_default_naming_the_class() -> None:
    """The lifecycle rule: a primitive that owns tasks is entered once; again is a
    RuntimeError naming the class, while running and after it was left."""
    owner = Owner()
    with anyio.fail_after(5):
        async with owner:
            with pytest.raises(RuntimeError, match="this Owner is already running"):
                await owner.tasks.open()
        with pytest.raises(
            RuntimeError, match="this Owner was entered already: it can be entered only once"
        ):
            async with owner:
                pass
    assert owner.ended == 1


class Boom(BaseException):
    """A BaseException of the user's own."""


@pytest.mark.parametrize(
    "error",
    [ValueError("bad"), KeyboardInterrupt(), SystemExit(3), Boom(), "cancelled"],
    ids=["Exception", "KeyboardInterrupt", "SystemExit", "custom BaseException", "cancel"],
)
def test_a_failing_start_closes_the_group_and_propagates(
    anyio_backend: tuple[str, dict[str, Any]], error: BaseException | str
) -> None:
    """When the first task fails to start (raising anything, or cancelled), the group is
    left, nothing keeps running and the failure propagates out of the owner's async with,
    never swallowed; the owner is not open. (Through testing.run, since asyncio re-raises a
    KeyboardInterrupt or SystemExit from its loop as well.)"""
    owner = Owner(fail_start=None if error == "cancelled" else error)  # type: ignore[arg-type]
    outcome: dict[str, Any] = {}

    async def main() -> None:
        with anyio.fail_after(5):
            with anyio.CancelScope() as scope:
                if error == "cancelled":
                    scope.cancel()  # cancelled while open() awaits the start
                try:
                    async with owner:
                        outcome["body ran"] = True
                except BaseException as exc:
                    outcome["raised"] = exc
                    raise
            outcome["cancel caught"] = scope.cancelled_caught

    escaped: BaseException | None = None
    try:
        run(main, backend=anyio_backend[0])  # type: ignore[arg-type]
    except BaseException as exc:  # what escaped is checked below
        escaped = exc
    assert "body ran" not in outcome
    assert (owner.tasks.is_open, owner.running) == (False, 0)
    if error == "cancelled":
        assert (outcome["cancel caught"], escaped) == (True, None)
        return
    assert owner.ended == 1
    seen = [*leaves(outcome.get("raised")), *leaves(escaped)]
    assert any(exc is error for exc in seen)
    if anyio_backend[0] == "trio" or not isinstance(error, KeyboardInterrupt | SystemExit):
        assert leaves(escaped) == [error]  # out of async with and run(), as itself


def leaves(exc: BaseException | None) -> list[BaseException]:
    """The exceptions in ``exc``, groups opened."""
    if exc is None:
        return []
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


@pytest.mark.anyio
@pytest.mark.parametrize("at", [0.0, 0.5, 2.0])
async def test_cancelled_around_the_owner_at_any_moment(at: float) -> None:
    """Cancelling the scope around the owner, during open (start still waiting) or inside
    the body, leaves nothing running and the group closed."""
    started = anyio.Event()

    async def slow_start(task_group: TaskGroup) -> None:
        task_group.start_soon(anyio.sleep_forever)
        await anyio.sleep(1)  # a start that takes a second
        started.set()

    class SlowOwner:
        tasks = OwnedTaskGroup("SlowOwner")

        async def __aenter__(self) -> None:
            await self.tasks.open(slow_start)

        async def __aexit__(self, *exc_info: Any) -> bool | None:
            return await self.tasks.close(*exc_info, cancel=True)

    owner = SlowOwner()
    with anyio.fail_after(5):
        with anyio.move_on_after(at) as scope:
            async with owner:
                await anyio.sleep(10)
    assert scope.cancelled_caught
    assert started.is_set() == (at > 1)
    assert not owner.tasks.is_open
