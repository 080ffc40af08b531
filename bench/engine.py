"""hostedjobs' engine against raw arq and its peers SAQ, taskiq, streaq and docket.

Run with ``python -m bench.engine`` (``make bench``); ``--quick`` is a ~1 min smoke run and
``--json PATH`` also writes every raw value (read by ``bench/plots.py``).

The systems are measured in one run, on a private ``redis-server`` (never the Redis on
6379), FLUSHDB before every measurement, all at concurrency/max_jobs=32:

- ``hostedjobs``: `JobHost` with a ``@job_type`` job whose handler takes a scoped service;
- ``hostedjobs+uvloop``: the same, with its worker processes on uvloop (``--no-uvloop`` drops
  it); every other system, and every enqueuer, runs on plain asyncio;
- ``arq poll=0.01``: a stock arq worker tuned to poll every 10 ms (``--arq-default`` adds
  stock arq with its default 0.5 s poll);
- ``SAQ``, ``taskiq``, ``streaq``, ``docket``: each in its own virtualenv under
  ``bench/.peers/<name>/`` (their redis-py/coredis pins conflict with ours), created on first
  use with the pinned versions in `PEERS`; their worker modules are ``bench/peer_*.py``
  (configuration in each module's docstring). A peer whose venv or runs fail is dropped, with
  the reason in the report's header;
- ``hostedjobs@REV`` (``--baseline REV``, repeatable): hostedjobs as it was at git revision
  REV, so that an engine change is measured against its predecessor in the same run. REV's
  files are laid out by ``git archive`` in ``bench/.peers/baseline-<commit>/`` (git-ignored,
  kept for the next run) and run in this venv (the dependencies being the same): REV's own
  ``bench/hosted_worker.py`` is its worker, and its enqueuers (enqueue rates, preload, pickup
  feed) are this tree's `bench.hosted_client` run as a script; each such process runs in the
  checkout with it on ``PYTHONPATH``, so that it imports REV's ``hostedjobs`` and ``bench``
  (checked once at set-up, and on every enqueuer's result). Our own enqueuers run in the
  bench's process, the baseline's in a process of their own, like the peers'. It takes part
  in every metric, scale-out included, and the report adds the ratios this tree / REV of the
  drain, worker CPU, Redis costs, pickup p50/p99 and sleep drain (`BASELINE_METRICS`), and of
  the scale-out rates. A baseline that cannot be laid out or fails is dropped like a peer.

Each round measures every metric for every system, the order of systems rotating from round
to round; the table shows the median and (min–max) over rounds. The metrics:

1. enqueue rate: N sequential single enqueues from one client (for peers, in a process of
   the peer's venv); bulk enqueue: one call of the system's bulk API for N jobs
   (hostedjobs ``Scheduler.enqueue_many``, streaq ``Worker.enqueue_many``, docket
   ``Docket.add_many``; "-" for systems without one), job construction included;
2. drain: N no-op jobs are preloaded, then one worker process runs them; wall and CPU time
   (``time.process_time``) are measured inside that process from the start of processing
   until the queue is empty (burst mode: hostedjobs, arq) or until the N-th job has finished
   (peers), interpreter start-up excluded;
3. sleep drain: the same with 2,000 jobs that each ``asyncio.sleep(0.05)``, as a multiple of
   the ideal 2000/32 × 0.05 s = 3.125 s;
4. pickup latency: a worker process idles for 1 s, then jobs are enqueued one every 10 ms;
   each job's ``time.time()`` at handler entry minus the enqueuer's ``time.time()`` just
   before its enqueue call (carried in the payload);
5. scale-out (``--scale-out 1,2,4``; hostedjobs and arq, not the peers): N preloaded no-op jobs
   drained by P worker processes at once (see `bench.fleet`), timed from the go line until
   the queue is empty; every job's run is counted, so a job run twice or never is reported;
6. Redis cost, the rows "Redis cmds per enqueued job", "Redis CPU per enqueued job (µs)",
   "Redis cmds per executed job" and "Redis CPU per executed job (µs)": the private
   redis-server's own counters, read with one ``INFO commandstats cpu`` before and after
   (a) metric 1's single enqueues (per job enqueued: the 100 warm-up enqueues and the
   enqueuer's connecting are in the window, so it is divided by N + 100; for peers and a
   baseline, their single-enqueue process, the bulk call being a second process outside the
   window) and
   (b) metric 2's drain, after the preload, from the worker process's start to its exit (per
   job drained: claim + run + commit, plus the worker's start-up and shutdown and any idle
   polling). Commands are the ``calls`` summed over every command, which counts the commands
   a Lua script runs as well as the EVAL/EVALSHA itself, less the bench's own INFO; CPU is
   ``used_cpu_sys + used_cpu_user`` of the server process in µs (its ~10 Hz background cron
   included). ``--json`` also has the commands per job by name
   (``redis_commands_per_job``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
from arq.connections import RedisSettings, create_pool
from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job

import hostedjobs
from hostedjobs.storage.embedded import EmbeddedRedis

from .arq_worker import FUNCTION_NAME
from .common import (
    LATENCY_INTERVAL_S,
    READY,
    STREAM_LIMIT,
    WARM_UP_JOBS,
    percentile,
    read_line,
)
from .fleet import FleetError, queue_back_to, run_fleet
from .hosted_client import (
    hosted_bulk_rate,
    hosted_enqueue_rate,
    hosted_latency_feed,
    hosted_preload,
    latency_feed,
)

__all__ = ["PEERS", "Config", "Peer", "System", "main"]

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = ROOT / "bench" / ".peers"
CONCURRENCY = 32
IDLE_BEFORE_S = 1.0
SLEEP_S = 0.05
HOSTED_QUEUE = "bench-hostedjobs"
ARQ_QUEUE = "bench-arq"
PEER_QUEUE = "bench-peer"
RESULT_WAIT_S = 600
"""Longest wait for a worker process's result line."""
EXIT_WAIT_S = 20
"""After its result line, how long a worker process gets to exit before it is killed."""


@dataclass(frozen=True)
class Peer:
    """A peer library: its worker module and the pinned packages of its virtualenv."""

    name: str
    module: str
    requirements: tuple[str, ...]

    @property
    def venv(self) -> Path:
        """``bench/.peers/<name>``."""
        return PEERS_DIR / self.name

    @property
    def python(self) -> Path:
        """The venv's interpreter."""
        return self.venv / "bin" / "python"


PEERS = (
    # saq 0.26.4 imports typing_extensions without declaring it as a dependency.
    Peer("saq", "bench.peer_saq", ("saq[hiredis]==0.26.4", "typing-extensions==4.16.0")),
    Peer("taskiq", "bench.peer_taskiq", ("taskiq==0.13.0", "taskiq-redis==1.2.4")),
    Peer("streaq", "bench.peer_streaq", ("streaq==7.2.0",)),
    Peer("docket", "bench.peer_docket", ("pydocket==0.27.0",)),
)
PEER_LABELS = {"saq": "SAQ", "taskiq": "taskiq", "streaq": "streaq", "docket": "docket"}


@dataclass(frozen=True)
class Baseline:
    """hostedjobs at another git revision, benchmarked beside the current tree."""

    rev: str
    """As given to ``--baseline``."""
    commit: str
    """The full commit hash it names."""

    @property
    def checkout(self) -> Path:
        """``bench/.peers/baseline-<commit>``: that revision's files (``git archive``)."""
        return PEERS_DIR / f"baseline-{self.commit[:12]}"


@dataclass(frozen=True)
class System:
    """One column of the table: hostedjobs (current or a baseline), a stock arq worker with a
    poll delay, or a peer."""

    label: str
    poll_delay: float | None = None
    """arq only."""
    peer: Peer | None = None
    loop: str = "asyncio"
    """hostedjobs only: the event loop of its worker processes (``asyncio`` or ``uvloop``)."""
    baseline: Baseline | None = None
    """hostedjobs as it was at another revision (``--baseline``)."""

    @property
    def hosted(self) -> bool:
        """True for the hostedjobs columns (either event loop, or a baseline)."""
        return self.poll_delay is None and self.peer is None

    @property
    def root(self) -> Path:
        """Where its processes run, with it on ``PYTHONPATH``: a baseline's checkout, or ours."""
        return self.baseline.checkout if self.baseline is not None else ROOT

    @property
    def scales_out(self) -> bool:
        """Whether the scale-out run covers it: hostedjobs and arq with a short poll."""
        return self.peer is None and (self.poll_delay is None or self.poll_delay < 0.1)


HOSTED = System("hostedjobs")
HOSTED_UVLOOP = System("hostedjobs+uvloop", loop="uvloop")
ARQ_FAST = System("arq poll=0.01", 0.01)
ARQ_DEFAULT = System("arq poll=0.5", 0.5)


@dataclass(frozen=True)
class Config:
    """Sizes of one benchmark run."""

    rounds: int
    enqueue_jobs: int
    bulk_jobs: int
    drain_jobs: int
    slow_drain_jobs: int
    """Drain size for arq at its default 0.5 s poll, which caps it at 320 jobs/s."""
    sleep_jobs: int
    latency_jobs: int
    systems: tuple[System, ...]
    scale_out: tuple[int, ...] = ()
    """Worker process counts of the scale-out run (empty: no scale-out run)."""
    scale_jobs: int = 10_000

    def drain_size(self, system: System) -> int:
        """How many jobs ``system`` drains (fewer for arq's default poll, see above)."""
        slow = system.poll_delay is not None and system.poll_delay >= 0.1
        return self.slow_drain_jobs if slow else self.drain_jobs

    @property
    def sleep_ideal_s(self) -> float:
        """The sleep drain's ideal wall time: waves of 32 jobs of 50 ms, back to back."""
        return self.sleep_jobs / CONCURRENCY * SLEEP_S


class BenchError(RuntimeError):
    """A worker process failed or ran fewer jobs than it was given."""


# -- metrics --------------------------------------------------------------------------------

ENQUEUE = "enqueue rate (jobs/s)"
BULK = "bulk enqueue (jobs/s)"
DRAIN = "drain, 1 process (jobs/s)"
CPU = "worker CPU (µs/job)"
ENQUEUE_COMMANDS = "Redis cmds per enqueued job"
ENQUEUE_REDIS_CPU = "Redis CPU per enqueued job (µs)"
DRAIN_COMMANDS = "Redis cmds per executed job"
DRAIN_REDIS_CPU = "Redis CPU per executed job (µs)"
SLEEP = "sleep drain (× ideal)"
P50, P95, P99, PMAX = (f"pickup {p} (ms)" for p in ("p50", "p95", "p99", "max"))
METRICS = (
    ENQUEUE,
    BULK,
    ENQUEUE_COMMANDS,
    ENQUEUE_REDIS_CPU,
    DRAIN,
    CPU,
    DRAIN_COMMANDS,
    DRAIN_REDIS_CPU,
    SLEEP,
    P50,
    P95,
    P99,
    PMAX,
)
HIGHER_IS_BETTER = {ENQUEUE, BULK, DRAIN}

Results = dict[str, dict[str, list[float]]]
"""metric -> system label -> one value per round (empty: not measured, shown as "-")."""

CommandResults = dict[str, dict[str, list[dict[str, float]]]]
"""system label -> "enqueue" or "drain" -> per round: Redis command name -> calls per job."""


@dataclass
class ScaleRun:
    """One scale-out measurement: P processes draining N jobs."""

    rate: float
    """jobs/s, all processes together."""
    cpu_us: float
    """The processes' CPU time, summed, per job."""
    shares: list[int]
    """Runs per process."""
    duplicates: int
    """Runs beyond the first of a job (0 when every job ran exactly once)."""
    missing: int
    """Jobs that never ran."""
    results: int
    """Result keys in Redis afterwards (arq's layout: one per finished job)."""

    @property
    def exactly_once(self) -> bool:
        """Every job ran once and left one result."""
        total = sum(self.shares)
        return self.duplicates == 0 and self.missing == 0 and self.results == total


ScaleResults = dict[str, dict[int, list[ScaleRun]]]
"""system label -> worker processes -> one run per round."""


T = TypeVar("T")


@dataclass(frozen=True)
class RedisCost:
    """The private redis-server's own counters, or their change over a measurement."""

    commands: int
    """Calls summed over ``INFO commandstats`` (a script's inner commands count too)."""
    cpu_s: float
    """``used_cpu_sys`` + ``used_cpu_user`` of the server process."""
    by_command: dict[str, int]
    """``commands`` by command name (``evalsha``, ``zadd``, ``xreadgroup``…)."""


BENCH_INFO_CALLS = 1
"""INFO calls of the bench's own inside a `redis_cost` window: the one reading the counters
before (a command is counted once it has run, so the reading after does not count itself)."""


async def redis_counters(client: aioredis.Redis) -> RedisCost:
    """Read the server's counters with one ``INFO commandstats cpu`` call (Redis >= 7)."""
    # redis-py types info()'s further sections as lists, but sends them as they are.
    info = await client.info("commandstats", "cpu")  # type: ignore[arg-type]
    by_command = {
        name.removeprefix("cmdstat_"): int(stats["calls"])
        for name, stats in info.items()
        if name.startswith("cmdstat_")
    }
    cpu_s = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return RedisCost(sum(by_command.values()), cpu_s, by_command)


async def redis_cost(client: aioredis.Redis, work: Awaitable[T]) -> tuple[T, RedisCost]:
    """Await ``work``; return its result and what the Redis server did meanwhile.

    Everything any client ran is counted (the bench's own INFO excepted, see
    `BENCH_INFO_CALLS`), so a measured process's connection set-up and shutdown are in it.
    """
    before = await redis_counters(client)
    result = await work
    after = await redis_counters(client)
    by_command = {
        name: calls - before.by_command.get(name, 0) - (BENCH_INFO_CALLS if name == "info" else 0)
        for name, calls in after.by_command.items()
    }
    return result, RedisCost(
        after.commands - before.commands - BENCH_INFO_CALLS,
        after.cpu_s - before.cpu_s,
        {name: calls for name, calls in sorted(by_command.items()) if calls},
    )


# -- peer virtualenvs -----------------------------------------------------------------------


def ensure_venv(peer: Peer) -> Path:
    """Create ``peer``'s virtualenv with its pinned packages unless it already has them.

    Returns its interpreter; raises `BenchError` with pip's output if the install fails.
    """
    marker = peer.venv / "bench-requirements.txt"
    wanted = "\n".join(peer.requirements) + "\n"
    if peer.python.exists() and marker.exists() and marker.read_text() == wanted:
        return peer.python
    progress(f"creating {peer.venv.relative_to(ROOT)} with {' '.join(peer.requirements)}")
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(peer.venv)],
        [str(peer.python), "-m", "pip", "install", "--quiet", *peer.requirements],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False, timeout=900)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-5:])
            raise BenchError(f"{' '.join(step[2:4])} failed: {tail}")
    marker.write_text(wanted)
    return peer.python


def resolve_baseline(rev: str) -> Baseline:
    """The commit ``rev`` names in this repository; raises `BenchError` if none."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if done.returncode != 0:
        raise BenchError(f"--baseline {rev}: not a commit of {ROOT}")
    return Baseline(rev, done.stdout.strip())


def ensure_baseline(baseline: Baseline) -> None:
    """Lay out the baseline's files in its checkout (``git archive``) unless already there.

    Then check that a process started there (as its workers and enqueuers are) imports that
    revision's ``hostedjobs`` and ``bench.hosted_worker``, not ours. Raises `BenchError`.
    """
    checkout = baseline.checkout
    marker = checkout / ".bench-commit"
    if not (marker.exists() and marker.read_text().strip() == baseline.commit):
        progress(f"laying out {checkout.relative_to(ROOT)} (git archive {baseline.commit[:12]})")
        if checkout.exists():
            shutil.rmtree(checkout)
        checkout.mkdir(parents=True)
        tar = checkout.with_suffix(".tar")
        try:
            archive = ["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(tar)]
            for step in (
                [*archive, baseline.commit],
                ["tar", "-xf", str(tar), "-C", str(checkout)],
            ):
                done = subprocess.run(
                    step, capture_output=True, text=True, check=False, timeout=300
                )
                if done.returncode != 0:
                    raise BenchError(f"{' '.join(step[:4])} failed: {done.stderr.strip()}")
        finally:
            tar.unlink(missing_ok=True)
        marker.write_text(baseline.commit + "\n")
    probe = "import hostedjobs, bench.hosted_worker as w; print(hostedjobs.__file__, w.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    paths = done.stdout.split()
    if done.returncode != 0 or len(paths) != 2:
        raise BenchError(f"the baseline does not import: {done.stderr.strip()[-500:]}")
    for path in paths:
        if not Path(path).resolve().is_relative_to(checkout.resolve()):
            raise BenchError(f"the baseline imports {path}, outside {checkout}")


# -- enqueuing ------------------------------------------------------------------------------


async def arq_enqueue_rate(url: str, n: int) -> float:
    """Sequential `ArqRedis.enqueue_job` calls from one client; jobs/s."""
    pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=ARQ_QUEUE)
    try:
        for i in range(WARM_UP_JOBS):
            await pool.enqueue_job(FUNCTION_NAME, -i)
        start = time.perf_counter()
        for i in range(n):
            await pool.enqueue_job(FUNCTION_NAME, i)
        return n / (time.perf_counter() - start)
    finally:
        await pool.aclose(close_connection_pool=True)


async def arq_preload(client: aioredis.Redis, n: int, sleep_s: float = 0.0) -> None:
    """Write ``n`` jobs in arq's layout (job key + queue zset entry), pipelined."""
    now_ms = int(time.time() * 1000)
    for start in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + 1000)):
            job_id = uuid.uuid4().hex
            data = serialize_job(FUNCTION_NAME, (i, 0.0, sleep_s), {}, None, now_ms)
            pipe.psetex(job_key_prefix + job_id, expires_extra_ms, data)
            pipe.zadd(ARQ_QUEUE, {job_id: now_ms})
        await pipe.execute()


async def arq_latency_feed(url: str, n: int) -> None:
    """Feed the latency jobs through `ArqRedis.enqueue_job`."""
    pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=ARQ_QUEUE)
    try:

        async def enqueue(seq: int, sent_at: float) -> None:
            await pool.enqueue_job(FUNCTION_NAME, seq, sent_at)

        await latency_feed(enqueue, n)
    finally:
        await pool.aclose(close_connection_pool=True)


# -- worker processes -----------------------------------------------------------------------


CLIENT_MODES = frozenset({"enqueue", "preload", "feed"})
"""The enqueuing modes of a peer module or of `bench.hosted_client`."""
CLIENT_SCRIPT = ROOT / "bench" / "hosted_client.py"
"""Run as a file (not ``-m``), so that a baseline's ``bench`` package is the one it imports."""


def worker_command(
    system: System, mode: str, url: str, jobs: int, timeout: float, *extra: str
) -> list[str]:
    """The ``python -m bench.<worker>`` command line for ``system``, to run in ``system.root``.

    For hostedjobs, the enqueuing modes (a baseline's) run `bench.hosted_client` as a script.
    """
    common = ["--redis-url", url, "--jobs", str(jobs), "--concurrency", str(CONCURRENCY)]
    common += ["--timeout", str(timeout), *extra]
    if system.peer is not None:
        peer = system.peer
        return [str(peer.python), "-m", peer.module, mode, "--queue", PEER_QUEUE, *common]
    if system.hosted:
        if mode in CLIENT_MODES:  # (a baseline's: ours run in this process)
            boot = f"import runpy; runpy.run_path({str(CLIENT_SCRIPT)!r}, run_name='__main__')"
            return [sys.executable, "-c", boot, mode, "--queue", HOSTED_QUEUE, *common]
        # --loop only when it is not the default, for a baseline's older worker module
        loop = ["--loop", system.loop] if system.loop != "asyncio" else []
        return [
            sys.executable,
            "-m",
            "bench.hosted_worker",
            mode,
            "--queue",
            HOSTED_QUEUE,
            *loop,
            *common,
        ]
    return [
        sys.executable,
        "-m",
        "bench.arq_worker",
        mode,
        "--queue",
        ARQ_QUEUE,
        "--poll-delay",
        str(system.poll_delay),
        *common,
    ]


async def run_worker(
    command: list[str],
    log_dir: Path,
    *,
    when_ready: Callable[[], Awaitable[None]] | None = None,
    root: Path = ROOT,
) -> dict[str, Any]:
    """Run a worker process and return its JSON result (the first line starting with ``{``).

    With ``when_ready``, wait for the worker's ready line, then await ``when_ready()`` while
    the worker runs. A process that has printed its result gets ``EXIT_WAIT_S`` to exit
    before it is killed, so that no measurement overlaps the previous one's shutdown. It runs
    in ``root`` with ``root`` on ``PYTHONPATH`` (`System.root`).
    """
    log = log_dir / f"worker-{uuid.uuid4().hex[:8]}.log"
    env = {**os.environ, "PYTHONPATH": str(root)}
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=root,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
            limit=STREAM_LIMIT,
        )
        assert process.stdout is not None
        result: dict[str, Any] | None = None
        try:
            if when_ready is not None:
                line = await asyncio.wait_for(read_line(process.stdout), 60)
                if line.decode().strip() != READY:
                    raise BenchError(f"worker did not get ready: {line!r}\n{_tail(log)}")
                await when_ready()
            deadline = time.monotonic() + RESULT_WAIT_S
            while result is None:
                line = await asyncio.wait_for(
                    read_line(process.stdout), max(1.0, deadline - time.monotonic())
                )
                if not line:
                    break
                if line.startswith(b"{"):
                    result = json.loads(line)
            try:
                await asyncio.wait_for(process.wait(), EXIT_WAIT_S)
            except TimeoutError:
                progress(f"  (killed {' '.join(command[1:4])}: still running after its result)")
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    if result is None:
        raise BenchError(f"{' '.join(command[1:4])} exited with {process.returncode}\n{_tail(log)}")
    return result


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-30:])


# -- one measurement of each kind -----------------------------------------------------------


class Bench:
    """Runs measurements against one private Redis and collects them per round."""

    def __init__(self, url: str, client: aioredis.Redis, config: Config, log_dir: Path) -> None:
        self.url = url
        self.client = client
        self.config = config
        self.log_dir = log_dir
        self.results: Results = {m: {s.label: [] for s in config.systems} for m in METRICS}
        self.commands: CommandResults = {
            s.label: {"enqueue": [], "drain": []} for s in config.systems
        }
        self.scale: ScaleResults = {
            s.label: {p: [] for p in config.scale_out} for s in config.systems if s.scales_out
        }

    def record(self, metric: str, system: System, value: float) -> None:
        """Keep one round's value."""
        self.results[metric][system.label].append(value)

    def record_cost(self, step: str, system: System, cost: RedisCost, jobs: int) -> None:
        """Keep one round's Redis cost of ``step`` (enqueue or drain) per job."""
        commands, cpu = (
            (ENQUEUE_COMMANDS, ENQUEUE_REDIS_CPU)
            if step == "enqueue"
            else (DRAIN_COMMANDS, DRAIN_REDIS_CPU)
        )
        self.record(commands, system, cost.commands / jobs)
        self.record(cpu, system, cost.cpu_s / jobs * 1e6)
        by_command = {name: calls / jobs for name, calls in cost.by_command.items()}
        self.commands[system.label][step].append(by_command)

    async def run(
        self,
        system: System,
        mode: str,
        jobs: int,
        *extra: str,
        give_up_s: float = 60,
        when_ready: Callable[[], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """Run one process of ``system`` in ``mode`` against this run's Redis; its result.

        ``give_up_s`` is the worker's ``--timeout`` (latency mode: stop waiting for jobs).
        """
        command = worker_command(system, mode, self.url, jobs, give_up_s, *extra)
        result = await run_worker(command, self.log_dir, when_ready=when_ready, root=system.root)
        # bench.hosted_client says which hostedjobs it ran; a baseline's must be its own.
        imported = result.get("hostedjobs")
        if (
            system.baseline is not None
            and imported is not None
            and not Path(imported).is_relative_to(system.root)
        ):
            raise BenchError(f"{system.label}'s {mode} imported hostedjobs from {imported}")
        return result

    async def enqueue(self, system: System) -> None:
        """Metric 1: sequential single enqueue rate, and one bulk call where there is one.

        The Redis cost per enqueued job is that of the single enqueues, warm-up included.
        """
        if system.loop != "asyncio":
            return  # the enqueuers run in this (asyncio) process: the same as hostedjobs'
        await self.client.flushdb()
        n, bulk_n = self.config.enqueue_jobs, self.config.bulk_jobs
        bulk: float | None = None
        if system.peer is not None or system.baseline is not None:
            # Two processes, so that the Redis cost is the single enqueues' alone.
            result, cost = await redis_cost(self.client, self.run(system, "enqueue", n))
            rate = result["single"]
            if result.get("has_bulk"):
                await self.client.flushdb()
                bulk = (await self.run(system, "enqueue", 0, "--bulk-jobs", str(bulk_n)))["bulk"]
        elif system.hosted:
            rate, cost = await redis_cost(
                self.client, hosted_enqueue_rate(self.url, n, queue=HOSTED_QUEUE)
            )
            await self.client.flushdb()
            bulk = await hosted_bulk_rate(self.url, bulk_n, queue=HOSTED_QUEUE)
        else:
            rate, cost = await redis_cost(self.client, arq_enqueue_rate(self.url, n))
        self.record(ENQUEUE, system, rate)
        if bulk is not None:
            self.record(BULK, system, bulk)
        enqueued = n + WARM_UP_JOBS
        self.record_cost("enqueue", system, cost, enqueued)
        shown = "-" if bulk is None else f"{bulk:,.0f}"
        progress(
            f"  enqueue  {system.label:<18} {rate:>9,.0f} jobs/s  bulk {shown} jobs/s  "
            f"Redis {cost.commands / enqueued:.2f} cmds/job "
            f"{cost.cpu_s / enqueued * 1e6:.1f} µs/job"
        )

    async def preload(self, system: System, n: int, sleep_s: float) -> None:
        """Queue ``n`` jobs for a drain (each sleeping ``sleep_s``)."""
        await self.client.flushdb()
        if system.peer is not None:
            await self.run(system, "preload", n, "--sleep", str(sleep_s))
        elif system.hosted:
            if system.baseline is not None:
                await self.run(system, "preload", n, "--sleep", str(sleep_s))
            else:
                await hosted_preload(self.url, n, sleep_s, queue=HOSTED_QUEUE)
            await self._check_queued(system, HOSTED_QUEUE, n)
        else:
            await arq_preload(self.client, n, sleep_s)
            await self._check_queued(system, ARQ_QUEUE, n)

    async def _check_queued(self, system: System, queue: str, n: int) -> None:
        queued = await self.client.zcard(queue)
        if queued != n:
            raise BenchError(f"preloaded {queued} jobs for {system.label}, expected {n}")

    async def _drain(
        self, system: System, n: int, sleep_s: float
    ) -> tuple[dict[str, Any], RedisCost]:
        """Preload ``n`` jobs, run one worker process on them; its result and Redis cost."""
        await self.preload(system, n, sleep_s)
        result, cost = await redis_cost(self.client, self.run(system, "drain", n))
        if result["jobs"] < n:
            raise BenchError(f"{system.label} ran {result['jobs']} of {n} jobs: {result}")
        if result["jobs"] > n:
            # At-least-once delivery can run a job twice; the drain still emptied the queue.
            print(
                f"  note: {system.label} started {result['jobs']} runs for {n} jobs",
                file=sys.stderr,
            )
        return result, cost

    async def drain(self, system: System) -> None:
        """Metric 2: one worker process drains a preloaded queue of no-op jobs."""
        n = self.config.drain_size(system)
        result, cost = await self._drain(system, n, 0.0)
        rate = n / result["wall_s"]
        cpu_us = result["cpu_s"] / n * 1e6
        self.record(DRAIN, system, rate)
        self.record(CPU, system, cpu_us)
        self.record_cost("drain", system, cost, n)
        progress(
            f"  drain    {system.label:<18} {rate:>9,.0f} jobs/s  {cpu_us:6.1f} µs/job  "
            f"({n} jobs in {result['wall_s']:.2f} s)  Redis {cost.commands / n:.2f} cmds/job "
            f"{cost.cpu_s / n * 1e6:.1f} µs/job"
        )

    async def sleep_drain(self, system: System) -> None:
        """Metric 3: the drain of jobs that sleep 50 ms, against the ideal wall time."""
        n = self.config.sleep_jobs
        result, _ = await self._drain(system, n, SLEEP_S)
        factor = result["wall_s"] / self.config.sleep_ideal_s
        self.record(SLEEP, system, factor)
        progress(f"  sleep    {system.label:<18} {result['wall_s']:6.3f} s = {factor:.3f} × ideal")

    async def latency(self, system: System) -> None:
        """Metric 4: pickup latency of an idle worker, jobs arriving every 10 ms."""
        await self.client.flushdb()
        n = self.config.latency_jobs
        timeout = IDLE_BEFORE_S + n * LATENCY_INTERVAL_S + 30

        async def feed() -> None:
            await asyncio.sleep(IDLE_BEFORE_S)
            if system.peer is not None or system.baseline is not None:
                await self.run(system, "feed", n)
            elif system.hosted:
                await hosted_latency_feed(self.url, n, queue=HOSTED_QUEUE)
            else:
                await arq_latency_feed(self.url, n)

        result = await self.run(system, "latency", n, give_up_s=timeout, when_ready=feed)
        latencies: list[float] = result["latencies_ms"]
        if len(latencies) != n:
            raise BenchError(f"{system.label} started {len(latencies)} of {n} latency jobs")
        values = {P50: 50.0, P95: 95.0, P99: 99.0, PMAX: 100.0}
        for metric, pct in values.items():
            self.record(metric, system, percentile(latencies, pct))
        progress(
            f"  pickup   {system.label:<18} p50 {percentile(latencies, 50):7.2f} ms  "
            f"p99 {percentile(latencies, 99):7.2f} ms  max {max(latencies):7.2f} ms"
        )

    async def scale_out(self, system: System) -> None:
        """Metric 5: N no-op jobs drained by 1, 2, 4… worker processes at once."""
        if not system.scales_out:
            return
        n = self.config.scale_jobs
        queue = HOSTED_QUEUE if system.hosted else ARQ_QUEUE
        for processes in self.config.scale_out:
            await self.preload(system, n, 0.0)
            commands = [
                worker_command(system, "serve", self.url, n, RESULT_WAIT_S)
                for _ in range(processes)
            ]
            try:
                fleet = await run_fleet(
                    commands,
                    self.log_dir,
                    lambda: queue_back_to(self.client, queue, 0),
                    timeout_s=RESULT_WAIT_S,
                    root=system.root,
                )
            except FleetError as exc:
                raise BenchError(f"{system.label} × {processes}: {exc}") from exc
            if not fleet.finished:
                raise BenchError(f"{system.label} × {processes} did not empty the queue")
            runs = Counter(seq for worker in fleet.workers for seq in worker["seqs"])
            result = ScaleRun(
                rate=n / fleet.wall_s,
                cpu_us=sum(w["cpu_s"] for w in fleet.workers) / n * 1e6,
                shares=[w["jobs"] for w in fleet.workers],
                duplicates=sum(c - 1 for c in runs.values()),
                missing=n - len(runs.keys() & set(range(n))),
                results=await self._count(result_key_prefix + "*"),
            )
            self.scale[system.label][processes].append(result)
            check = "exactly once" if result.exactly_once else "NOT exactly once"
            progress(
                f"  scale    {system.label:<18} ×{processes} {result.rate:>9,.0f} jobs/s  "
                f"{result.cpu_us:6.1f} µs/job  shares {result.shares}  {check} "
                f"(dup {result.duplicates}, missing {result.missing}, results {result.results})"
            )

    async def _count(self, pattern: str) -> int:
        count = 0
        async for _ in self.client.scan_iter(match=pattern, count=1000):
            count += 1
        return count


# -- report ---------------------------------------------------------------------------------


def progress(message: str) -> None:
    """A progress line on stderr, so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(values: list[float]) -> str:
    """``median (min–max)`` of one metric's rounds; "-" if the system has no such figure."""
    if not values:
        return "-"
    if len(values) == 1:
        return _number(values[0])
    med = statistics.median(values)
    return f"{_number(med)} ({_number(min(values))}–{_number(max(values))})"


def table(results: Results, systems: tuple[System, ...]) -> list[str]:
    """The side-by-side table: one row per metric, one column per system (Markdown)."""
    rows = [["metric", *(s.label for s in systems)], ["---", *("---:" for _ in systems)]]
    rows += [[m, *(cell(results[m][s.label]) for s in systems)] for m in METRICS]
    return _markdown(rows)


def ratios(results: Results, systems: tuple[System, ...]) -> list[str]:
    """Per metric: hostedjobs' median over the best other system's median."""
    lines = ["hostedjobs / best peer (all non-hostedjobs systems; medians):"]
    label_width = max(len(m) for m in METRICS) + 2
    for metric in METRICS:
        hosted_values = results[metric][HOSTED.label]
        others = {
            s.label: statistics.median(results[metric][s.label])
            for s in systems
            if not s.hosted and results[metric][s.label]
        }
        if not hosted_values or not others:
            continue
        hosted = statistics.median(hosted_values)
        higher = metric in HIGHER_IS_BETTER
        best = (
            max(others, key=others.__getitem__) if higher else min(others, key=others.__getitem__)
        )
        ratio = hosted / others[best]
        better = "higher is better" if higher else "lower is better"
        lines.append(
            f"  {metric.ljust(label_width)}{ratio:7.2f}×   (vs {best}: {_number(hosted)} vs "
            f"{_number(others[best])}; {better})"
        )
    if any(s.label == HOSTED_UVLOOP.label for s in systems):
        lines += ["", "hostedjobs+uvloop / hostedjobs (same engine, worker on uvloop; medians):"]
        lines += _pair(results, HOSTED_UVLOOP.label, HOSTED.label, METRICS, label_width)
    for system in systems:
        if system.baseline is not None:
            lines += [
                "",
                f"{HOSTED.label} / {system.label} (this tree / revision "
                f"{system.baseline.commit[:12]}, the same run; medians):",
            ]
            lines += _pair(results, HOSTED.label, system.label, BASELINE_METRICS, label_width)
    return lines


BASELINE_METRICS = (
    DRAIN,
    CPU,
    DRAIN_COMMANDS,
    DRAIN_REDIS_CPU,
    ENQUEUE_COMMANDS,
    ENQUEUE_REDIS_CPU,
    P50,
    P99,
    SLEEP,
)
"""The ratios printed against a ``--baseline`` (its enqueue rates are left out: its enqueuers
run in a process of their own, ours in the bench's process)."""


def _pair(
    results: Results, label: str, against: str, metrics: tuple[str, ...], width: int
) -> list[str]:
    """One line per metric: ``label``'s median / ``against``'s."""
    lines = []
    for metric in metrics:
        ours, theirs = results[metric][label], results[metric][against]
        if not ours or not theirs:
            continue
        a, b = statistics.median(ours), statistics.median(theirs)
        better = "higher is better" if metric in HIGHER_IS_BETTER else "lower is better"
        ratio = f"{a / b:7.2f}×" if b else "      -"
        lines.append(f"  {metric.ljust(width)}{ratio}   ({_number(a)} vs {_number(b)}; {better})")
    return lines


def scale_table(scale: ScaleResults, jobs: int) -> list[str]:
    """The scale-out section: one row per system and process count, then the ratios."""
    if not scale:
        return []
    rows = [
        ["system", "processes", "jobs/s", "CPU µs/job", "speed-up", "runs per process", "once"],
        ["---", "---:", "---:", "---:", "---:", "---", "---"],
    ]
    medians: dict[tuple[str, int], float] = {}
    for label, by_count in scale.items():
        single = by_count.get(1) or []
        for processes, runs in by_count.items():
            if not runs:
                continue
            rates = [r.rate for r in runs]
            medians[label, processes] = statistics.median(rates)
            speed_up = (
                _number(statistics.median(rates) / statistics.median(r.rate for r in single)) + "×"
                if single
                else "-"
            )
            shares = sorted(share for r in runs for share in r.shares)
            spread = "all" if processes == 1 else f"{shares[0]:,}–{shares[-1]:,}"
            ok = sum(r.exactly_once for r in runs)
            rows.append(
                [
                    label,
                    str(processes),
                    cell(rates),
                    cell([r.cpu_us for r in runs]),
                    speed_up,
                    spread,
                    f"{ok}/{len(runs)} runs" if ok == len(runs) else f"NO: {ok}/{len(runs)} runs",
                ]
            )
    lines = [
        f"scale-out: N={jobs:,} preloaded no-op jobs, P worker processes at concurrency "
        f"{CONCURRENCY} each; time from the go line to an empty queue; speed-up against 1 "
        "process; 'once': runs in which every job ran exactly once and left one result",
        "",
        *_markdown(rows),
    ]
    theirs = [label for label in scale if not label.startswith(HOSTED.label)]
    baselines = [label for label in scale if label.startswith(HOSTED.label + "@")]
    counts = sorted({p for _, p in medians})
    if HOSTED.label not in scale:
        return lines
    for other in theirs[:1] + baselines:
        lines += ["", f"{HOSTED.label} / {other} at the same process count (medians):"]
        for processes in counts:
            a, b = medians.get((HOSTED.label, processes)), medians.get((other, processes))
            if a is not None and b is not None:
                lines.append(
                    f"  {processes} process(es): {a / b:6.2f}×   ({_number(a)} vs {_number(b)})"
                )
    return lines


def _markdown(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def source_revision() -> str:
    """Where the benchmarked hostedjobs is imported from, and its git commit if it has one."""
    folder = Path(hostedjobs.__file__).resolve().parent
    try:
        head, changes = (
            subprocess.run(
                ["git", "-C", str(folder), *command],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.strip()
            for command in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain", "--", "."])
        )
    except (OSError, subprocess.SubprocessError):
        return f"{folder} (not a git checkout)"
    return f"{folder} at {head}{' + uncommitted changes' if changes else ''}"


def header(redis_version: str, config: Config, dropped: dict[str, str]) -> list[str]:
    """Machine, versions, sizes, and any dropped peer."""

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    peers = [s.peer for s in config.systems if s.peer is not None]
    peer_versions = "; ".join(f"{p.name}: {' '.join(p.requirements)}" for p in peers)
    lines = [
        f"hostedjobs engine benchmark: hostedjobs vs raw arq and peers, "
        f"concurrency/max_jobs={CONCURRENCY}",
        f"machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, redis-server {redis_version} (private, no "
        "persistence, loopback)",
        "event loop: asyncio for every system and every enqueuer"
        + (
            f", except the worker processes of {HOSTED_UVLOOP.label} (uvloop {version('uvloop')};"
            " no enqueue figures of its own: its enqueuers are hostedjobs')"
            if HOSTED_UVLOOP in config.systems
            else ""
        ),
        f"versions: arq {version('arq')}, redis-py {version('redis')}, hiredis "
        f"{version('hiredis')}; hostedjobs {version('hostedjobs')} from {source_revision()}",
    ]
    if peers:
        lines.append(f"peers, each in its own venv under bench/.peers/: {peer_versions}")
    for system in config.systems:
        if system.baseline is not None:
            lines.append(
                f"{system.label}: hostedjobs at {system.baseline.commit[:12]}, from "
                f"{system.baseline.checkout.relative_to(ROOT)} (git archive) in this venv: that "
                "revision's bench/hosted_worker.py runs its workers, and this tree's "
                "bench/hosted_client.py its enqueuers, each in a process with that checkout "
                "first on sys.path"
            )
    lines += [
        f"enqueue: N={config.enqueue_jobs} sequential single enqueues from one client; "
        f"bulk: one call for N={config.bulk_jobs} jobs ('-': no bulk API)",
        f"drain: N={config.drain_jobs} preloaded no-op jobs, one worker process (burst mode for "
        "hostedjobs/arq; peers stop when the N-th job has finished)"
        + (
            f"; arq poll=0.5: N={config.slow_drain_jobs}"
            if any(s.poll_delay == ARQ_DEFAULT.poll_delay for s in config.systems)
            else ""
        ),
        f"sleep drain: {config.sleep_jobs} jobs of asyncio.sleep({SLEEP_S:g}) at concurrency "
        f"{CONCURRENCY}; wall time / ideal {config.sleep_ideal_s:.3f} s",
        f"pickup: {config.latency_jobs} jobs, one every {LATENCY_INTERVAL_S * 1000:g} ms, "
        f"to a worker idle for {IDLE_BEFORE_S:g} s; enqueuer's time.time() before the "
        "call -> handler entry",
        "Redis cost: the server's INFO commandstats calls (script-inner commands included; the "
        "bench's own INFO not) and used_cpu_sys+user, before/after the single enqueues (per "
        f"job enqueued, {WARM_UP_JOBS} warm-up included) and the drain (per job, after the "
        "preload: the worker process from start to exit)",
        f"{config.rounds} round(s), systems alternated; median (min–max) over rounds",
    ]
    if config.scale_out:
        counts = ", ".join(map(str, config.scale_out))
        lines.insert(
            -1,
            f"scale-out: N={config.scale_jobs} no-op jobs by {counts} worker processes "
            "(hostedjobs and arq; the peers' workers stop on a per-process job count, so they "
            "are not run)",
        )
    lines += [f"DROPPED {label}: {reason}" for label, reason in dropped.items()]
    return lines


def json_report(
    results: Results,
    scale: ScaleResults,
    systems: tuple[System, ...],
    config: Config,
    lines: list[str],
    commands: CommandResults,
) -> dict[str, Any]:
    """Every raw value with its median and range, for ``--json``; with, per system and round,
    the Redis commands per job of its enqueue and drain by command name."""
    metrics: dict[str, dict[str, Any]] = {}
    for metric in METRICS:
        metrics[metric] = {}
        for system in systems:
            values = results[metric][system.label]
            metrics[metric][system.label] = (
                {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "values": values,
                }
                if values
                else None
            )
    scale_out = {
        label: {
            str(processes): {
                "median": statistics.median(r.rate for r in runs),
                "min": min(r.rate for r in runs),
                "max": max(r.rate for r in runs),
                "runs": [asdict(r) for r in runs],
            }
            for processes, runs in by_count.items()
            if runs
        }
        for label, by_count in scale.items()
        if any(by_count.values())
    }
    return {
        "systems": [s.label for s in systems],
        "baselines": {
            s.label: {"rev": s.baseline.rev, "commit": s.baseline.commit}
            for s in systems
            if s.baseline is not None
        },
        "metrics": metrics,
        "scale_out": scale_out,
        "redis_commands_per_job": {s.label: commands[s.label] for s in systems},
        "higher_is_better": sorted(HIGHER_IS_BETTER),
        "config": {k: v for k, v in asdict(config).items() if k != "systems"},
        "report": lines,
    }


# -- main -----------------------------------------------------------------------------------


async def run(config: Config, json_path: Path | None) -> list[str]:
    """Run every round against a private redis-server and return the report's lines."""
    dropped: dict[str, str] = {}
    systems = list(config.systems)
    for system in config.systems:
        if system.peer is not None:
            try:
                await asyncio.to_thread(ensure_venv, system.peer)
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                dropped[system.label] = f"venv setup failed: {exc}"
                systems.remove(system)
        if system.baseline is not None:
            try:
                await asyncio.to_thread(ensure_baseline, system.baseline)
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                dropped[system.label] = f"checkout failed: {exc}"
                systems.remove(system)
    with tempfile.TemporaryDirectory(prefix="hostedjobs-bench-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", persistent=False)
        url = await asyncio.to_thread(server.start)
        try:
            client = aioredis.Redis.from_url(url)
            try:
                info = await client.info("server")
                bench = Bench(url, client, config, Path(tmp))
                progress(f"private redis-server at {url}")
                for round_no in range(config.rounds):
                    shift = round_no % len(systems)
                    order = systems[shift:] + systems[:shift]
                    progress(f"round {round_no + 1}/{config.rounds}")
                    measures = (
                        bench.enqueue,
                        bench.drain,
                        bench.sleep_drain,
                        bench.latency,
                        bench.scale_out,
                    )
                    for measure in measures:
                        for system in order:
                            if system.label in dropped:
                                continue
                            try:
                                await measure(system)
                            except (BenchError, TimeoutError, OSError) as exc:
                                if system.peer is None and system.baseline is None:
                                    raise
                                reason = str(exc).splitlines()[0] if str(exc) else repr(exc)
                                progress(f"  DROPPING {system.label}: {reason}")
                                dropped[system.label] = f"failed in round {round_no + 1}: {reason}"
                    systems = [s for s in systems if s.label not in dropped]
                await client.flushdb()
            finally:
                await client.aclose()
        finally:
            await asyncio.to_thread(server.shutdown)
    kept = tuple(systems)
    lines = [
        *header(str(info["redis_version"]), config, dropped),
        "",
        *table(bench.results, kept),
        "",
        *ratios(bench.results, kept),
    ]
    scale = {label: by_count for label, by_count in bench.scale.items() if label not in dropped}
    if config.scale_out:
        lines += ["", *scale_table(scale, config.scale_jobs)]
    if json_path is not None:
        report = json_report(bench.results, scale, kept, config, lines, bench.commands)
        report["dropped"] = dropped
        await asyncio.to_thread(json_path.write_text, json.dumps(report, indent=1) + "\n")
        progress(f"wrote {json_path}")
    return lines


def parse_args(argv: list[str] | None = None) -> tuple[Config, Path | None]:
    """The command line: ``--rounds``, ``--quick``, the sizes, the systems (``--peers``,
    ``--baseline``…) and ``--json``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 3, quick 1)")
    parser.add_argument("--quick", action="store_true", help="a ~1 min smoke run, smaller N")
    parser.add_argument("--enqueue-jobs", type=int, help="default 2000 (quick 500)")
    parser.add_argument("--bulk-jobs", type=int, help="default 10000 (quick 2000)")
    parser.add_argument("--drain-jobs", type=int, help="default 5000 (quick 1000)")
    parser.add_argument(
        "--slow-drain-jobs", type=int, help="drain N for arq poll=0.5 (default 2000, quick 640)"
    )
    parser.add_argument("--sleep-jobs", type=int, help="default 2000 (quick 320)")
    parser.add_argument("--latency-jobs", type=int, help="default 300 (quick 50)")
    parser.add_argument(
        "--arq-default", action="store_true", help="also measure stock arq with its 0.5 s poll"
    )
    parser.add_argument(
        "--peers",
        default=",".join(p.name for p in PEERS),
        help="comma-separated peers to include (default: all; '' for none)",
    )
    parser.add_argument(
        "--scale-out",
        default="1,2,4",
        metavar="P,P,...",
        help="worker process counts of the scale-out run (default 1,2,4; '' for none)",
    )
    parser.add_argument("--scale-jobs", type=int, help="scale-out N (default 10000, quick 2000)")
    parser.add_argument(
        "--no-uvloop", action="store_true", help="leave out the hostedjobs+uvloop column"
    )
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="REV",
        help="also benchmark hostedjobs as it was at git revision REV (a column "
        "'hostedjobs@REV', and ratios this tree / REV); may be given more than once",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write raw values here")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    wanted = {name.strip() for name in str(args.peers).split(",") if name.strip()}
    unknown = wanted - {p.name for p in PEERS}
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    systems = [HOSTED]
    if not args.no_uvloop:
        if importlib.util.find_spec("uvloop") is None:
            parser.error(
                "uvloop is not installed (pip install 'hostedjobs[uvloop]'); or --no-uvloop"
            )
        systems.append(HOSTED_UVLOOP)
    for rev in dict.fromkeys(str(r) for r in args.baseline):
        try:
            baseline = resolve_baseline(rev)
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            parser.error(str(exc))
        systems.append(System(f"{HOSTED.label}@{rev}", baseline=baseline))
    systems.append(ARQ_FAST)
    try:
        scale_out = tuple(int(p) for p in str(args.scale_out).split(",") if p.strip())
    except ValueError:
        parser.error(f"--scale-out takes process counts like 1,2,4, got {args.scale_out!r}")
    if any(p < 1 for p in scale_out):
        parser.error("--scale-out process counts must be >= 1")
    if args.arq_default:
        systems.append(ARQ_DEFAULT)
    systems += [System(PEER_LABELS[p.name], peer=p) for p in PEERS if p.name in wanted]
    config = Config(
        rounds=args.rounds or (1 if quick else 3),
        enqueue_jobs=args.enqueue_jobs or (500 if quick else 2000),
        bulk_jobs=args.bulk_jobs or (2000 if quick else 10000),
        drain_jobs=args.drain_jobs or (1000 if quick else 5000),
        slow_drain_jobs=args.slow_drain_jobs or (640 if quick else 2000),
        sleep_jobs=args.sleep_jobs or (320 if quick else 2000),
        latency_jobs=args.latency_jobs or (50 if quick else 300),
        systems=tuple(systems),
        scale_out=scale_out,
        scale_jobs=args.scale_jobs or (2000 if quick else 10000),
    )
    sizes = (
        config.enqueue_jobs,
        config.bulk_jobs,
        config.drain_jobs,
        config.slow_drain_jobs,
        config.scale_jobs,
    )
    if min(config.rounds, config.sleep_jobs, config.latency_jobs, *sizes) < 1:
        parser.error("rounds and sizes must be >= 1")
    return config, args.json


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m bench.engine``."""
    config, json_path = parse_args(argv)
    started = time.perf_counter()
    lines = asyncio.run(run(config, json_path))
    progress(f"done in {time.perf_counter() - started:.0f} s")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
