"""On-demand jobs end to end on a real Redis: enqueue -> worker -> handler in a scope -> status."""

from __future__ import annotations

import asyncio
import pickle
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import pytest
from arq.jobs import Job
from arq.jobs import JobStatus as ArqJobStatus

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
from hostedjobs.exceptions import (
    ConfigurationError,
    HostNotRunningError,
    JobAlreadyExistsError,
    PayloadError,
    RedisUnavailableError,
)
from hostedjobs.serialization import dumps, loads
from hostedjobs.testing import wait_for_job
from tests.waiting import eventually


@job_type("tests.jobs.greet")
@dataclass
class Greet:
    name: str
    sent_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ids: list[uuid.UUID] = field(default_factory=list)


@job_type("tests.jobs.flaky")
@dataclass
class Flaky:
    failures: int
    key: str


@job_type("tests.jobs.slow")
@dataclass
class Slow:
    seconds: float
    key: str


@job_type("tests.jobs.outcome")
@dataclass
class Outcome:
    kind: str


@job_type("tests.jobs.fail-once")
@dataclass
class FailOnce:
    key: str


@job_type("tests.jobs.hold")
@dataclass
class Hold:
    """Runs until the test releases it (make_host registers no handler for it)."""

    key: str


@job_type("tests.jobs.orphan")
@dataclass
class Orphan:
    """A job type no test registers a handler for."""

    value: int


class Database:
    """Stands in for a per-run resource (a session): records how each scope ended."""

    instances: list[Database] = []  # noqa: RUF012 - a test log shared on purpose

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self.closed_with: BaseException | str | None = "open"
        Database.instances.append(self)


async def open_database() -> AsyncIterator[Database]:
    db = Database()
    try:
        yield db
    except BaseException as exc:
        db.closed_with = exc
        raise
    else:
        db.closed_with = None


class Mailer:
    def __init__(self) -> None:
        self.sent: list[str] = []


def make_host(redis_url: str, queue_name: str, **options: Any) -> tuple[JobHost, Mailer]:
    mailer = Mailer()
    services = Services()
    services.add_singleton(Mailer, mailer)
    services.add_scoped(Database, open_database)
    options.setdefault("retry", RetryPolicy(max_tries=3, backoff=timedelta(milliseconds=20)))
    host = JobHost(services=services, redis_url=redis_url, queue_name=queue_name, **options)

    @host.handler(Greet)
    async def greet(job: Greet, ctx: JobContext, mailer: Mailer = Inject()) -> JobResult:
        await ctx.report_progress(100, "done")
        mailer.sent.append(job.name)
        return JobResult.success(f"hello {job.name}")

    attempts: dict[str, int] = {}

    @host.handler(Flaky)
    async def flaky(job: Flaky, ctx: JobContext, db: Annotated[Database, Inject()]) -> int:
        attempts[job.key] = attempts.get(job.key, 0) + 1
        if ctx.attempt <= job.failures:
            raise RuntimeError(f"failure {ctx.attempt}")
        return ctx.attempt

    @host.handler(Slow, timeout=timedelta(seconds=2))
    class SlowHandler:
        def __init__(self, db: Database, ctx: JobContext) -> None:
            self.db = db
            self.ctx = ctx

        async def handle(self, job: Slow, ctx: JobContext) -> None:
            mailer.sent.append(f"start:{job.key}:{self.db.id}")
            await asyncio.sleep(job.seconds)
            mailer.sent.append(f"end:{job.key}")

    @host.handler(Outcome, retry=RetryPolicy(max_tries=1))
    async def outcome(job: Outcome) -> JobResult | None:
        if job.kind == "failed":
            return JobResult.failed("nothing to send")
        if job.kind == "cancelled":
            return JobResult.cancelled("unsubscribed")
        return None

    return host, mailer


async def test_enqueued_job_runs_in_its_own_scope_and_reports_status(
    redis_url: str, queue_name: str
) -> None:
    """An enqueued job runs once, with injected services, and `get` shows its outcome."""
    host, mailer = make_host(redis_url, queue_name)
    async with host.run():
        job_id = await host.scheduler.enqueue(Greet(name="ada", ids=[uuid.uuid4()]))
        info = await wait_for_job(host, job_id)
    assert mailer.sent == ["ada"]
    assert info.status is JobStatus.SUCCEEDED
    assert info.message == "hello ada"
    assert info.tries == 1
    assert info.job_type == "tests.jobs.greet"
    assert info.version == 1
    assert info.progress == 100
    assert info.progress_message == "done"
    assert info.enqueued_at is not None
    assert info.started_at is not None
    assert info.finished_at is not None
    assert info.enqueued_at <= info.finished_at
    assert info.finished


async def test_each_run_gets_a_fresh_scope_whose_cleanup_sees_the_exception(
    redis_url: str, queue_name: str
) -> None:
    """Two runs get two scoped instances; the failing try's cleanup sees its exception."""
    host, _ = make_host(redis_url, queue_name)
    Database.instances.clear()
    async with host.run():
        job_id = await host.scheduler.enqueue(Flaky(failures=1, key="scope"))
        info = await wait_for_job(host, job_id)
    assert info.status is JobStatus.SUCCEEDED
    assert info.result == 2
    assert info.tries == 2
    first, second = Database.instances
    assert first.id != second.id
    assert isinstance(first.closed_with, RuntimeError)
    assert str(first.closed_with) == "failure 1"
    assert second.closed_with is None


async def test_failed_job_is_retried_then_kept_as_failed(redis_url: str, queue_name: str) -> None:
    """A job that always fails is tried max_tries times and its final error is visible."""
    host, _ = make_host(redis_url, queue_name)
    async with host.run():
        job_id = await host.scheduler.enqueue(Flaky(failures=10, key="always"))
        info = await wait_for_job(host, job_id)
    assert info.status is JobStatus.FAILED
    assert info.tries == 3
    assert info.error == "RuntimeError: failure 3"


async def test_retry_waits_for_the_backoff(redis_url: str, queue_name: str) -> None:
    """Retries are deferred by the policy's backoff, not run back to back."""
    # Long enough that polling never misses the scheduled retry, even on a busy machine.
    retry = RetryPolicy(max_tries=2, backoff=timedelta(milliseconds=1500), jitter=0)
    host, _ = make_host(redis_url, queue_name, retry=retry)
    async with host.run():
        job_id = await host.scheduler.enqueue(Flaky(failures=1, key="backoff"))
        between = await wait_for_job(host, job_id, statuses={JobStatus.SCHEDULED}, timeout=60)
        assert between.error == "RuntimeError: failure 1"
        assert between.tries == 1
        info = await wait_for_job(host, job_id)
    assert info.status is JobStatus.SUCCEEDED
    assert info.started_at is not None
    assert info.enqueued_at is not None
    assert info.started_at - info.enqueued_at >= timedelta(milliseconds=1490)


async def test_timeout_fails_the_run_and_the_scope_sees_it(redis_url: str, queue_name: str) -> None:
    """A run over its timeout is cancelled, its scope closes with the timeout, and it fails."""
    host, _ = make_host(redis_url, queue_name, retry=RetryPolicy(max_tries=1))
    Database.instances.clear()
    async with host.run():
        job_id = await host.scheduler.enqueue(Slow(seconds=30, key="timeout"))
        info = await wait_for_job(host, job_id, timeout=60)
    assert info.status is JobStatus.FAILED
    assert info.error == "TimeoutError: the run exceeded its timeout of 2s"
    (db,) = Database.instances
    assert isinstance(db.closed_with, TimeoutError)


@pytest.mark.parametrize(
    ("kind", "status", "message"),
    [
        ("failed", JobStatus.FAILED, None),
        ("cancelled", JobStatus.CANCELLED, "unsubscribed"),
        ("none", JobStatus.SUCCEEDED, None),
    ],
)
async def test_job_result_outcomes(
    redis_url: str, queue_name: str, kind: str, status: JobStatus, message: str | None
) -> None:
    """JobResult.failed fails without retry, .cancelled is kept as cancelled, None succeeds."""
    host, _ = make_host(redis_url, queue_name)
    async with host.run():
        info = await wait_for_job(host, await host.scheduler.enqueue(Outcome(kind=kind)))
    assert info.status is status
    assert info.message == message
    assert info.tries == 1
    if kind == "failed":
        assert info.error == "JobFailedError: nothing to send"


async def test_scheduled_job_waits_for_its_delay(redis_url: str, queue_name: str) -> None:
    """A job scheduled with a delay is SCHEDULED until then, and starts after it."""
    host, mailer = make_host(redis_url, queue_name)
    delay = timedelta(seconds=2)  # ample time to read the job before it is due
    async with host.run():
        before = datetime.now(UTC)
        job_id = await host.scheduler.schedule(Greet(name="later"), delay=delay)
        info = await host.scheduler.get(job_id)
        assert info is not None
        assert info.status is JobStatus.SCHEDULED
        assert info.scheduled_for is not None
        assert info.scheduled_for >= before + delay - timedelta(milliseconds=50)
        info = await wait_for_job(host, job_id)
    assert info.started_at is not None
    assert info.started_at >= before + delay
    assert mailer.sent == ["later"]


async def test_schedule_at_an_aware_time(redis_url: str, queue_name: str) -> None:
    """schedule(at=) takes an aware datetime; a naive one is refused with a clear error."""
    host, mailer = make_host(redis_url, queue_name)
    async with host.run():
        with pytest.raises(ConfigurationError, match="aware datetime"):
            await host.scheduler.schedule(Greet(name="x"), at=datetime.now())
        with pytest.raises(ConfigurationError, match="exactly one"):
            await host.scheduler.schedule(Greet(name="x"))
        at = datetime.now(UTC) + timedelta(milliseconds=300)
        info = await wait_for_job(host, await host.scheduler.schedule(Greet(name="at"), at=at))
    assert info.started_at is not None
    assert info.started_at >= at - timedelta(milliseconds=5)
    assert mailer.sent == ["at"]


async def test_deleted_scheduled_job_never_runs_and_its_id_can_be_reused(
    redis_url: str, queue_name: str
) -> None:
    """delete() removes a scheduled job for good; the id is free again afterwards, and until
    then the deleted job reads as cancelled ("deleted")."""
    host, mailer = make_host(redis_url, queue_name)
    async with host.run():
        due = datetime.now(UTC) + timedelta(seconds=2)  # ample time to delete it first
        job_id = await host.scheduler.schedule(
            Greet(name="never"), at=due, job_id="reused-id-" + queue_name
        )
        assert await host.scheduler.delete(job_id) is True
        deleted = await host.scheduler.get(job_id)
        assert deleted is not None
        assert (deleted.status, deleted.message) == (JobStatus.CANCELLED, "deleted")
        assert [j.id for j in await host.scheduler.jobs(JobStatus.CANCELLED)] == [job_id]
        assert await host.scheduler.delete(job_id) is False
        # Past its time: were it still queued, the worker would take it from now on (and the
        # id would still be taken).
        await eventually(lambda: datetime.now(UTC) > due + timedelta(milliseconds=100))
        assert mailer.sent == []
        again = await host.scheduler.enqueue(Greet(name="again"), job_id=job_id)
        info = await wait_for_job(host, again)
        assert info.status is JobStatus.SUCCEEDED
        assert await host.scheduler.delete(job_id) is False
    assert mailer.sent == ["again"]


async def test_delete_refuses_a_running_job(redis_url: str, queue_name: str) -> None:
    """A running job cannot be deleted: delete() returns False and the job completes."""
    host, _ = make_host(redis_url, queue_name)
    async with host.run():
        job_id = await host.scheduler.enqueue(Slow(seconds=1.0, key="running"))
        await wait_for_job(host, job_id, statuses={JobStatus.RUNNING})
        assert await host.scheduler.delete(job_id) is False
        info = await wait_for_job(host, job_id)
        assert await host.scheduler.get("no-such-job") is None
    assert info.status is JobStatus.SUCCEEDED


async def test_duplicate_explicit_id_is_refused(redis_url: str, queue_name: str) -> None:
    """An explicit job id that is taken raises JobAlreadyExistsError."""
    host, _ = make_host(redis_url, queue_name, run_worker=False)
    async with host.run():
        job_id = await host.scheduler.enqueue(Greet(name="a"), job_id="dup-" + queue_name)
        with pytest.raises(JobAlreadyExistsError, match="already exists"):
            await host.scheduler.enqueue(Greet(name="b"), job_id=job_id)
        info = await host.scheduler.get(job_id)
    assert info is not None
    assert info.status is JobStatus.QUEUED
    assert info.payload["name"] == "a"


async def test_unserializable_payload_fails_at_enqueue(redis_url: str, queue_name: str) -> None:
    """A payload field JSON cannot hold raises a TypeError naming it, and nothing is queued."""
    host, _ = make_host(redis_url, queue_name, run_worker=False)
    async with host.run():
        bad = Greet(name="x", ids=[object()])  # type: ignore[list-item]
        with pytest.raises(PayloadError, match=r"Greet\.ids"):
            await host.scheduler.enqueue(bad)
        with pytest.raises(TypeError, match="not a job type"):
            await host.scheduler.enqueue({"name": "x"})  # type: ignore[arg-type]
        assert await host.scheduler.pool.zcard(queue_name) == 0


async def test_a_job_no_worker_here_can_run_waits_visibly_for_one_that_can(
    redis_url: str, queue_name: str
) -> None:
    """A job with no handler in this worker is not failed (before: UnknownJobTypeError, for
    good): it is parked, shown as queued with the reason, the next job still runs, and a
    worker that has the handler (a rolling deploy's new version) runs it as soon as it
    starts, as a first try."""
    host, mailer = make_host(redis_url, queue_name)
    async with host.run():
        orphans = [await host.scheduler.enqueue(Orphan(value=n)) for n in range(10)]
        after = await wait_for_job(host, await host.scheduler.enqueue(Greet(name="after")))
        assert after.status is JobStatus.SUCCEEDED

        async def all_parked() -> bool:
            infos = [await host.scheduler.get(job_id) for job_id in orphans]
            return all(i is not None and i.message is not None for i in infos)

        await eventually(all_parked, what="every orphan parked")
        info = await host.scheduler.get(orphans[0])
        assert info is not None and info.status is JobStatus.QUEUED
        assert info.message is not None
        assert "no handler for job type 'tests.jobs.orphan' version 1" in info.message
        assert (await host.scheduler.counts())[JobStatus.QUEUED] == len(orphans)
        other, _ = make_host(redis_url, queue_name)
        ran: list[int] = []

        @other.handler(Orphan)
        async def adopt(job: Orphan, ctx: JobContext) -> None:
            ran.append(job.value)

        async with other.run():
            for job_id in orphans:
                done = await wait_for_job(other, job_id)
                assert (done.status, done.tries) == (JobStatus.SUCCEEDED, 1)
    assert sorted(ran) == list(range(10))
    assert mailer.sent == ["after"]


async def test_a_second_application_on_the_same_queue_is_refused_at_start(
    redis_url: str, queue_name: str
) -> None:
    """Two applications left on the default queue took each other's jobs (12 of 20 failed
    UnknownJobTypeError): now the second one to start is refused, naming the first."""
    first, _ = make_host(redis_url, queue_name)
    second = JobHost(redis_url=redis_url, queue_name=queue_name)

    @second.handler(Orphan)
    async def adopt(job: Orphan) -> None: ...

    async with first.run():
        await eventually(lambda: _has_workers(first), what="the first app's worker beating")
        with pytest.raises(ConfigurationError, match="already used by another application"):
            async with second.run():
                pass


async def _has_workers(host: JobHost) -> bool:
    return bool(await host.workers())


async def _plant(host: JobHost, queue_name: str, job_id: str, raw: bytes) -> None:
    async with host.scheduler.pool.pipeline(transaction=True) as pipe:
        pipe.psetex(f"arq:job:{job_id}", 60_000, raw)
        pipe.zadd(queue_name, {job_id: int(time.time() * 1000)})
        pipe.lpush(f"{queue_name}:wake", b"1")
        await pipe.execute()


class _Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(_EXPLOIT_MARKER),))


_EXPLOIT_MARKER = f"/tmp/hostedjobs-pickle-{uuid.uuid4().hex}"


async def test_planted_pickle_is_never_executed(redis_url: str, queue_name: str) -> None:
    """A pickle written straight into Redis fails its job without being unpickled."""
    host, _mailer = make_host(redis_url, queue_name)
    job = {"t": 1, "f": "tests.jobs.greet@1", "a": [_Exploit()], "k": {}, "et": 1}
    async with host.run():
        await _plant(host, queue_name, "planted", pickle.dumps(job))
        after = await wait_for_job(host, await host.scheduler.enqueue(Greet(name="after")))
        info = await wait_for_job(host, "planted")
    assert not Path(_EXPLOIT_MARKER).exists()
    assert info.status is JobStatus.FAILED
    assert info.error is not None
    assert "pickle" in info.error
    assert after.status is JobStatus.SUCCEEDED


async def test_payload_that_does_not_fit_its_type_fails_clearly(
    redis_url: str, queue_name: str
) -> None:
    """A JSON payload with a wrong field fails that job with the field named, not a crash."""
    host, mailer = make_host(redis_url, queue_name)
    job = {"t": 1, "f": "tests.jobs.greet@1", "a": [{"name": 42}], "k": {}, "et": 1}
    async with host.run():
        await _plant(host, queue_name, "misfit-" + queue_name, dumps(job))
        info = await wait_for_job(host, "misfit-" + queue_name)
    assert info.status is JobStatus.FAILED
    assert info.error is not None
    assert "name" in info.error
    assert info.tries == 1
    assert mailer.sent == []


async def test_missing_dependency_fails_the_run_naming_the_type(
    redis_url: str, queue_name: str
) -> None:
    """A handler asking for an unregistered service fails with the type named, no retries."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name)

    @host.handler(Greet)
    async def greet(job: Greet, mailer: Mailer = Inject()) -> None:
        raise AssertionError("never called")

    async with host.run():
        info = await wait_for_job(host, await host.scheduler.enqueue(Greet(name="x")))
    assert info.status is JobStatus.FAILED
    assert info.error is not None
    assert "Mailer" in info.error
    assert info.tries == 1


async def test_scheduler_outside_the_running_host_says_how_to_start_it(redis_url: str) -> None:
    """Using the scheduler before the host runs raises HostNotRunningError."""
    host, _ = make_host(redis_url, "unused")
    with pytest.raises(HostNotRunningError, match="lifespan"):
        await host.scheduler.enqueue(Greet(name="x"))


async def test_redis_down_at_start_is_a_clear_error() -> None:
    """A host pointed at a Redis that is not there fails to start with a helpful message."""
    host = JobHost(redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(
        RedisUnavailableError, match=r"cannot connect to Redis at 127\.0\.0\.1:1/0: .* listens"
    ):
        async with host.run():
            pass
    assert not host.running


async def test_web_only_host_enqueues_and_a_worker_host_runs(
    redis_url: str, queue_name: str
) -> None:
    """run_worker=False only enqueues; another host on the same queue runs the job."""
    web, _ = make_host(redis_url, queue_name, run_worker=False)
    worker, mailer = make_host(redis_url, queue_name)
    async with web.run():
        job_id = await web.scheduler.enqueue(Greet(name="across"))
        # Negative check, so a window: nothing here runs it.
        await asyncio.sleep(0.5)
        queued = await web.scheduler.get(job_id)
        assert queued is not None
        assert queued.status is JobStatus.QUEUED
        async with worker.run():
            info = await wait_for_job(web, job_id)
    assert info.status is JobStatus.SUCCEEDED
    assert mailer.sent == ["across"]


async def test_stock_arq_job_handle_reads_our_jobs(redis_url: str, queue_name: str) -> None:
    """arq's own Job handle reads status and result of a hostedjobs job."""
    host, _ = make_host(redis_url, queue_name)
    async with host.run():
        job_id = await host.scheduler.enqueue(Outcome(kind="none"))
        await wait_for_job(host, job_id)
        job = Job(job_id, host.scheduler.pool, _queue_name=queue_name, _deserializer=loads)
        assert await job.status() == ArqJobStatus.complete
        info = await job.result_info()
    assert info is not None
    assert info.success
    assert info.function == "tests.jobs.outcome@1"


async def test_shutdown_waits_for_running_jobs_within_the_grace(
    redis_url: str, queue_name: str
) -> None:
    """Leaving host.run() lets a short running job finish before returning."""
    host, mailer = make_host(redis_url, queue_name, shutdown_grace=timedelta(seconds=60))
    async with host.run():
        job_id = await host.scheduler.enqueue(Slow(seconds=1.0, key="drain"))
        await wait_for_job(host, job_id, statuses={JobStatus.RUNNING})
    assert mailer.sent[-1] == "end:drain"
    checker, _ = make_host(redis_url, queue_name, run_worker=False)
    async with checker.run():
        info = await checker.scheduler.get(job_id)
    assert info is not None
    assert info.status is JobStatus.SUCCEEDED


async def test_shutdown_cancels_jobs_past_the_grace_and_requeues_them(
    redis_url: str, queue_name: str
) -> None:
    """A job still running after the grace is cancelled (its scope sees it) and re-queued."""
    host, _mailer = make_host(redis_url, queue_name, shutdown_grace=timedelta(milliseconds=200))
    Database.instances.clear()
    async with host.run():
        job_id = await host.scheduler.enqueue(Slow(seconds=1.0, key="requeue"))
        await wait_for_job(host, job_id, statuses={JobStatus.RUNNING})
    (db,) = Database.instances
    assert isinstance(db.closed_with, asyncio.CancelledError)
    second, mailer2 = make_host(redis_url, queue_name)
    async with second.run():
        info = await wait_for_job(second, job_id)
    assert info.status is JobStatus.SUCCEEDED
    # A shutdown is not a try: the interrupted run is given back uncounted.
    assert info.tries == 1
    assert "end:requeue" in mailer2.sent


async def test_worker_survives_a_redis_restart(restartable_redis: Any, queue_name: str) -> None:
    """After Redis goes away and comes back, the same worker keeps running jobs."""
    host, mailer = make_host(restartable_redis.url, queue_name)
    async with host.run():
        await wait_for_job(host, await host.scheduler.enqueue(Greet(name="before")))
        restartable_redis.stop()
        # Longer than the client's own retries, so the worker loop itself meets the errors.
        await asyncio.sleep(4)
        restartable_redis.start()
        job_id = None
        deadline = time.monotonic() + 60
        while job_id is None:
            try:
                job_id = await host.scheduler.enqueue(Greet(name="after"))
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        info = await wait_for_job(host, job_id, timeout=60)
    assert info.status is JobStatus.SUCCEEDED
    assert mailer.sent == ["before", "after"]


def test_handler_registration_errors() -> None:
    """Handlers that cannot work are refused at registration with the fix in the message."""
    host = JobHost(redis_url="redis://127.0.0.1:1/0")

    def sync_handler(job: Greet) -> None: ...

    with pytest.raises(ConfigurationError, match="async"):
        host.add_handler(Greet, sync_handler)  # type: ignore[arg-type]

    class NoHandle:
        pass

    with pytest.raises(ConfigurationError, match="handle"):
        host.add_handler(Greet, NoHandle)  # type: ignore[arg-type]

    async def ok(job: Greet) -> None: ...

    host.add_handler(Greet, ok)
    with pytest.raises(ConfigurationError, match="already has a handler"):
        host.add_handler(Greet, ok)

    class NotAJob:
        pass

    with pytest.raises(TypeError, match="not a job type"):
        host.add_handler(NotAJob, ok)  # type: ignore[type-var, arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"queue_name": ""}, "queue_name"),
        ({"job_timeout": -1}, "job_timeout"),
        ({"redis_url": "localhost:6379"}, "invalid Redis URL"),
        # redis-py finds these only at the first connection, as a bare TypeError.
        ({"redis_url": "redis://h:1/0?bogus=1"}, "unknown option 'bogus'"),
        ({"redis_url": "redis://h:1/0?ssl_ca_certs=/ca.pem"}, "TLS options need a rediss://"),
        ({"redis_url": "redis+cluster://h:1?ssl_ca_certs=/ca.pem"}, "TLS options need"),
        ({"redis_url": "redis://h:1/0?decode_responses=true"}, "decode_responses"),
        ({"shutdown_grace": "5s"}, "shutdown_grace"),
    ],
)
def test_invalid_host_options_are_refused(options: dict[str, Any], message: str) -> None:
    """Bad JobHost options fail at construction with a message naming the option."""
    with pytest.raises(ConfigurationError, match=message):
        JobHost(**options)


async def test_enqueue_many_queues_every_job_in_order(redis_url: str, queue_name: str) -> None:
    """enqueue_many returns one id per job, in order, and every job runs once."""
    host, mailer = make_host(redis_url, queue_name)
    names = [f"user-{i}" for i in range(1200)]
    async with host.run():
        ids = await host.scheduler.enqueue_many(Greet(name=name) for name in names)
        assert len(set(ids)) == len(ids) == len(names)
        await eventually(lambda: len(mailer.sent) >= len(names), timeout=120, interval=0.05)
        for job_id, name in zip(ids[::100], names[::100], strict=True):
            info = await wait_for_job(host, job_id)
            assert info.status is JobStatus.SUCCEEDED
            assert info.payload["name"] == name
    assert sorted(mailer.sent) == sorted(names)


async def test_enqueue_many_validates_everything_before_sending(
    redis_url: str, queue_name: str
) -> None:
    """One bad job in a batch raises PayloadError naming its position; nothing is queued."""
    host, _ = make_host(redis_url, queue_name, run_worker=False)
    async with host.run():
        jobs = [Greet(name="ok"), Greet(name="bad", ids=[object()])]  # type: ignore[list-item]
        with pytest.raises(PayloadError, match=r"jobs\[1\]: Greet\.ids"):
            await host.scheduler.enqueue_many(jobs)
        assert await host.scheduler.pool.zcard(queue_name) == 0
        assert await host.scheduler.enqueue_many([]) == []


@job_type("tests.jobs.stepped")
@dataclass
class Stepped:
    steps: int


async def test_watch_yields_progress_in_order_and_ends_with_the_final_state(
    redis_url: str, queue_name: str
) -> None:
    """watch() yields each progress step as it happens, then the finished state, then ends."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name)
    watched = {step: asyncio.Event() for step in range(1, 5)}

    @host.handler(Stepped)
    async def stepped(job: Stepped, ctx: JobContext) -> JobResult:
        for step in range(1, job.steps + 1):
            await ctx.report_progress(100 * step / job.steps, f"step {step}")
            # The next step waits until the watcher saw this one: watch() reads the job's
            # state when told of a change, so steps quicker than its reads would merge.
            await asyncio.wait_for(watched[step].wait(), 60)
        return JobResult.success("all steps done")

    async with host.run():
        # Due in 2 s: ample time for watch() to find it still scheduled.
        job_id = await host.scheduler.schedule(Stepped(steps=4), delay=timedelta(seconds=2))
        seen = []
        async for info in host.scheduler.watch(job_id):
            seen.append(info)
            if info.progress_message:
                watched[int(info.progress_message.removeprefix("step "))].set()
        assert [info async for info in host.scheduler.watch("unknown-job")] == []
    assert seen[0].status is JobStatus.SCHEDULED
    progress = [info.progress_message for info in seen if info.progress_message]
    assert list(dict.fromkeys(progress)) == ["step 1", "step 2", "step 3", "step 4"]
    assert progress == sorted(progress)
    assert seen[-1].status is JobStatus.SUCCEEDED
    assert seen[-1].message == "all steps done"
    statuses = [info.status for info in seen]
    assert JobStatus.RUNNING in statuses


async def test_jobs_pages_through_each_state_from_indexes(redis_url: str, queue_name: str) -> None:
    """`jobs()` lists each state in pages and `counts()` agrees, for every state at once."""
    host, _ = make_host(redis_url, queue_name, concurrency=2)
    release = asyncio.Event()

    @host.handler(Hold)
    async def hold(job: Hold) -> None:
        await release.wait()

    async with host.run():
        done = [await host.scheduler.enqueue(Greet(name=f"n{i}")) for i in range(3)]
        failed = await host.scheduler.enqueue(Outcome(kind="failed"))
        cancelled = await host.scheduler.enqueue(Outcome(kind="cancelled"))
        for job_id in [*done, failed, cancelled]:
            await wait_for_job(host, job_id)
        running = [await host.scheduler.enqueue(Hold(key=f"r{i}")) for i in range(2)]
        for job_id in running:
            await wait_for_job(host, job_id, statuses={JobStatus.RUNNING})
        # Both slots are busy, so these wait in the queue.
        queued = [await host.scheduler.enqueue(Greet(name=f"q{i}")) for i in range(3)]
        scheduled = await host.scheduler.schedule(Greet(name="later"), delay=timedelta(hours=1))

        scheduler = host.scheduler
        page1 = await scheduler.jobs(JobStatus.SUCCEEDED, limit=2)
        page2 = await scheduler.jobs(JobStatus.SUCCEEDED, offset=2, limit=2)
        # Newest first by commit; outcomes committed in one batch share a time, so only the
        # pages' contents are checked.
        assert len(page1) == 2
        assert sorted(i.id for i in page1 + page2) == sorted(done)
        assert {i.status for i in page1 + page2} == {JobStatus.SUCCEEDED}
        assert [i.id for i in await scheduler.jobs(JobStatus.FAILED)] == [failed]
        assert [i.id for i in await scheduler.jobs(JobStatus.CANCELLED)] == [cancelled]
        assert sorted(i.id for i in await scheduler.jobs(JobStatus.RUNNING)) == sorted(running)
        # By due time; jobs enqueued in the same millisecond come in id order.
        listed = [i.id for i in await scheduler.jobs(JobStatus.QUEUED)]
        assert sorted(listed) == sorted(queued)
        assert [i.id for i in await scheduler.jobs(JobStatus.QUEUED, offset=1, limit=1)] == [
            listed[1]
        ]
        assert [i.id for i in await scheduler.jobs(JobStatus.SCHEDULED)] == [scheduled]
        counts = await scheduler.counts()
        assert counts == {
            JobStatus.QUEUED: 3,
            JobStatus.SCHEDULED: 1,
            JobStatus.RUNNING: 2,
            JobStatus.SUCCEEDED: 3,
            JobStatus.FAILED: 1,
            JobStatus.CANCELLED: 1,
        }
        recent = await scheduler.counts(since=timedelta(hours=1))
        assert recent[JobStatus.SUCCEEDED] == 3
        with pytest.raises(ConfigurationError):
            await scheduler.jobs(JobStatus.QUEUED, limit=0)
        release.set()
        for job_id in running + queued:
            await wait_for_job(host, job_id)
        assert (await scheduler.counts())[JobStatus.RUNNING] == 0


async def test_retry_queues_a_failed_job_again_under_its_id(
    redis_url: str, queue_name: str
) -> None:
    """A failed job runs again with its payload; a second retry or a succeeded job is refused."""
    host, _ = make_host(redis_url, queue_name, retry=RetryPolicy(max_tries=1))
    seen: set[str] = set()

    @host.handler(FailOnce)
    async def fail_once(job: FailOnce, ctx: JobContext) -> int:
        if job.key not in seen:
            seen.add(job.key)
            raise RuntimeError("first run fails")
        return ctx.attempt

    async with host.run():
        job_id = await host.scheduler.enqueue(FailOnce(key="retry-me"))
        failed = await wait_for_job(host, job_id)
        assert failed.status is JobStatus.FAILED
        assert [i.id for i in await host.scheduler.jobs(JobStatus.FAILED)] == [job_id]

        assert await host.scheduler.retry(job_id)
        assert not await host.scheduler.retry(job_id)  # already queued again
        again = await wait_for_job(host, job_id)
        assert again.status is JobStatus.SUCCEEDED
        assert again.result == 1  # a fresh try count: the handler saw attempt 1
        assert again.payload == {"key": "retry-me"}
        assert await host.scheduler.jobs(JobStatus.FAILED) == []
        assert not await host.scheduler.retry(job_id)  # succeeded: nothing to retry
        assert not await host.scheduler.retry("no-such-job")
