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

from hostedjobs import JobContext, JobHost
from hostedjobs.cron import CronSchedule
from hostedjobs.testing import SkewedClock

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


async def test_four_skewed_processes_run_each_tick_exactly_once_even_when_one_is_killed(
    redis_url: str, queue_name: str
) -> None:
    """4 worker processes with clocks up to 0.6 s apart, one SIGKILLed: one run per tick."""
    skews = ["-0.3", "0", "0.25", "0.6"]
    workers = [_start_worker(redis_url, queue_name, CLOCK_SKEW_S=skew) for skew in skews]
    reader = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    try:
        async with reader.run():
            await asyncio.sleep(4)
            workers[1].send_signal(signal.SIGKILL)
            await asyncio.sleep(5)
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)
            for worker in workers:
                worker.wait(timeout=30)
            ticks = await _ticks(reader, queue_name)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    counts = Counter(tick for tick, _ in ticks)
    assert counts, "no tick ran"
    assert max(counts.values()) == 1, [t for t, n in counts.items() if n > 1]
    first, last = min(counts), max(counts)
    assert sorted(counts) == list(range(first, last + 1)), "a tick was dropped"
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
    async with hosts[0].run(), hosts[1].run(), hosts[2].run():
        await asyncio.sleep(3.5)
        statuses = [await host.status() for host in hosts]
    counts = Counter(runs)
    assert counts and max(counts.values()) == 1
    ordered = sorted(counts)
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ordered))
    # Every process reads the same state from Redis.
    assert len({status[0].last_scheduled_at for status in statuses}) == 1


def _distributed_host(redis_url: str, queue_name: str, **options: Any) -> tuple[JobHost, list[Any]]:
    runs: list[Any] = []
    host = JobHost(redis_url=redis_url, queue_name=queue_name, shutdown_grace=timedelta(seconds=1))
    host.add_distributed_cron_job(
        _recording_job(runs), options.pop("cron", "* * * * *"), name="catch-up", **options
    )
    return host, runs


def _recording_job(runs: list[Any]) -> Any:
    async def job(ctx: JobContext) -> None:
        runs.append(ctx.scheduled_at)

    return job


async def _plant_last_tick(host: JobHost, queue_name: str, ticks_ago: int) -> datetime:
    schedule = CronSchedule.parse("* * * * *")
    latest = schedule.previous_tick(datetime.now(UTC))
    assert latest is not None
    last_fired = latest - timedelta(minutes=ticks_ago)
    key = f"hostedjobs:{queue_name}:cron:catch-up:last_tick"
    await host.scheduler.pool.set(key, int(last_fired.timestamp() * 1000))
    return latest


async def _with_pool(redis_url: str, queue_name: str) -> JobHost:
    return JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)


@pytest.mark.parametrize(
    ("misfire", "grace", "expect_catch_up"),
    [("run_once", 3600, True), ("skip", 3600, False), ("run_once", 0.001, False)],
)
async def test_misfire_policy_after_every_process_was_down(
    redis_url: str, queue_name: str, misfire: str, grace: float, expect_catch_up: bool
) -> None:
    """Missed ticks: run_once runs the latest one once (within grace); skip runs none."""
    planter = await _with_pool(redis_url, queue_name)
    async with planter.run():
        latest = await _plant_last_tick(planter, queue_name, ticks_ago=3)
    host, runs = _distributed_host(
        redis_url, queue_name, misfire=misfire, misfire_grace=timedelta(seconds=grace)
    )
    second, runs_b = _distributed_host(
        redis_url, queue_name, misfire=misfire, misfire_grace=timedelta(seconds=grace)
    )
    if (datetime.now(UTC) - latest).total_seconds() > 58.5:
        pytest.skip("too close to the next tick to tell a catch-up from a regular run")
    async with host.run(), second.run():
        await asyncio.sleep(0.8)
    caught_up = [run for run in runs + runs_b if run == latest]
    assert len(caught_up) == (1 if expect_catch_up else 0)


async def test_overlap_skip_across_processes_uses_the_lease(
    redis_url: str, queue_name: str
) -> None:
    """A distributed run longer than the period makes the next ticks skip, never overlap."""
    workers = [_start_worker(redis_url, queue_name, CRON_APP_RUN_S="2.5") for _ in range(2)]
    reader = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    reader.add_distributed_cron_job(_recording_job([]), "* * * * * *", name="every-second")
    try:
        async with reader.run():
            await asyncio.sleep(6.5)
            (status,) = await reader.status()
            ticks = await _ticks(reader, queue_name)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)
    starts = sorted(tick for tick, _ in ticks)
    assert len(starts) >= 2
    assert all(b - a >= 2 for a, b in itertools.pairwise(starts))
    assert any(run.outcome == "skipped" for run in status.history)


async def test_a_crashed_runs_lease_lapses_within_seconds(redis_url: str, queue_name: str) -> None:
    """After the worker running a long tick is SIGKILLed, ticks resume within the lease."""
    long_runner = _start_worker(redis_url, queue_name, CRON_APP_RUN_S="60")
    reader = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    helper: subprocess.Popen[bytes] | None = None
    try:
        async with reader.run():
            deadline = time.monotonic() + 20
            while not await _ticks(reader, queue_name):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            long_runner.send_signal(signal.SIGKILL)
            long_runner.wait(timeout=10)
            killed_at = time.time()
            helper = _start_worker(redis_url, queue_name, CRON_APP_RUN_S="0")
            deadline = time.monotonic() + 30
            while True:
                ticks = await _ticks(reader, queue_name)
                resumed = [tick for tick, _ in ticks if tick > killed_at]
                if resumed:
                    break
                assert time.monotonic() < deadline, "ticks did not resume"
                await asyncio.sleep(0.1)
        assert resumed[0] - killed_at < 13  # the 10 s lease plus a tick
    finally:
        for process in (long_runner, helper):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
