"""
A real redis-server for tests: on a Unix socket in a temporary directory (no TCP port,
so no clashes), persistence off, stopped at the end whatever happens.

Outside CI a missing ``redis-server`` skips the tests that need it, with a reason that
names the Debian package; in CI (``CI=true``) it is a failure. The fixture's server is
the test's own process: it may be paused (SIGSTOP), resumed, killed and restarted empty.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

STARTUP = 10.0  # real seconds a server may take to accept connections


def redis_server_binary() -> str:
    """The redis-server to run, or skip (fail in CI) naming the package to install."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if found is None:
        reason = "redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


class RedisServer:
    """One redis-server child process on a Unix socket; restartable on the same path."""

    def __init__(self, directory: Path) -> None:
        self.binary = redis_server_binary()
        self.directory = directory
        self.socket = str(directory / "redis.sock")
        self.process: subprocess.Popen[bytes] | None = None
        self.clients: list[Any] = []

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", "0",
                "--unixsocket", self.socket,
                "--unixsocketperm", "700",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--daemonize", "no",
                "--loglevel", "warning",
                "--logfile", str(self.directory / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + STARTUP
        while not self.ping():
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"redis-server exited with {self.process.returncode}: {log}")
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server did not answer within {STARTUP} s")
            time.sleep(0.01)

    def ping(self) -> bool:
        """Whether the server answers PING now (a raw socket: no client library needed)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(self.socket)
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the server and reap it: everything it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=STARTUP)

    def restart_empty(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(timeout=STARTUP)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STARTUP)

    def client(self) -> Any:
        """A redis-py client for the test's own checks (closed with the fixture)."""
        import redis

        client = redis.Redis(unix_socket_path=self.socket, socket_timeout=5.0)
        self.clients.append(client)
        return client


@pytest.fixture(name="redis_server")
def redis_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh, empty redis-server for one test (stopped at the end, whatever happens)."""
    # A short directory: a Unix socket path must fit in about 100 bytes.
    directory = Path(tmp_path_factory.mktemp("redis", numbered=True))
    if len(str(directory)) > 80:
        import tempfile

        directory = Path(tempfile.mkdtemp(prefix="tk-redis-"))
    server = RedisServer(directory)
    try:
        server.start()
        yield server
    finally:
        for client in server.clients:
            client.close()
        server.kill()


@contextlib.contextmanager
def sites(
    server: RedisServer, n: int, *, heartbeat: bool = True, **kwargs: Any
) -> Iterator[list[Any]]:
    """
    ``n`` members ``m0``, ``m1``, ... of one site on ``server`` (namespace ``t``), closed
    at the end; ``heartbeat=False`` leaves their heartbeats to the test (``site.beat()``).
    """
    from throttlekit.redis import RedisSite  # redis-py is imported only where it is used

    made = []
    try:
        for i in range(n):
            site = RedisSite(server.url, namespace="t", member=f"m{i}", **kwargs)
            site._heartbeat_thread = heartbeat
            site.start()
            made.append(site)
        yield made
    finally:
        for site in made:
            site.close()
