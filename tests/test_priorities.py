"""Priorities (issue 14, item 4): a head start in the queue, on a real Redis."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from arq.connections import RedisSettings
from arq.worker import Worker, func

from hostedjobs import Debounce, JobContext, JobHost, JobStatus, job_type
from hostedjobs.exceptions import ConfigurationError
from hostedjobs.records import HEAD_START_FIELD, queued_due_ms
from hostedjobs.retries import RetryPolicy
from hostedjobs.serialization import dumps, loads, read_record
from hostedjobs.testing import eager, wait_for_job
from tests.waiting import eventually

URGENT = timedelta(minutes=1)


@job_type("tests.priorities.work")
@dataclass
class Work:
    name: str


@job_type("tests.priorities.flaky")
@dataclass
class Flaky:
    name: str


def _host(redis_url: str, queue_name: str, **options: Any) -> tuple[JobHost, list[str]]:
    """A host whose `Work` handler notes each job's name in the order they run."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, **options)
    order: list[str] = []

    @host.handler(Work)
    async def work(job: Work) -> None:
        order.append(job.name)

    return host, order


async def test_a_job_with_a_priority_is_picked_before_the_backlog(
    redis_url: str, queue_name: str
) -> None:
    """Behind 300 queued jobs, a job enqueued with a head start is the first one run."""
    producer, _ = _host(redis_url, queue_name, run_worker=False)
    async with producer.connected():
        await producer.scheduler.enqueue_many(Work(name=f"low-{i}") for i in range(300))
        urgent = await producer.scheduler.enqueue(Work(name="urgent"), priority=URGENT)
        # Listed where it will be picked: first of the queued jobs.
        [first] = await producer.scheduler.jobs(JobStatus.QUEUED, limit=1)
        assert first.id == urgent
    host, order = _host(redis_url, queue_name, concurrency=1)
    async with host.run():
        await wait_for_job(host, urgent)
        assert order[0] == "urgent"


async def test_a_running_worker_picks_the_job_with_a_priority_within_two_claims(
    redis_url: str, queue_name: str
) -> None:
    """A busy worker (concurrency 1) takes the urgent job at its next claim, or the one after
    if it had already chosen its next job before the urgent one was enqueued."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, concurrency=1)
    order: list[str] = []
    gate = asyncio.Event()

    @host.handler(Work)
    async def work(job: Work) -> None:
        order.append(job.name)
        if len(order) == 1:
            await gate.wait()

    async with host.run():
        await host.scheduler.enqueue_many(Work(name=f"low-{i}") for i in range(300))
        await eventually(lambda: order, what="the first job running")
        urgent = await host.scheduler.enqueue(Work(name="urgent"), priority=URGENT)
        gate.set()
        await wait_for_job(host, urgent)
        assert order.index("urgent") in (1, 2), order[:5]


async def test_jobs_older_than_the_head_start_still_go_first(
    redis_url: str, queue_name: str
) -> None:
    """Aging: jobs that waited longer than the head start run before the urgent job, and the
    jobs enqueued after it run after it, so no job waits for ever behind urgent ones."""
    head_start = timedelta(seconds=1.5)
    producer, _ = _host(redis_url, queue_name, run_worker=False)
    async with producer.connected():
        await producer.scheduler.enqueue_many(Work(name=f"old-{i}") for i in range(5))
        old_ms = time.time() * 1000
        # Older than the head start by more than the second within which workers spread.
        await eventually(
            lambda: time.time() * 1000 > old_ms + 3000, what="the old jobs aged", timeout=30
        )
        await producer.scheduler.enqueue(Work(name="urgent"), priority=head_start)
        await producer.scheduler.enqueue_many(Work(name=f"young-{i}") for i in range(5))
    host, order = _host(redis_url, queue_name, concurrency=1)
    async with host.run():
        await eventually(lambda: len(order) == 11, what=lambda: order)
    assert sorted(order[:5]) == [f"old-{i}" for i in range(5)]
    assert order[5] == "urgent"
    assert sorted(order[6:]) == [f"young-{i}" for i in range(5)]


async def test_the_due_time_shown_and_given_to_the_run_is_the_enqueue_time(
    redis_url: str, queue_name: str
) -> None:
    """The head start changes the place in the queue only: `scheduled_for` and
    ``ctx.scheduled_at`` are the enqueue time, and the job counts as queued."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    seen: list[datetime | None] = []

    @host.handler(Work)
    async def work(job: Work, ctx: JobContext) -> None:
        seen.append(ctx.scheduled_at)

    async with host.connected():
        job_id = await host.scheduler.enqueue(Work(name="shown"), priority=timedelta(hours=2))
        info = await host.scheduler.get(job_id)
        assert info is not None and info.status is JobStatus.QUEUED
        assert info.enqueued_at is not None
        assert info.scheduled_for == info.enqueued_at
        assert abs(info.enqueued_at - datetime.now(UTC)) < timedelta(minutes=1)
        raw = await host.scheduler.pool.get(f"arq:job:{job_id}")
        assert read_record(raw)[HEAD_START_FIELD] == 7_200_000
        score = await host.scheduler.pool.zscore(queue_name, job_id)
        assert score == info.enqueued_at.timestamp() * 1000 - 7_200_000
    worker = JobHost(redis_url=redis_url, queue_name=queue_name, concurrency=1)
    worker.handler(Work)(work)
    async with worker.run():
        done = await wait_for_job(worker, job_id)
    assert done.status is JobStatus.SUCCEEDED
    assert seen == [info.enqueued_at]


async def test_a_retried_job_waits_its_backoff_and_is_not_shown_early(
    redis_url: str, queue_name: str
) -> None:
    """A retry is due after its backoff, never sooner, whatever the head start: the requeued
    try is scored at its due time (the head start served the first try only)."""
    host = JobHost(
        redis_url=redis_url,
        queue_name=queue_name,
        concurrency=1,
    )
    tries: list[tuple[datetime, datetime | None]] = []

    @host.handler(Flaky, retry=RetryPolicy(max_tries=2, backoff=timedelta(seconds=1), jitter=0))
    async def flaky(job: Flaky, ctx: JobContext) -> None:
        tries.append((datetime.now(UTC), ctx.scheduled_at))
        if ctx.attempt == 1:
            raise RuntimeError("first try fails")

    async with host.run():
        job_id = await host.scheduler.enqueue(Flaky(name="f"), priority=timedelta(hours=1))
        info = await wait_for_job(host, job_id)
    assert info.status is JobStatus.SUCCEEDED and info.tries == 2
    (first_at, first_due), (second_at, second_due) = tries
    assert first_due == info.enqueued_at
    # Due times are whole ms: the first try ended at or after first_at, less than 1 ms lost.
    backoff_end = first_at.replace(microsecond=first_at.microsecond // 1000 * 1000)
    assert second_due is not None and second_due >= backoff_end + timedelta(seconds=1)
    assert second_at >= second_due


async def test_a_failed_job_retried_by_hand_keeps_its_priority(
    redis_url: str, queue_name: str
) -> None:
    """`scheduler.retry` queues a failed job again with the head start it was enqueued with
    (its result keeps it), due now."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, concurrency=1)
    runs: list[int] = []

    @host.handler(Flaky, retry=RetryPolicy(max_tries=1))
    async def flaky(job: Flaky) -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("fails once")

    async with host.run():
        job_id = await host.scheduler.enqueue(Flaky(name="by-hand"), priority=URGENT)
        assert (await wait_for_job(host, job_id)).status is JobStatus.FAILED
    checker = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    async with checker.connected():
        assert await checker.scheduler.retry(job_id)
        info = await checker.scheduler.get(job_id)
        assert info is not None and info.status is JobStatus.QUEUED
        assert info.enqueued_at is not None and info.scheduled_for == info.enqueued_at
        score = await checker.scheduler.pool.zscore(queue_name, job_id)
        assert score == info.enqueued_at.timestamp() * 1000 - URGENT.total_seconds() * 1000
    async with host.run():
        assert (await wait_for_job(host, job_id)).status is JobStatus.SUCCEEDED


def test_the_due_time_of_a_score_that_is_not_a_head_start_is_the_score() -> None:
    """Only a score exactly a head start before the enqueue time is read as one."""
    record = {"f": "x@1", "a": [], "k": {}, "et": 10_000, HEAD_START_FIELD: 3_000}
    assert queued_due_ms(7_000, record) == 10_000  # the head start
    assert queued_due_ms(12_500, record) == 12_500  # requeued by a retry
    assert queued_due_ms(7_000, {**record, HEAD_START_FIELD: "3000"}) == 7_000  # not ours
    assert queued_due_ms(7_000, None) == 7_000


@pytest.mark.parametrize(
    ("priority", "hint"),
    [
        (5, "a timedelta"),
        (2.5, "a timedelta"),
        (True, "a timedelta"),
        ("high", "a timedelta"),
        (timedelta(seconds=-1), "schedule(job, delay=...)"),
        (timedelta(days=31), "timedelta(seconds=...)"),
    ],
)
async def test_a_bad_priority_is_refused_with_a_hint(
    redis_url: str, queue_name: str, priority: Any, hint: str
) -> None:
    host, _ = _host(redis_url, queue_name, run_worker=False)
    async with host.connected():
        with pytest.raises(ConfigurationError, match=r"priority=") as caught:
            await host.scheduler.enqueue(Work(name="bad"), priority=priority)
        assert hint in str(caught.value)
        with pytest.raises(ConfigurationError, match=r"priority="):
            await host.scheduler.enqueue_many([Work(name="bad")], priority=priority)
        assert await host.scheduler.count(JobStatus.QUEUED) == 0  # nothing was queued


async def test_a_scheduled_job_takes_no_priority(redis_url: str, queue_name: str) -> None:
    """In the queue a head start is an earlier due time: `schedule` has no ``priority``, so
    a scheduled job can never run before its time."""
    host, _ = _host(redis_url, queue_name, run_worker=False)
    async with host.connected():
        with pytest.raises(TypeError, match="priority"):
            await host.scheduler.schedule(  # type: ignore[call-arg]
                Work(name="later"), delay=60, priority=URGENT
            )
        assert await host.scheduler.count(JobStatus.SCHEDULED) == 0


@job_type("priority-debounced")
@dataclass
class Reindex:
    doc: str


async def test_a_debounced_job_takes_no_priority(redis_url: str, queue_name: str) -> None:
    """A debounced job waits for its quiet period, which a head start would cut short."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)

    @host.handler(Reindex, debounce=Debounce(60, key=lambda job: job.doc))
    async def reindex(job: Reindex) -> None:
        return None

    async with host.connected():
        for enqueue in (
            host.scheduler.enqueue(Reindex("a"), priority=URGENT),
            host.scheduler.enqueue_many([Reindex("a")], priority=URGENT),
        ):
            with pytest.raises(ConfigurationError, match="debounced"):
                await enqueue
        assert await host.scheduler.count(JobStatus.SCHEDULED) == 0
        await host.scheduler.enqueue(Reindex("a"))  # without a priority: debounced
        assert await host.scheduler.count(JobStatus.SCHEDULED) == 1


async def test_a_function_task_takes_a_priority_through_its_payload(
    redis_url: str, queue_name: str
) -> None:
    """``scheduler.enqueue(task.payload(...), priority=...)``, as for ``job_id``."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, concurrency=1)
    ran: list[str] = []

    @host.task(name="tests.priorities.task")
    async def note(text: str) -> str:
        ran.append(text)
        return text

    async with host.run():
        job_id = await host.scheduler.enqueue(note.payload("hi"), priority=URGENT)
        info = await wait_for_job(host, job_id)
    assert info.result == "hi" and ran == ["hi"]


async def test_a_stock_arq_worker_honours_the_priority_and_reads_the_record(
    redis_url: str, queue_name: str
) -> None:
    """arq picks the oldest score first, so it takes the urgent job first too, and it
    ignores the record's head start field (its enqueue time is the real one)."""
    order: list[str] = []
    enqueued: list[datetime] = []

    async def stock(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        order.append(payload["name"])
        enqueued.append(ctx["enqueue_time"])

    host, _ = _host(redis_url, queue_name, run_worker=False)
    async with host.connected():
        await host.scheduler.enqueue_many(Work(name=f"low-{i}") for i in range(20))
        urgent = await host.scheduler.enqueue(Work(name="urgent"), priority=URGENT)
        stock_worker = Worker(
            functions=[func(stock, name="tests.priorities.work@1")],
            redis_settings=RedisSettings.from_dsn(redis_url),
            queue_name=queue_name,
            job_serializer=dumps,
            job_deserializer=loads,
            handle_signals=False,
            poll_delay=0.01,
            max_jobs=1,
            burst=True,
        )
        try:
            await stock_worker.async_run()
        finally:
            await stock_worker.close()
        info = await host.scheduler.get(urgent)
    assert order[0] == "urgent" and len(order) == 21
    assert info is not None and info.status is JobStatus.SUCCEEDED
    assert enqueued[0] == info.enqueued_at


async def test_eager_mode_runs_jobs_with_a_priority_and_checks_it() -> None:
    host = JobHost(queue_name="tests-priorities-eager")
    ran: list[str] = []

    @host.handler(Work)
    async def work(job: Work, ctx: JobContext) -> None:
        ran.append(job.name)
        assert ctx.scheduled_at is not None

    with eager(host):
        async with host.run():
            job_id = await host.scheduler.enqueue(Work(name="e"), priority=URGENT)
            info = await host.scheduler.get(job_id)
            assert info is not None and info.status is JobStatus.SUCCEEDED
            with pytest.raises(ConfigurationError, match="a timedelta"):
                await host.scheduler.enqueue(Work(name="e"), priority=60)  # type: ignore[arg-type]
    assert ran == ["e"]
