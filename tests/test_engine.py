"""The engine against arq itself: a mixed fleet, stock handles, and no idle polling load."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
from arq.connections import RedisSettings
from arq.worker import Worker, func

from hostedjobs import JobContext, JobHost, JobStatus, job_type
from hostedjobs.serialization import dumps, loads
from hostedjobs.testing import wait_for_job
from tests.waiting import eventually


@job_type("tests.engine.count")
@dataclass
class Count:
    n: int


async def test_mixed_fleet_with_a_stock_arq_worker_runs_each_job_once(
    redis_url: str, queue_name: str
) -> None:
    """A stock arq worker and a hostedjobs worker share a queue; every job runs exactly once."""
    runs: Counter[int] = Counter()
    by: Counter[str] = Counter()
    host = JobHost(redis_url=redis_url, queue_name=queue_name, concurrency=8)

    @host.handler(Count)
    async def count(job: Count, ctx: JobContext) -> None:
        runs[job.n] += 1
        by["hostedjobs"] += 1
        await asyncio.sleep(0.001)

    async def stock(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        runs[payload["n"]] += 1
        by["arq"] += 1
        await asyncio.sleep(0.001)

    stock_worker = Worker(
        functions=[func(stock, name="tests.engine.count@1")],
        redis_settings=RedisSettings.from_dsn(redis_url),
        queue_name=queue_name,
        job_serializer=dumps,
        job_deserializer=loads,
        handle_signals=False,
        poll_delay=0.01,
        max_jobs=8,
    )
    async with host.run():
        stock_task = asyncio.create_task(stock_worker.async_run())
        ids = await host.scheduler.enqueue_many(Count(n=i) for i in range(600))
        await eventually(lambda: sum(runs.values()) >= 600, what=lambda: sum(runs.values()))
        # Each outcome is stored: no job is left running anywhere, so none can run again.
        for job_id in ids:
            await wait_for_job(host, job_id, timeout=60)
        stock_task.cancel()
        await asyncio.gather(stock_task, return_exceptions=True)
        await stock_worker.close()
    assert set(runs) == set(range(600))
    assert max(runs.values()) == 1
    assert by["hostedjobs"] > 0


async def test_an_idle_worker_does_not_poll_redis(restartable_redis: Any, queue_name: str) -> None:
    """Idle, a worker blocks on Redis instead of polling it: a handful of commands a second."""
    host = JobHost(redis_url=restartable_redis.url, queue_name=queue_name)

    @host.handler(Count)
    async def count(job: Count) -> None: ...

    client = aioredis.Redis.from_url(restartable_redis.url)
    try:
        async with host.run():
            # A job done proves the worker started; then it waits, blocked in Redis.
            await wait_for_job(host, await host.scheduler.enqueue(Count(n=0)))
            await eventually(lambda: _a_client_is_blocked(client), what="a blocked client")
            began = time.monotonic()
            before = (await client.info("stats"))["total_commands_processed"]
            # A measuring window, not a wait: the rate below is over the time it really took.
            await asyncio.sleep(3.0)
            after = (await client.info("stats"))["total_commands_processed"]
            seconds = time.monotonic() - began
    finally:
        await client.aclose()
    # Redis counts a script's inner calls too. Per second: one blocking wait that ends in a
    # peek (six calls); every 2 s a lease renewal and a heartbeat (five each): about 12 a
    # second (11.5 measured with MONITOR), against about a hundred polls a second for arq at
    # poll_delay=0.01.
    assert (after - before) / seconds <= 16, (after - before, seconds)


@job_type("tests.engine.hold")
@dataclass
class Hold:
    n: int


async def test_new_jobs_start_at_once_behind_thousands_of_running_ones(
    redis_url: str, queue_name: str
) -> None:
    """6,000 jobs running on one worker (more than a claim ever looks past) do not hold up new
    jobs for another; those long runs are not scheduled, and they finish normally."""
    release = asyncio.Event()
    quick_runs: list[int] = []

    def make(concurrency: int) -> JobHost:
        host = JobHost(redis_url=redis_url, queue_name=queue_name, concurrency=concurrency)

        @host.handler(Hold)
        async def hold(job: Hold) -> None:
            await release.wait()

        @host.handler(Count)
        async def count(job: Count) -> None:
            quick_runs.append(job.n)

        return host

    busy, free = make(6_000), make(4)
    async with busy.run():
        await busy.scheduler.enqueue_many(Hold(n=i) for i in range(6_000))

        async def all_running() -> dict[JobStatus, int] | None:
            counts = await busy.scheduler.counts()
            return counts if counts[JobStatus.RUNNING] >= 6_000 else None

        counts = await eventually(all_running, timeout=120, interval=0.05)
        assert counts[JobStatus.QUEUED] == counts[JobStatus.SCHEDULED] == 0
        async with free.run():
            ids = await free.scheduler.enqueue_many(Count(n=i) for i in range(20))
            # Jobs held up behind the running ones would wait forever (they are never released
            # before this), so a generous deadline still tells.
            for job_id in ids:
                await wait_for_job(free, job_id, timeout=60)
            assert sorted(quick_runs) == list(range(20))
            release.set()

            async def all_succeeded() -> bool:
                return (await busy.scheduler.counts())[JobStatus.SUCCEEDED] >= 6_020

            await eventually(all_succeeded, timeout=120, interval=0.05)


async def test_a_burst_worker_stops_as_soon_as_the_last_outcome_is_stored(
    redis_url: str, queue_name: str
) -> None:
    """Burst mode ends when the queue is empty, without waiting out the fallback poll."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, fallback_poll=timedelta(seconds=90))
    finished: list[float] = []

    @host.handler(Hold)
    async def hold(job: Hold) -> None:
        await asyncio.sleep(0.01)
        finished.append(time.monotonic())

    for _ in range(3):
        finished.clear()
        async with host.connected():
            await host.scheduler.enqueue_many(Hold(n=i) for i in range(320))
        async with host.run(concurrency=32, burst=True):
            await host.wait_until_idle()
            stopped = time.monotonic()
        assert len(finished) == 320
        # The worker used to wait out its fallback poll (90 s here) before it noticed. The
        # bound is far under it, and far above any delay of a busy machine.
        assert stopped - finished[-1] < 30


async def test_an_idle_worker_recovers_when_redis_forgets_its_scripts(
    restartable_redis: Any, queue_name: str
) -> None:
    """SCRIPT FLUSH (as after a restart) under a waiting worker: the next job still runs."""
    host = JobHost(redis_url=restartable_redis.url, queue_name=queue_name)
    ran: list[int] = []

    @host.handler(Count)
    async def count(job: Count) -> None:
        ran.append(job.n)

    client = aioredis.Redis.from_url(restartable_redis.url)
    try:
        async with host.run():
            await wait_for_job(host, await host.scheduler.enqueue(Count(n=1)))
            # The worker is back to waiting (a client blocked in Redis), its claim pipelined.
            await eventually(lambda: _a_client_is_blocked(client), what="a blocked client")
            await client.script_flush()
            await wait_for_job(host, await host.scheduler.enqueue(Count(n=2)), timeout=60)
    finally:
        await client.aclose()
    assert ran == [1, 2]


async def _a_client_is_blocked(client: aioredis.Redis) -> bool:
    return any("b" in entry["flags"] for entry in await client.client_list())
