"""The svcs adapter end to end: a real worker takes each run's services from an svcs
container, closes it when the run ends, and reports what svcs cannot resolve."""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import svcs
from fastapi import Depends

from hostedjobs import Inject, JobContext, JobHost, JobStatus, RetryPolicy, job_type
from hostedjobs.exceptions import DependencyResolutionError
from hostedjobs.integrations.svcs import SvcsScopes
from hostedjobs.scope import ScopeProvider
from hostedjobs.testing import wait_for_job


@job_type("tests.svcs.visit")
@dataclass
class Visit:
    page: str
    fail: bool = False


@job_type("tests.svcs.lookup")
@dataclass
class Lookup:
    pass


class Session:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.closed_with: BaseException | str | None = "open"


class Unregistered:
    pass


class Broken:
    pass


def make_registry(sessions: list[Session]) -> svcs.Registry:
    async def open_session(container: svcs.Container) -> AsyncIterator[Session]:
        ctx = await container.aget(JobContext)  # the run's values are local values
        session = Session(ctx.run_id)
        sessions.append(session)
        try:
            yield session
        except BaseException as exc:
            session.closed_with = exc
            raise
        else:
            session.closed_with = None

    def broken() -> Broken:
        raise ConnectionRefusedError("database down")

    registry = svcs.Registry()
    registry.register_factory(Session, open_session, suppress_context_exit=False)
    registry.register_factory(Broken, broken)
    return registry


async def page_title(job: Visit, session: Session = Inject()) -> str:
    """A FastAPI-style dependency that takes a service from the svcs container."""
    return f"{job.page} in {session.run_id}"


def test_svcs_scopes_is_a_scope_provider() -> None:
    """SvcsScopes satisfies the ScopeProvider protocol that JobHost takes."""
    provider: ScopeProvider = SvcsScopes(svcs.Registry())
    assert provider.scope({}) is not None


async def test_runs_get_services_from_a_container_closed_at_run_end(
    redis_url: str, queue_name: str
) -> None:
    """Each run gets its own container; its generator cleanup runs at the run's end and sees
    the run's exception; Inject and Depends mix; the host's stop closes the registry."""
    sessions: list[Session] = []
    registry = make_registry(sessions)
    closed: list[str] = []
    registry.register_value(str, "unused", on_registry_close=lambda: closed.append("registry"))
    host = JobHost(
        services=SvcsScopes(registry),
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
        return title

    async with host.run():
        ok_id = await host.scheduler.enqueue(Visit("/home"))
        ok = await wait_for_job(host, ok_id, timeout=60)
        failed_id = await host.scheduler.enqueue(Visit("/gone", fail=True))
        failed = await wait_for_job(host, failed_id, timeout=60)
    assert ok.status is JobStatus.SUCCEEDED and ok.result == f"/home in {ok_id}"
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None and "cannot visit /gone" in failed.error
    assert [s.run_id for s in sessions] == [ok_id, failed_id]
    assert sessions[0].closed_with is None
    assert isinstance(sessions[1].closed_with, ValueError)
    assert closed == ["registry"]


async def test_resolution_errors_fail_the_run_with_what_svcs_lacks(
    redis_url: str, queue_name: str
) -> None:
    """An unregistered service fails the run naming it and the fix (a default is used
    instead where there is one); a factory that raises fails the run with its error."""
    registry = make_registry([])
    host = JobHost(
        services=SvcsScopes(registry, close_registry=False),
        redis_url=redis_url,
        queue_name=queue_name,
        retry=RetryPolicy(max_tries=1),
    )
    missing_key = f"missing-{uuid.uuid4().hex}"

    @host.handler(Lookup)
    class LookupHandler:
        def __init__(self, fallback: Unregistered | None = None) -> None:
            self.fallback = fallback

        async def handle(self, job: Lookup, ctx: JobContext) -> str:
            assert self.fallback is None
            return missing_key

    @host.handler(Visit)
    async def visit(job: Visit, thing: Unregistered = Inject()) -> None:
        raise AssertionError("never runs")

    async with host.run():
        fallback = await wait_for_job(host, await host.scheduler.enqueue(Lookup()), timeout=60)
        missing = await wait_for_job(host, await host.scheduler.enqueue(Visit("/")), timeout=60)
    assert fallback.status is JobStatus.SUCCEEDED and fallback.result == missing_key
    assert missing.status is JobStatus.FAILED and missing.error is not None
    assert "Unregistered: it is not registered on the svcs registry" in missing.error
    assert "registry.register_factory(Unregistered, factory)" in missing.error
    # The registry was not the host's to close.
    async with svcs.Container(registry) as container:
        with pytest.raises(ConnectionRefusedError, match="database down"):
            await container.aget(Broken)


async def test_a_factory_that_raises_fails_the_run_and_a_nested_miss_names_both() -> None:
    """Through the adapter's resolver: a raising factory's error propagates; a factory asking
    for something unregistered names it."""

    class Report:
        pass

    async def make_report(container: svcs.Container) -> Report:
        await container.aget(Unregistered)
        return Report()

    registry = make_registry([])
    registry.register_factory(Report, make_report)
    async with SvcsScopes(registry).scope({}) as resolver:
        with pytest.raises(ConnectionRefusedError):
            await resolver.aget(Broken)
        with pytest.raises(DependencyResolutionError, match=r"Report: .* for Unregistered"):
            await resolver.aget(Report)
