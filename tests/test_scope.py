"""Per-run scopes: lifetimes, cleanup, resolution errors, and call planning."""

import asyncio
import functools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import pytest

from hostedjobs.exceptions import ConfigurationError, DependencyResolutionError
from hostedjobs.scope import (
    CallPlan,
    Inject,
    Resolver,
    ScopeProvider,
    Services,
    call_planned,
    plan_call,
)

# --- services used by the tests -------------------------------------------------------------


class Settings:
    def __init__(self, dsn: str = "sqlite://") -> None:
        self.dsn = dsn


class Database:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.events: list[str] = []


class Repo:
    def __init__(self, db: Database) -> None:
        self.db = db


class Mailer:
    pass


class Clock:
    pass


class Context:
    """Stands in for JobContext: a value each run provides."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id


class SubContext(Context):
    pass


@dataclass
class SendEmail:
    to: str


class SendEmailHandler:
    def __init__(self, repo: Repo, ctx: Context) -> None:
        self.repo = repo
        self.ctx = ctx

    async def handle(self, job: SendEmail, ctx: Context, mailer: Mailer = Inject()) -> str:
        return f"{job.to} {ctx.run_id} {type(mailer).__name__} {type(self.repo).__name__}"


class A:
    def __init__(self, b: "B") -> None:
        self.b = b


class B:
    def __init__(self, a: A) -> None:
        self.a = a


class Cache:
    def __init__(self, db: Database) -> None:
        self.db = db


class NeedsContext:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx


@dataclass
class Recorder:
    """Collects what factories and cleanups did, in order."""

    events: list[str] = field(default_factory=list)


class Unregistered:
    pass


def base_services() -> Services:
    return Services().add_singleton(Settings, Settings()).add_scoped(Database, Database)


# --- lifetimes ------------------------------------------------------------------------------


async def test_singleton_instance_is_shared_by_every_scope() -> None:
    """An instance given to add_singleton is what every scope resolves."""
    settings = Settings("pg://")
    services = Services().add_singleton(Settings, settings)
    async with services.scope() as first:
        assert await first.aget(Settings) is settings
    async with services.scope() as second:
        assert await second.aget(Settings) is settings


async def test_singleton_factory_runs_once_per_services() -> None:
    """A singleton factory is called on first use only, then shared across scopes."""
    calls = 0

    def make() -> Settings:
        nonlocal calls
        calls += 1
        return Settings()

    services = Services().add_singleton(Settings, make)
    async with services.scope() as first:
        one = await first.aget(Settings)
    async with services.scope() as second:
        assert await second.aget(Settings) is one
    assert calls == 1


async def test_scoped_is_one_per_scope() -> None:
    """A scoped service is the same object within a scope and a new one in the next scope."""
    services = base_services()
    async with services.scope() as first:
        db1 = await first.aget(Database)
        assert await first.aget(Database) is db1
    async with services.scope() as second:
        assert await second.aget(Database) is not db1


async def test_transient_is_new_every_time() -> None:
    """A transient service is created anew on every resolution."""
    services = Services().add_transient(Clock, Clock)
    async with services.scope() as resolver:
        assert await resolver.aget(Clock) is not await resolver.aget(Clock)


async def test_scoped_dependencies_are_shared_within_the_scope() -> None:
    """Two services depending on a scoped one get the same instance in one scope."""
    services = base_services().add_transient(Repo, Repo)
    async with services.scope() as resolver:
        repo1, repo2 = await resolver.aget(Repo), await resolver.aget(Repo)
        assert repo1 is not repo2
        assert repo1.db is repo2.db is await resolver.aget(Database)


async def test_concurrent_scoped_resolution_creates_one_instance() -> None:
    """Concurrent agets of one scoped type in one scope create it once."""
    calls = 0

    async def open_db(settings: Settings) -> Database:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return Database(settings)

    services = Services().add_singleton(Settings, Settings()).add_scoped(Database, open_db)
    async with services.scope() as resolver:
        results = await asyncio.gather(*(resolver.aget(Database) for _ in range(10)))
    assert calls == 1
    assert all(db is results[0] for db in results)


async def test_concurrent_singleton_first_access_creates_one_instance() -> None:
    """Concurrent first resolutions of a singleton from many scopes create it once."""
    calls = 0

    async def make() -> Settings:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return Settings()

    services = Services().add_singleton(Settings, make)

    async def run() -> Settings:
        async with services.scope() as resolver:
            return await resolver.aget(Settings)

    results = await asyncio.gather(*(run() for _ in range(10)))
    assert calls == 1
    assert all(s is results[0] for s in results)


async def test_failed_scoped_creation_is_retried_by_the_next_request() -> None:
    """A scoped factory that raised is not cached: the next aget calls it again."""
    attempts = 0

    def flaky(settings: Settings) -> Database:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("down")
        return Database(settings)

    services = Services().add_singleton(Settings, Settings()).add_scoped(Database, flaky)
    async with services.scope() as resolver:
        with pytest.raises(ConnectionError):
            await resolver.aget(Database)
        assert isinstance(await resolver.aget(Database), Database)


async def test_waiters_take_over_when_the_creator_is_cancelled() -> None:
    """If the task creating a scoped service is cancelled, a waiting task creates it."""
    started = asyncio.Event()
    calls = 0

    async def slow() -> Clock:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await asyncio.sleep(10)
        return Clock()

    services = Services().add_scoped(Clock, slow)
    async with services.scope() as resolver:
        creator = asyncio.create_task(resolver.aget(Clock))
        await started.wait()
        waiter = asyncio.create_task(resolver.aget(Clock))
        await asyncio.sleep(0)
        creator.cancel()
        assert isinstance(await waiter, Clock)
        assert creator.cancelled()
    assert calls == 2


# --- cleanup --------------------------------------------------------------------------------


def recording_database(recorder: Recorder) -> Any:
    async def open_database(settings: Settings) -> AsyncIterator[Database]:
        db = Database(settings)
        recorder.events.append("open")
        try:
            yield db
        except Exception as exc:
            recorder.events.append(f"rollback {exc}")
            raise
        except BaseException as exc:
            recorder.events.append(f"abort {type(exc).__name__}")
            raise
        else:
            recorder.events.append("commit")
        finally:
            recorder.events.append("close")

    return open_database


async def test_generator_cleanup_commits_on_success() -> None:
    """A generator factory's cleanup sees success after a run that did not raise."""
    recorder = Recorder()
    services = Services().add_singleton(Settings, Settings())
    services.add_scoped(Database, recording_database(recorder))
    async with services.scope() as resolver:
        await resolver.aget(Database)
        assert recorder.events == ["open"]
    assert recorder.events == ["open", "commit", "close"]


async def test_generator_cleanup_sees_the_exception_and_it_propagates_unchanged() -> None:
    """The run's exception is thrown into the cleanup (rollback) and leaves the scope as is."""
    recorder = Recorder()
    services = Services().add_singleton(Settings, Settings())
    services.add_scoped(Database, recording_database(recorder))
    error = ValueError("boom")

    async def run() -> None:
        async with services.scope() as resolver:
            await resolver.aget(Database)
            raise error

    with pytest.raises(ValueError, match="boom") as raised:
        await run()
    assert raised.value is error
    assert recorder.events == ["open", "rollback boom", "close"]


async def test_cleanup_cannot_swallow_the_run_exception() -> None:
    """A cleanup that catches the exception without re-raising does not hide the failure."""
    seen: list[str] = []

    async def swallowing() -> AsyncIterator[Clock]:
        try:
            yield Clock()
        except RuntimeError:
            seen.append("swallowed")

    recorder = Recorder()
    services = Services().add_singleton(Settings, Settings())
    services.add_scoped(Database, recording_database(recorder)).add_scoped(Clock, swallowing)

    async def run() -> None:
        async with services.scope() as resolver:
            await resolver.aget(Database)
            await resolver.aget(Clock)
            raise RuntimeError("failed run")

    with pytest.raises(RuntimeError, match="failed run"):
        await run()
    assert seen == ["swallowed"]
    # The earlier cleanup still saw the failure, not a success.
    assert recorder.events == ["open", "rollback failed run", "close"]


async def test_cleanup_runs_on_cancellation() -> None:
    """A cancelled run's cleanups run and see CancelledError."""
    recorder = Recorder()
    services = Services().add_singleton(Settings, Settings())
    services.add_scoped(Database, recording_database(recorder))
    opened = asyncio.Event()

    async def run() -> None:
        async with services.scope() as resolver:
            await resolver.aget(Database)
            opened.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(run())
    await opened.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert recorder.events == ["open", "abort CancelledError", "close"]


async def test_cleanup_runs_on_timeout() -> None:
    """A run cut short by asyncio.timeout runs its cleanups, then TimeoutError surfaces."""
    recorder = Recorder()
    services = Services().add_singleton(Settings, Settings())
    services.add_scoped(Database, recording_database(recorder))

    async def run() -> None:
        async with asyncio.timeout(0.01), services.scope() as resolver:
            await resolver.aget(Database)
            await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        await run()
    assert recorder.events == ["open", "abort CancelledError", "close"]


async def test_cleanups_run_in_reverse_creation_order() -> None:
    """Cleanups run last-created first, including transients' cleanups."""
    events: list[str] = []

    def tracked(name: str) -> Any:
        async def factory() -> AsyncIterator[object]:
            events.append(f"open {name}")
            yield object()
            events.append(f"close {name}")

        return factory

    services = (
        Services()
        .add_scoped(Settings, tracked("settings"))
        .add_scoped(Mailer, tracked("mailer"))
        .add_transient(Clock, tracked("clock"))
    )
    async with services.scope() as resolver:
        await resolver.aget(Settings)
        await resolver.aget(Clock)
        await resolver.aget(Mailer)
    assert events == [
        "open settings",
        "open clock",
        "open mailer",
        "close mailer",
        "close clock",
        "close settings",
    ]


async def test_sync_generator_factory_cleans_up_and_sees_the_exception() -> None:
    """A sync generator factory works like an async one, exception included."""
    events: list[str] = []

    def open_database(settings: Settings) -> Iterator[Database]:
        try:
            yield Database(settings)
        except Exception as exc:
            events.append(f"rollback {exc}")
            raise
        else:
            events.append("commit")

    services = Services().add_singleton(Settings, Settings())
    services.add_scoped(Database, open_database)
    async with services.scope() as resolver:
        assert isinstance(await resolver.aget(Database), Database)

    async def fail() -> None:
        async with services.scope() as resolver:
            await resolver.aget(Database)
            raise KeyError("x")

    with pytest.raises(KeyError):
        await fail()
    assert events == ["commit", "rollback 'x'"]


async def test_scope_without_generators_needs_no_cleanup() -> None:
    """A scope whose services have no cleanup opens and closes, with or without an error."""
    services = base_services()
    async with services.scope() as resolver:
        await resolver.aget(Database)
    with pytest.raises(ZeroDivisionError):
        async with services.scope():
            raise ZeroDivisionError


async def test_generator_service_cannot_be_created_after_the_scope_closed() -> None:
    """Resolving a service with cleanup from a closed scope is refused."""

    async def factory() -> AsyncIterator[Clock]:
        yield Clock()

    services = Services().add_scoped(Clock, factory)
    async with services.scope() as resolver:
        pass
    with pytest.raises(DependencyResolutionError, match="already closed"):
        await resolver.aget(Clock)


async def test_aclose_closes_singletons_in_reverse_order() -> None:
    """aclose runs singleton generator cleanups last-created first, then recreates on use."""
    events: list[str] = []

    def tracked(name: str) -> Any:
        async def factory() -> AsyncIterator[object]:
            events.append(f"open {name}")
            yield object()
            events.append(f"close {name}")

        return factory

    settings = Settings()
    services = (
        Services()
        .add_singleton(Mailer, tracked("mailer"))
        .add_singleton(Clock, tracked("clock"))
        .add_singleton(Settings, settings)
    )
    async with services.scope() as resolver:
        first = await resolver.aget(Mailer)
        await resolver.aget(Clock)
    assert events == ["open mailer", "open clock"]
    await services.aclose()
    assert events == ["open mailer", "open clock", "close clock", "close mailer"]
    async with services.scope() as resolver:
        assert await resolver.aget(Mailer) is not first
        assert await resolver.aget(Settings) is settings
    await services.aclose()
    assert events[-1] == "close mailer"


async def test_transient_cleanup_of_a_singleton_dependency_runs_at_aclose() -> None:
    """A transient built for a singleton is cleaned up with the singletons, not the scope."""
    events: list[str] = []

    def clock() -> Iterator[Clock]:
        yield Clock()
        events.append("clock closed")

    class Timer:
        def __init__(self, clock: Clock) -> None:
            self.clock = clock

    services = Services().add_transient(Clock, clock).add_singleton(Timer, Timer)
    async with services.scope() as resolver:
        await resolver.aget(Timer)
    assert events == []
    await services.aclose()
    assert events == ["clock closed"]


# --- factories and provided values ----------------------------------------------------------


async def test_provided_values_resolve_by_exact_type_and_win_over_registrations() -> None:
    """Values a scope is opened with resolve by exact type, before registrations."""
    ctx = Context("r1")
    given = Settings("given")
    services = Services().add_singleton(Settings, Settings("registered"))
    services.add_scoped(Context, lambda: Context("factory"))
    async with services.scope({Context: ctx, Settings: given}) as resolver:
        assert await resolver.aget(Context) is ctx
        assert await resolver.aget(Settings) is given
    async with services.scope({SubContext: SubContext("sub")}) as resolver:
        assert (await resolver.aget(SubContext)).run_id == "sub"
        # A provided subclass does not stand in for its base class.
        assert (await resolver.aget(Context)).run_id == "factory"


async def test_factory_parameters_come_from_provided_values_then_registrations() -> None:
    """A factory's parameters resolve from the scope's provided values and registrations."""
    ctx = Context("r7")
    services = Services().add_scoped(NeedsContext, NeedsContext)
    async with services.scope({Context: ctx}) as resolver:
        assert (await resolver.aget(NeedsContext)).ctx is ctx


async def test_unresolvable_factory_parameter_with_default_uses_the_default() -> None:
    """A factory parameter whose type nobody provides falls back to its default."""

    def make(dsn: str = "fallback", clock: Clock | None = None) -> Settings:
        assert clock is None
        return Settings(dsn)

    services = Services().add_scoped(Settings, make)
    async with services.scope() as resolver:
        assert (await resolver.aget(Settings)).dsn == "fallback"


async def test_optional_annotation_resolves_the_registered_type() -> None:
    """`X | None = None` gets the registered X when there is one."""

    def make(clock: Clock | None = None) -> Mailer:
        assert isinstance(clock, Clock)
        return Mailer()

    services = Services().add_scoped(Mailer, make).add_scoped(Clock, Clock)
    async with services.scope() as resolver:
        await resolver.aget(Mailer)


async def test_default_does_not_hide_a_missing_nested_dependency() -> None:
    """A default only covers an unregistered type, not a registered one that fails."""

    def make(repo: Repo | None = None) -> Mailer:
        return Mailer()

    services = Services().add_scoped(Mailer, make).add_scoped(Repo, Repo)
    async with services.scope() as resolver:
        with pytest.raises(DependencyResolutionError, match="cannot resolve Database"):
            await resolver.aget(Mailer)


async def test_async_and_partial_factories() -> None:
    """Async functions and partials of them work as factories."""

    async def make(dsn: str) -> Settings:
        return Settings(dsn)

    services = Services().add_scoped(Settings, functools.partial(make, "partial"))
    async with services.scope() as resolver:
        assert (await resolver.aget(Settings)).dsn == "partial"


async def test_callable_object_factory_returning_an_awaitable_is_awaited() -> None:
    """A callable object registered as a scoped factory is called, and its awaitable awaited."""

    class MakeClock:
        async def __call__(self) -> Clock:
            return Clock()

    services = Services().add_scoped(Clock, MakeClock())
    async with services.scope() as resolver:
        assert isinstance(await resolver.aget(Clock), Clock)


async def test_add_singleton_tells_instances_from_factories() -> None:
    """Functions and classes are factories; other objects (even callable ones) are instances."""

    class Handler:
        def __call__(self) -> str:
            return "called"

    handler = Handler()
    services = (
        Services()
        .add_singleton(Handler, handler)
        .add_singleton(Settings, lambda: Settings("from lambda"))
        .add_singleton(Clock, Clock)
        .add_singleton(str, "plain")
    )
    async with services.scope() as resolver:
        assert await resolver.aget(Handler) is handler
        assert (await resolver.aget(Settings)).dsn == "from lambda"
        assert isinstance(await resolver.aget(Clock), Clock)
        assert await resolver.aget(str) == "plain"


async def test_reregistering_replaces_the_earlier_registration() -> None:
    """A second add_* for a type replaces the first, lifetime included."""
    services = Services().add_singleton(Settings, Settings("old"))
    services.add_transient(Settings, lambda: Settings("new"))
    async with services.scope() as resolver:
        first = await resolver.aget(Settings)
        assert first.dsn == "new"
        assert await resolver.aget(Settings) is not first


def test_registration_chains_and_membership() -> None:
    """add_* return the Services; `in` tells registered types."""
    services = Services()
    assert services.add_scoped(Database, Database) is services
    assert Database in services
    assert Repo not in services
    assert [] not in services  # unhashable is simply not registered


def test_services_is_a_scope_provider() -> None:
    """Services satisfies the ScopeProvider protocol that the host needs."""
    provider: ScopeProvider = Services()
    assert callable(provider.scope)


def test_non_callable_factory_is_a_configuration_error() -> None:
    """add_scoped with something that is not callable fails at registration."""
    with pytest.raises(ConfigurationError, match="not callable"):
        Services().add_scoped(Settings, Settings())  # type: ignore[arg-type]


def test_factory_with_unfillable_parameter_fails_at_registration() -> None:
    """A factory parameter without annotation or default fails at registration."""

    def make(dsn) -> Settings:  # type: ignore[no-untyped-def]
        return Settings(dsn)

    with pytest.raises(
        ConfigurationError, match=r"add_scoped\(Settings.*'dsn'.*no type annotation"
    ):
        Services().add_scoped(Settings, make)


# --- resolution errors ----------------------------------------------------------------------


async def test_missing_registration_names_the_type_and_the_fix() -> None:
    """Resolving an unregistered type says which and how to register it."""
    async with Services().scope() as resolver:
        with pytest.raises(DependencyResolutionError) as raised:
            await resolver.aget(Unregistered)
    message = str(raised.value)
    assert message.startswith("cannot resolve Unregistered: it is not registered")
    assert "services.add_scoped(Unregistered, factory)" in message
    assert isinstance(raised.value, LookupError)


async def test_missing_dependency_names_the_chain() -> None:
    """A missing dependency deep in a chain names everything that needed it."""
    services = Services().add_scoped(Repo, Repo)
    plan = plan_call(SendEmailHandler, provided_types=(Context, SendEmail), inject_all=True)
    async with services.scope({Context: Context("r")}) as resolver:
        with pytest.raises(DependencyResolutionError) as raised:
            await call_planned(plan, resolver, {Context: Context("r")})
    assert str(raised.value).startswith(
        "cannot resolve Database (needed by SendEmailHandler -> Repo): it is not registered; "
        "add services.add_scoped(Database, factory)"
    )


async def test_dependency_cycle_is_reported() -> None:
    """A cycle between factories is an error naming the cycle, not a hang or recursion."""
    services = Services().add_scoped(A, A).add_scoped(B, B)
    async with services.scope() as resolver:
        with pytest.raises(DependencyResolutionError, match=r"dependency cycle A -> B -> A"):
            await resolver.aget(A)


async def test_transient_cycle_is_reported() -> None:
    """A cycle among transients is reported too."""
    services = Services().add_transient(A, A).add_transient(B, B)
    async with services.scope() as resolver:
        with pytest.raises(DependencyResolutionError, match="dependency cycle B -> A -> B"):
            await resolver.aget(B)


async def test_singleton_depending_on_scoped_is_a_captive_dependency() -> None:
    """A singleton factory may not capture a scoped service."""
    services = base_services().add_singleton(Cache, Cache)
    async with services.scope() as resolver:
        with pytest.raises(DependencyResolutionError) as raised:
            await resolver.aget(Cache)
    message = str(raised.value)
    assert "singleton Cache depends on Database, which is scoped" in message
    assert "Make Cache scoped or transient, or make Database a singleton" in message


async def test_singleton_depending_on_a_provided_value_is_captive() -> None:
    """A singleton factory may not capture a value provided per run."""
    services = Services().add_singleton(NeedsContext, NeedsContext)
    async with services.scope({Context: Context("r")}) as resolver:
        with pytest.raises(DependencyResolutionError, match="which is provided by each run"):
            await resolver.aget(NeedsContext)


async def test_singleton_through_a_transient_is_still_captive() -> None:
    """A scoped service reached through a transient inside a singleton is still refused."""
    services = base_services().add_transient(Repo, Repo)

    class Service:
        def __init__(self, repo: Repo) -> None:
            self.repo = repo

    services.add_singleton(Service, Service)
    async with services.scope() as resolver:
        with pytest.raises(
            DependencyResolutionError, match="singleton Service depends on Database"
        ):
            await resolver.aget(Service)


# --- plan_call and call_planned -------------------------------------------------------------


async def test_call_planned_fills_provided_and_injected_parameters() -> None:
    """Provided types come from `provided`, Inject() defaults from the scope."""

    async def job(ctx: Context, db: Database = Inject(), retries: int = 3) -> str:
        return f"{ctx.run_id} {type(db).__name__} {retries}"

    plan = plan_call(job, provided_types=(Context,), inject_all=False)
    assert plan.dependencies == (Database,)
    ctx = Context("r1")
    async with base_services().scope({Context: ctx}) as resolver:
        assert await call_planned(plan, resolver, {Context: ctx}) == "r1 Database 3"


async def test_annotated_inject_form() -> None:
    """`Annotated[T, Inject()]` resolves T from the scope."""

    async def job(db: Annotated[Database, Inject()]) -> Database:
        return db

    plan = plan_call(job, provided_types=(), inject_all=False)
    async with base_services().scope() as resolver:
        assert await call_planned(plan, resolver, {}) is await resolver.aget(Database)


async def test_inject_type_overrides_the_annotation() -> None:
    """Inject(T) resolves T whatever the parameter's annotation says."""

    async def job(
        settings: object = Inject(Settings),
        db: Annotated[Any, Inject(Database)] = None,
    ) -> Any:
        return settings, db

    plan = plan_call(job, provided_types=(), inject_all=False)
    async with base_services().scope() as resolver:
        settings, db = await call_planned(plan, resolver, {})
    assert isinstance(settings, Settings)
    assert isinstance(db, Database)


async def test_sync_function_and_positional_only_parameters() -> None:
    """Sync functions are called directly; positional-only parameters are passed by position."""

    def job(clock: Clock = Inject(), /, flag: bool = True, *, ctx: Context) -> str:
        return f"{type(clock).__name__} {flag} {ctx.run_id}"

    plan = plan_call(job, provided_types=(Context,), inject_all=False)
    services = Services().add_transient(Clock, Clock)
    async with services.scope() as resolver:
        assert await call_planned(plan, resolver, {Context: Context("p")}) == "Clock True p"


async def test_handler_class_construction_and_bound_method() -> None:
    """A class is constructed with injected arguments; a method plan runs bound to it."""
    services = base_services().add_scoped(Repo, Repo).add_singleton(Mailer, Mailer())
    provided_types = (Context, SendEmail)
    construct = plan_call(SendEmailHandler, provided_types=provided_types, inject_all=True)
    handle = plan_call(SendEmailHandler.handle, provided_types=provided_types, inject_all=False)
    ctx = Context("run-9")
    provided = {Context: ctx, SendEmail: SendEmail("a@b.c")}
    async with services.scope(provided) as resolver:
        handler = await call_planned(construct, resolver, provided)
        assert isinstance(handler, SendEmailHandler)
        assert handler.ctx is ctx
        result = await call_planned(handle.bound_to(handler), resolver, provided)
    assert result == "a@b.c run-9 Mailer Repo"
    with pytest.raises(ConfigurationError, match="bound_to"):
        await call_planned(handle, resolver, provided)


async def test_call_planned_with_another_resolver() -> None:
    """call_planned works with any Resolver, e.g. an adapter's."""

    class DictResolver:
        def __init__(self, values: dict[type[Any], object]) -> None:
            self.values = values

        async def aget(self, service_type: type[Any]) -> Any:
            try:
                return self.values[service_type]
            except KeyError:
                raise DependencyResolutionError(f"no {service_type}") from None

    async def job(ctx: Context, mailer: Mailer = Inject()) -> Any:
        return ctx, mailer

    ctx, mailer = Context("r"), Mailer()
    resolver: Resolver = DictResolver({Mailer: mailer})
    plan = plan_call(job, provided_types=(Context,), inject_all=False)
    assert await call_planned(plan, resolver, {Context: ctx}) == (ctx, mailer)
    with pytest.raises(DependencyResolutionError, match="no "):
        await call_planned(plan, DictResolver({}), {Context: ctx})


async def test_inject_all_uses_defaults_only_for_unregistered_types() -> None:
    """With inject_all, an annotated parameter with a default gets it if nothing provides it."""

    class Job:
        def __init__(self, clock: Clock, settings: Settings | None = None, n: int = 2) -> None:
            self.clock, self.settings, self.n = clock, settings, n

    plan = plan_call(Job, provided_types=(), inject_all=True)
    async with Services().add_transient(Clock, Clock).scope() as resolver:
        job = await call_planned(plan, resolver, {})
    assert (job.settings, job.n) == (None, 2)


def test_plan_call_rejects_a_parameter_nothing_can_fill() -> None:
    """A required parameter that is neither provided nor injected fails at registration."""

    async def job(ctx: Context, db: Database) -> None: ...

    with pytest.raises(ConfigurationError) as raised:
        plan_call(job, provided_types=(Context,), inject_all=False)
    message = str(raised.value)
    assert "parameter 'db' of" in message
    assert "job" in message
    assert "give it a default of Inject()" in message


def test_plan_call_rejects_inject_without_annotation() -> None:
    """Inject() on an unannotated parameter fails at registration."""

    async def job(db=Inject()) -> None:  # type: ignore[no-untyped-def]
        ...

    with pytest.raises(ConfigurationError, match=r"'db'.*no type annotation"):
        plan_call(job, provided_types=(), inject_all=False)


def test_plan_call_rejects_unannotated_required_parameter_when_injecting_all() -> None:
    """With inject_all, a required parameter without an annotation fails at registration."""

    class Job:
        def __init__(self, thing) -> None:  # type: ignore[no-untyped-def]
            self.thing = thing

    with pytest.raises(ConfigurationError, match=r"'thing' of Job.*no type annotation"):
        plan_call(Job, provided_types=(), inject_all=True)


def test_plan_call_reports_unreadable_type_hints() -> None:
    """A string annotation naming an unknown type fails at registration with the name."""

    async def job(db: "Nowhere" = Inject()) -> None:  # type: ignore[name-defined]  # noqa: F821
        ...

    with pytest.raises(ConfigurationError, match="Nowhere"):
        plan_call(job, provided_types=(), inject_all=False)


def test_plan_call_skips_star_args_and_unannotated_defaults() -> None:
    """*args, **kwargs and parameters left to their defaults are not planned."""

    def job(*args: Any, ctx: Context, verbose=False, **kwargs: Any) -> None:  # type: ignore[no-untyped-def]
        ...

    plan = plan_call(job, provided_types=(Context,), inject_all=False)
    assert isinstance(plan, CallPlan)
    assert [a.name for a in plan.arguments] == ["ctx"]
    assert plan.dependencies == ()


def test_inject_accepts_zero_or_one_argument() -> None:
    """Inject() and Inject(Type) both build markers that show what they inject."""
    assert repr(Inject()) == "Inject()"
    assert repr(Inject(Database)) == "Inject(Database)"


async def test_call_planned_without_parameters_and_through_a_wrapping_resolver() -> None:
    """A parameterless call needs no resolver; defaults work through any resolver too."""

    async def ping() -> str:
        return "pong"

    class Wrapper:
        def __init__(self, inner: Resolver) -> None:
            self.inner = inner

        async def aget(self, service_type: type[Any]) -> Any:
            return await self.inner.aget(service_type)

    class Job:
        def __init__(self, clock: Clock, settings: Settings | None = None, /) -> None:
            self.clock, self.settings = clock, settings

    plan = plan_call(Job, provided_types=(), inject_all=True)
    async with Services().add_transient(Clock, Clock).scope() as resolver:
        assert (
            await call_planned(plan_call(ping, provided_types=(), inject_all=False), resolver, {})
            == "pong"
        )
        job = await call_planned(plan, Wrapper(resolver), {})
    assert isinstance(job.clock, Clock)
    assert job.settings is None
