"""Process control for the chaos suite: a private redis-server and worker processes to fault.

`Cluster` owns one scenario's processes, in one directory: a redis-server of its own (never
the machine's 6379), ``hostedjobs worker tests.chaos.app:host`` processes, and the driver's
ledger writer. Every fault it injects (a signal to a worker, Redis killed, frozen, restarted)
is written to the ledger first, with its time, so the analysis can tell a duplicate a fault
explains from one it does not.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from hostedjobs.storage.embedded import find_redis_server
from tests.chaos.ledger import STOPPED, Ledger, LedgerWriter
from tests.servers import ROOT, free_port, subprocess_env

__all__ = ["Cluster", "RedisServer", "Worker", "lift_maxmemory", "set_maxmemory"]

HOSTEDJOBS = str(Path(sys.executable).with_name("hostedjobs"))
START_DEADLINE_S = 60.0
"""How long a process may take to start on a loaded machine."""


class RedisServer:
    """A redis-server on a port of its own that the driver can kill, freeze and restart.

    ``persistent`` servers fsync every write to an append-only file, so an acknowledged
    write survives a SIGKILL; ``maxmemory`` (bytes) makes it refuse writes once full.
    """

    def __init__(self, directory: Path, *, persistent: bool = False) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.persistent = persistent
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (again) on its port, and wait until it answers."""
        persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        # fmt: off
        self.process = subprocess.Popen(
            [
                find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--logfile", "redis.log", "--save", "",
                *(persistence if self.persistent else ["--appendonly", "no"]),
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # fmt: on
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if self.client().ping():
                    return
            except (redis.RedisError, OSError):
                time.sleep(0.05)
        log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")

    def client(self) -> redis.Redis:
        """A client of the driver's own, with short timeouts (never hangs on a frozen server)."""
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=5)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def signal(self, signum: int) -> None:
        """Send ``signum`` (SIGSTOP freezes the server, SIGCONT thaws it)."""
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self) -> None:
        """Thaw and shut it down (SIGTERM; SIGKILL after 30 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


class Worker:
    """One ``hostedjobs worker`` process; its stderr goes to ``log``."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log
        self.faulted = False
        """True once the driver signalled it (its exit is then expected)."""

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def log_tail(self, size: int = 1500) -> str:
        """The end of its log."""
        return self.log.read_text(errors="replace")[-size:]


class Cluster:
    """One scenario's Redis, workers and ledger, in ``directory``."""

    def __init__(self, directory: Path, queue: str, *, persistent: bool = False) -> None:
        self.directory = directory
        self.queue = queue
        self.redis = RedisServer(directory / "redis", persistent=persistent)
        self.ledger = Ledger(directory / "ledger")
        self.record = LedgerWriter(directory / "ledger", "driver")
        self.workers: list[Worker] = []

    @property
    def url(self) -> str:
        """The URL of the Redis under test."""
        return self.redis.url

    def fault(self, kind: str, target: int | None = None) -> None:
        """Write a fault to the ledger (before it happens: its effects come after)."""
        self.record.write("fault", kind=kind, target=target)

    async def start_worker(self, *, concurrency: int = 4, **env: str) -> Worker:
        """Start a worker process (``env``: `tests.chaos.app`'s settings) and wait until it
        takes jobs (its ``up`` record)."""
        log = self.directory / f"worker-{len(self.workers)}.log"
        command = [HOSTEDJOBS, "worker", "tests.chaos.app:host", "--log-level", "WARNING"]
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [*command, "--concurrency", str(concurrency)],
                env=subprocess_env(
                    HOSTEDJOBS_REDIS_URL=self.url,
                    CHAOS_QUEUE=self.queue,
                    CHAOS_LEDGER=str(self.ledger.directory),
                    **env,
                ),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        worker = Worker(process, log)
        self.workers.append(worker)
        deadline = time.monotonic() + START_DEADLINE_S
        while not any(up["pid"] == worker.pid for up in self.ledger.refresh().up):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {worker.pid} did not start:\n{worker.log_tail()}")
            await asyncio.sleep(0.05)
        return worker

    def alive(self) -> list[Worker]:
        """Workers still running."""
        return [w for w in self.workers if w.process.poll() is None]

    def sigkill(self, worker: Worker) -> None:
        """Kill a worker abruptly, as a crash or an OOM kill would."""
        worker.faulted = True
        self.fault("sigkill", worker.pid)
        worker.process.kill()
        worker.process.wait()

    async def sigterm(
        self, worker: Worker, *, twice: bool = False, timeout_s: float = 60.0
    ) -> int | None:
        """Stop a worker gracefully, as a deploy would (``twice``: a second SIGTERM right
        after the first, which cuts the grace short); returns its exit code (None if it did
        not exit within ``timeout_s``)."""
        worker.faulted = True
        self.fault("sigterm", worker.pid)
        worker.process.terminate()
        if twice:
            await asyncio.sleep(0.1)
            worker.process.terminate()
        return await _exit_code(worker.process, timeout_s)

    def redis_kill(self) -> None:
        """SIGKILL the Redis under test."""
        self.fault("redis-kill")
        self.redis.kill()

    def redis_start(self) -> None:
        """Start the Redis under test again (it reloads its append-only file, if any)."""
        self.redis.start()
        self.fault("redis-start")

    def redis_freeze(self) -> None:
        """SIGSTOP the Redis under test: connections stay open and nothing answers."""
        self.fault("redis-freeze")
        self.redis.signal(signal.SIGSTOP)

    def redis_thaw(self) -> None:
        """SIGCONT the Redis under test."""
        self.redis.signal(signal.SIGCONT)
        self.fault("redis-thaw")

    async def stop(self) -> list[str]:
        """Stop every worker gracefully, then Redis; returns what went wrong on the way (a
        worker that had died by itself, or that did not exit 0)."""
        problems = []
        for worker in self.workers:
            if not worker.faulted and worker.process.poll() is not None:
                problems.append(
                    f"worker {worker.pid} died by itself (exit {worker.process.returncode}):\n"
                    + worker.log_tail()
                )
        self.fault(STOPPED)
        running = self.alive()
        for worker in running:
            worker.process.terminate()
        for worker in running:
            code = await _exit_code(worker.process, 60)
            if code is None:
                worker.process.kill()
                worker.process.wait()
                problems.append(f"worker {worker.pid} did not exit within 60s of SIGTERM")
            elif code != 0:
                problems.append(
                    f"worker {worker.pid} exited {code} at SIGTERM:\n{worker.log_tail()}"
                )
        self.redis.stop()
        self.record.close()
        return problems

    def kill_everything(self) -> None:
        """Last resort at teardown: no process of this cluster outlives the scenario."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
        self.redis.stop()


async def _exit_code(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.05)
    return process.returncode


def set_maxmemory(server: RedisServer, headroom_bytes: int) -> int:
    """Let Redis hold only ``headroom_bytes`` more than it uses now, refusing writes past it
    (``noeviction``); returns the limit set."""
    client = server.client()
    try:
        info: dict[str, Any] = client.info("memory")  # type: ignore[assignment]
        used = int(info["used_memory"])
        limit = used + headroom_bytes
        client.config_set("maxmemory", limit)
        client.config_set("maxmemory-policy", "noeviction")
        return limit
    finally:
        client.close()


def lift_maxmemory(server: RedisServer) -> None:
    """Remove the memory limit."""
    client = server.client()
    try:
        client.config_set("maxmemory", 0)
    finally:
        client.close()
