"""Edges found by trying the engine as a newcomer would; each was a fault before its fix."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from hostedjobs import JobContext, JobHost, JobStatus, RetryPolicy, job_type
from hostedjobs.durations import seconds
from hostedjobs.exceptions import ConfigurationError
from hostedjobs.handlers import Handlers
from hostedjobs.outcomes import Outcome
from hostedjobs.runner import QueuedRun, Runner
from hostedjobs.scope import Services
from hostedjobs.storage import Store
from hostedjobs.testing import wait_for_job


@job_type("tests.edges.nap")
@dataclass
class Nap:
    seconds: float = 0.0
    fail_first: bool = False


def make_host(redis_url: str, queue_name: str, **options: object) -> JobHost:
    host = JobHost(redis_url=redis_url, queue_name=queue_name, **options)  # type: ignore[arg-type]

    @host.handler(Nap, retry=RetryPolicy(max_tries=3, backoff=timedelta(hours=1)))
    async def nap(job: Nap, ctx: JobContext) -> None:
        if job.fail_first and ctx.attempt == 1:
            raise RuntimeError("first try fails")
        await asyncio.sleep(job.seconds)

    return host


async def test_a_damaged_record_is_shown_with_its_error_and_lists_still_work(
    redis_url: str, queue_name: str
) -> None:
    """A record overwritten with garbage (or JSON that is no record) used to make ``get`` and
    ``jobs`` raise for the whole page; now that job is shown where it is (scheduled, here),
    of type ``<unreadable>`` with an error saying why, and listed with the others. (It read
    as failed for a while, which left it in no list at all until a worker took it.)"""
    host = make_host(redis_url, queue_name, run_worker=False)
    async with host.run():
        ids = [await host.scheduler.schedule(Nap(), delay=timedelta(hours=1)) for _ in range(3)]
        pool = host.scheduler.pool
        await pool.set(f"arq:job:{ids[0]}", b"garbage", keepttl=True)
        await pool.set(f"arq:job:{ids[1]}", b"[1, 2, 3]", keepttl=True)
        for damaged in ids[:2]:
            info = await host.scheduler.get(damaged)
            assert info is not None and info.status is JobStatus.SCHEDULED
            assert info.job_type == "<unreadable>"
            assert info.error
        listed = await host.scheduler.jobs(JobStatus.SCHEDULED)
        assert sorted(info.id for info in listed) == sorted(ids)


async def test_a_status_may_be_given_as_its_value(redis_url: str, queue_name: str) -> None:
    """``jobs("succeeded")`` used to return nothing; an unknown status is refused."""
    host = make_host(redis_url, queue_name)
    async with host.run():
        job_id = await host.scheduler.enqueue(Nap())
        await wait_for_job(host, job_id)
        assert [info.id for info in await host.scheduler.jobs("succeeded")] == [job_id]
        with pytest.raises(ConfigurationError, match="unknown job status"):
            await host.scheduler.jobs("done")


async def test_an_empty_job_id_is_refused(redis_url: str, queue_name: str) -> None:
    """``enqueue(job_id="")`` used to make up an id silently."""
    host = make_host(redis_url, queue_name, run_worker=False)
    async with host.run():
        with pytest.raises(ConfigurationError, match="job_id"):
            await host.scheduler.enqueue(Nap(), job_id="")


async def test_cancelling_a_job_waiting_for_its_retry_keeps_its_history(
    redis_url: str, queue_name: str
) -> None:
    """The cancelled job keeps its try count, and its message says which try was cancelled
    (it used to read tries 0, "cancelled before it started")."""
    host = make_host(redis_url, queue_name)
    async with host.run():
        job_id = await host.scheduler.enqueue(Nap(fail_first=True))
        await wait_for_job(host, job_id, statuses={JobStatus.SCHEDULED}, timeout=30)
        assert await host.scheduler.cancel(job_id)
        info = await host.scheduler.get(job_id)
    assert info is not None
    assert (info.status, info.tries) == (JobStatus.CANCELLED, 1)
    assert info.message == "cancelled before try 2 (try 1: RuntimeError: first try fails)"


async def test_a_run_that_swallows_its_timeout_is_still_over_its_time(
    redis_url: str, queue_name: str
) -> None:
    """Code that catches the cancellation its deadline sends, and goes on, used to be
    reported succeeded; it fails as over its time limit."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name)

    @host.handler(Nap, timeout=timedelta(milliseconds=200), retry=RetryPolicy(max_tries=1))
    async def stubborn(job: Nap) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.1)

    async with host.run():
        info = await wait_for_job(host, await host.scheduler.enqueue(Nap()), timeout=30)
    assert (info.status, info.error) == (
        JobStatus.FAILED,
        "TimeoutError: the run exceeded its timeout of 0.2s",
    )


async def test_a_second_signal_cuts_the_shutdown_grace(redis_url: str, queue_name: str) -> None:
    """``hurry_shutdown`` (the worker command's second signal) cancels runs now; setting
    ``shutdown_grace_s = 0`` during a shutdown, what the command did, had no effect. The
    run goes back to the queue without using up a try."""
    host = make_host(redis_url, queue_name, shutdown_grace=timedelta(minutes=10))
    started = asyncio.Event()

    async def run_host() -> None:
        async with host.run():
            job_id = await host.scheduler.enqueue(Nap(seconds=600))
            await wait_for_job(host, job_id, statuses={JobStatus.RUNNING}, timeout=30)
            started.set()
            jobs.append(job_id)

    jobs: list[str] = []
    running = asyncio.create_task(run_host())
    await asyncio.wait_for(started.wait(), 60)
    await asyncio.sleep(0)  # the host is now shutting down, waiting out its grace
    host.hurry_shutdown()
    await asyncio.wait_for(running, 60)  # well inside the ten minutes of grace
    reader = make_host(redis_url, queue_name, run_worker=False)
    async with reader.run():
        info = await reader.scheduler.get(jobs[0])
    assert info is not None and (info.status, info.tries) == (JobStatus.QUEUED, 0)


async def test_progress_is_best_effort(caplog: pytest.LogCaptureFixture) -> None:
    """A Redis error while storing progress is logged; it used to fail the run."""
    store = Store(aioredis.Redis(port=1, socket_connect_timeout=0.5), "nowhere")
    handlers = Handlers(Runner(Services()))
    handlers.store = store
    run = QueuedRun("job", "tests.edges.nap@1", [{}], {}, 1, 0, 0, lambda: Outcome.RETRIED)
    ctx = handlers.context("tests.edges.nap", run)
    with caplog.at_level(logging.WARNING, logger="hostedjobs.handlers"):
        await ctx.report_progress(50)
    assert "could not store its progress" in caplog.text
    await store.close()


async def test_durations_take_seconds_everywhere(redis_url: str, queue_name: str) -> None:
    """``RetryPolicy(backoff=2)`` and ``schedule(job, delay=60)`` raised TypeError (an int
    compared with a timedelta), though the docs say durations take either; now one parser
    reads every duration, and refuses what is not one by name."""
    policy = RetryPolicy(backoff=2, max_backoff=60.0)
    assert policy.backoff == timedelta(seconds=2)
    assert policy.max_backoff == timedelta(minutes=1)
    assert 1.0 <= policy.delay(1) <= 2.0
    for bad in (-1, True, "5", float("nan"), float("inf")):
        with pytest.raises(ConfigurationError, match="backoff"):
            RetryPolicy(backoff=bad)  # type: ignore[arg-type]
    assert seconds("x", timedelta(milliseconds=1500)) == 1.5
    host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    async with host.run():
        job_id = await host.scheduler.schedule(_Later(), delay=60)
        info = await host.scheduler.get(job_id)
        assert info is not None and info.status is JobStatus.SCHEDULED
        with pytest.raises(ConfigurationError, match="delay"):
            await host.scheduler.schedule(_Later(), delay=-1)
        assert (await host.scheduler.counts(since=3600))[JobStatus.SCHEDULED] == 1


@job_type("tests.edges.later")
@dataclass
class _Later:
    pass
