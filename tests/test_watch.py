"""PolicyWatcher: live reload on virtual time, with real temporary files."""

from __future__ import annotations

import json
import logging
import os
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

pytestmark = pytest.mark.anyio


def doc(global_number: int) -> str:
    return json.dumps({"loadConcurrency": {"globalConfig": global_number}})


class ConfigMapMount:
    """A directory laid out like a mounted ConfigMap: file -> ..data/file, ..data -> ..<version>."""

    def __init__(self, root: Path, name: str = "node-agent-config.json") -> None:
        self.root, self.name, self.version = root, name, 0
        self.path = root / name

    def publish(self, text: str) -> None:
        self.version += 1
        version_dir = self.root / f"..2026_11_21_{self.version}"
        version_dir.mkdir()
        (version_dir / self.name).write_text(text)
        tmp = self.root / "..data_tmp"
        os.symlink(version_dir.name, tmp)
        os.replace(tmp, self.root / "..data")  # the atomic swap kubelet does
        if not self.path.is_symlink():
            os.symlink(f"..data/{self.name}", self.path)


async def test_reloads_when_a_configmap_mount_swaps(tmp_path: Path) -> None:
    """A new document published by symlink swap is in force after the next poll."""
    mount = ConfigMapMount(tmp_path)
    mount.publish(doc(2))
    seen: list[int] = []
    async with PolicyWatcher(mount.path, interval=5) as watcher:
        watcher.subscribe(lambda p: seen.append(p.resolve({}).value))
        assert watcher.policy.resolve({}).value == 2
        start = anyio.current_time()
        mount.publish(doc(7))
        await watcher.wait_for_change()
        assert anyio.current_time() - start == pytest.approx(5)
        assert watcher.policy.resolve({}).value == 7
    assert seen == [7]
    stats = watcher.statistics()
    assert (stats.reloads, stats.rejections, stats.last_error) == (2, 0, None)


async def test_bad_document_keeps_last_good_policy_and_reports_once(tmp_path: Path) -> None:
    """A broken update is rejected, reported once, and the last good policy stays."""
    path = tmp_path / "cfg.json"
    path.write_text(doc(3))
    errors: list[ConfigError] = []
    async with PolicyWatcher(path, interval=1, on_error=errors.append) as watcher:
        path.write_text('{"loadConcurrency": {"globalConfig": "4"}}')
        await anyio.sleep(5.5)  # five polls of the same bad content
        assert watcher.policy.resolve({}).value == 3
        assert len(errors) == 1
        assert errors[0].problems[0].path == "loadConcurrency.globalConfig"
        assert watcher.last_error is errors[0]
        path.write_text(doc(4))
        await watcher.wait_for_change()
        assert watcher.policy.resolve({}).value == 4
        assert watcher.last_error is None
    assert watcher.statistics().rejections == 1


async def test_missing_file_is_reported_and_recovers(tmp_path: Path) -> None:
    """A file that disappears keeps the last good policy; when it returns it is read again."""
    path = tmp_path / "cfg.json"
    path.write_text(doc(3))
    async with PolicyWatcher(path, interval=1) as watcher:
        path.unlink()
        with pytest.warns(PolicyRejectedWarning) as caught:
            await anyio.sleep(3.5)
        assert len(caught) == 1  # reported once, not at every poll
        assert f"{path} rejected (keeping the last good policy): cannot read" in str(
            caught[0].message
        )
        assert watcher.last_error is not None
        assert "cannot read" in str(watcher.last_error)
        assert watcher.statistics().rejections == 1
        path.write_text(doc(5))
        await watcher.wait_for_change()
        assert watcher.policy.resolve({}).value == 5


async def test_strict_watcher_rejects_warnings(tmp_path: Path) -> None:
    """strict=True rejects a document that lenient loading would accept with warnings."""
    path = tmp_path / "cfg.json"
    path.write_text(doc(3))
    async with PolicyWatcher(path, interval=1, strict=True) as watcher:
        path.write_text(doc(0))
        with pytest.warns(PolicyRejectedWarning, match="global number 0 is invalid"):
            await anyio.sleep(1.5)
        assert watcher.policy.resolve({}).value == 3
        assert watcher.last_error is not None


async def test_first_load_failure_raises_without_fallback(tmp_path: Path) -> None:
    """Entering with an unusable file raises its ConfigError; nothing keeps running."""
    path = tmp_path / "cfg.json"
    path.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        async with PolicyWatcher(path):
            pass  # pragma: no cover


async def test_first_load_failure_uses_fallback(tmp_path: Path) -> None:
    """With a fallback, an unusable file at start gives the fallback until it is fixed."""
    path = tmp_path / "cfg.json"
    fallback = ConcurrencyPolicy(global_number=1)
    with pytest.warns(PolicyRejectedWarning, match="using the fallback policy"):  # noqa: PT031
        async with PolicyWatcher(path, interval=2, fallback=fallback) as watcher:
            assert watcher.policy is fallback
            assert watcher.last_error is not None
            path.write_text(doc(6))
            assert (await watcher.wait_for_change()).resolve({}).value == 6


async def test_custom_loader_and_failing_subscriber(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Any loader works; a subscriber that raises is logged and does not stop the others."""
    path = tmp_path / "rate.txt"
    path.write_text("10")

    def load(data: bytes) -> int:
        try:
            return int(data)
        except ValueError:
            raise ConfigError(f"not a number: {data!r}") from None

    got: list[int] = []
    async with PolicyWatcher(path, load=load, interval=1) as watcher:
        assert watcher.policy == 10

        def broken(_: Any) -> None:
            raise RuntimeError("boom")

        watcher.subscribe(broken)
        unsubscribe = watcher.subscribe(got.append)
        with caplog.at_level(logging.ERROR, logger="throttlekit.watch"):
            path.write_text("20")
            with pytest.warns(CallbackWarning) as caught:
                await watcher.wait_for_change()
        assert "boom" in caplog.text
        (warning,) = caught
        assert "the policy subscriber" in str(warning.message)
        assert "raised RuntimeError: boom; the new policy is in force" in str(warning.message)
        assert isinstance(warning.message.__cause__, RuntimeError)
        unsubscribe()
        path.write_text("30")
        with pytest.warns(CallbackWarning, match="boom"):  # broken is still subscribed
            await watcher.wait_for_change()
    assert got == [20]


async def test_unchanged_file_is_not_reloaded(tmp_path: Path) -> None:
    """Polling an unchanged file does not rebuild the policy or notify anyone."""
    path = tmp_path / "cfg.json"
    path.write_text(doc(2))
    async with PolicyWatcher(path, interval=1) as watcher:
        calls: list[object] = []
        watcher.subscribe(calls.append)
        await anyio.sleep(10.5)
    stats = watcher.statistics()
    assert (stats.checks, stats.reloads, calls) == (11, 1, [])


async def test_run_in_own_task_group(tmp_path: Path) -> None:
    """run() can be started in the caller's task group and stops when cancelled."""
    path = tmp_path / "cfg.json"
    path.write_text(doc(2))
    watcher = PolicyWatcher(path, interval=1)
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        assert watcher.policy.resolve({}).value == 2
        tg.cancel_scope.cancel()


def test_check_is_usable_without_an_event_loop(tmp_path: Path) -> None:
    """check() is the whole polling step, synchronous."""
    path = tmp_path / "cfg.json"
    path.write_text(doc(2))
    watcher = PolicyWatcher(path)
    with pytest.raises(RuntimeError, match="no policy loaded yet"):
        _ = watcher.policy
    assert watcher.check() is True
    assert watcher.check() is False
    assert watcher.policy.resolve({}).value == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"interval": 0}, ValueError, "interval must be > 0 seconds and finite"),
        ({"interval": float("nan")}, ValueError, "interval must be > 0 seconds and finite"),
        ({"interval": "1"}, TypeError, "interval must be seconds or a timedelta, got str"),
        ({"load": int, "strict": True}, ValueError, "strict= applies to the default"),
    ],
)
def test_constructor_validates(
    kwargs: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    """Bad arguments name themselves."""
    with pytest.raises(error, match=fragment):
        PolicyWatcher("x", **kwargs)


def test_subscribe_needs_a_callable() -> None:
    """subscribe() refuses non-callables at once."""
    with pytest.raises(TypeError, match="callback must be callable"):
        PolicyWatcher("x").subscribe(3)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_entering_a_running_watcher_is_refused(tmp_path: Path) -> None:
    """A watcher is entered once: entering it while it runs is a RuntimeError naming the
    class, and the running one goes on; once left, entering it again is refused too."""
    path = tmp_path / "cfg.json"
    path.write_text(doc(2))
    watcher = PolicyWatcher(path, interval=1)
    with anyio.fail_after(60):
        async with watcher:
            with pytest.raises(RuntimeError, match="this PolicyWatcher is already running"):
                async with watcher:
                    pytest.fail("entered twice")  # pragma: no cover
            path.write_text(doc(3))
            assert (await watcher.wait_for_change()).resolve({}).value == 3
        with pytest.raises(RuntimeError, match="PolicyWatcher was entered already"):
            async with watcher:
                pytest.fail("entered again")  # pragma: no cover
