"""Shared fixtures: a private Redis for the whole session, and one per outage test.

Tests never touch a Redis on the default port 6379. Set ``HOSTEDJOBS_TEST_REDIS_URL`` to
run the suite against a Redis of your own instead of a private redis-server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from hostedjobs.storage.embedded import EmbeddedRedis, find_redis_server
from tests.servers import serve_demo

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's Redis, also exported as ``$HOSTEDJOBS_REDIS_URL`` while the session runs."""
    with pytest.MonkeyPatch.context() as env:
        url = os.environ.get("HOSTEDJOBS_TEST_REDIS_URL")
        if url:
            env.setenv("HOSTEDJOBS_REDIS_URL", url)
            yield url
            return
        server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persistent=False)
        env.setenv("HOSTEDJOBS_REDIS_URL", server.start())
        try:
            yield server.url
        finally:
            server.shutdown()  # now, not after the idle timeout


@pytest.fixture
def queue_name() -> str:
    """A queue name of this test's own, so tests never see each other's jobs."""
    return f"test-{uuid.uuid4().hex[:12]}"


class RestartableRedis:
    """A private redis-server on a fixed port that a test can stop, kill and start again.

    Writes are fsynced to an append-only file, so data survives `stop` and `kill`.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._binary = find_redis_server()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start the server on the same port (no-op if it runs) and wait until it answers."""
        if self._process is not None and self._process.poll() is None:
            return
        log = self.data_dir / "redis.log"
        # fmt: off
        self._process = subprocess.Popen(
            [
                self._binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--daemonize", "no", "--dir", str(self.data_dir), "--logfile", str(log),
                "--save", "", "--appendonly", "yes", "--appendfsync", "always",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # fmt: on
        deadline = time.monotonic() + 60
        while self._process.poll() is None and time.monotonic() < deadline:
            client = redis.Redis(
                host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=5
            )
            try:
                if client.ping():
                    return
            except (redis.RedisError, OSError):
                time.sleep(0.05)
            finally:
                client.close()
        self.kill()
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"redis-server on port {self.port} did not start:\n{tail}")

    def stop(self) -> None:
        """Shut the server down gracefully (SIGTERM, SIGKILL after 30 s)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()


@pytest.fixture
def restartable_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableRedis]:
    """A running private Redis of this test's own, for outage tests; stopped at teardown."""
    server = RestartableRedis(tmp_path_factory.mktemp("restartable-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[str]:
    """The demo app under a real uvicorn on the embedded server; yields its base URL."""
    with serve_demo(tmp_path) as base:
        yield base
