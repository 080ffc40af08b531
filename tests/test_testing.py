"""hostedjobs.testing: eager mode (jobs run in the test's process, no Redis), the frozen
clock and run_due.

Every host here points at a closed port: if eager mode reached for Redis, starting the host
would fail with `RedisUnavailableError`.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.routing import Mount

from hostedjobs import (
    Inject,
    JobContext,
    JobHost,
    JobResult,
    JobStatus,
    RetryPolicy,
    Services,
    job_type,
)
from hostedjobs.clock import SystemClock
from hostedjobs.eager import EagerScheduler
from hostedjobs.exceptions import (
    ConfigurationError,
    HostNotRunningError,
    PayloadError,
    StartupActionError,
)
from hostedjobs.testing import FrozenClock, eager, run_due, wait_for_job
from tests.waiting import eventually

MONDAY_9 = datetime(2030, 1, 7, 9, tzinfo=UTC)


def _closed_port_url() -> str:
    """A Redis URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


@job_type("testing-greet")
@dataclass
class Greet:
    name: str


@job_type("testing-flaky")
@dataclass
class Flaky:
    fail_times: int


@job_type("testing-count")
@dataclass
class Count:
    number: int


@job_type("testing-orphan")
@dataclass
class Orphan:
    x: int


@job_type("testing-slow")
@dataclass
class Slow:
    seconds: float


class Session:
    """A per-run resource: opened and closed around each run."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.closed = False


def _host(log: list[Any], **options: Any) -> JobHost:
    services = Services()

    async def open_session() -> AsyncIterator[Session]:
        session = Session(log)
        log.append("open")
        try:
            yield session
        finally:
            session.closed = True
            log.append("close")

    services.add_scoped(Session, open_session)
    host = JobHost(services=services, redis_url=_closed_port_url(), **options)

    @host.handler(Greet)
    async def greet(job: Greet, ctx: JobContext, session: Session = Inject()) -> str:
        await ctx.report_progress(50, "halfway")
        log.append(("greet", job.name, ctx.attempt, session.closed))
        return f"hello {job.name}"

    @host.handler(Flaky, retry=RetryPolicy(max_tries=3, backoff=timedelta(hours=1)))
    async def flaky(job: Flaky, ctx: JobContext) -> None:
        log.append(("flaky", ctx.attempt))
        if ctx.attempt <= job.fail_times:
            raise RuntimeError(f"try {ctx.attempt} failed")

    @host.handler(Count)
    async def count(job: Count, ctx: JobContext) -> int:
        log.append(("count", job.number))
        if job.number > 0:
            await host.scheduler.enqueue(Count(job.number - 1))
            log.append(("count-enqueued", job.number - 1))
        return job.number

    @host.handler(Slow, timeout=0.2)
    async def slow(job: Slow) -> None:
        await asyncio.sleep(job.seconds)

    return host


# -- on-demand jobs ----------------------------------------------------------------------------


async def test_enqueue_runs_the_job_at_once_in_its_own_scope_without_redis() -> None:
    """enqueue returns after the job ran, with a scope opened and closed around it; the
    result, tries, times and progress read back as from Redis."""
    log: list[Any] = []
    host = _host(log)
    clock = FrozenClock(MONDAY_9)
    with eager(host, clock=clock):
        async with host.run():
            job_id = await host.scheduler.enqueue(Greet("ada"))
            assert log == ["open", ("greet", "ada", 1, False), "close"]
            info = await host.scheduler.get(job_id)
            assert info is not None
            assert info.status is JobStatus.SUCCEEDED
            assert (info.result, info.tries, info.job_type, info.version) == (
                "hello ada",
                1,
                "testing-greet",
                1,
            )
            assert info.payload == {"name": "ada"}
            assert info.enqueued_at == info.started_at == info.finished_at == MONDAY_9
            assert (info.progress, info.progress_message) == (50.0, "halfway")
            assert await wait_for_job(host, job_id) == info


def test_a_job_enqueued_from_a_route_runs_eagerly_under_testclient() -> None:
    """A FastAPI route's enqueue runs the job before the response; the app started without
    connecting to Redis (its URL is a closed port)."""
    log: list[Any] = []
    host = _host(log)
    app = FastAPI(lifespan=host.lifespan)

    @app.post("/greet/{name}")
    async def greet(name: str) -> dict[str, str]:
        return {"job_id": await host.scheduler.enqueue(Greet(name))}

    with eager(host), TestClient(app) as client:
        response = client.post("/greet/grace")
        assert response.status_code == 200
        assert ("greet", "grace", 1, False) in log
        assert client.portal is not None
        info = client.portal.call(host.scheduler.get, response.json()["job_id"])
        assert info is not None and info.status is JobStatus.SUCCEEDED
        assert info.result == "hello grace"


async def test_a_failing_job_is_retried_at_once_up_to_its_policy() -> None:
    """Retries follow the handler's RetryPolicy (without waiting its backoff): two failures
    then a success end succeeded after 3 tries; three failures end failed."""
    log: list[Any] = []
    host = _host(log)
    with eager(host):
        async with host.run():
            recovered = await host.scheduler.enqueue(Flaky(fail_times=2))
            info = await host.scheduler.get(recovered)
            assert info is not None and info.status is JobStatus.SUCCEEDED
            assert info.tries == 3
            assert log == [("flaky", 1), ("flaky", 2), ("flaky", 3)]

            log.clear()
            failed = await host.scheduler.enqueue(Flaky(fail_times=5))
            info = await host.scheduler.get(failed)
            assert info is not None and info.status is JobStatus.FAILED
            assert info.tries == 3
            assert info.error == "RuntimeError: try 3 failed"
            assert log == [("flaky", 1), ("flaky", 2), ("flaky", 3)]
            assert [i.id for i in await host.scheduler.jobs("failed")] == [failed]

            # retry() runs a failed job again under its id, with a fresh try count.
            assert await host.scheduler.retry(failed)
            info = await host.scheduler.get(failed)
            assert info is not None and info.status is JobStatus.FAILED and info.tries == 3
            assert not await host.scheduler.retry(recovered)


async def test_a_timeout_fails_the_run() -> None:
    """The handler's timeout applies as in the worker."""
    host = _host([])
    with eager(host):
        async with host.run():
            job_id = await host.scheduler.enqueue(Slow(seconds=30))
            info = await host.scheduler.get(job_id)
            assert info is not None and info.status is JobStatus.FAILED
            assert info.error == "TimeoutError: the run exceeded its timeout of 0.2s"


async def test_a_bad_payload_fails_at_enqueue_and_stores_nothing() -> None:
    """A payload with no JSON form raises PayloadError at enqueue, naming the field, as with
    Redis; enqueue_many names the position and queues none of them."""
    log: list[Any] = []
    host = _host(log)
    with eager(host):
        async with host.run():
            with pytest.raises(PayloadError, match=r"Greet\.name"):
                await host.scheduler.enqueue(Greet(name=object()))  # type: ignore[arg-type]
            with pytest.raises(PayloadError, match=r"jobs\[1\]"):
                await host.scheduler.enqueue_many([Greet("a"), Greet(name=object())])  # type: ignore[arg-type]
            with pytest.raises(PayloadError, match="not a job type"):
                await host.scheduler.enqueue(object())  # type: ignore[arg-type]
            assert sum((await host.scheduler.counts()).values()) == 0
            assert log == []


async def test_a_payload_that_does_not_decode_fails_the_job() -> None:
    """The payload goes through the codec both ways: one that encodes but does not fit the
    job type's fields fails the job at once (no retry), as in a worker."""
    log: list[Any] = []
    host = _host(log)
    with eager(host):
        async with host.run():
            job_id = await host.scheduler.enqueue(Count(number="three"))  # type: ignore[arg-type]
            info = await host.scheduler.get(job_id)
            assert info is not None and info.status is JobStatus.FAILED
            assert info.tries == 1
            assert info.error is not None and info.error.startswith("PayloadDecodeError")
            assert "number" in info.error
            assert log == []


async def test_enqueue_many_jobs_and_counts() -> None:
    """enqueue_many runs each job; jobs() and counts() list them."""
    log: list[Any] = []
    host = _host(log)
    with eager(host):
        async with host.run():
            ids = await host.scheduler.enqueue_many([Greet("a"), Greet("b")])
            assert [entry[1] for entry in log if isinstance(entry, tuple)] == ["a", "b"]
            listed = await host.scheduler.jobs(JobStatus.SUCCEEDED)
            assert [info.id for info in listed] == ids[::-1]  # newest first
            counts = await host.scheduler.counts()
            assert counts[JobStatus.SUCCEEDED] == 2
            assert sum(counts.values()) == 2
            with pytest.raises(ConfigurationError, match="unknown job status"):
                await host.scheduler.jobs("done")


async def test_a_job_enqueued_by_a_job_runs_after_it() -> None:
    """A job that enqueues another finishes first; the enqueued one runs next."""
    log: list[Any] = []
    host = _host(log)
    with eager(host):
        async with host.run():
            await host.scheduler.enqueue(Count(2))
    assert log == [
        ("count", 2),
        ("count-enqueued", 1),
        ("count", 1),
        ("count-enqueued", 0),
        ("count", 0),
    ]


async def test_explicit_job_ids_are_unique_until_deleted() -> None:
    """A taken id raises JobAlreadyExistsError; delete frees a scheduled job's id."""
    host = _host([])
    clock = FrozenClock(MONDAY_9)
    with eager(host, clock=clock):
        async with host.run():
            await host.scheduler.schedule(Greet("a"), delay=60, job_id="mine")
            with pytest.raises(ValueError, match="already exists"):
                await host.scheduler.enqueue(Greet("b"), job_id="mine")
            assert await host.scheduler.delete("mine")
            assert await host.scheduler.get("mine") is None
            await host.scheduler.enqueue(Greet("c"), job_id="mine")
            assert not await host.scheduler.delete("mine")  # finished
            assert not await host.scheduler.delete("unknown")


async def test_cancel_a_scheduled_job_and_a_running_one() -> None:
    """cancel ends a scheduled job before it runs and stops a running one; both read
    cancelled, and a finished or unknown job is not cancelled."""
    log: list[Any] = []
    host = _host(log)
    with eager(host, clock=FrozenClock(MONDAY_9)) as jobs:
        async with host.run():
            later = await host.scheduler.schedule(Greet("later"), delay=60)
            assert await host.scheduler.cancel(later)
            info = await host.scheduler.get(later)
            assert info is not None and info.status is JobStatus.CANCELLED
            assert info.message == "cancelled before it started"
            await jobs.advance(by=120)
            assert log == []

            enqueuing = asyncio.ensure_future(host.scheduler.enqueue(Slow(seconds=0.1)))
            running = await eventually(lambda: host.scheduler.jobs("running"))
            assert await host.scheduler.cancel(running[0].id)
            job_id = await enqueuing
            info = await host.scheduler.get(job_id)
            assert info is not None and info.status is JobStatus.CANCELLED
            assert not await host.scheduler.cancel(job_id)
            assert not await host.scheduler.cancel("unknown")


async def test_a_job_type_with_no_handler_waits_visibly() -> None:
    """As on a worker with no code for it, the job waits (queued) and says why."""
    host = _host([])
    with eager(host):
        async with host.run():
            job_id = await host.scheduler.enqueue(Orphan(1))
            info = await host.scheduler.get(job_id)
            assert info is not None and info.status is JobStatus.QUEUED
            assert info.message is not None and "no handler for job type" in info.message
            with pytest.raises(TimeoutError):
                await wait_for_job(host, job_id, timeout=0.05)


async def test_watch_yields_until_the_job_ends() -> None:
    """watch() ends with the finished state."""
    host = _host([])
    with eager(host):
        async with host.run():
            job_id = await host.scheduler.enqueue(Greet("w"))
            states = [info.status async for info in host.scheduler.watch(job_id)]
            assert states == [JobStatus.SUCCEEDED]


# -- time --------------------------------------------------------------------------------------


async def test_a_delayed_job_runs_only_once_the_clock_reaches_it() -> None:
    """schedule(delay=...) counts from the frozen clock; the job is scheduled until the
    clock passes its time and run_due runs it."""
    log: list[Any] = []
    host = _host(log)
    with eager(host, clock=FrozenClock(MONDAY_9)) as jobs:
        async with host.run():
            job_id = await host.scheduler.schedule(Greet("later"), delay=timedelta(hours=1))
            at_id = await host.scheduler.schedule(Greet("at"), at=MONDAY_9 + timedelta(hours=2))
            info = await host.scheduler.get(job_id)
            assert info is not None and info.status is JobStatus.SCHEDULED
            assert info.scheduled_for == MONDAY_9 + timedelta(hours=1)
            assert await jobs.advance(by=timedelta(minutes=59)) == 0
            assert log == []
            assert [i.id for i in await host.scheduler.jobs("scheduled")] == [job_id, at_id]

            jobs.clock.advance(60)
            info = await host.scheduler.get(job_id)
            assert info is not None and info.status is JobStatus.QUEUED  # due, not yet run
            assert await run_due(host) == 1
            info = await host.scheduler.get(job_id)
            assert info is not None and info.status is JobStatus.SUCCEEDED
            assert info.started_at == MONDAY_9 + timedelta(hours=1)

            assert await jobs.advance(to=MONDAY_9 + timedelta(hours=3)) == 1
            assert [entry[1] for entry in log if isinstance(entry, tuple)] == ["later", "at"]


async def test_cron_jobs_fire_at_their_ticks_under_run_due() -> None:
    """A per-process cron job and a distributed one run once per tick the clock passes,
    in tick order, with the tick as ctx.scheduled_at; status shows the next run."""
    host = JobHost(redis_url=_closed_port_url())
    ticks: list[tuple[str, datetime | None]] = []

    @host.cron("0 9 * * MON", timezone="Europe/Prague")
    async def weekly(ctx: JobContext) -> None:
        ticks.append(("weekly", ctx.scheduled_at))

    @host.distributed_cron("0 */6 * * *", name="every-six-hours")
    async def six_hourly(ctx: JobContext) -> JobResult:
        ticks.append(("six", ctx.scheduled_at))
        return JobResult.success("done")

    start = datetime(2030, 1, 6, 23, 0, tzinfo=UTC)  # Sunday
    with eager(host, clock=FrozenClock(start)) as jobs:
        async with host.run():
            assert await jobs.run_due() == 0
            # 09:00 in Prague is 08:00 UTC in winter.
            assert await jobs.advance(to=datetime(2030, 1, 7, 7, 59, tzinfo=UTC)) == 2
            assert ticks == [
                ("six", datetime(2030, 1, 7, 0, tzinfo=UTC)),
                ("six", datetime(2030, 1, 7, 6, tzinfo=UTC)),
            ]
            ticks.clear()
            assert await jobs.advance(by=60) == 1
            assert ticks == [("weekly", datetime(2030, 1, 7, 8, tzinfo=UTC))]
            status = {s.name: s for s in await host.status()}
            assert status["weekly"].next_run == datetime(2030, 1, 14, 8, tzinfo=UTC)
            assert status["weekly"].last_outcome == "succeeded"
            assert status["every-six-hours"].last_message == "done"
            assert status["every-six-hours"].next_run == datetime(2030, 1, 7, 12, tzinfo=UTC)


async def test_on_demand_jobs_and_ticks_run_in_time_order() -> None:
    """run_due interleaves scheduled jobs and cron ticks by their time."""
    log: list[Any] = []
    host = _host(log)

    @host.cron("30 9 * * *")
    async def half_past(ctx: JobContext) -> None:
        log.append(("cron", ctx.scheduled_at))

    with eager(host, clock=FrozenClock(MONDAY_9)) as jobs:
        async with host.run():
            await host.scheduler.schedule(Greet("at-10"), delay=timedelta(hours=1))
            await host.scheduler.schedule(Greet("at-9:15"), delay=timedelta(minutes=15))
            await jobs.advance(by=timedelta(hours=2))
    names = [entry[1] for entry in log if isinstance(entry, tuple)]
    assert names == ["at-9:15", MONDAY_9 + timedelta(minutes=30), "at-10"]


async def test_too_many_due_ticks_is_an_error_and_runs_nothing() -> None:
    """Moving the clock past more than 10,000 ticks of one job asks for smaller steps."""
    host = JobHost(redis_url=_closed_port_url())
    runs: list[int] = []

    @host.cron("* * * * * *")
    async def every_second() -> None:
        runs.append(1)

    with eager(host, clock=FrozenClock(MONDAY_9)) as jobs:
        async with host.run():
            with pytest.raises(ConfigurationError, match="smaller steps"):
                await jobs.advance(by=timedelta(days=1))
            assert runs == []
            # The clock stayed put, so the test can take the smaller steps it was told to.
            assert jobs.clock.now() == MONDAY_9
            assert await jobs.advance(by=timedelta(seconds=9000)) == 9000
            assert await jobs.advance(by=timedelta(seconds=9000)) == 9000


async def test_trigger_and_run_once_run_hosted_jobs_in_process() -> None:
    """trigger runs a distributed job here (no queue); run_once runs a continuous job,
    whose loop does not start on its own in eager mode."""
    host = JobHost(redis_url=_closed_port_url())
    runs: list[str] = []

    @host.distributed_cron("0 2 * * *", name="nightly")
    async def nightly() -> None:
        runs.append("nightly")

    @host.job(interval=timedelta(seconds=1))
    async def poll() -> None:
        runs.append("poll")

    with eager(host):
        async with host.run():
            await host.trigger("nightly")
            await eventually(lambda: runs == ["nightly"])
            assert (await host.run_once("poll")).outcome == "succeeded"
            assert runs == ["nightly", "poll"]


# -- startup and lifecycle ---------------------------------------------------------------------


async def test_startup_actions_run_and_gate_jobs_and_readiness() -> None:
    """Jobs enqueued while a startup action runs wait for it; the host is ready after."""
    log: list[Any] = []
    host = _host(log)
    release = asyncio.Event()

    @host.startup_action()
    async def migrate() -> None:
        await release.wait()

    with eager(host, wait_for_startup=False):
        async with host.run():
            assert not host.ready
            job_id = await host.scheduler.enqueue(Greet("early"))
            info = await host.scheduler.get(job_id)
            assert info is not None and info.status is JobStatus.QUEUED
            release.set()
            info = await wait_for_job(host, job_id, timeout=60)
            assert info.status is JobStatus.SUCCEEDED
            assert host.ready
            report = await host.health_report()
            assert report["healthy"] is True


async def test_a_failed_startup_action_keeps_jobs_from_running() -> None:
    """After a failed startup action the host is not ready and queued jobs never run."""
    log: list[Any] = []
    host = _host(log, on_startup_failure="stay")

    @host.startup_action()
    async def migrate() -> None:
        raise RuntimeError("no database")

    with eager(host, wait_for_startup=False) as jobs:
        async with host.run():
            await eventually(lambda: host.failed_startup_action is not None)
            job_id = await host.scheduler.enqueue(Greet("never"))
            assert await jobs.run_due() == 0
            info = await host.scheduler.get(job_id)
            assert info is not None and info.status is JobStatus.QUEUED
            assert not host.ready
    assert log == []


async def test_leaving_eager_mode_restores_the_redis_scheduler_and_clock() -> None:
    """On exit the host uses Redis and its own clock again; the eager scheduler is gone."""
    host = _host([])
    original = host.clock
    with eager(host) as jobs:
        assert isinstance(host.scheduler, EagerScheduler)
        assert host.clock is jobs.clock
    assert not isinstance(host.scheduler, EagerScheduler)
    assert host.clock is original


# -- errors ------------------------------------------------------------------------------------


async def test_eager_mode_errors() -> None:
    """Each misuse raises an error saying what to do."""
    host = _host([])
    with eager(host) as jobs:
        with pytest.raises(HostNotRunningError, match="lifespan"):
            await host.scheduler.enqueue(Greet("a"))
        with pytest.raises(HostNotRunningError):
            await host.scheduler.get("x")
        with pytest.raises(ConfigurationError, match="run_due needs a host running"):
            await jobs.run_due()
        with pytest.raises(ConfigurationError, match="already in eager mode"), eager(host):
            pass
        async with host.run():
            with pytest.raises(ConfigurationError, match="no Redis"):
                _ = host.scheduler.pool
            assert await host.workers() == []
            with pytest.raises(ConfigurationError, match="exactly one of by= or to="):
                await jobs.advance()
            with pytest.raises(ConfigurationError, match="jobs\\(\\) needs offset"):
                await host.scheduler.jobs("queued", limit=0)
            with pytest.raises(ConfigurationError, match="stop the host"):
                host._leave_eager(host.clock)
    other = _host([])
    with pytest.raises(ConfigurationError, match="run_due needs"):
        await run_due(other)
    with (
        eager(other, clock=SystemClock()) as system,
        pytest.raises(ConfigurationError, match="moves a FrozenClock"),
    ):
        await system.advance(by=1)


async def test_eager_mode_must_start_before_the_host(redis_url: str, queue_name: str) -> None:
    """Entering eager mode on a host already running on Redis is refused, changing nothing."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name)
    async with host.run():
        with (
            pytest.raises(ConfigurationError, match="enter eager mode before it starts"),
            eager(host),
        ):
            pass
        assert not isinstance(host.scheduler, EagerScheduler)


def test_frozen_clock_moves_only_forward() -> None:
    """advance and move_to move forward; naive times and moves back are refused."""
    clock = FrozenClock(MONDAY_9)
    assert clock.now() == MONDAY_9
    assert clock.advance(timedelta(minutes=5)) == MONDAY_9 + timedelta(minutes=5)
    assert clock.advance(1.5) == MONDAY_9 + timedelta(minutes=5, seconds=1.5)
    assert clock.move_to(MONDAY_9 + timedelta(hours=1)) == MONDAY_9 + timedelta(hours=1)
    with pytest.raises(ConfigurationError, match="only moves forward"):
        clock.move_to(MONDAY_9)
    with pytest.raises(ConfigurationError, match=">= 0"):
        clock.advance(-1)
    with pytest.raises(ConfigurationError, match="aware datetime"):
        clock.move_to(datetime(2031, 1, 1))
    with pytest.raises(ConfigurationError, match="aware datetime"):
        FrozenClock(datetime(2031, 1, 1))
    assert FrozenClock().now().tzinfo is UTC
    assert "2030-01-07T10:00:00+00:00" in repr(clock)


def test_the_dashboard_reads_an_eager_host() -> None:
    """The dashboard's pages work in eager mode: they read through the scheduler."""
    host = _host([])
    app = Starlette(routes=[Mount("/admin", app=host.dashboard())], lifespan=host.lifespan)
    with eager(host), TestClient(app) as client:
        assert client.portal is not None
        job_id = client.portal.call(host.scheduler.enqueue, Greet("dash"))
        for path in ("/admin/", "/admin/jobs?state=succeeded", f"/admin/jobs/{job_id}"):
            response = client.get(path)
            assert response.status_code == 200, path
        assert "hello dash" in client.get(f"/admin/jobs/{job_id}").text


async def test_results_follow_keep_result_and_counts_since() -> None:
    """keep_result=0 keeps no result, as in Redis; counts(since=...) counts by the clock."""
    log: list[Any] = []
    host = _host(log, keep_result=0)
    with eager(host):
        async with host.run():
            job_id = await host.scheduler.enqueue(Greet("gone"))
            assert ("greet", "gone", 1, False) in log
            assert await host.scheduler.get(job_id) is None
    host = _host([])
    with eager(host, clock=FrozenClock(MONDAY_9)) as jobs:
        async with host.run():
            await host.scheduler.enqueue(Greet("old"))
            jobs.clock.advance(timedelta(hours=2))
            await host.scheduler.enqueue(Greet("new"))
            recent = await host.scheduler.counts(since=timedelta(hours=1))
            assert recent[JobStatus.SUCCEEDED] == 1
            assert (await host.scheduler.counts())[JobStatus.SUCCEEDED] == 2


async def test_wait_for_job_says_why_it_timed_out() -> None:
    """An unknown id, and a scheduled job under the frozen clock, are named as such."""
    host = _host([])
    with eager(host):
        async with host.run():
            with pytest.raises(TimeoutError, match=r"there is no job with this id"):
                await wait_for_job(host, "no-such-job", timeout=0.05)
            later = await host.scheduler.schedule(Greet("later"), delay=60)
            with pytest.raises(TimeoutError, match=r"jobs\.advance\(\.\.\.\) moves it"):
                await wait_for_job(host, later, timeout=0.05)


async def test_the_start_waits_for_startup_actions_so_jobs_run_inside_enqueue() -> None:
    """By default the host's start waits for its startup actions in eager mode: a job
    enqueued in the block runs before enqueue returns (a slow action left it queued)."""
    log: list[Any] = []
    host = _host(log)

    @host.startup_action()
    async def migrate() -> None:
        await asyncio.sleep(0.3)  # a migration that takes a while

    with eager(host):
        async with host.run():
            assert host.ready
            job_id = await host.scheduler.enqueue(Greet("at once"))
            info = await host.scheduler.get(job_id)
            assert info is not None and info.status is JobStatus.SUCCEEDED


async def test_a_failed_startup_action_fails_the_eager_start() -> None:
    """A failed startup action raises at the start, as in blocking startup mode."""
    host = _host([], on_startup_failure="stay")

    @host.startup_action()
    async def migrate() -> None:
        raise RuntimeError("no database")

    with eager(host), pytest.raises(StartupActionError, match="no database"):
        async with host.run():
            pass
