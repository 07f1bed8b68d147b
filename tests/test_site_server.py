"""The redis-server fixture: a missing binary skips outside CI and fails in CI."""

from __future__ import annotations

import shutil

import pytest

import _redis_server


@pytest.fixture
def no_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(_redis_server.os.path, "exists", lambda path: False)


@pytest.mark.usefixtures("no_binary")
def test_missing_server_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install redis-server"):
        _redis_server.redis_server_binary()


@pytest.mark.usefixtures("no_binary")
def test_missing_server_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install redis-server"):
        _redis_server.redis_server_binary()
