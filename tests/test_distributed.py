"""Distributed cron on a real Redis: one run per tick across processes, skew, misfire, overlap."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hostedjobs import JobContext, JobHost, JobStatus
from hostedjobs.cron import CronSchedule
from hostedjobs.status import HostedJobStatus
from hostedjobs.testing import SkewedClock
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent
HOSTEDJOBS = str(Path(sys.executable).with_name("hostedjobs"))


def _start_worker(redis_url: str, queue_name: str, **env: str) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HOSTEDJOBS_")}
    environment.update(
        PYTHONPATH=str(ROOT),
        HOSTEDJOBS_REDIS_URL=redis_url,
        CRON_APP_QUEUE=queue_name,
        **env,
    )
    return subprocess.Popen(
        [HOSTEDJOBS, "worker", "tests.cron_app:host", "--log-level", "WARNING"],
        env=environment,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )


async def _ticks(host: JobHost, queue_name: str) -> list[tuple[int, int]]:
    raw = await host.scheduler.pool.lrange(f"{queue_name}:ticks", 0, -1)  # type: ignore[misc]
    return [(int(tick), int(pid)) for tick, pid in (item.decode().split() for item in raw)]


def _cron_app_reader(redis_url: str, queue_name: str) -> JobHost:
    """A host that reads the cron app's every-second job; use it with ``connected()`` only."""
    reader = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    reader.add_distributed_cron_job(_recording_job([]), "* * * * * *", name="every-second")
    return reader


async def _workers_beating(host: JobHost, queue_name: str, count: int) -> bool:
    return len(await host.workers()) >= count


async def _just_after_a_finished_run(reader: JobHost) -> HostedJobStatus | None:
    """The status, if the last tick's run has finished and the next tick is >= 0.4 s away.

    The next run is due at the next whole second. A worker killed then holds no run: killed
    during one, its lease would make the following ticks skip (as it should) for 10 s.
    """
    (status,) = await reader.status()
    if status.running or not status.history:
        return None
    last = status.history[0]
    if last.outcome != "succeeded" or last.scheduled_at is None:
        return None
    info = await reader.scheduler.get(last.run_id)
    if info is None or info.status is not JobStatus.SUCCEEDED:
        return None  # its outcome is not stored yet
    return status if time.time() - last.scheduled_at.timestamp() < 0.6 else None


async def test_four_skewed_processes_run_each_tick_exactly_once_even_when_one_is_killed(
    redis_url: str, queue_name: str
) -> None:
    """4 worker processes with clocks up to 0.6 s apart, one SIGKILLed: one run per tick."""
    skews = ["-0.3", "0", "0.25", "0.6"]
    workers = [_start_worker(redis_url, queue_name, CLOCK_SKEW_S=skew) for skew in skews]
    reader = _cron_app_reader(redis_url, queue_name)
    try:
        async with reader.connected():
            await eventually(
                lambda: _workers_beating(reader, queue_name, len(workers)),
                what="every worker process beating",
            )
            await eventually(lambda: _ticks(reader, queue_name), what="a first tick")
            await eventually(
                lambda: _just_after_a_finished_run(reader),
                interval=0.01,
                what="a pause between runs",
            )
            workers[1].send_signal(signal.SIGKILL)
            workers[1].wait(timeout=30)
            killed_at = time.time()

            async def six_ticks_since_the_kill() -> bool:
                ticks = await _ticks(reader, queue_name)
                return sum(1 for tick, _ in ticks if tick > killed_at) >= 6

            await eventually(six_ticks_since_the_kill, what="6 ticks after the kill")
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)
            for worker in workers:
                worker.wait(timeout=60)
            ticks = await _ticks(reader, queue_name)
            (status,) = await reader.status()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    counts = Counter(tick for tick, _ in ticks)
    assert counts, "no tick ran"
    assert max(counts.values()) == 1, [t for t, n in counts.items() if n > 1]
    first, last = min(counts), max(counts)
    skipped = [run for run in status.history if run.outcome == "skipped"]
    assert sorted(counts) == list(range(first, last + 1)), ("a tick was dropped", skipped)
    assert last - first >= 6
    assert len({pid for _, pid in ticks}) >= 2  # the work really was spread


async def test_skewed_hosts_in_one_process_agree_on_each_tick(
    redis_url: str, queue_name: str
) -> None:
    """Hosts whose clocks disagree by less than the period still fire each tick once."""
    runs: list[datetime] = []

    def make(skew: float) -> JobHost:
        host = JobHost(
            redis_url=redis_url,
            queue_name=queue_name,
            clock=SkewedClock(timedelta(seconds=skew)),
            shutdown_grace=timedelta(seconds=1),
        )

        @host.distributed_cron("* * * * * *", name="skewed")
        async def skewed(ctx: JobContext) -> None:
            assert ctx.scheduled_at is not None
            runs.append(ctx.scheduled_at)

        return host

    hosts = [make(-0.45), make(0.0), make(0.45)]

    async def agreed_status() -> set[datetime | None] | None:
        seen = {(await host.status())[0].last_scheduled_at for host in hosts}
        return seen if len(seen) == 1 and None not in seen else None

    async with hosts[0].run(), hosts[1].run(), hosts[2].run():
        await eventually(lambda: len(runs) >= 3, what=lambda: f"3 runs, got {runs}")
        # Every process reads the same state from Redis (read until no tick falls between the
        # three reads): each run happens in one process, so local states would never agree.
        await eventually(agreed_status, what="the three hosts reporting the same last run")
    counts = Counter(runs)
    assert counts and max(counts.values()) == 1
    ordered = sorted(counts)
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ordered))


DAILY = CronSchedule.parse("0 0 * * *")


def _distributed_host(redis_url: str, queue_name: str, **options: Any) -> tuple[JobHost, list[Any]]:
    runs: list[Any] = []
    host = JobHost(redis_url=redis_url, queue_name=queue_name, shutdown_grace=timedelta(seconds=1))
    host.add_distributed_cron_job(
        _recording_job(runs), DAILY.expression, name="catch-up", **options
    )
    return host, runs


def _recording_job(runs: list[Any]) -> Any:
    async def job(ctx: JobContext) -> None:
        runs.append(ctx.scheduled_at)

    return job


async def _plant_last_tick(host: JobHost, queue_name: str, ticks_ago: int) -> datetime:
    latest = DAILY.previous_tick(datetime.now(UTC))
    assert latest is not None
    last_fired = latest - timedelta(days=ticks_ago)
    key = f"hostedjobs:{queue_name}:cron:catch-up:last_tick"
    await host.scheduler.pool.set(key, int(last_fired.timestamp() * 1000))
    return latest


async def _with_pool(redis_url: str, queue_name: str) -> JobHost:
    return JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)


async def _first_tick_scheduled(host: JobHost) -> bool:
    (status,) = await host.status()
    return status.next_run is not None


async def _queue_drained(host: JobHost) -> bool:
    counts = await host.scheduler.counts()
    return counts[JobStatus.QUEUED] == counts[JobStatus.RUNNING] == 0


@pytest.mark.parametrize(
    ("misfire", "grace", "expect_catch_up"),
    [("run_once", 2 * 86_400, True), ("skip", 2 * 86_400, False), ("run_once", 0.001, False)],
)
async def test_misfire_policy_after_every_process_was_down(
    redis_url: str, queue_name: str, misfire: str, grace: float, expect_catch_up: bool
) -> None:
    """Missed ticks: run_once runs the latest one once (within grace); skip runs none.

    A daily job, so that no regular tick falls in the test (unless it starts in the last
    minute before midnight UTC: then it is skipped).
    """
    if (DAILY.next_tick(datetime.now(UTC)) - datetime.now(UTC)).total_seconds() < 60:
        pytest.skip("too close to the next tick to tell a catch-up from a regular run")
    planter = await _with_pool(redis_url, queue_name)
    async with planter.run():
        latest = await _plant_last_tick(planter, queue_name, ticks_ago=3)
    host, runs = _distributed_host(
        redis_url, queue_name, misfire=misfire, misfire_grace=timedelta(seconds=grace)
    )
    second, runs_b = _distributed_host(
        redis_url, queue_name, misfire=misfire, misfire_grace=timedelta(seconds=grace)
    )
    async with host.run(), second.run():
        if expect_catch_up:
            await eventually(lambda: latest in runs + runs_b, what="the catch-up run")
            # Negative check: both hosts tried to catch up at start-up, but only one may run
            # the tick. No event tells when the slower host has tried, so this window is
            # generous against the few round trips that takes.
            await asyncio.sleep(1.0)
        else:
            # Each host schedules its first regular tick once it decided not to catch up
            # (a catch-up run would have set the shared next run earlier, and be queued).
            await eventually(lambda: _first_tick_scheduled(host), what="the first tick")
            await eventually(lambda: _first_tick_scheduled(second), what="the first tick")
        await eventually(lambda: _queue_drained(host), what="every queued run done")
    caught_up = [run for run in runs + runs_b if run == latest]
    assert len(caught_up) == (1 if expect_catch_up else 0)
    assert [run for run in runs + runs_b if run != latest] == []


async def test_overlap_skip_across_processes_uses_the_lease(
    redis_url: str, queue_name: str
) -> None:
    """A distributed run longer than the period makes the next ticks skip, never overlap."""
    workers = [_start_worker(redis_url, queue_name, CRON_APP_RUN_S="2.5") for _ in range(2)]
    reader = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    reader.add_distributed_cron_job(_recording_job([]), "* * * * * *", name="every-second")

    async def two_runs_and_a_skip() -> HostedJobStatus | None:
        (status,) = await reader.status()
        skipped = any(run.outcome == "skipped" for run in status.history)
        return status if skipped and len(await _ticks(reader, queue_name)) >= 2 else None

    try:
        async with reader.run():
            status = await eventually(two_runs_and_a_skip, what="two runs and a skipped tick")
            ticks = await _ticks(reader, queue_name)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)
    starts = sorted(tick for tick, _ in ticks)
    assert len(starts) >= 2
    assert all(b - a >= 2 for a, b in itertools.pairwise(starts))
    assert any(run.outcome == "skipped" for run in status.history)


async def test_a_crashed_runs_lease_lapses_within_seconds(redis_url: str, queue_name: str) -> None:
    """After the worker running a long tick is SIGKILLed, ticks resume within the lease."""
    long_runner = _start_worker(redis_url, queue_name, CRON_APP_RUN_S="60")
    reader = _cron_app_reader(redis_url, queue_name)
    helper: subprocess.Popen[bytes] | None = None
    try:
        async with reader.connected():
            await eventually(lambda: _ticks(reader, queue_name), what="the long run's start")
            # The helper is up before the kill, so its start-up time is not measured.
            helper = _start_worker(redis_url, queue_name, CRON_APP_RUN_S="0")
            await eventually(
                lambda: _workers_beating(reader, queue_name, 2), what="the helper beating"
            )
            assert [pid for _, pid in await _ticks(reader, queue_name)] == [long_runner.pid]
            long_runner.send_signal(signal.SIGKILL)
            long_runner.wait(timeout=10)
            killed_at = time.time()

            async def resumed_ticks() -> list[int]:
                return [tick for tick, _ in await _ticks(reader, queue_name) if tick > killed_at]

            resumed = await eventually(resumed_ticks, what="ticks resuming")
        # The lease lapses at most 10 s after the kill (its last renewal came before). This
        # compares tick times, which a slow process cannot delay: the first tick fired once
        # the lease lapsed is at most a period later, plus a margin for a helper that fires
        # late on a busy machine.
        assert resumed[0] - killed_at < 15
    finally:
        for process in (long_runner, helper):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
