"""The dishka adapter end to end: a real worker runs each job in its own dishka REQUEST scope,
whose finalizers get the run's exception, and reports what dishka cannot provide."""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from dishka import Provider, Scope, from_context, make_async_container, provide
from dishka.exceptions import ExitError
from fastapi import Depends

from hostedjobs import Inject, JobContext, JobHost, JobStatus, RetryPolicy, job_type
from hostedjobs.exceptions import DependencyResolutionError
from hostedjobs.integrations.dishka import DishkaScopes
from hostedjobs.scope import ScopeProvider
from hostedjobs.testing import wait_for_job


@job_type("tests.dishka.visit")
@dataclass
class Visit:
    page: str
    fail: bool = False


@job_type("tests.dishka.lookup")
@dataclass
class Lookup:
    pass


class Settings:
    dsn = "sqlite://"


class Session:
    def __init__(self, run_id: str, settings: Settings) -> None:
        self.run_id = run_id
        self.dsn = settings.dsn
        self.closed_with: BaseException | str | None = "open"


class Unregistered:
    pass


class Broken:
    pass


class Failing:
    pass


class JobsProvider(Provider):
    ctx = from_context(provides=JobContext, scope=Scope.REQUEST)

    def __init__(self, sessions: list[Session], closed: list[str]) -> None:
        super().__init__()
        self.sessions = sessions
        self.closed = closed

    @provide(scope=Scope.APP)
    async def settings(self) -> AsyncIterator[Settings]:
        yield Settings()
        self.closed.append("app")

    @provide(scope=Scope.REQUEST)
    async def session(self, ctx: JobContext, settings: Settings) -> AsyncIterator[Session]:
        session = Session(ctx.run_id, settings)
        self.sessions.append(session)
        error = yield session  # dishka sends the run's exception, or None
        session.closed_with = error

    @provide(scope=Scope.REQUEST)
    def broken(self) -> Broken:
        raise ConnectionRefusedError("database down")

    @provide(scope=Scope.REQUEST)
    async def failing(self) -> AsyncIterator[Failing]:
        yield Failing()
        raise OSError("cannot close")


async def page_title(job: Visit, session: Session = Inject()) -> str:
    """A FastAPI-style dependency that takes a service from the dishka scope."""
    return f"{job.page} in {session.run_id}"


def test_dishka_scopes_is_a_scope_provider() -> None:
    """DishkaScopes satisfies the ScopeProvider protocol that JobHost takes."""
    provider: ScopeProvider = DishkaScopes(make_async_container(JobsProvider([], [])))
    assert provider.scope({JobContext: None}) is not None


async def test_runs_get_a_request_scope_whose_finalizers_see_the_exception(
    redis_url: str, queue_name: str
) -> None:
    """Each run gets its own REQUEST scope with the JobContext in its context; finalizers run
    at the run's end and get its exception; Inject and Depends mix; stopping the host closes
    the container (APP finalizers)."""
    sessions: list[Session] = []
    closed: list[str] = []
    host = JobHost(
        services=DishkaScopes(make_async_container(JobsProvider(sessions, closed))),
        redis_url=redis_url,
        queue_name=queue_name,
        retry=RetryPolicy(max_tries=1),
    )

    @host.handler(Visit)
    async def visit(
        job: Visit, ctx: JobContext, session: Session = Inject(), title: str = Depends(page_title)
    ) -> str:
        assert session.closed_with == "open" and session.run_id == ctx.run_id
        if job.fail:
            raise ValueError(f"cannot visit {title}")
        return f"{title} on {session.dsn}"

    async with host.run():
        ok_id = await host.scheduler.enqueue(Visit("/home"))
        ok = await wait_for_job(host, ok_id, timeout=60)
        failed_id = await host.scheduler.enqueue(Visit("/gone", fail=True))
        failed = await wait_for_job(host, failed_id, timeout=60)
        assert closed == []
    assert ok.status is JobStatus.SUCCEEDED and ok.result == f"/home in {ok_id} on sqlite://"
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None and "cannot visit /gone" in failed.error
    assert [s.run_id for s in sessions] == [ok_id, failed_id]
    assert sessions[0].closed_with is None
    assert isinstance(sessions[1].closed_with, ValueError)
    assert closed == ["app"]


async def test_resolution_errors_fail_the_run_with_what_dishka_lacks(
    redis_url: str, queue_name: str
) -> None:
    """An unprovided type fails the run naming it (a default is used instead where there is
    one); a provider that raises, and a finalizer that raises, fail the run."""
    container = make_async_container(JobsProvider([], []))
    host = JobHost(
        services=DishkaScopes(container, close_container=False),
        redis_url=redis_url,
        queue_name=queue_name,
        retry=RetryPolicy(max_tries=1),
    )
    marker = f"fallback-{uuid.uuid4().hex}"

    @host.handler(Lookup)
    class LookupHandler:
        def __init__(self, fallback: Unregistered | None = None) -> None:
            self.fallback = fallback

        async def handle(self, job: Lookup, failing: Failing = Inject()) -> str:
            assert self.fallback is None
            return marker

    @host.handler(Visit)
    async def visit(job: Visit, thing: Unregistered = Inject()) -> None:
        raise AssertionError("never runs")

    async with host.run():
        lookup = await wait_for_job(host, await host.scheduler.enqueue(Lookup()), timeout=60)
        missing = await wait_for_job(host, await host.scheduler.enqueue(Visit("/")), timeout=60)
    assert lookup.status is JobStatus.FAILED and lookup.error is not None
    assert "ExitError" in lookup.error  # the handler succeeded; its finalizer failed
    assert missing.status is JobStatus.FAILED and missing.error is not None
    assert "cannot resolve Unregistered: no dishka provider provides it" in missing.error
    async with DishkaScopes(container).scope({JobContext: None}) as resolver:
        with pytest.raises(ConnectionRefusedError, match="database down"):
            await resolver.aget(Broken)


async def test_a_nested_miss_is_a_resolution_error() -> None:
    """A provider whose own dependency is missing raises DependencyResolutionError naming
    dishka's explanation (and not "not registered" for the type asked for)."""

    class Report:
        pass

    class ReportProvider(Provider):
        @provide(scope=Scope.REQUEST)
        def report(self, missing: Unregistered) -> Report:
            return Report()

    container = make_async_container(ReportProvider(), skip_validation=True)
    async with DishkaScopes(container).scope({}) as resolver:
        with pytest.raises(DependencyResolutionError, match=r"cannot resolve Report: .*"):
            await resolver.aget(Report)
    with pytest.raises(ExitError):
        async with DishkaScopes(make_async_container(JobsProvider([], []))).scope(
            {JobContext: None}
        ) as resolver:
            await resolver.aget(Failing)
