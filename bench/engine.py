"""hostedjobs' engine against raw arq: enqueue rate, one-process drain, idle pickup latency.

Run with ``python -m bench.engine`` (``make bench``); ``--quick`` is a ~30 s smoke run.

Three systems are measured in one run, on a private ``redis-server`` (never the Redis on
6379), FLUSHDB before every measurement, all at concurrency/max_jobs=32:

- ``hostedjobs``: `JobHost` with a ``@job_type`` job whose handler takes a scoped service;
- ``arq poll=0.5``: a stock arq worker with its defaults (pickle, 0.5 s poll);
- ``arq poll=0.01``: the same, tuned to poll every 10 ms.

Each round measures every metric for every system, the order of systems rotating from round
to round; the table shows the median and (min–max) over rounds. The metrics:

1. enqueue rate: N sequential single enqueues from one client in this process;
2. drain: N jobs are preloaded, then one worker process in burst mode runs them; wall and
   CPU time (``time.process_time``) are measured inside that process, from the start of
   processing until the queue is empty (interpreter start-up excluded);
3. pickup latency: a worker process idles for 1 s, then jobs are enqueued one every 10 ms;
   each job's ``time.time()`` at handler entry minus the enqueuer's ``time.time()`` just
   before its enqueue call (carried in the payload).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from arq.connections import RedisSettings, create_pool
from arq.constants import expires_extra_ms, job_key_prefix
from arq.jobs import serialize_job

import hostedjobs
from hostedjobs.embedded import EmbeddedRedis

from .arq_worker import FUNCTION_NAME
from .common import READY, Recorder, percentile
from .hosted_worker import BenchJob, build_host

__all__ = ["Config", "System", "main"]

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 32
LATENCY_INTERVAL_S = 0.010
IDLE_BEFORE_S = 1.0
HOSTED_QUEUE = "bench-hostedjobs"
ARQ_QUEUE = "bench-arq"
PRELOAD_CHUNK = 250
"""hostedjobs preload: enqueues in flight at once (asyncio.gather)."""


@dataclass(frozen=True)
class System:
    """One column of the table: hostedjobs, or a stock arq worker with a poll delay."""

    label: str
    poll_delay: float | None = None
    """None for hostedjobs."""

    @property
    def hosted(self) -> bool:
        """True for the hostedjobs column."""
        return self.poll_delay is None


SYSTEMS = (System("hostedjobs"), System("arq poll=0.5", 0.5), System("arq poll=0.01", 0.01))


@dataclass(frozen=True)
class Config:
    """Sizes of one benchmark run."""

    rounds: int
    enqueue_jobs: int
    drain_jobs: int
    slow_drain_jobs: int
    """Drain size for arq at its default 0.5 s poll, which caps it at 320 jobs/s."""
    latency_jobs: int

    def drain_size(self, system: System) -> int:
        """How many jobs ``system`` drains (fewer for arq's default poll, see above)."""
        slow = system.poll_delay is not None and system.poll_delay >= 0.1
        return self.slow_drain_jobs if slow else self.drain_jobs


class BenchError(RuntimeError):
    """A worker process failed or ran fewer jobs than it was given."""


# -- metrics --------------------------------------------------------------------------------

ENQUEUE = "enqueue rate (jobs/s)"
DRAIN = "drain, 1 process (jobs/s)"
CPU = "worker CPU (µs/job)"
P50, P95, P99, PMAX = (f"pickup {p} (ms)" for p in ("p50", "p95", "p99", "max"))
METRICS = (ENQUEUE, DRAIN, CPU, P50, P95, P99, PMAX)
HIGHER_IS_BETTER = {ENQUEUE, DRAIN}

Results = dict[str, dict[str, list[float]]]
"""metric -> system label -> one value per round."""


# -- enqueuing ------------------------------------------------------------------------------


async def hosted_enqueue_rate(url: str, n: int) -> float:
    """Sequential `Scheduler.enqueue` calls from one client; jobs/s."""
    host = build_host(url, HOSTED_QUEUE, Recorder(), run_worker=False)
    async with host.run():
        scheduler = host.scheduler
        for i in range(100):  # warm-up: connection, script load
            await scheduler.enqueue(BenchJob(seq=-i))
        start = time.perf_counter()
        for i in range(n):
            await scheduler.enqueue(BenchJob(seq=i))
        return n / (time.perf_counter() - start)


async def arq_enqueue_rate(url: str, n: int) -> float:
    """Sequential `ArqRedis.enqueue_job` calls from one client; jobs/s."""
    pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=ARQ_QUEUE)
    try:
        for i in range(100):
            await pool.enqueue_job(FUNCTION_NAME, -i)
        start = time.perf_counter()
        for i in range(n):
            await pool.enqueue_job(FUNCTION_NAME, i)
        return n / (time.perf_counter() - start)
    finally:
        await pool.aclose(close_connection_pool=True)


async def hosted_preload(url: str, n: int) -> None:
    """Queue ``n`` jobs through the hostedjobs scheduler, ``PRELOAD_CHUNK`` at a time."""
    host = build_host(url, HOSTED_QUEUE, Recorder(), run_worker=False)
    async with host.run():
        scheduler = host.scheduler
        for start in range(0, n, PRELOAD_CHUNK):
            await asyncio.gather(
                *(
                    scheduler.enqueue(BenchJob(seq=i))
                    for i in range(start, min(n, start + PRELOAD_CHUNK))
                )
            )


async def arq_preload(client: aioredis.Redis, n: int) -> None:
    """Write ``n`` jobs in arq's layout (job key + queue zset entry), pipelined."""
    now_ms = int(time.time() * 1000)
    for start in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + 1000)):
            job_id = uuid.uuid4().hex
            data = serialize_job(FUNCTION_NAME, (i,), {}, None, now_ms)
            pipe.psetex(job_key_prefix + job_id, expires_extra_ms, data)
            pipe.zadd(ARQ_QUEUE, {job_id: now_ms})
        await pipe.execute()


async def latency_feed(enqueue: Callable[[int, float], Awaitable[object]], n: int) -> None:
    """Call ``enqueue(seq, sent_at)`` ``n`` times, one every ``LATENCY_INTERVAL_S``."""
    start = time.perf_counter()
    for i in range(n):
        delay = start + i * LATENCY_INTERVAL_S - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at = time.time()
        await enqueue(i, sent_at)


async def hosted_latency_feed(url: str, n: int) -> None:
    """Feed the latency jobs through `Scheduler.enqueue`."""
    host = build_host(url, HOSTED_QUEUE, Recorder(), run_worker=False)
    async with host.run():
        scheduler = host.scheduler

        async def enqueue(seq: int, sent_at: float) -> None:
            await scheduler.enqueue(BenchJob(seq=seq, sent_at=sent_at))

        await latency_feed(enqueue, n)


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


def worker_command(system: System, mode: str, url: str, jobs: int, timeout: float) -> list[str]:
    """The ``python -m bench.<worker>`` command line for ``system``."""
    common = ["--redis-url", url, "--jobs", str(jobs), "--concurrency", str(CONCURRENCY)]
    common += ["--timeout", str(timeout)]
    if system.hosted:
        return [sys.executable, "-m", "bench.hosted_worker", mode, "--queue", HOSTED_QUEUE, *common]
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
    command: list[str], log_dir: Path, *, when_ready: Callable[[], Awaitable[None]] | None = None
) -> dict[str, Any]:
    """Run a worker process and return its JSON result.

    With ``when_ready``, wait for the worker's ready line, then await ``when_ready()`` while
    the worker runs.
    """
    log = log_dir / f"worker-{uuid.uuid4().hex[:8]}.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=stderr
        )
        assert process.stdout is not None
        try:
            if when_ready is not None:
                line = await asyncio.wait_for(process.stdout.readline(), 60)
                if line.decode().strip() != READY:
                    raise BenchError(f"worker did not get ready: {line!r}\n{_tail(log)}")
                await when_ready()
            out = await asyncio.wait_for(process.stdout.read(), 600)
            code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    lines = out.decode().strip().splitlines()
    if code != 0 or not lines:
        raise BenchError(f"{' '.join(command[1:4])} exited with {code}\n{_tail(log)}")
    result: dict[str, Any] = json.loads(lines[-1])
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
        self.results: Results = {m: {s.label: [] for s in SYSTEMS} for m in METRICS}

    def record(self, metric: str, system: System, value: float) -> None:
        """Keep one round's value."""
        self.results[metric][system.label].append(value)

    async def enqueue(self, system: System) -> None:
        """Metric 1: sequential enqueue rate."""
        await self.client.flushdb()
        n = self.config.enqueue_jobs
        if system.hosted:
            rate = await hosted_enqueue_rate(self.url, n)
        else:
            rate = await arq_enqueue_rate(self.url, n)
        self.record(ENQUEUE, system, rate)
        progress(f"  enqueue  {system.label:<14} {rate:>9,.0f} jobs/s")

    async def drain(self, system: System) -> None:
        """Metric 2: one burst-mode worker process drains a preloaded queue."""
        await self.client.flushdb()
        n = self.config.drain_size(system)
        if system.hosted:
            await hosted_preload(self.url, n)
            queue = HOSTED_QUEUE
        else:
            await arq_preload(self.client, n)
            queue = ARQ_QUEUE
        queued = await self.client.zcard(queue)
        if queued != n:
            raise BenchError(f"preloaded {queued} jobs for {system.label}, expected {n}")
        result = await run_worker(worker_command(system, "drain", self.url, n, 0), self.log_dir)
        if result["jobs"] != n:
            raise BenchError(f"{system.label} ran {result['jobs']} of {n} jobs: {result}")
        rate = n / result["wall_s"]
        cpu_us = result["cpu_s"] / n * 1e6
        self.record(DRAIN, system, rate)
        self.record(CPU, system, cpu_us)
        progress(
            f"  drain    {system.label:<14} {rate:>9,.0f} jobs/s  {cpu_us:6.1f} µs/job  "
            f"({n} jobs in {result['wall_s']:.2f} s)"
        )

    async def latency(self, system: System) -> None:
        """Metric 3: pickup latency of an idle worker, jobs arriving every 10 ms."""
        await self.client.flushdb()
        n = self.config.latency_jobs
        timeout = IDLE_BEFORE_S + n * LATENCY_INTERVAL_S + 30

        async def feed() -> None:
            await asyncio.sleep(IDLE_BEFORE_S)
            if system.hosted:
                await hosted_latency_feed(self.url, n)
            else:
                await arq_latency_feed(self.url, n)

        command = worker_command(system, "latency", self.url, n, timeout)
        result = await run_worker(command, self.log_dir, when_ready=feed)
        latencies: list[float] = result["latencies_ms"]
        if len(latencies) != n:
            raise BenchError(f"{system.label} started {len(latencies)} of {n} latency jobs")
        values = {P50: 50.0, P95: 95.0, P99: 99.0, PMAX: 100.0}
        for metric, pct in values.items():
            self.record(metric, system, percentile(latencies, pct))
        progress(
            f"  pickup   {system.label:<14} p50 {percentile(latencies, 50):7.2f} ms  "
            f"p99 {percentile(latencies, 99):7.2f} ms  max {max(latencies):7.2f} ms"
        )


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
    """``median (min–max)`` of one metric's rounds."""
    if len(values) == 1:
        return _number(values[0])
    med = statistics.median(values)
    return f"{_number(med)} ({_number(min(values))}–{_number(max(values))})"


def table(results: Results) -> list[str]:
    """The side-by-side table: one row per metric, one column per system."""
    label_width = max(len(m) for m in METRICS) + 2
    cells = {m: [cell(results[m][s.label]) for s in SYSTEMS] for m in METRICS}
    width = max(len(c) for row in cells.values() for c in row) + 3
    width = max(width, *(len(s.label) + 3 for s in SYSTEMS))
    lines = ["".ljust(label_width) + "".join(s.label.rjust(width) for s in SYSTEMS)]
    lines += [m.ljust(label_width) + "".join(c.rjust(width) for c in cells[m]) for m in METRICS]
    return lines


def ratios(results: Results) -> list[str]:
    """Per metric: hostedjobs' median over the best arq configuration's median."""
    lines = ["hostedjobs / best arq config (medians):"]
    label_width = max(len(m) for m in METRICS) + 2
    for metric in METRICS:
        hosted = statistics.median(results[metric][SYSTEMS[0].label])
        arq = {s.label: statistics.median(results[metric][s.label]) for s in SYSTEMS[1:]}
        higher = metric in HIGHER_IS_BETTER
        best = max(arq, key=arq.__getitem__) if higher else min(arq, key=arq.__getitem__)
        ratio = hosted / arq[best]
        better = "higher is better" if higher else "lower is better"
        lines.append(
            f"  {metric.ljust(label_width)}{ratio:7.2f}×   (vs {best}: {_number(hosted)} vs "
            f"{_number(arq[best])}; {better})"
        )
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


def header(redis_version: str, config: Config) -> list[str]:
    """Machine, versions and sizes."""

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    slow = config.slow_drain_jobs
    return [
        f"hostedjobs engine benchmark: hostedjobs vs raw arq, concurrency/max_jobs={CONCURRENCY}",
        f"machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()} (asyncio), redis-server {redis_version} "
        "(private, no persistence, loopback)",
        f"versions: arq {version('arq')}, redis-py {version('redis')}, hiredis "
        f"{version('hiredis')}; hostedjobs {version('hostedjobs')} from {source_revision()}",
        f"enqueue: N={config.enqueue_jobs} sequential enqueues from one client "
        "(arq: the same enqueue_job for both poll settings)",
        f"drain: N={config.drain_jobs} preloaded jobs, one worker process in burst mode "
        f"(arq poll=0.5: N={slow}, as its poll caps it at 32·5/0.5 = 320 jobs/s)",
        f"pickup: {config.latency_jobs} jobs, one every {LATENCY_INTERVAL_S * 1000:g} ms, "
        f"to a worker idle for {IDLE_BEFORE_S:g} s; enqueuer's time.time() before the "
        "call -> handler entry",
        f"{config.rounds} round(s), systems alternated; median (min–max) over rounds",
    ]


# -- main -----------------------------------------------------------------------------------


async def run(config: Config) -> list[str]:
    """Run every round against a private redis-server and return the report's lines."""
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
                    shift = round_no % len(SYSTEMS)
                    order = SYSTEMS[shift:] + SYSTEMS[:shift]
                    progress(f"round {round_no + 1}/{config.rounds}")
                    for measure in (bench.enqueue, bench.drain, bench.latency):
                        for system in order:
                            await measure(system)
                await client.flushdb()
            finally:
                await client.aclose()
        finally:
            await asyncio.to_thread(server.stop)
    return [
        *header(str(info["redis_version"]), config),
        "",
        *table(bench.results),
        "",
        *ratios(bench.results),
    ]


def parse_config(argv: list[str] | None = None) -> Config:
    """The command line: ``--rounds``, ``--quick`` and the sizes."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 3, quick 1)")
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run, smaller N")
    parser.add_argument("--enqueue-jobs", type=int, help="default 5000 (quick 1000)")
    parser.add_argument("--drain-jobs", type=int, help="default 20000 (quick 3000)")
    parser.add_argument(
        "--slow-drain-jobs", type=int, help="drain N for arq poll=0.5 (default 2000, quick 640)"
    )
    parser.add_argument("--latency-jobs", type=int, help="default 500 (quick 100)")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    config = Config(
        rounds=args.rounds or (1 if quick else 3),
        enqueue_jobs=args.enqueue_jobs or (1000 if quick else 5000),
        drain_jobs=args.drain_jobs or (3000 if quick else 20000),
        slow_drain_jobs=args.slow_drain_jobs or (640 if quick else 2000),
        latency_jobs=args.latency_jobs or (100 if quick else 500),
    )
    if min(config.rounds, config.enqueue_jobs, config.drain_jobs, config.latency_jobs) < 1:
        parser.error("rounds and sizes must be >= 1")
    if config.slow_drain_jobs < 1:
        parser.error("rounds and sizes must be >= 1")
    return config


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m bench.engine``."""
    config = parse_config(argv)
    started = time.perf_counter()
    lines = asyncio.run(run(config))
    progress(f"done in {time.perf_counter() - started:.0f} s")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
