"""Hosted services in one process: continuous jobs, per-process cron, startup actions, status."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from hostedjobs import Inject, JobContext, JobHost, JobResult, Services
from hostedjobs.exceptions import (
    ConfigurationError,
    StartupActionError,
    UnknownJobError,
)
from hostedjobs.starlette import StartupGateMiddleware
from tests.waiting import eventually, eventually_sync


class Recorder:
    """Collects what runs did, with monotonic timestamps."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float, Any]] = []

    def add(self, name: str, value: Any = None) -> None:
        self.events.append((name, time.monotonic(), value))

    def times(self, name: str) -> list[float]:
        return [t for n, t, _ in self.events if n == name]

    def values(self, name: str) -> list[Any]:
        return [v for n, _, v in self.events if n == name]


def make_host(redis_url: str, queue_name: str, **options: Any) -> tuple[JobHost, Recorder]:
    recorder = Recorder()
    services = Services()
    services.add_singleton(Recorder, recorder)
    options.setdefault("shutdown_grace", timedelta(seconds=2))
    return JobHost(
        services=services, redis_url=redis_url, queue_name=queue_name, **options
    ), recorder


async def test_continuous_job_honours_delay_interval_instances_and_limit(
    redis_url: str, queue_name: str
) -> None:
    """initial_delay before the first run, interval between runs, N instances, M runs each."""
    host, recorder = make_host(redis_url, queue_name)
    side_by_side = asyncio.Event()

    @host.job(
        interval=timedelta(milliseconds=100),
        initial_delay=timedelta(milliseconds=300),
        instance_count=2,
        iteration_limit=3,
    )
    async def poll(ctx: JobContext, recorder: Recorder = Inject()) -> None:
        recorder.add("poll", ctx.run_id)
        if len(recorder.times("poll")) == 2:
            side_by_side.set()
        # The first run of each instance waits for the other's: the two run side by side
        # (one after the other, the first would time out here).
        await asyncio.wait_for(side_by_side.wait(), 60)

    started = time.monotonic()
    async with host.run():
        await eventually(lambda: len(recorder.times("poll")) >= 6)
        # Negative check, so a window: no seventh run (ten intervals would allow several).
        await asyncio.sleep(1.0)
        (status,) = await host.status()
    times = recorder.times("poll")
    assert len(times) == 6
    assert min(times) - started >= 0.3
    assert len(set(recorder.values("poll"))) == 6
    first = min(times)
    assert sorted(times)[2] - first >= 0.1  # some instance's second run, an interval later
    assert status.kind == "continuous"
    assert status.last_outcome == "succeeded"
    assert len(status.history) == 6


async def test_continuous_job_backs_off_after_failures(redis_url: str, queue_name: str) -> None:
    """A failing continuous job waits its growing backoff instead of spinning."""
    host, recorder = make_host(redis_url, queue_name)

    @host.job(failure_backoff=timedelta(milliseconds=200), iteration_limit=3)
    async def failing(recorder: Recorder = Inject()) -> JobResult:
        recorder.add("fail")
        return JobResult.failed("upstream down")

    async with host.run():
        await eventually(lambda: len(recorder.times("fail")) == 3)
        (status,) = await host.status()
    first, second, third = recorder.times("fail")
    assert second - first >= 0.1  # backoff 0.2 s, jitter down to half
    assert third - second >= 0.2  # then doubled
    assert status.last_outcome == "failed"
    assert status.last_message == "upstream down"


class Session:
    """A per-run resource for the class-job test."""

    count = 0

    def __init__(self) -> None:
        Session.count += 1
        self.number = Session.count


class Refresh:
    """A job class: constructed per run with its services."""

    def __init__(self, session: Session, recorder: Recorder) -> None:
        self.session = session
        self.recorder = recorder

    async def run(self, ctx: JobContext) -> JobResult:
        self.recorder.add("refresh", self.session.number)
        return JobResult.success(f"session {self.session.number}")


async def test_class_job_gets_a_fresh_scope_each_run(redis_url: str, queue_name: str) -> None:
    """A job class is constructed per run with its services, and its scope is closed after."""
    closed: list[int] = []
    Session.count = 0

    async def open_session() -> AsyncIterator[Session]:
        session = Session()
        yield session
        closed.append(session.number)

    recorder = Recorder()
    services = Services()
    services.add_singleton(Recorder, recorder)
    services.add_scoped(Session, open_session)
    host = JobHost(services=services, redis_url=redis_url, queue_name=queue_name)
    host.add_job(Refresh, iteration_limit=2)
    async with host.run():
        await eventually(lambda: len(closed) == 2)
        (status,) = await host.status()
    assert recorder.values("refresh") == [1, 2]
    assert closed == [1, 2]
    assert status.name == "Refresh"
    assert status.last_message == "session 2"


async def test_cron_job_runs_on_each_tick_with_the_tick_as_scheduled_at(
    redis_url: str, queue_name: str
) -> None:
    """An every-second cron job starts right after each tick, with ctx.scheduled_at = tick."""
    host, recorder = make_host(redis_url, queue_name)

    @host.cron("* * * * * *", name="every-second")
    async def tick(ctx: JobContext, recorder: Recorder = Inject()) -> None:
        recorder.add("tick", (ctx.scheduled_at, ctx.started_at))

    async with host.run():
        await eventually(lambda: len(recorder.values("tick")) >= 3)
        (status,) = await host.status()
    for scheduled_at, started_at in recorder.values("tick")[:3]:
        assert scheduled_at.microsecond == 0
        # Started after its tick, and before the next one: the lateness itself is a matter of
        # how busy the machine is (bench/cron_lateness.py measures it).
        assert timedelta(0) <= started_at - scheduled_at < timedelta(seconds=1)
    scheduled = [s for s, _ in recorder.values("tick")]
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(scheduled))
    assert status.kind == "cron"
    assert status.schedule == "* * * * * *"
    assert status.timezone == "UTC"
    assert status.next_run is not None and status.next_run > datetime.now(UTC) - timedelta(
        seconds=1
    )


async def test_cron_overlap_skip_skips_ticks_while_running(redis_url: str, queue_name: str) -> None:
    """With overlap='skip' a tick is skipped while the previous run still runs."""
    host, recorder = make_host(redis_url, queue_name)
    running = 0

    @host.cron("* * * * * *", name="slow")
    async def slow(recorder: Recorder = Inject()) -> None:
        nonlocal running
        running += 1
        recorder.add("concurrent", running)
        await asyncio.sleep(1.6)
        running -= 1

    async def skipped_a_tick() -> bool:
        (status,) = await host.status()
        return any(run.outcome == "skipped" for run in status.history)

    async with host.run():
        await eventually(skipped_a_tick, what="a skipped tick")
    assert max(recorder.values("concurrent")) == 1


async def test_cron_overlap_allow_runs_concurrently(redis_url: str, queue_name: str) -> None:
    """With overlap='allow' a slow job's runs overlap."""
    host, recorder = make_host(redis_url, queue_name)
    running = 0

    @host.cron("* * * * * *", name="overlapping", overlap="allow")
    async def slow(recorder: Recorder = Inject()) -> None:
        nonlocal running
        running += 1
        recorder.add("concurrent", running)
        await asyncio.sleep(1.5)
        running -= 1

    async with host.run():
        await eventually(lambda: max(recorder.values("concurrent"), default=0) >= 2)


async def test_trigger_runs_a_hosted_job_now(redis_url: str, queue_name: str) -> None:
    """host.trigger() runs a cron job immediately, marked manual; unknown names raise."""
    host, recorder = make_host(redis_url, queue_name)

    @host.cron("0 0 1 1 *", name="yearly")
    async def yearly(ctx: JobContext, recorder: Recorder = Inject()) -> None:
        recorder.add("yearly", ctx.run_id)

    async with host.run():
        run_id = await host.trigger("yearly")

        async def finished_run() -> Any:
            (status,) = await host.status()
            return status if status.history and status.history[0].finished_at else None

        status = await eventually(finished_run, what="the triggered run finished")
        assert recorder.values("yearly") == [run_id]
        with pytest.raises(UnknownJobError, match="no hosted job named 'nope'"):
            await host.trigger("nope")
    assert status.history[0].manual
    assert status.history[0].outcome == "succeeded"


async def test_startup_actions_run_by_priority_and_gate_jobs_and_worker(
    redis_url: str, queue_name: str
) -> None:
    """Groups run in priority order (concurrently within one); gated jobs start after them."""
    host, recorder = make_host(redis_url, queue_name)
    ungated_ran = asyncio.Event()
    both_warming = asyncio.Event()

    # Each wait below would time out (failing the startup) if the order were wrong.
    @host.startup_action(priority=0)
    async def migrate(recorder: Recorder = Inject()) -> None:
        recorder.add("migrate-start")
        await asyncio.wait_for(ungated_ran.wait(), 60)  # the ungated job runs meanwhile
        recorder.add("migrate-end")

    async def warm(name: str, recorder: Recorder) -> None:
        recorder.add(name)
        if recorder.times("warm-a") and recorder.times("warm-b"):
            both_warming.set()
        await asyncio.wait_for(both_warming.wait(), 60)  # the other one runs meanwhile
        await asyncio.sleep(0.05)
        recorder.add(f"{name}-end")

    @host.startup_action(priority=1)
    async def warm_a(recorder: Recorder = Inject()) -> None:
        await warm("warm-a", recorder)

    @host.startup_action(priority=1)
    async def warm_b(recorder: Recorder = Inject()) -> None:
        await warm("warm-b", recorder)

    @host.job(iteration_limit=1)
    async def gated(recorder: Recorder = Inject()) -> None:
        recorder.add("gated")

    @host.job(iteration_limit=1, wait_for_startup_actions=False)
    async def ungated(recorder: Recorder = Inject()) -> None:
        recorder.add("ungated")
        ungated_ran.set()

    async with host.run():
        assert not host.ready
        await eventually(lambda: recorder.times("gated"))
        assert host.ready
    assert host.failed_startup_action is None
    (migrate_end,) = recorder.times("migrate-end")
    (warm_a_at,) = recorder.times("warm-a")
    (warm_b_at,) = recorder.times("warm-b")
    assert warm_a_at >= migrate_end and warm_b_at >= migrate_end
    (gated_at,) = recorder.times("gated")
    assert gated_at >= max(recorder.times("warm-a-end") + recorder.times("warm-b-end"))
    assert recorder.times("ungated")[0] < migrate_end


async def test_failed_startup_action_keeps_gated_jobs_stopped(
    redis_url: str, queue_name: str
) -> None:
    """With on_startup_failure='stay' a failed action is reported and gated jobs never run."""
    host, recorder = make_host(redis_url, queue_name, on_startup_failure="stay")

    @host.startup_action()
    async def migrate() -> None:
        raise RuntimeError("database unreachable")

    @host.job()
    async def gated(recorder: Recorder = Inject()) -> None:
        recorder.add("gated")

    async with host.run():
        await eventually(lambda: host.failed_startup_action is not None)
        # Negative check, so a window: a gated job let through would start at once.
        await asyncio.sleep(1.0)
        assert host.failed_startup_action == ("migrate", "RuntimeError: database unreachable")
        assert not host.ready
    assert recorder.times("gated") == []


async def test_blocking_startup_raises_when_an_action_fails(
    redis_url: str, queue_name: str
) -> None:
    """In blocking mode host.run() waits for the actions and raises if one fails."""
    host, _ = make_host(redis_url, queue_name, startup_mode="blocking")

    @host.startup_action(name="check-schema")
    async def check() -> None:
        raise ValueError("schema is version 3, expected 4")

    with pytest.raises(StartupActionError, match="'check-schema' failed: ValueError: schema"):
        async with host.run():
            raise AssertionError("never entered")


def test_readiness_and_gate_middleware_under_test_client(redis_url: str, queue_name: str) -> None:
    """/ready answers 503 naming the running action, then 200; the gate holds other routes."""
    host, _ = make_host(redis_url, queue_name)
    release = asyncio.Event()

    @host.startup_action()
    async def migrate() -> None:
        await release.wait()

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(
        routes=[Route("/", home), Route("/ready", host.readiness), Route("/health", home)],
        middleware=[
            Middleware(StartupGateMiddleware, host=host, allow_paths=("/ready", "/health"))
        ],
        lifespan=host.lifespan,
    )
    with TestClient(app) as client:
        response = client.get("/ready")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.json()["running_actions"] == ["migrate"]
        assert client.get("/").status_code == 503
        assert client.get("/health").text == "hello"
        assert client.portal is not None
        client.portal.call(release.set)
        eventually_sync(lambda: client.get("/ready").status_code == 200, what="ready")
        assert client.get("/").text == "hello"


def test_registration_errors_name_the_problem() -> None:
    """Duplicate names, lambdas, bad options and bad cron fail at registration."""
    host = JobHost(redis_url="redis://127.0.0.1:1/0")

    async def job() -> None: ...

    host.add_job(job, name="job")
    with pytest.raises(ConfigurationError, match="already registered"):
        host.add_cron_job(job, "* * * * *", name="job")
    with pytest.raises(ConfigurationError, match="no stable name"):
        host.add_distributed_cron_job(lambda: None, "* * * * *")  # type: ignore[arg-type, return-value]
    with pytest.raises(ConfigurationError, match="invalid cron"):
        host.add_cron_job(job, "61 * * * *", name="bad-cron")
    with pytest.raises(ConfigurationError, match="unknown time zone"):
        host.add_cron_job(job, "* * * * *", name="bad-zone", timezone="Mars/Olympus")
    with pytest.raises(ConfigurationError, match="overlap"):
        host.add_cron_job(job, "* * * * *", name="bad-overlap", overlap="never")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="misfire"):
        host.add_distributed_cron_job(job, "* * * * *", name="m", misfire="all")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="instance_count"):
        host.add_job(job, name="x", instance_count=0)
    with pytest.raises(ConfigurationError, match="iteration_limit"):
        host.add_job(job, name="y", iteration_limit=0)

    def not_async() -> None: ...

    with pytest.raises(ConfigurationError, match="async"):
        host.add_job(not_async)  # type: ignore[arg-type]
    host.add_startup_action(job, name="dup")
    with pytest.raises(ConfigurationError, match="already registered"):
        host.add_startup_action(job, name="dup")


async def test_shutdown_with_redis_gone_does_not_wait_out_the_grace(
    restartable_redis: Any, queue_name: str
) -> None:
    """With Redis down, ticks that cannot be claimed do not hold the shutdown for the grace."""
    host = JobHost(
        redis_url=restartable_redis.url, queue_name=queue_name, shutdown_grace=timedelta(seconds=60)
    )

    @host.distributed_cron("* * * * * *", name="outage")
    async def outage() -> None: ...

    async def ran_a_tick() -> bool:
        (status,) = await host.status()
        if not status.history:
            return False
        info = await host.scheduler.get(status.history[0].run_id)
        return info is not None and info.finished  # its outcome is stored

    async with host.run():
        await eventually(ran_a_tick, what="a first tick run and stored")
        restartable_redis.kill()
        # Not a wait for anything: a few ticks meet the outage, as in production.
        await asyncio.sleep(2.5)
        stopping = time.monotonic()
    # Far under the 60 s grace, which is what the shutdown used to wait out.
    assert time.monotonic() - stopping < 30


def test_health_route_reports_redis_worker_scheduler_and_startup(
    redis_url: str, queue_name: str
) -> None:
    """/health answers 200 with what it checked while all is well."""
    host, _ = make_host(redis_url, queue_name)

    @host.cron("0 0 1 1 *", name="yearly-health")
    async def yearly() -> None: ...

    app = Starlette(routes=[Route("/health", host.health)], lifespan=host.lifespan)
    with TestClient(app) as client:
        response = client.get("/health")
        body = response.json()
    assert response.status_code == 200, body
    assert body["healthy"] is True
    assert body["redis"]["ok"] is True
    assert body["worker"]["alive"] is True
    assert body["scheduler"] == {"alive": True}
    assert body["startup"] == "succeeded"
    stopped = TestClient(app).get("/health")
    assert stopped.status_code == 503
    assert stopped.json()["redis"] == {"ok": False, "error": "the host is not running"}
