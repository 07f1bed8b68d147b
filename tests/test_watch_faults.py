"""
PolicyWatcher under faults: any bad file, and user code that raises anything.

Two fault classes, tested systematically on both backends and virtual time:

* the file is bad in any way (content, encoding, nesting, vanished, replaced by a
  directory, a named pipe or a device, no permission, huge): the last good policy stays,
  the problem is reported once, and the watcher picks up the next good file;
* user code raises, where (``on_error``, a subscriber, the ``load`` function) x what
  (an Exception, KeyboardInterrupt, SystemExit, a custom BaseException, a cancellation):
  an Exception is logged (or, from ``load``, becomes the rejection's cause) and the
  watcher goes on; anything else ends the watcher's task after waking every waiter, and
  leaves ``async with`` as the task group's exception. Nothing ever hangs.

The second class runs each scenario with :func:`throttlekit.testing.run` rather than the
pytest plugin, because asyncio re-raises a KeyboardInterrupt or SystemExit from a task out
of the event loop itself, which must be caught around the loop, not inside it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import anyio
import pytest

from throttlekit import (
    CallbackWarning,
    ConcurrencyPolicy,
    ConfigError,
    PolicyRejectedWarning,
    PolicyWatcher,
)
from throttlekit._policy._watch import MAX_POLICY_FILE_SIZE
from throttlekit.testing import run

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


def doc(global_number: int) -> str:
    return json.dumps({"loadConcurrency": {"globalConfig": global_number}})


# -- any bad file ---------------------------------------------------------------------------


def _deny(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path.write_text(doc(9))
    if os.geteuid() != 0:
        path.chmod(0)
        return
    real_open = os.open  # root reads anything: make the open fail as it would for a user

    def open_denied(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_denied)


def _huge(path: Path) -> None:
    with path.open("wb") as f:
        f.truncate(MAX_POLICY_FILE_SIZE + 1)  # sparse: nothing is really written


def _loop(path: Path) -> None:
    other = path.with_name("other.json")
    other.symlink_to(path)
    path.symlink_to(other)


BAD_FILES: dict[str, tuple[Any, str]] = {
    "deep nesting": (lambda p, _: p.write_text("[" * 100_000), "nested deeper than 100"),
    "deep object": (lambda p, _: p.write_text('{"a":' * 5000), "nested deeper than 100"),
    "invalid UTF-8": (lambda p, _: p.write_bytes(b'{"a": "\xff"}'), "not UTF-8"),
    "NaN": (
        lambda p, _: p.write_text('{"loadConcurrency": {"globalConfig": NaN}}'),
        "NaN is not valid JSON",
    ),
    "empty": (lambda p, _: p.write_text(""), "not valid JSON"),
    "not an object": (lambda p, _: p.write_text("[]"), "must be a JSON object"),
    "vanished": (lambda p, _: p.unlink(), "No such file or directory"),
    "a directory": (lambda p, _: (p.unlink(), p.mkdir()), "it is a directory"),
    "a named pipe": (lambda p, _: (p.unlink(), os.mkfifo(p)), "it is a named pipe"),
    "a device": (
        lambda p, _: (p.unlink(), p.symlink_to(os.devnull)),
        "it is a character device",
    ),
    "dangling link": (
        lambda p, _: (p.unlink(), p.symlink_to(p.with_name("gone"))),
        "No such file or directory",
    ),
    "link loop": (lambda p, _: (p.unlink(), _loop(p)), "Too many levels of symbolic links"),
    "permission denied": (lambda p, mp: _deny(p, mp), "Permission denied"),
    "huge": (lambda p, _: _huge(p), f"larger than {MAX_POLICY_FILE_SIZE} bytes"),
}


def _restore(path: Path, text: str) -> None:
    """Put a regular file back, whatever took its place."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        path.rmdir()
    elif path.exists():
        path.unlink()
    path.write_text(text)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", list(BAD_FILES))
async def test_any_bad_file_keeps_the_last_good_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Reported once with a clear reason, policy kept, and the next good file is taken."""
    if kind == "a named pipe" and not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    make_bad, fragment = BAD_FILES[kind]
    path = tmp_path / "cfg.json"
    path.write_text(doc(3))
    errors: list[ConfigError] = []
    # A blocking open() of a pipe cannot be cancelled: if the watcher ever blocked on one
    # again, this opens the other end every real second after 5, so the test fails, not hangs.
    done = threading.Event()
    rescue = threading.Thread(target=_open_writers, args=(path, done), daemon=True)
    rescue.start()
    with anyio.fail_after(60):
        async with PolicyWatcher(path, interval=1, on_error=errors.append) as watcher:
            make_bad(path, monkeypatch)
            await anyio.sleep(5.5)  # five polls of the same bad file
            assert watcher.policy.resolve({}).value == 3
            assert len(errors) == 1
            assert watcher.last_error is errors[0]
            assert fragment in str(errors[0])
            monkeypatch.undo()
            _restore(path, doc(4))
            await watcher.wait_for_change()
            assert watcher.policy.resolve({}).value == 4
            assert watcher.last_error is None
    done.set()
    assert watcher.statistics().rejections == 1


def _open_writers(path: Path, done: threading.Event) -> None:
    if done.wait(5.0):
        return
    while not done.wait(1.0):
        with contextlib.suppress(OSError):  # no reader blocked on the pipe: nothing to do
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["deep nesting", "a directory", "vanished"])
async def test_a_bad_file_at_start_uses_the_fallback(tmp_path: Path, kind: str) -> None:
    """With a fallback, even a file that is bad from the start never stops the watcher."""
    make_bad, fragment = BAD_FILES[kind]
    path = tmp_path / "cfg.json"
    path.write_text(doc(3))
    make_bad(path, None)
    fallback = ConcurrencyPolicy(global_number=1)
    with anyio.fail_after(60), pytest.warns(PolicyRejectedWarning, match=fragment):  # noqa: PT031
        async with PolicyWatcher(path, interval=1, fallback=fallback) as watcher:
            assert watcher.policy is fallback
            assert fragment in str(watcher.last_error)
            _restore(path, doc(6))
            assert (await watcher.wait_for_change()).resolve({}).value == 6


@pytest.mark.anyio
async def test_a_bad_file_at_start_without_fallback_is_the_config_error(tmp_path: Path) -> None:
    """Entering with a 100,000-deep file raises its ConfigError, not a RecursionError."""
    path = tmp_path / "cfg.json"
    path.write_text("[" * 100_000)
    with pytest.raises(ConfigError, match="nested deeper than 100 levels"):
        async with PolicyWatcher(path):
            pass  # pragma: no cover


# -- user code that raises anything ----------------------------------------------------------


class CustomBaseError(BaseException):
    """A BaseException of the user's own."""


WHERE = ["on_error", "subscriber", "load"]
WHAT = ["Exception", "KeyboardInterrupt", "SystemExit", "custom BaseException", "cancel scope"]
WHAT_ASYNCIO_ONLY = ["CancelledError"]

_MAKE: dict[str, Any] = {
    "Exception": lambda: RuntimeError("boom"),
    "KeyboardInterrupt": KeyboardInterrupt,
    "SystemExit": lambda: SystemExit(3),
    "custom BaseException": CustomBaseError,
    "CancelledError": lambda: anyio.get_cancelled_exc_class()(),
}


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


async def _scenario(where: str, what: str, path: Path, record: dict[str, Any]) -> None:
    """
    A watcher on ``path`` (integers), whose ``where`` raises ``what`` on the next file,
    a waiter in a task outside the watcher, and a body that goes on if it can.
    """
    holder: dict[str, anyio.CancelScope] = {}

    def fault() -> None:
        if what == "cancel scope":
            holder["scope"].cancel()  # user code cancelling the scope around the watcher
        else:
            raise _MAKE[what]()

    def load(data: bytes) -> int:
        if data == b"bad":
            raise ConfigError("bad on purpose")
        if data == b"trigger" and where == "load":
            fault()
        return int(data) if data != b"trigger" else 20

    def on_error(error: ConfigError) -> None:
        record.setdefault("on_error", []).append(error)
        if where == "on_error" and str(error) == "bad on purpose":
            fault()

    def subscriber(policy: int) -> None:
        record.setdefault("seen", []).append(policy)
        if where == "subscriber" and policy == 20:
            fault()

    watcher = PolicyWatcher(path, load=load, interval=1, on_error=on_error)
    record["watcher"] = watcher

    async def waiter() -> None:
        try:
            while True:
                record.setdefault("waited", []).append(await watcher.wait_for_change())
        except RuntimeError as exc:
            record["waiter"] = str(exc)

    with anyio.fail_after(600):
        async with anyio.create_task_group() as outer:
            with anyio.CancelScope() as scope:
                holder["scope"] = scope
                try:
                    async with watcher:
                        watcher.subscribe(subscriber)
                        outer.start_soon(waiter)
                        await anyio.sleep(0.5)
                        path.write_bytes(b"bad" if where == "on_error" else b"trigger")
                        await anyio.sleep(2)  # the poll at t=1 meets the fault
                        record["body went on"] = True
                        record["last_error"] = watcher.last_error
                        path.write_bytes(b"30")
                        record["alive"] = await watcher.wait_for_change()
                except anyio.get_cancelled_exc_class():
                    raise
                except BaseException as exc:
                    record["raised"] = exc
            record["scope cancelled"] = scope.cancelled_caught
        record["ended at"] = anyio.current_time()


@pytest.mark.parametrize("what", WHAT + WHAT_ASYNCIO_ONLY)
@pytest.mark.parametrize("where", WHERE)
def test_user_code_raising_anything(
    anyio_backend: tuple[str, dict[str, Any]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    where: str,
    what: str,
) -> None:
    """Exceptions are logged and the watcher goes on; the rest end it, waking everyone."""
    backend = anyio_backend[0]
    if what in WHAT_ASYNCIO_ONLY and backend != "asyncio":
        pytest.skip("trio.Cancelled cannot be raised by user code")
    path = tmp_path / "policy.txt"
    path.write_text("10")
    record: dict[str, Any] = {}
    escaped: BaseException | None = None
    # An Exception from on_error or a subscriber is a CallbackWarning (and logged).
    warned = what == "Exception" and where != "load"
    expect_warning = pytest.warns(CallbackWarning) if warned else contextlib.nullcontext()
    with caplog.at_level(logging.WARNING, logger="throttlekit.watch"), expect_warning as caught:
        try:
            run(_scenario, where, what, path, record, backend=backend)  # type: ignore[arg-type]
        except (KeyboardInterrupt, SystemExit) as exc:  # asyncio re-raises these from its loop
            escaped = exc
    if warned:
        assert caught is not None
        (warning,) = caught
        in_force = "the new policy is in force and " if where == "subscriber" else ""
        assert f"raised RuntimeError: boom; {in_force}the watcher goes on" in str(warning.message)
        assert warning.message.__cause__ is not None
    watcher: PolicyWatcher[int] = record["watcher"]

    # Whatever happened: the watcher's task has ended, and the waiter outside it was woken
    # (it was not left waiting for a change that cannot come).
    assert "ended at" in record or escaped is not None
    assert "stopped" in record.get("waiter", "") or escaped is not None
    with pytest.raises(RuntimeError, match="has stopped"):
        run(watcher.wait_for_change, backend=backend)  # type: ignore[arg-type]
    # Where the fault struck decides what is in force: a rejected file never replaces the
    # policy; a subscriber runs after the swap, so its policy is in force; a loader that
    # cancels a scope but returns has loaded the file.
    swapped = where == "subscriber" or (where == "load" and what == "cancel scope")
    expected_policy = 20 if swapped else 10

    if what == "Exception":
        assert escaped is None and "raised" not in record
        assert record["alive"] == 30  # the watcher went on and took the next good file
        if where == "load":
            error = record["last_error"]
            assert isinstance(error, ConfigError) and isinstance(error.__cause__, RuntimeError)
            assert "the loader failed: RuntimeError: boom" in str(error)
            assert record["on_error"] == [error]
        else:
            assert "boom" in caplog.text  # logged with its traceback
            assert "failed" in caplog.text
        assert record["seen"] == ([20, 30] if where == "subscriber" else [30])
        return

    assert "body went on" not in record  # the body was interrupted
    assert watcher.policy == expected_policy
    if what == "cancel scope":
        assert escaped is None and "raised" not in record
        assert record["scope cancelled"] is True
        return
    if what == "CancelledError":
        assert escaped is None  # a raw cancellation ends the task like a cancelled one
        return
    # KeyboardInterrupt, SystemExit, a custom BaseException: propagated, never swallowed.
    expected_type = _MAKE[what]().__class__
    raised = record.get("raised")
    seen = ([] if raised is None else _leaves(raised)) + ([] if escaped is None else [escaped])
    assert seen and all(isinstance(exc, expected_type) for exc in seen)
    if backend == "trio" or what == "custom BaseException":
        assert escaped is None
        assert isinstance(raised, BaseExceptionGroup)  # the task group's, never collapsed


@pytest.mark.parametrize("what", ["KeyboardInterrupt", "custom BaseException", "Exception"])
def test_on_error_raising_during_the_first_load(
    anyio_backend: tuple[str, dict[str, Any]], tmp_path: Path, what: str
) -> None:
    """On entering with a fallback, on_error runs in the caller's task: a BaseException
    comes out of ``async with`` as itself, an Exception is logged and the fallback used."""
    path = tmp_path / "missing.json"

    def on_error(_: ConfigError) -> None:
        raise _MAKE[what]()

    async def enter() -> object:
        with anyio.fail_after(60):
            async with PolicyWatcher(path, fallback=7, on_error=on_error) as watcher:
                return watcher.policy

    expected = _MAKE[what]().__class__
    if what == "Exception":
        with pytest.warns(CallbackWarning, match="the on_error callback .* raised RuntimeError"):
            assert run(enter, backend=anyio_backend[0]) == 7  # type: ignore[arg-type]
        return
    with pytest.raises(expected):
        run(enter, backend=anyio_backend[0])  # type: ignore[arg-type]


def test_check_without_a_loop_propagates_base_exceptions(tmp_path: Path) -> None:
    """The sans-loop step: the swap is done, a KeyboardInterrupt from a subscriber comes
    out of check(), and an Exception from on_error does not."""
    path = tmp_path / "cfg.json"
    path.write_text(doc(2))
    calls: list[object] = []

    def on_error(error: ConfigError) -> None:
        calls.append(error)
        raise RuntimeError("on_error broke")

    watcher = PolicyWatcher(path, on_error=on_error)
    watcher.check()
    watcher.subscribe(lambda _: (_ for _ in ()).throw(KeyboardInterrupt()))
    path.write_text(doc(5))
    with pytest.raises(KeyboardInterrupt):
        watcher.check()
    assert watcher.policy.resolve({}).value == 5
    path.write_text("{")
    with pytest.warns(CallbackWarning, match="on_error broke; the watcher goes on"):
        assert watcher.check() is False  # on_error raised RuntimeError: a warning, not raised
    assert len(calls) == 1
    assert watcher.policy.resolve({}).value == 5


@pytest.mark.anyio
@pytest.mark.parametrize("at", [0.0, 0.5, 1.0, 2.5])
async def test_cancelled_at_any_moment_then_entered_again(tmp_path: Path, at: float) -> None:
    """Cancelling the scope around the watcher at any moment (before, at and between polls,
    with a change pending) stops it cleanly; waiters are told; entering it again is refused,
    a new watcher starts over."""
    path = tmp_path / "cfg.json"
    path.write_text(doc(2))
    watcher = PolicyWatcher(path, interval=1)
    outcome: list[str] = []

    async def waiter() -> None:
        try:
            await watcher.wait_for_change()
            outcome.append("changed")
        except RuntimeError:
            outcome.append("stopped")

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:  # its exit waits for the waiter
            with anyio.move_on_after(at) as scope:
                async with watcher:
                    tg.start_soon(waiter)
                    path.write_text(doc(3) if at >= 2 else doc(2))
                    await anyio.sleep(10)
        assert scope.cancelled_caught
        # The waiter has ended: told of the change, or of the stop (at 0 the body never ran).
        assert outcome == {0.0: [], 0.5: ["stopped"], 1.0: ["stopped"], 2.5: ["changed"]}[at]
        with pytest.raises(RuntimeError, match="has stopped"):
            await watcher.wait_for_change()
        assert watcher.policy.resolve({}).value == (3 if at >= 2 else 2)
        path.write_text(doc(4))
        with pytest.raises(RuntimeError, match="PolicyWatcher was entered already"):
            async with watcher:  # entered once, as every primitive that owns tasks
                pass
        async with PolicyWatcher(path, interval=1) as again:  # to start over: a new one
            assert again.policy.resolve({}).value == 4


# -- problems are hard to miss without logging set up ---------------------------------------


def test_a_rejected_edit_warns_once_with_the_problem_as_its_cause(tmp_path: Path) -> None:
    """Without on_error, a rejected file is a PolicyRejectedWarning naming the file and the
    problem (the ConfigError is its cause), once per distinct content, the policy kept."""
    path = tmp_path / "cfg.json"
    path.write_text(doc(2))
    watcher = PolicyWatcher(path)
    watcher.check()
    path.write_text('{"loadConcurrency": {"globalConfig": "3"}}')
    with pytest.warns(PolicyRejectedWarning) as caught:
        polls = [watcher.check() for _ in range(3)]  # three polls of the same bad content
    assert polls == [False, False, False]
    (warning,) = caught
    assert warning.message.__cause__ is watcher.last_error
    assert str(warning.message) == (
        f"{path} rejected (keeping the last good policy): loadConcurrency.globalConfig: "
        "expected an integer, got the string '3'"
    )
    assert warning.filename == __file__  # it points at the caller of check()
    assert watcher.policy.resolve({}).value == 2


def test_on_error_takes_over_the_report_of_a_rejection(tmp_path: Path) -> None:
    """With on_error, a rejection is the callback's to report: no warning."""
    path = tmp_path / "cfg.json"
    path.write_text(doc(2))
    errors: list[ConfigError] = []
    watcher = PolicyWatcher(path, on_error=errors.append)
    watcher.check()
    path.write_text("{")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert watcher.check() is False
    assert errors == [watcher.last_error]


class CustomError(Exception):
    """An Exception of the user's own."""


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["on_error", "subscriber"])
@pytest.mark.parametrize(
    "error", [RuntimeError("boom"), CustomError("boom"), AttributeError("boom")], ids=type
)
async def test_a_callback_raising_an_exception_is_a_callback_warning(
    tmp_path: Path, where: str, error: Exception
) -> None:
    """An Exception from on_error or a subscriber is a CallbackWarning naming the callback
    and the error (kept as its cause); the other subscribers still get the policy and the
    watcher goes on to the next good file. (AttributeError: a subscriber calling a method
    that does not exist, as the old docstring example's limits.set_total did.)"""
    path = tmp_path / "cfg.json"
    path.write_text(doc(2))
    seen: list[int] = []

    def on_error(_: ConfigError) -> None:
        raise error

    def broken(_: ConcurrencyPolicy) -> None:
        raise error

    watcher = PolicyWatcher(path, interval=1, on_error=on_error if where == "on_error" else None)
    with anyio.fail_after(60):
        async with watcher:
            if where == "subscriber":
                watcher.subscribe(broken)
            watcher.subscribe(lambda policy: seen.append(policy.resolve({}).value))
            path.write_text("{" if where == "on_error" else doc(3))
            with pytest.warns(CallbackWarning) as caught:
                await anyio.sleep(1.5)
            path.write_text(doc(4))
            if where == "subscriber":
                with pytest.warns(CallbackWarning):
                    await watcher.wait_for_change()
            else:
                await watcher.wait_for_change()
    (warning,) = caught
    message = str(warning.message)
    assert f"{type(error).__name__}: boom" in message and message.endswith("goes on")
    assert (repr(broken) if where == "subscriber" else "the on_error callback") in message
    assert warning.message.__cause__ is error
    assert seen == ([3, 4] if where == "subscriber" else [4])


@pytest.mark.parametrize("category", [CallbackWarning, PolicyRejectedWarning])
def test_warnings_made_errors_raise_from_check_with_the_state_consistent(
    tmp_path: Path, category: type[Warning]
) -> None:
    """A warnings filter that makes them errors makes check() raise them, after every
    subscriber had the new policy (or the rejection was recorded): -W error works."""
    path = tmp_path / "cfg.json"
    path.write_text(doc(2))
    seen: list[int] = []
    watcher = PolicyWatcher(path)
    watcher.check()

    def broken(_: ConcurrencyPolicy) -> None:
        raise RuntimeError("boom")

    watcher.subscribe(broken)
    watcher.subscribe(lambda policy: seen.append(policy.resolve({}).value))
    path.write_text(doc(3) if category is CallbackWarning else "{")
    with warnings.catch_warnings():
        warnings.simplefilter("error", category)
        with pytest.raises(category):
            watcher.check()
    if category is CallbackWarning:
        assert (watcher.policy.resolve({}).value, seen) == (3, [3])
    else:
        assert (watcher.policy.resolve({}).value, seen) == (2, [])
        assert watcher.statistics().rejections == 1


def test_problems_reach_stderr_with_no_logging_set_up(tmp_path: Path) -> None:
    """In a fresh interpreter with Python's default warning filters and no logging set up,
    a rejected edit and a failing subscriber are printed on stderr."""
    path = tmp_path / "cfg.json"
    path.write_text(doc(2))
    script = f"""
import pathlib
from throttlekit import PolicyWatcher
path = pathlib.Path({str(path)!r})
watcher = PolicyWatcher(path)
watcher.check()
watcher.subscribe(lambda policy: policy.set_total(1))
path.write_text('{{"loadConcurrency": {{"globalConfig": 5}}}}')
watcher.check()
path.write_text("{{")
watcher.check()
print(watcher.policy.resolve({{}}).value)
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert (done.returncode, done.stdout) == (0, "5\n"), done.stderr
    assert "CallbackWarning" in done.stderr
    assert "raised AttributeError: 'ConcurrencyPolicy' object has no attribute 'set_total'" in (
        done.stderr
    )
    assert "PolicyRejectedWarning" in done.stderr
    assert "rejected (keeping the last good policy)" in done.stderr
