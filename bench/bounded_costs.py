"""Bounded costs: what large queues and many cron jobs cost hostedjobs, against small ones.

    python -m bench.bounded_costs [--deferred 1000000] [--running 1000,5000] [--cron 10,10000]

Everything runs on a private ``redis-server``; the sections, each printed as a table:

1. **Deferred jobs.** ``--deferred`` jobs scheduled 30 days ahead (copies of one job scheduled
   through ``host.scheduler.schedule``, written by a Lua script in chunks) sit in one queue;
   another queue on the same Redis is empty. One worker process drains ``--due`` new no-op
   jobs from each queue in turn (timed from its go line until the queue is back to its
   deferred jobs, see `bench.fleet`); then an idle worker watches each queue for
   ``--idle-seconds``, and ``INFO commandstats`` deltas give the Redis commands it issued per
   fallback period (1 s).
2. **Jobs running elsewhere.** ``--running`` jobs look like runs of other workers (in the
   queue, with a live in-progress key) beside ``--due`` new jobs, which one worker drains; in
   two layouts: as hostedjobs workers leave them (scored at their lock's lapse, past the due
   range) and as stock arq workers do (still due, ahead of the new jobs). ``--probe-running``
   adds one run of each beyond the claim's scan cap.
3. **Cron jobs.** A host with ``--cron`` per-process cron jobs (and, separately, distributed
   cron jobs), all on ``0 0 1 1 *``, runs in a child process: registration and start-up time,
   then process CPU and Redis commands over ``--idle-seconds`` of idling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from hostedjobs import JobContext, JobHost
from hostedjobs.storage.embedded import EmbeddedRedis

from .common import Recorder, emit
from .engine import progress
from .fleet import FleetRun, queue_back_to, run_fleet
from .hosted_client import hosted_preload
from .hosted_worker import BenchJob, build_host

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
DEFERRED_QUEUE = "bench-deferred"
EMPTY_QUEUE = "bench-empty"
RUNNING_QUEUE = "bench-running"
CONCURRENCY = 32
DEFER_S = 30 * 86_400
CHUNK = 10_000
WARM_UP_S = 2.0
FLEET_TIMEOUT_S = 300.0
PROBE_TIMEOUT_S = 20.0
CRON_EXPRESSION = "0 0 1 1 *"

# Writes job ids ARGV[5]..ARGV[6] (as ARGV[4] .. i) into the queue ARGV[1] at score ARGV[7],
# each with its job key (ARGV[2] prefix, payload ARGV[9], ttl ARGV[8]) and, if ARGV[3] is not
# empty, an in-progress key with that prefix (ttl ARGV[10]): a run of another worker.
_FILL = """
local queue, job_prefix, lock_prefix, id_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local score, ttl, data, lock_ms = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
for i = tonumber(ARGV[5]), tonumber(ARGV[6]) do
  local id = id_prefix .. i
  redis.call('PSETEX', job_prefix .. id, ttl, data)
  redis.call('ZADD', queue, score, id)
  if lock_prefix ~= '' then redis.call('PSETEX', lock_prefix .. id, lock_ms, '1') end
end
return 1
"""


# -- Redis-side accounting --------------------------------------------------------------------


async def command_counts(client: aioredis.Redis) -> dict[str, int]:
    """Calls per command so far (``INFO commandstats``), commands run by scripts included."""
    stats: dict[str, Any] = await client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name != "cmdstat_info"
    }


async def redis_cpu_s(client: aioredis.Redis) -> float:
    """The redis-server's CPU seconds so far (user + system)."""
    info: dict[str, Any] = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Per-command call counts between two `command_counts` snapshots (non-zero only)."""
    changes = {name: calls - before.get(name, 0) for name, calls in after.items()}
    return {name: calls for name, calls in sorted(changes.items()) if calls}


def describe(counts: dict[str, int], per: float) -> str:
    """``evalsha 1.0, blpop 1.0`` for the counts divided by ``per``."""
    if not counts:
        return "none"
    ordered = sorted(counts.items(), key=lambda item: -item[1])
    return ", ".join(f"{name} {calls / per:.3g}" for name, calls in ordered)


# -- filling queues ---------------------------------------------------------------------------


async def job_template(url: str) -> bytes:
    """The stored bytes of one `BenchJob` scheduled 30 days ahead through the public API."""
    host = build_host(url, "bench-template", Recorder(), run_worker=False)
    async with host.run():
        job_id = await host.scheduler.schedule(BenchJob(seq=0), delay=timedelta(seconds=DEFER_S))
        data = await host.scheduler.pool.get(f"arq:job:{job_id}")
        await host.scheduler.delete(job_id)
    assert isinstance(data, bytes)
    return data


async def fill(
    client: aioredis.Redis,
    queue: str,
    count: int,
    *,
    score_ms: int,
    data: bytes,
    id_prefix: str,
    running: bool = False,
) -> None:
    """Write ``count`` jobs into ``queue`` at ``score_ms``, in chunks of `CHUNK` per script."""
    script = client.register_script(_FILL)
    ttl_ms = max(score_ms - int(time.time() * 1000), 0) + 86_400_000
    for first in range(0, count, CHUNK):
        last = min(count, first + CHUNK) - 1
        await script(
            args=[
                queue,
                "arq:job:",
                "arq:in-progress:" if running else "",
                id_prefix,
                first,
                last,
                score_ms,
                ttl_ms,
                data,
                600_000,
            ]
        )


# -- worker runs ------------------------------------------------------------------------------


@dataclass
class Drain:
    """One drain of new jobs by one worker process."""

    rate: float
    worker_cpu_us: float
    redis_cpu_us: float
    ran: int


def drain_row(label: str, results: list[Drain]) -> str:
    """A Markdown row: the drain rate, worker and Redis CPU per job over the rounds."""
    rate = cell([r.rate for r in results])
    worker = cell([r.worker_cpu_us for r in results])
    return f"| {label} | {rate} | {worker} | {cell([r.redis_cpu_us for r in results])} |"


class Costs:
    """The measurements, against one private Redis."""

    def __init__(self, url: str, client: aioredis.Redis, log_dir: Path) -> None:
        self.url = url
        self.client = client
        self.log_dir = log_dir

    def worker(self, queue: str) -> list[str]:
        """A hostedjobs worker process in serve mode on ``queue``."""
        return [
            sys.executable,
            "-m",
            "bench.hosted_worker",
            "serve",
            "--redis-url",
            self.url,
            "--queue",
            queue,
            "--jobs",
            "0",
            "--concurrency",
            str(CONCURRENCY),
        ]

    async def drain(
        self, queue: str, n: int, baseline: int, timeout_s: float = FLEET_TIMEOUT_S
    ) -> tuple[Drain, FleetRun]:
        """Queue ``n`` due no-op jobs on ``queue`` and let one worker run them."""
        await hosted_preload(self.url, n, queue=queue)
        cpu0 = await redis_cpu_s(self.client)
        fleet = await run_fleet(
            [self.worker(queue)],
            self.log_dir,
            lambda: queue_back_to(self.client, queue, baseline),
            timeout_s=timeout_s,
        )
        redis_cpu = await redis_cpu_s(self.client) - cpu0
        ran = fleet.workers[0]["jobs"]
        result = Drain(
            rate=ran / fleet.wall_s,
            worker_cpu_us=fleet.workers[0]["cpu_s"] / max(ran, 1) * 1e6,
            redis_cpu_us=redis_cpu / max(ran, 1) * 1e6,
            ran=ran,
        )
        return result, fleet

    async def idle(self, queue: str, seconds: float) -> tuple[dict[str, int], float, float]:
        """Commands, Redis CPU s and worker CPU s of an idle worker on ``queue``."""
        window: dict[str, Any] = {}

        async def watch() -> None:
            await asyncio.sleep(WARM_UP_S)
            before, cpu0 = await command_counts(self.client), await redis_cpu_s(self.client)
            await asyncio.sleep(seconds)
            window["commands"] = delta(await command_counts(self.client), before)
            window["redis_cpu"] = await redis_cpu_s(self.client) - cpu0

        fleet = await run_fleet(
            [self.worker(queue)], self.log_dir, watch, timeout_s=seconds + WARM_UP_S + 30
        )
        return window["commands"], window["redis_cpu"], fleet.workers[0]["cpu_s"]


# -- 1. deferred ------------------------------------------------------------------------------


async def deferred_section(
    costs: Costs, deferred: int, due: int, rounds: int, idle_s: float
) -> list[str]:
    """Drain and idle costs with ``deferred`` far-future jobs in the queue, and without."""
    client = costs.client
    await client.flushdb()
    data = await job_template(costs.url)
    memory0 = int((await client.info("memory"))["used_memory"])
    started = time.perf_counter()
    score = int((time.time() + DEFER_S) * 1000)
    await fill(client, DEFERRED_QUEUE, deferred, score_ms=score, data=data, id_prefix="deferred-")
    load_s = time.perf_counter() - started
    memory = int((await client.info("memory"))["used_memory"]) - memory0
    queued = await client.zcard(DEFERRED_QUEUE)
    progress(f"  loaded {queued:,} deferred jobs in {load_s:.1f} s, {memory / 2**20:,.0f} MiB")
    queues = {f"{deferred:,} deferred": (DEFERRED_QUEUE, deferred), "0 deferred": (EMPTY_QUEUE, 0)}
    drains: dict[str, list[Drain]] = {label: [] for label in queues}
    for round_no in range(rounds):
        order = list(queues.items())
        if round_no % 2:
            order.reverse()
        for label, (queue, baseline) in order:
            result, _ = await costs.drain(queue, due, baseline)
            if result.ran != due:
                raise RuntimeError(f"{label}: {result.ran} of {due} jobs ran")
            drains[label].append(result)
            progress(
                f"  drain  {label:<20} {result.rate:>9,.0f} jobs/s  worker "
                f"{result.worker_cpu_us:5.1f} µs/job  redis {result.redis_cpu_us:5.1f} µs/job"
            )
    idles = {}
    for label, (queue, _) in queues.items():
        idles[label] = await costs.idle(queue, idle_s)
        progress(f"  idle   {label:<20} {describe(idles[label][0], idle_s)} per s")
    lines = [
        f"1. {deferred:,} deferred jobs (due in 30 days) in the queue, against none; "
        f"loaded in {load_s:.1f} s (Lua, {CHUNK:,} jobs per call), {memory / 2**20:,.0f} MiB "
        "of Redis memory",
        f"   drain: {due:,} due no-op jobs, 1 worker process, concurrency {CONCURRENCY}; "
        f"{rounds} round(s), queues alternated; median (min–max)",
        "",
        "| queue beside the due jobs | drain (jobs/s) | worker CPU (µs/job) | Redis CPU (µs/job) |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [drain_row(label, results) for label, results in drains.items()]
    lines += [
        "",
        f"   idle worker, {idle_s:g} s after a {WARM_UP_S:g} s warm-up (fallback poll 1 s): "
        "Redis commands per second, scripts' commands included",
        "",
        "| queue | commands/s | Redis CPU (ms/s) | worker CPU (ms/s, start-up included) "
        "| by command (per s) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for label, (commands, redis_cpu, worker_cpu) in idles.items():
        total = sum(commands.values())
        lines.append(
            f"| {label} | {total / idle_s:.3g} | {redis_cpu / idle_s * 1000:.2f} | "
            f"{worker_cpu / (idle_s + WARM_UP_S) * 1000:.2f} | {describe(commands, idle_s)} |"
        )
    await client.flushdb()
    return lines


# -- 2. running elsewhere -----------------------------------------------------------------------


async def running_section(
    costs: Costs, running: list[int], due: int, rounds: int, probe: int
) -> list[str]:
    """Drain rate of new jobs beside ``running`` jobs held by other (simulated) workers."""
    client = costs.client
    await client.flushdb()
    data = await job_template(costs.url)
    counts = [0, *running]
    layouts = {
        "hostedjobs": "hostedjobs workers (scored at their lock's lapse, 60 s ahead)",
        "arq": "stock arq workers (still due, ahead of the new jobs)",
    }
    drains: dict[tuple[str, int], list[Drain]] = {
        (layout, count): [] for layout in layouts for count in counts
    }

    async def one(layout: str, count: int, timeout_s: float) -> tuple[Drain, FleetRun]:
        await client.flushdb()
        offset_s = 60 if layout == "hostedjobs" else -60
        await fill(
            client,
            RUNNING_QUEUE,
            count,
            score_ms=int((time.time() + offset_s) * 1000),
            data=data,
            id_prefix="elsewhere-",
            running=True,
        )
        return await costs.drain(RUNNING_QUEUE, due, count, timeout_s)

    cases = list(drains)
    for round_no in range(rounds):
        shift = round_no % len(cases)
        for layout, count in cases[shift:] + cases[:shift]:
            result, _ = await one(layout, count, FLEET_TIMEOUT_S)
            drains[layout, count].append(result)
            progress(
                f"  drain  {count:>6,} running on {layout:<10} {result.rate:>9,.0f} jobs/s  "
                f"worker {result.worker_cpu_us:5.1f} µs/job  "
                f"redis {result.redis_cpu_us:6.1f} µs/job"
            )
    lines = [
        f"2. jobs running on other workers (in the queue, in-progress key alive) beside {due:,} "
        f"new no-op jobs; 1 worker process; {rounds} round(s); median (min–max)",
        "",
        "| running elsewhere, on | drain (jobs/s) | worker CPU (µs/job) | Redis CPU (µs/job) |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        drain_row(f"{count:,}, {layout}", results) for (layout, count), results in drains.items()
    ]
    lines += ["", *(f"   {layout}: {text}" for layout, text in layouts.items())]
    for layout in layouts if probe else ():
        result, fleet = await one(layout, probe, PROBE_TIMEOUT_S)
        left = await client.zcard(RUNNING_QUEUE) - probe
        outcome = (
            f"drained at {result.rate:,.0f} jobs/s"
            if fleet.finished
            else f"STALLED: {result.ran:,} of {due:,} new jobs ran in {PROBE_TIMEOUT_S:g} s "
            f"({left:,} still queued)"
        )
        progress(f"  probe  {probe:>6,} running on {layout:<10} {outcome}")
        lines += [f"   probe, {probe:,} running on {layout} workers (one run): {outcome}"]
    await client.flushdb()
    return lines


# -- 3. cron ----------------------------------------------------------------------------------


async def _nothing(ctx: JobContext) -> None:
    """The cron jobs' body; it never runs (the first tick is months away)."""


async def cron_host(url: str, kind: str, count: int, seconds: float) -> dict[str, Any]:
    """In a child process: a host with ``count`` cron jobs of ``kind``, started and idle."""
    started = time.perf_counter()
    host = JobHost(redis_url=url, queue_name="bench-cron")
    add = host.add_cron_job if kind == "cron" else host.add_distributed_cron_job
    for i in range(count):
        add(_nothing, CRON_EXPRESSION, name=f"{kind}-{i}")
    register_s = time.perf_counter() - started
    client = aioredis.Redis.from_url(url)
    try:
        started = time.perf_counter()
        async with host.run():
            # Bench-only peek at the tick heap: start-up ends once every first tick is in it.
            while True:
                if len(host._hosted._heap) >= count:
                    break
                await asyncio.sleep(0.005)
            startup_s = time.perf_counter() - started
            await asyncio.sleep(WARM_UP_S)
            before, cpu0 = await command_counts(client), time.process_time()
            await asyncio.sleep(seconds)
            idle_cpu_s = time.process_time() - cpu0
            commands = delta(await command_counts(client), before)
    finally:
        await client.aclose()
    return {
        "register_s": register_s,
        "startup_s": startup_s,
        "idle_cpu_s": idle_cpu_s,
        "commands": commands,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


async def cron_section(costs: Costs, counts: list[int], seconds: float) -> list[str]:
    """Per-process and distributed cron hosts of each size, one child process each."""
    rows = []
    for kind in ("cron", "distributed"):
        for count in counts:
            await costs.client.flushdb()
            command = [
                sys.executable,
                "-m",
                "bench.bounded_costs",
                "--cron-child",
                f"{kind}:{count}",
                "--redis-url",
                costs.url,
                "--idle-seconds",
                str(seconds),
            ]
            process = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, cwd=ROOT
            )
            out, _ = await process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"{' '.join(command[3:5])} exited with {process.returncode}")
            result = json.loads(out.decode().strip().splitlines()[-1])
            rows.append((kind, count, result))
            progress(
                f"  cron   {kind:<11} {count:>6,} jobs: register {result['register_s']:.2f} s, "
                f"start {result['startup_s']:.2f} s, idle CPU {result['idle_cpu_s'] * 1000:.0f} ms"
                f" / {seconds:g} s, {describe(result['commands'], seconds)} per s"
            )
    lines = [
        f"3. hosts with N cron jobs on {CRON_EXPRESSION!r} (next tick months away), a worker "
        f"running too (the default); idle window {seconds:g} s after a {WARM_UP_S:g} s warm-up",
        "",
        "| kind | jobs | register (s) | start-up (s) | idle CPU (ms/s) | Redis commands/s | "
        "by command (per s) | max RSS (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for kind, count, result in rows:
        commands = result["commands"]
        per_s = sum(commands.values()) / seconds
        lines.append(
            f"| {'per-process' if kind == 'cron' else 'distributed'} | {count:,} | "
            f"{result['register_s']:.2f} | {result['startup_s']:.2f} | "
            f"{result['idle_cpu_s'] / seconds * 1000:.2f} | {per_s:.3g} | "
            f"{describe(commands, seconds)} | {result['max_rss_mib']:.0f} |"
        )
    await costs.client.flushdb()
    return lines


# -- main -------------------------------------------------------------------------------------


def cell(values: list[float]) -> str:
    """``median (min–max)``, as in the engine report."""
    if len(values) == 1:
        return f"{values[0]:,.0f}" if values[0] >= 100 else f"{values[0]:.1f}"
    med = statistics.median(values)
    fmt: Callable[[float], str] = (lambda v: f"{v:,.0f}") if med >= 100 else (lambda v: f"{v:.1f}")
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"


@dataclass
class Options:
    """The command line."""

    deferred: int = 1_000_000
    due: int = 5_000
    running: list[int] = field(default_factory=lambda: [1_000, 5_000])
    probe_running: int = 6_000
    cron: list[int] = field(default_factory=lambda: [10, 10_000])
    rounds: int = 3
    idle_seconds: float = 10.0


async def run(options: Options) -> list[str]:
    """Every section against one private Redis; the report's lines."""
    sections: list[Callable[[Costs], Awaitable[list[str]]]] = [
        lambda c: deferred_section(
            c, options.deferred, options.due, options.rounds, options.idle_seconds
        ),
        lambda c: running_section(
            c, options.running, options.due, options.rounds, options.probe_running
        ),
        lambda c: cron_section(c, options.cron, options.idle_seconds),
    ]
    with tempfile.TemporaryDirectory(prefix="hostedjobs-costs-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", persistent=False)
        url = await asyncio.to_thread(server.start)
        client = aioredis.Redis.from_url(url)
        try:
            info = await client.info("server")
            progress(f"private redis-server {info['redis_version']} at {url}")
            lines = [
                f"hostedjobs bounded costs: private redis-server {info['redis_version']}, "
                "workers at concurrency 32 on asyncio",
            ]
            for number, section in enumerate(sections, 1):
                progress(f"section {number}/{len(sections)}")
                lines += ["", *await section(Costs(url, client, Path(tmp)))]
            return lines
        finally:
            await client.aclose()
            await asyncio.to_thread(server.shutdown)


def _counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m bench.bounded_costs``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.bounded_costs", description=(__doc__ or "").split("\n\n")[0]
    )
    defaults = Options()
    parser.add_argument("--deferred", type=int, default=defaults.deferred)
    parser.add_argument("--due", type=int, default=defaults.due, help="new jobs per drain")
    parser.add_argument("--running", type=_counts, default=defaults.running, metavar="N,N")
    parser.add_argument(
        "--probe-running",
        type=int,
        default=defaults.probe_running,
        help="one drain with this many running elsewhere, past the claim's scan cap (0: none)",
    )
    parser.add_argument("--cron", type=_counts, default=defaults.cron, metavar="N,N")
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--idle-seconds", type=float, default=defaults.idle_seconds)
    parser.add_argument("--cron-child", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cron_child:
        kind, _, count = str(args.cron_child).partition(":")
        emit(asyncio.run(cron_host(args.redis_url, kind, int(count), args.idle_seconds)))
        return
    options = Options(
        deferred=args.deferred,
        due=args.due,
        running=args.running,
        probe_running=args.probe_running,
        cron=args.cron,
        rounds=args.rounds,
        idle_seconds=args.idle_seconds,
    )
    started = time.perf_counter()
    lines = asyncio.run(run(options))
    progress(f"done in {time.perf_counter() - started:.0f} s")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
