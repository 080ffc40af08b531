"""FastAPI's Depends in jobs: every kind of dependency, sub-dependencies, the per-run cache,
cleanup that sees the run's exception, and what is refused at registration."""

import asyncio
import contextlib
import inspect
import subprocess
import sys
import threading
import types
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import pytest
from dishka import FromDishka
from fastapi import (
    BackgroundTasks,
    Body,
    Cookie,
    Depends,
    File,
    Form,
    Header,
    Path,
    Query,
    Request,
    Response,
    Security,
    WebSocket,
)
from fastapi.security import SecurityScopes
from pydantic import Field
from starlette.requests import HTTPConnection

from hostedjobs import Inject, JobContext, JobHost, JobResult, JobStatus, RetryPolicy, job_type
from hostedjobs.depends import DependencyRun, is_injected
from hostedjobs.exceptions import ConfigurationError, DependencyResolutionError
from hostedjobs.runs import JobCallable
from hostedjobs.scope import Services, call_planned, plan_call
from hostedjobs.testing import wait_for_job
from tests.waiting import eventually

# --- dependencies used by the tests ---------------------------------------------------------


@job_type("tests.depends.visit")
@dataclass
class Visit:
    page: str
    fail: bool = False


class Settings:
    def __init__(self) -> None:
        self.dsn = "sqlite://"


@dataclass
class Session:
    """Stands in for a database session: records how its dependency was closed."""

    dsn: str
    thread: int
    closed_with: BaseException | str | None = "open"


class Log:
    """What the dependencies did, in order, shared by one test."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.sessions: list[Session] = []


def get_settings() -> Settings:
    return Settings()


def get_session(
    settings: Annotated[Settings, Depends(get_settings)], log: Log = Inject()
) -> Iterator[Session]:
    session = Session(settings.dsn, threading.get_ident())
    log.sessions.append(session)
    log.events.append("session open")
    try:
        yield session
    except BaseException as exc:
        session.closed_with = exc
        log.events.append(f"session rollback {type(exc).__name__}")
        raise
    else:
        session.closed_with = None
        log.events.append("session commit")


async def get_connection(log: Log = Inject()) -> AsyncIterator[str]:
    log.events.append("connection open")
    try:
        yield "connection"
    except BaseException as exc:
        log.events.append(f"connection saw {type(exc).__name__}")
        raise
    finally:
        log.events.append("connection closed")


async def get_user(ctx: JobContext, session: Session = Depends(get_session)) -> str:
    return f"user of {ctx.job_name} on {session.dsn}"


def context(job_name: str = "report") -> JobContext:
    return JobContext(
        job_name=job_name,
        run_id=uuid.uuid4().hex,
        attempt=1,
        scheduled_at=None,
        started_at=datetime.now(UTC),
    )


async def run(fn: Any, log: Log, **provided_values: Any) -> Any:
    """Plan ``fn`` as a job is planned and run it once, in a scope and a DependencyRun."""
    ctx = provided_values.pop("ctx", None) or context()
    plan = plan_call(fn, provided_types=(JobContext,), inject_all=False)
    services = Services().add_singleton(Log, log)
    provided = {JobContext: ctx}
    async with services.scope(provided) as resolver, DependencyRun() as dependencies:
        return await call_planned(plan, resolver, provided, dependencies)


# --- kinds of dependency --------------------------------------------------------------------


async def test_sync_function_dependency_runs_in_a_worker_thread() -> None:
    """A sync dependency is called off the event loop, as FastAPI calls it."""
    threads: list[int] = []

    def get_thread() -> int:
        threads.append(threading.get_ident())
        return 7

    async def job(value: int = Depends(get_thread)) -> int:
        return value

    assert await run(job, Log()) == 7
    assert threads and threads[0] != threading.get_ident()


async def test_async_function_dependency_is_awaited_on_the_loop() -> None:
    """An async dependency is awaited, in the run's own thread."""

    async def get_value() -> tuple[str, int]:
        return "async", threading.get_ident()

    async def job(value: Annotated[tuple[str, int], Depends(get_value)]) -> tuple[str, int]:
        return value

    assert await run(job, Log()) == ("async", threading.get_ident())


async def test_generator_dependency_is_entered_in_a_thread_and_committed_after_the_run() -> None:
    """A sync generator's code before yield runs in a worker thread; after the run, the code
    after yield runs (no exception)."""
    log = Log()

    async def job(session: Session = Depends(get_session)) -> str:
        log.events.append("job")
        assert session.closed_with == "open"
        return session.dsn

    assert await run(job, log) == "sqlite://"
    assert log.events == ["session open", "job", "session commit"]
    (session,) = log.sessions
    assert session.thread != threading.get_ident()
    assert session.closed_with is None


async def test_generator_cleanup_sees_the_run_exception_thrown_in() -> None:
    """When the job raises, the exception is thrown in at the yield (sync and async
    generators), and propagates unchanged."""
    log = Log()

    async def job(
        session: Session = Depends(get_session), connection: str = Depends(get_connection)
    ) -> None:
        raise LookupError("no such report")

    with pytest.raises(LookupError, match="no such report"):
        await run(job, log)
    assert log.events == [
        "session open",
        "connection open",
        "connection saw LookupError",
        "connection closed",
        "session rollback LookupError",
    ]
    assert isinstance(log.sessions[0].closed_with, LookupError)


async def test_a_generator_cannot_swallow_the_run_exception() -> None:
    """A yield dependency that catches the exception and returns does not hide the failure."""

    async def swallowing() -> AsyncIterator[int]:
        with contextlib.suppress(RuntimeError):
            yield 1

    async def job(value: int = Depends(swallowing)) -> None:
        raise RuntimeError("failed")

    with pytest.raises(RuntimeError, match="failed"):
        await run(job, Log())


async def test_a_failing_dependency_fails_the_run_and_earlier_ones_see_its_error() -> None:
    """A dependency that raises fails the run before the job; yield dependencies already
    entered are closed with that error; an unregistered Inject() inside a dependency names
    the dependency that needed it."""
    log = Log()

    def get_quota() -> int:
        raise PermissionError("over quota")

    async def job(session: Session = Depends(get_session), quota: int = Depends(get_quota)) -> None:
        raise AssertionError("never runs")

    with pytest.raises(PermissionError, match="over quota"):
        await run(job, log)
    assert isinstance(log.sessions[0].closed_with, PermissionError)

    def get_missing(value: Session = Inject()) -> Session:
        return value

    async def needs_missing(value: Session = Depends(get_missing)) -> None: ...

    with pytest.raises(DependencyResolutionError, match=r"Session \(needed by get_missing\)"):
        await run(needs_missing, log)


async def test_class_and_callable_instance_dependencies() -> None:
    """A class is called like a function (its constructor's parameters planned too); a callable
    object's async ``__call__`` is awaited; Depends() takes the class from the annotation."""

    class Pager:
        def __init__(self, ctx: JobContext, size: int = 10) -> None:
            self.job_name, self.size = ctx.job_name, size

    class Token:
        async def __call__(self, settings: Settings = Depends(get_settings)) -> str:
            return f"token for {settings.dsn}"

    async def job(
        pager: Annotated[Pager, Depends()], token: str = Depends(Token())
    ) -> tuple[str, int, str]:
        return pager.job_name, pager.size, token

    assert await run(job, Log()) == ("report", 10, "token for sqlite://")


async def test_depends_scope_function_and_request_both_close_at_the_end_of_the_run() -> None:
    """Depends(scope="function") and scope="request" are accepted: a run is both."""
    log = Log()

    async def job(
        session: Session = Depends(get_session, scope="function"),
        connection: str = Depends(get_connection, scope="request"),
    ) -> None:
        log.events.append("job")

    await run(job, log)
    assert log.events == [
        "session open",
        "connection open",
        "job",
        "connection closed",
        "session commit",
    ]


# --- sub-dependencies and the cache ---------------------------------------------------------


async def test_sub_dependencies_get_depends_inject_and_the_job_context() -> None:
    """A dependency's own parameters are filled like a job's: Depends, Inject, JobContext."""
    log = Log()

    async def job(user: str = Depends(get_user)) -> str:
        return user

    assert await run(job, log, ctx=context("nightly")) == "user of nightly on sqlite://"
    assert log.events == ["session open", "session commit"]


async def test_one_run_calls_a_cached_dependency_once() -> None:
    """Two parameters (and a sub-dependency) asking for one dependency share its value."""
    log = Log()

    async def job(
        user: str = Depends(get_user),
        session: Annotated[Session, Depends(get_session)] = None,  # type: ignore[assignment]
        again: Session = Depends(get_session),
    ) -> bool:
        return session is again

    assert await run(job, log) is True
    assert len(log.sessions) == 1


async def test_use_cache_false_calls_the_dependency_again() -> None:
    """use_cache=False gets a fresh value; a later cached ask gets the first one, as in
    FastAPI."""
    calls: list[int] = []

    def counter() -> int:
        calls.append(1)
        return len(calls)

    async def job(
        first: int = Depends(counter),
        fresh: int = Depends(counter, use_cache=False),
        cached: int = Depends(counter),
    ) -> tuple[int, int, int]:
        return first, fresh, cached

    assert await run(job, Log()) == (1, 2, 1)


async def test_each_run_has_its_own_cache() -> None:
    """Two runs never share a dependency's value."""
    log = Log()

    async def job(session: Session = Depends(get_session)) -> Session:
        return session

    first, second = await run(job, log), await run(job, log)
    assert first is not second
    assert [s.closed_with for s in log.sessions] == [None, None]


async def test_depends_and_inject_mix_in_one_handler_class_and_method() -> None:
    """A class job takes Depends in its constructor and method, beside Inject and by-type
    constructor parameters; all share one run's values."""
    log = Log()

    class Job:
        def __init__(self, log: Log, session: Session = Depends(get_session)) -> None:
            self.log, self.session = log, session

        async def run(
            self, ctx: JobContext, session: Session = Depends(get_session), log: Log = Inject()
        ) -> bool:
            return session is self.session and log is self.log

    code = JobCallable.create(Job)
    services = Services().add_singleton(Log, log)
    provided = {JobContext: context()}
    async with services.scope(provided) as resolver, code.dependencies() as dependencies:
        assert await code.call(resolver, provided, dependencies) is True
    assert log.events == ["session open", "session commit"]


async def test_dependency_values_close_before_the_scope_services() -> None:
    """Depends cleanups run before the scope's own services are cleaned up, so a yield
    dependency can still use an injected scoped service in its cleanup."""
    log = Log()

    async def open_resource() -> AsyncIterator[Settings]:
        yield Settings()
        log.events.append("scoped service closed")

    async def job(session: Session = Depends(get_session), s: Settings = Inject()) -> None:
        return None

    services = Services().add_singleton(Log, log).add_scoped(Settings, open_resource)
    code = JobCallable.create(job)
    provided = {JobContext: context()}
    async with services.scope(provided) as resolver, code.dependencies() as dependencies:
        await code.call(resolver, provided, dependencies)
    assert log.events == ["session open", "session commit", "scoped service closed"]


async def test_a_closed_dependency_run_calls_nothing_more() -> None:
    """After its run ended, a DependencyRun refuses to call a dependency (its cleanup would
    never run) and has forgotten its values."""

    async def job(settings: Settings = Depends(get_settings)) -> Settings:
        return settings

    plan = plan_call(job, provided_types=(), inject_all=False)
    async with Services().scope() as resolver:
        async with DependencyRun() as dependencies:
            await call_planned(plan, resolver, {}, dependencies)
        with pytest.raises(ConfigurationError, match="get_settings: this run's dependencies"):
            await call_planned(plan, resolver, {}, dependencies)


async def test_call_planned_needs_a_dependency_run_for_depends() -> None:
    """Calling a plan with Depends parameters without a DependencyRun says what to do."""

    async def job(settings: Settings = Depends(get_settings)) -> None: ...

    plan = plan_call(job, provided_types=(), inject_all=False)
    assert plan.uses_depends
    async with Services().scope() as resolver:
        with pytest.raises(ConfigurationError, match="DependencyRun"):
            await call_planned(plan, resolver, {})


async def test_plain_defaults_stay_values_and_code_without_depends_opens_nothing() -> None:
    """``retries: int = 3`` is passed as is; a job without Depends needs no DependencyRun."""

    async def job(
        ctx: JobContext, retries: int = 3, label: Annotated[str | None, "a label"] = None
    ) -> int:
        return retries

    async def bare(settings: Settings = Inject) -> Settings:  # type: ignore[assignment]
        return settings

    async with Services().add_singleton(Settings, Settings()).scope() as resolver:
        plan = plan_call(bare, provided_types=(), inject_all=False)
        assert isinstance(await call_planned(plan, resolver, {}), Settings)

    code = JobCallable.create(job)
    async with code.dependencies() as dependencies:
        assert dependencies is None
    assert await run(job, Log()) == 3


# --- is_injected ----------------------------------------------------------------------------


def test_is_injected_covers_inject_depends_annotated_and_the_context() -> None:
    """is_injected is True for what a run fills, False for what a caller passes."""

    def job(
        a: int,
        b: Settings = Inject(),
        c: Annotated[Settings, Inject()] = None,  # type: ignore[assignment]
        d: Settings = Depends(get_settings),
        e: Annotated[Settings, Depends(get_settings)] = None,  # type: ignore[assignment]
        f: JobContext | None = None,
        g: Annotated[int, "doc"] = 3,
        h: Any = Inject,
    ) -> None: ...

    parameters = inspect.signature(job, eval_str=True).parameters
    assert {name: is_injected(p) for name, p in parameters.items()} == {
        "a": False,
        "b": True,
        "c": True,
        "d": True,
        "e": True,
        "f": True,
        "g": False,
        "h": True,
    }


# --- refused at registration ----------------------------------------------------------------


def needs_request(request: Request) -> str:
    return str(request.url)


def current_user(token: str = Depends(needs_request)) -> str:
    return token


@pytest.mark.parametrize(
    "annotation", [Request, WebSocket, HTTPConnection, Response, BackgroundTasks, SecurityScopes]
)
def test_request_only_types_are_refused_with_the_parameter_chain(annotation: type) -> None:
    """A dependency needing a Request (or another request-only object) fails at planning,
    naming the job, each parameter on the way, and why."""

    def dependency(value: annotation) -> None:  # type: ignore[valid-type]
        ...

    async def send_report(
        user: str = Depends(current_user), other: Any = Depends(dependency)
    ) -> None: ...

    with pytest.raises(ConfigurationError) as raised:
        plan_call(send_report, provided_types=(JobContext,), inject_all=False)
    if annotation is Request:
        message = str(raised.value)
        assert "parameter 'request' of needs_request" in message
        assert "Depends of parameter 'token' of current_user" in message
        assert "Depends of parameter 'user' of send_report" in message
        assert "outside any HTTP request" in message

    with pytest.raises(ConfigurationError, match=f"asks for a {annotation.__name__}"):
        plan_call(dependency, provided_types=(), inject_all=False)


@pytest.mark.parametrize(
    "marker", [Query(), Header(), Path(), Cookie(), Body(), Form(), File()], ids=repr
)
def test_request_parameters_are_refused(marker: Any) -> None:
    """Query(), Header(), Path(), Cookie(), Body(), Form(), File(), in a default or in
    Annotated, are request parameters: refused."""

    def by_default(q: str = marker) -> None: ...

    def by_annotation(q: Annotated[str, marker]) -> None: ...

    for fn in (by_default, by_annotation):
        with pytest.raises(ConfigurationError, match=r"'q' of .* is a request parameter"):
            plan_call(fn, provided_types=(), inject_all=False)


def test_security_is_refused() -> None:
    """Security(...) needs a request's security scopes."""

    async def job(user: str = Security(current_user, scopes=["me"])) -> None: ...

    with pytest.raises(ConfigurationError, match=r"'user' of job uses Security"):
        plan_call(job, provided_types=(), inject_all=False)


class ForeignMarker:
    """Stands in for a marker of a DI library that is not installed here."""


ForeignMarker.__module__ = "dependency_injector.wiring"


def test_unknown_dependency_markers_are_refused() -> None:
    """dishka's FromDishka, another library's marker object, an uncalled Depends and a
    pydantic Field default are errors, never passed to the job as values."""

    async def dishka_job(settings: FromDishka[Settings]) -> None: ...

    async def foreign_job(settings: Any = ForeignMarker()) -> None: ...  # noqa: B008

    async def foreign_class_job(settings: Any = ForeignMarker) -> None: ...

    async def uncalled_job(settings: Any = Depends) -> None: ...

    async def field_job(retries: int = Field(3)) -> None: ...

    cases: dict[Any, str] = {
        dishka_job: r"'settings' of dishka_job has .* a marker of dishka",
        foreign_job: r"'settings' of foreign_job .* a marker of dependency-injector",
        foreign_class_job: r"a marker of dependency-injector",
        uncalled_job: r"from fastapi, which is not a value; did you mean Depends\(function\)",
        field_job: r"'retries' of field_job has a pydantic Field",
    }
    for fn, message in cases.items():
        with pytest.raises(ConfigurationError, match=message):
            plan_call(fn, provided_types=(), inject_all=False)


def test_injector_markers_are_refused_when_injector_is_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """injector's Inject[T] marker is a bare object; it is recognised by identity."""
    injector = types.ModuleType("injector")
    marker = object()
    injector._inject_marker = marker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "injector", injector)

    async def job(settings: Annotated[Settings, marker]) -> None: ...

    with pytest.raises(ConfigurationError, match="a marker of injector"):
        plan_call(job, provided_types=(), inject_all=False)


def test_misdeclared_depends_are_refused() -> None:
    """Two markers, Depends() with nothing to call, max_concurrency and a Depends cycle."""

    async def two(s: Annotated[Settings, Inject()] = Depends(get_settings)) -> None: ...

    async def nothing(s=Depends()) -> None: ...  # type: ignore[no-untyped-def]

    async def limited(s: Settings = Depends(get_settings, max_concurrency=2)) -> None: ...

    def ping(p: int = Depends(lambda: 0)) -> int:
        return p

    def pong(p: int = Depends(ping)) -> int:
        return p

    ping.__defaults__ = (Depends(pong),)

    cases: dict[Any, str] = {
        two: r"'s' of two declares 2 injection markers",
        nothing: r"Depends\(\) without a dependency",
        limited: r"max_concurrency=2",
        pong: r"depends on itself through Depends: pong -> ping -> pong",
    }
    for fn, message in cases.items():
        with pytest.raises(ConfigurationError, match=message):
            plan_call(fn, provided_types=(), inject_all=False)


def test_services_factories_cannot_use_depends() -> None:
    """A service factory's parameters come from the container: Depends there is refused."""

    def make(settings: Settings = Depends(get_settings)) -> Session:
        return Session(settings.dsn, 0)

    with pytest.raises(ConfigurationError, match=r"add_scoped\(Session, ...\).*Depends"):
        Services().add_scoped(Session, make)


def test_registration_on_the_host_refuses_a_request_dependency() -> None:
    """host.handler, host.job and host.startup_action fail at once, naming the handler."""
    host = JobHost(redis_url="redis://127.0.0.1:1/0", queue_name="never-started")

    async def handle_visit(job: Visit, user: str = Depends(current_user)) -> None: ...

    async def poll(user: str = Depends(current_user)) -> None: ...

    with pytest.raises(ConfigurationError, match=r"Depends of parameter 'user' of handle_visit"):
        host.add_handler(Visit, handle_visit)
    with pytest.raises(ConfigurationError, match=r"Depends of parameter 'user' of poll"):
        host.add_job(poll, interval=timedelta(seconds=1))
    with pytest.raises(ConfigurationError, match=r"Depends of parameter 'user' of poll"):
        host.add_startup_action(poll)


# --- end to end -----------------------------------------------------------------------------


def get_page(job: Visit, session: Session = Depends(get_session)) -> str:
    """A dependency that takes the job's payload, as handlers' parameters can."""
    return f"{job.page}@{session.dsn}"


async def test_handler_dependencies_end_to_end_on_a_worker(redis_url: str, queue_name: str) -> None:
    """On a real worker, each run gets its own Depends values; the failing run's generator
    sees its exception, the successful one commits; a startup action gets Depends too."""
    log = Log()
    services = Services().add_singleton(Log, log)
    host = JobHost(
        services=services,
        redis_url=redis_url,
        queue_name=queue_name,
        retry=RetryPolicy(max_tries=1),
    )

    @host.startup_action()
    async def warm_up(connection: str = Depends(get_connection)) -> None:
        log.events.append(f"warm up with {connection}")

    @host.handler(Visit)
    async def record(
        job: Visit,
        ctx: JobContext,
        page: str = Depends(get_page),
        session: Annotated[Session, Depends(get_session)] = None,  # type: ignore[assignment]
        same_log: Log = Inject(),
    ) -> JobResult:
        assert same_log is log and session is log.sessions[-1]
        if job.fail:
            raise ValueError(f"cannot record {page}")
        return JobResult.success(page)

    async with host.run():
        ok = await wait_for_job(host, await host.scheduler.enqueue(Visit("/home")), timeout=60)
        failed = await wait_for_job(
            host, await host.scheduler.enqueue(Visit("/gone", fail=True)), timeout=60
        )
    assert ok.status is JobStatus.SUCCEEDED and ok.message == "/home@sqlite://"
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None and "cannot record /gone@sqlite://" in failed.error
    assert [
        s.closed_with if s.closed_with is None else type(s.closed_with) for s in log.sessions
    ] == [None, ValueError]
    assert log.events[:3] == ["connection open", "warm up with connection", "connection closed"]


async def test_timed_out_run_closes_its_dependencies_with_the_timeout(
    redis_url: str, queue_name: str
) -> None:
    """A run over its timeout closes its yield dependencies, which see a TimeoutError."""
    log = Log()
    host = JobHost(
        services=Services().add_singleton(Log, log),
        redis_url=redis_url,
        queue_name=queue_name,
        retry=RetryPolicy(max_tries=1),
    )

    @host.handler(Visit, timeout=timedelta(seconds=0.2))
    async def record(job: Visit, session: Session = Depends(get_session)) -> None:
        await asyncio.sleep(30)

    async with host.run():
        info = await wait_for_job(host, await host.scheduler.enqueue(Visit("/slow")), timeout=60)
    assert info.status is JobStatus.FAILED
    (session,) = log.sessions
    assert isinstance(session.closed_with, TimeoutError)


def test_hostedjobs_works_without_fastapi() -> None:
    """With fastapi not importable, hostedjobs imports, plans and runs Inject jobs, and never
    imports fastapi itself."""
    script = """
import asyncio, sys
sys.modules["fastapi"] = None  # import fastapi now raises ImportError
import hostedjobs
from hostedjobs import Inject, JobContext, Services
from hostedjobs.depends import DependencyRun
from hostedjobs.scope import call_planned, plan_call

async def job(ctx: JobContext, value: int = Inject(), retries: int = 3) -> int:
    return value + retries

async def main() -> None:
    plan = plan_call(job, provided_types=(JobContext,), inject_all=False)
    async with Services().add_singleton(int, 4).scope({}) as resolver, DependencyRun() as deps:
        assert await call_planned(plan, resolver, {JobContext: None}, deps) == 7

asyncio.run(main())
assert sys.modules["fastapi"] is None
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


async def test_cron_and_distributed_cron_jobs_get_their_dependencies(
    redis_url: str, queue_name: str
) -> None:
    """Hosted jobs (a per-process cron job, a cluster-wide one) resolve Depends per run too."""
    log = Log()
    host = JobHost(
        services=Services().add_singleton(Log, log), redis_url=redis_url, queue_name=queue_name
    )

    @host.cron("0 0 1 1 *", name="yearly")
    async def yearly(ctx: JobContext, user: str = Depends(get_user)) -> None:
        log.events.append(user)

    @host.distributed_cron("0 0 1 1 *", name="yearly-report")
    async def yearly_report(session: Annotated[Session, Depends(get_session)]) -> None:
        log.events.append(f"report on {session.dsn}")

    async with host.run():
        await host.trigger("yearly")
        await host.trigger("yearly-report")
        await eventually(
            lambda: log.events.count("session commit") == 2, what="both runs committed"
        )
    assert "user of yearly on sqlite://" in log.events
    assert "report on sqlite://" in log.events


# -- app.dependency_overrides ------------------------------------------------------------------


def real_database() -> str:
    return "real database"


def database_name(db: Annotated[str, Depends(real_database)]) -> str:
    return db


@job_type("tests.depends.lookup")
@dataclass
class Lookup:
    n: int


def test_a_fastapi_apps_dependency_overrides_apply_to_its_jobs_too() -> None:
    """A test that overrides ``get_db`` for the app's routes gets it in the app's jobs too
    (before, jobs kept calling the real one), including under a sub-dependency, and a
    cleared override gives the real one back."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from hostedjobs.testing import eager

    host = JobHost(redis_url="redis://127.0.0.1:1/0")
    seen: list[tuple[str, str]] = []

    @host.handler(Lookup)
    async def lookup(job: Lookup, db: str = Depends(database_name)) -> None:
        seen.append(("job", db))

    app = FastAPI(lifespan=host.lifespan)

    @app.post("/lookups")
    async def create(db: Annotated[str, Depends(database_name)]) -> None:
        seen.append(("route", db))
        await host.scheduler.enqueue(Lookup(n=1))

    app.dependency_overrides[real_database] = lambda: "fake database"
    with eager(host), TestClient(app) as client:
        assert client.post("/lookups").status_code == 200
        app.dependency_overrides.clear()
        assert client.post("/lookups").status_code == 200
    assert seen == [
        ("route", "fake database"),
        ("job", "fake database"),
        ("route", "real database"),
        ("job", "real database"),
    ]
