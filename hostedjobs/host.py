"""`JobHost`: the one object users configure, register jobs on, and run with their app."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
)
from datetime import timedelta
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    TypeVar,
    cast,
    overload,
)

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from .clock import Clock, SystemClock
from .concurrency import ConcurrencyLimit
from .context import JobContext
from .cron import CronSchedule
from .definitions import HostedJob, Misfire, Overlap
from .distributed import DistributedCron, function_name, job_name
from .durations import Seconds, seconds
from .eager import EagerScheduler
from .exceptions import (
    ConfigurationError,
    HostedJobsError,
    HostNotRunningError,
    StartupActionError,
    UnknownJobTypeError,
)
from .handlers import Handler, HandlerClass, HandlerRegistration, Handlers
from .health import BEAT_TTL_S, WorkerBeat, WorkerState, read_beats, read_worker_states
from .history import job_type_of
from .hosted import HostedServices
from .instrumentation import Instrumentation, combine
from .locks import Lock
from .logs import visible
from .outcomes import JobKind
from .pauses import JobPause, PausedJobs, checked_where, read_pauses, set_paused
from .rates import Cooldown, Debounce, RateLimit, Rates
from .results import JobResult
from .retries import RetryPolicy
from .runner import QueuedFunction, Runner
from .runs import JobCallable, JobCode, job_name_of
from .scheduler import JobPayload, Scheduler
from .schedules import Schedules
from .scope import ScopeProvider, Services
from .serialization import decode_payload, job_type_info, registered_versions
from .shutdown import Grace
from .starlette import health_response, readiness_response, server_forcing_exit
from .startup import StartupAction, StartupActions, StartupState
from .status import HostedJobStatus
from .storage import Store, open_redis, redacted, resolve_redis_url
from .storage.cluster import is_cluster_url
from .storage.connection import DEFAULT_TIMEOUT_S, Durability, adopt_redis, check_redis_client
from .storage.embedded import EmbeddedRedis
from .storage.preflight import RISKS, Risk, check_server
from .storage.shards import MAX_SHARDS, ShardClients, ShardLayout, settle_shard_count
from .tasks import Task, TaskDecorator
from .worker import SlotBudget, Worker, WorkerSupervisor

if TYPE_CHECKING:
    from redis.asyncio import ConnectionPool, Redis
    from starlette.types import ASGIApp

    from .dashboard.security import AuthCheck

__all__ = ["JobHost"]

logger = logging.getLogger("hostedjobs")

J = TypeVar("J", bound=JobPayload)
JC = TypeVar("JC", bound=JobCode)
P = ParamSpec("P")
R = TypeVar("R")

DATA_DIR_ENV = "HOSTEDJOBS_DATA_DIR"
EMBEDDED_CHECK_S = 2.0
"""How often a host on the embedded server checks that it still runs."""


async def _watch_embedded(embedded: EmbeddedRedis) -> None:
    """Start the embedded server again if it stopped under us (its keeper was killed):
    every process using it does this, so they never wait for a newcomer to do it."""
    while True:
        await asyncio.sleep(EMBEDDED_CHECK_S)
        if embedded.running:  # a lock test, no Redis command
            continue
        url = embedded.url
        starting = asyncio.ensure_future(asyncio.to_thread(embedded.start))
        try:
            restarted = await asyncio.shield(starting)
        except asyncio.CancelledError:
            # Let the start finish, so that the host's stop() comes after it, not before.
            await asyncio.wait([starting])
            if not starting.cancelled():
                starting.exception()  # seen: nobody is left to log it
            raise
        except (HostedJobsError, OSError) as exc:
            logger.warning("the embedded server stopped and could not be started again: %s", exc)
            continue
        if restarted == url:
            logger.warning("the embedded server had stopped; it runs again at %s", url)
        else:
            logger.error(
                "the embedded server had stopped and runs again at %s, not %s (its port was "
                "taken): restart this process",
                restarted,
                url,
            )


HEALTH_REDIS_TIMEOUT_S = 2.0
"""How long the health report waits for Redis's answer (at most ``redis_timeout``), so a
probe gets a prompt 503 from a frozen Redis rather than no answer."""


class _ShardedProgress:
    """Runs' progress, stored on the shard holding each job (a sharded queue)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    async def progress(self, job_id: str, values: dict[str, str]) -> None:
        await self._scheduler._store_for(job_id).progress(job_id, values)


def _optional_seconds(name: str, value: Seconds | None) -> float | None:
    return None if value is None else seconds(name, value, positive=True)


def _retry(value: RetryPolicy | None, default: RetryPolicy) -> RetryPolicy:
    if value is None:
        return default
    if not isinstance(value, RetryPolicy):
        raise ConfigurationError(
            f"retry must be a RetryPolicy, got {value!r}; e.g. retry=RetryPolicy(max_tries=3)"
        )
    return value


def _concurrency(value: ConcurrencyLimit[J] | None) -> ConcurrencyLimit[J] | None:
    if value is not None and not isinstance(value, ConcurrencyLimit):
        raise ConfigurationError(
            f"concurrency must be a ConcurrencyLimit, got {value!r}; e.g. "
            "concurrency=ConcurrencyLimit(2), or "
            "ConcurrencyLimit(2, key=lambda job: job.customer_id)"
        )
    return value


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigurationError(
            f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}"
        )


def _risks(accepted: Iterable[str]) -> frozenset[Risk]:
    if isinstance(accepted, str):
        accepted = [accepted]
    chosen = frozenset(accepted)
    unknown = chosen.difference(RISKS)
    if unknown:
        raise ConfigurationError(
            f"accept_risks takes {', '.join(map(repr, RISKS))}, got {sorted(unknown)!r}"
        )
    return cast(frozenset[Risk], chosen)


def _stop_process(failed_action: str) -> None:
    """Ask the server to shut down gracefully, so that the process exits non-zero.

    A server (uvicorn, gunicorn, ``hostedjobs worker``) handles SIGTERM by shutting down;
    without a handler (a test runner, a script) SIGTERM would kill the process outright, so
    it is not sent and the host stays up, not ready.
    """
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
        logger.critical(
            "startup action %r failed; no SIGTERM handler is installed (not running under a "
            "server), so the process is left running, not ready",
            failed_action,
        )
        return
    logger.critical("startup action %r failed: stopping the process", failed_action)
    os.kill(os.getpid(), signal.SIGTERM)


class _HandlerDecorator(Generic[J]):
    """What ``@host.handler(JobType)`` returns: registers the decorated handler.

    A function comes back with its own signature. A class comes back unchanged at run time
    and for mypy; for pyright it is ``type[Any]`` after decoration (the job parameter is
    checked all the same), since no annotation can both check it against ``J`` and return
    the class's own type: ``host.add_handler(JobType, Handler)`` keeps it.
    """

    def __init__(self, register: Callable[[Any], None]) -> None:
        self._register = register

    @overload
    def __call__(
        self, handler: Callable[Concatenate[J, P], Coroutine[Any, Any, R]], /
    ) -> Callable[Concatenate[J, P], Coroutine[Any, Any, R]]: ...
    @overload
    def __call__(self, handler: type[HandlerClass[J]], /) -> type[Any]: ...
    def __call__(self, handler: Any, /) -> Any:
        self._register(handler)
        return handler


class JobHost:
    """Hosts an app's background work: hosted jobs, startup actions, and on-demand jobs.

    Configure it once at import time, register jobs on it, and hand its lifespan to the app
    (``Starlette(lifespan=host.lifespan)``) or nest ``async with host.run():`` in your own.
    While it runs: startup actions run, continuous and cron jobs run on their schedules,
    ``host.scheduler`` enqueues on-demand jobs, and (unless ``run_worker=False``) an arq worker
    inside the app's event loop runs queued jobs and distributed cron runs.

    Args:
        services: where jobs' and handlers' dependencies come from; a scope is opened per run.
        redis_url: ``redis://host:port/db``; default ``$HOSTEDJOBS_REDIS_URL``, else the
            embedded server (development and demos; `EmbeddedRedis`), shared by the processes
            with the same ``data_dir`` and stopped a minute after the last one has gone.
        queue_name: the arq queue; apps sharing a Redis need different names.
        run_worker: run queued jobs in this process; False for web processes that only
            enqueue (they still take part in distributed cron ticks).
        concurrency: how many queued jobs this process runs at once (in total, over all
            shards).
        shards: split the queue into this many shards (default 1: one queue), each its own
            hash-tagged queue, so on a Redis Cluster each lands on its own primary and
            throughput grows with primaries. Jobs are spread over the shards by id; a worker
            serves every shard; lists and counts merge them. Every process of the queue must
            use the same count: a count differing from the one jobs are queued under is
            refused at start-up (`ConfigurationError`). See docs/scaling.md.
        job_timeout: default per-run time limit of on-demand jobs (per handler: ``timeout=``).
        retry: default retry policy of on-demand jobs (per handler: ``retry=``).
        keep_result: how long finished on-demand jobs stay visible to ``scheduler.get``.
        shutdown_grace: how long shutdown waits for running jobs before cancelling them.
        fallback_poll: how often an idle worker looks at the queue without being woken.
        data_dir: the embedded server's folder (default ``$HOSTEDJOBS_DATA_DIR`` or
            ``.hostedjobs``).
        startup_mode: ``"background"`` (default): the app serves at once (liveness passes)
            while startup actions run, and readiness answers 503 until they succeed;
            ``"blocking"``: the lifespan startup waits for them and fails if one fails.
        on_startup_failure: ``"exit"`` (default): a failed action stops the process with a
            non-zero status; ``"stay"``: keep serving, not ready, gated jobs never start.
        redis_timeout: the longest one Redis call may wait (connection set-up included)
            before it fails with `RedisUnavailableError`; a blocking wait gets its block time
            on top. A refused or dropped connection is retried within that time.
        redis_client: a redis-py asyncio client or connection pool you configured yourself
            (custom TLS, a ``credential_provider`` for IAM auth tokens, a proxy), used
            instead of ``redis_url``. The host adds its call bounds (``redis_timeout``) and
            never closes it: it stays yours.
        durability: when an enqueue, an outcome, a fired tick or an operator's action counts
            as done. ``"primary"`` (default): once the primary has it; a failover can lose
            the last writes the replica had not yet received. ``"replicated"``: once at
            least one replica has it too (Redis's ``WAIT``), so a failover loses no
            acknowledged job and no recorded outcome; it costs a replication round trip
            per write, fails with `NotReplicatedError` when no replica confirms within
            ``redis_timeout``, and needs a primary with a connected replica (checked at
            start-up). See docs/scaling.md.
        accept_risks: Redis settings to start with anyway: ``"eviction"`` (a maxmemory-policy
            other than noeviction, which can delete queued jobs) and ``"persistence"`` (a
            server that persists nothing, otherwise warned about). Without it, the host
            refuses to start on an evicting Redis (`RedisConfigurationError`).
        clock: the wall clock for schedules (tests inject a skewed or fixed one).
        instrumentation: metrics and tracing, e.g.
            ``[hostedjobs.metrics.PrometheusMetrics(), hostedjobs.tracing.OpenTelemetryTracing()]``
            (each needs its extra); none by default, and then they cost nothing.
    """

    def __init__(
        self,
        services: ScopeProvider | None = None,
        *,
        redis_url: str | None = None,
        queue_name: str = "hostedjobs",
        run_worker: bool = True,
        concurrency: int = 16,
        shards: int = 1,
        job_timeout: Seconds = timedelta(minutes=5),
        retry: RetryPolicy | None = None,
        keep_result: Seconds = timedelta(days=1),
        shutdown_grace: Seconds = timedelta(seconds=20),
        fallback_poll: Seconds = timedelta(seconds=1),
        data_dir: str | os.PathLike[str] | None = None,
        startup_mode: Literal["background", "blocking"] = "background",
        on_startup_failure: Literal["exit", "stay"] = "exit",
        redis_timeout: Seconds = DEFAULT_TIMEOUT_S,
        redis_client: Redis | ConnectionPool | None = None,
        durability: Durability = "primary",
        accept_risks: Iterable[Risk] = (),
        clock: Clock | None = None,
        instrumentation: Iterable[Instrumentation] = (),
    ) -> None:
        if not queue_name or not isinstance(queue_name, str):
            raise ConfigurationError(f"queue_name must be a non-empty string, got {queue_name!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
            raise ConfigurationError(
                f"shards must be an int from 1 to {MAX_SHARDS}, got {shards!r}; e.g. shards=3 "
                "for a cluster of 3 primaries"
            )
        _choice("startup_mode", startup_mode, ("background", "blocking"))
        _choice("on_startup_failure", on_startup_failure, ("exit", "stay"))
        if redis_client is not None and redis_url is not None:
            raise ConfigurationError("give redis_url or redis_client, not both")
        if redis_client is not None:
            check_redis_client(redis_client)
        _choice("durability", durability, ("primary", "replicated"))
        resolve_redis_url(redis_url)  # fail early on a malformed URL
        self.services: ScopeProvider = services if services is not None else Services()
        self.redis_url = redis_url
        self.redis_client = redis_client
        self.durability = durability
        self.queue_name = queue_name
        self.run_worker = run_worker
        self.concurrency = concurrency
        self.shards = shards
        self.job_timeout_s = seconds("job_timeout", job_timeout, positive=True)
        self.retry = _retry(retry, RetryPolicy())
        self.keep_result_s = seconds("keep_result", keep_result)
        self.shutdown_grace_s = seconds("shutdown_grace", shutdown_grace)
        self.fallback_poll_s = seconds("fallback_poll", fallback_poll, positive=True)
        self.redis_timeout_s = seconds("redis_timeout", redis_timeout, positive=True)
        self.accept_risks = _risks(accept_risks)
        self.data_dir = Path(data_dir or os.environ.get(DATA_DIR_ENV) or ".hostedjobs")
        self.startup_mode = startup_mode
        self.on_startup_failure = on_startup_failure
        self.clock: Clock = clock or SystemClock()
        self.instrumentation = combine(instrumentation)
        """The host's instrumentation, combined into one; None when there is none."""
        self._runner = Runner(self.services)
        self._runner.instrumentation = self.instrumentation
        self._scheduler = Scheduler(queue_name)
        self._scheduler.keep_result_s = self.keep_result_s
        self._scheduler.instrumentation = self.instrumentation
        self._handlers = Handlers(self._runner)
        self._startup = StartupActions()
        self._distributed = DistributedCron(self._runner)
        self._hosted = HostedServices(self._runner, self.clock, self._startup, self._distributed)
        self.schedules = Schedules(lambda: set(self._handlers.registrations))
        """Runtime schedules, stored in Redis: ``await host.schedules.add(name, cron, job)``
        (see `hostedjobs.schedules` and docs/schedules.md)."""
        self._supervisors: list[WorkerSupervisor] = []
        self._pauses: tuple[PausedJobs, asyncio.Task[None]] | None = None
        """One worker per shard (one for an unsharded queue)."""
        self._grace = Grace()
        self._running = False
        self._eager: EagerScheduler | None = None
        """Set in eager mode (`hostedjobs.testing.eager`): jobs run in this process, no Redis."""
        self._url = ""
        self._target = ""

    def _check_not_running(self) -> None:
        if self._running:
            raise ConfigurationError("register jobs before the host starts")

    # -- on-demand job handlers -------------------------------------------------------------

    def add_handler(
        self,
        job_type: type[J],
        handler: Handler[J],
        *,
        timeout: Seconds | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: RateLimit | None = None,
        debounce: Debounce | None = None,
        cooldown: Cooldown | None = None,
        concurrency: ConcurrencyLimit[J] | None = None,
    ) -> None:
        """Run ``handler`` for every job of ``job_type`` (a ``@job_type`` dataclass).

        ``handler`` is an async function taking the job (by its annotation), optionally
        ``ctx: JobContext``, and services as ``Inject()`` defaults; or a class whose
        constructor parameters are resolved from the run's scope and whose
        ``async def handle(self, job, ctx)`` is called. ``rate_limit``, ``debounce`` and
        ``cooldown`` limit when its jobs start, fleet-wide (`hostedjobs.rates`;
        `ConfigurationError` for a value of the wrong kind). ``concurrency``: at most that
        many runs of the type (per key) at once across every worker (`ConcurrencyLimit`).
        """
        self._check_not_running()
        info = job_type_info(job_type)
        rates = Rates.create(
            info.name,
            functools.partial(decode_payload, info.cls),
            rate_limit=rate_limit,
            debounce=debounce,
            cooldown=cooldown,
        )
        registration = HandlerRegistration.create(
            info,
            handler,
            retry=_retry(retry, self.retry),
            timeout_s=self.job_timeout_s
            if timeout is None
            else seconds("timeout", timeout, positive=True),
            rates=rates,
            concurrency=_concurrency(concurrency),
        )
        self._handlers.register(registration)
        if rates is not None and rates.debounce is not None:
            self._scheduler.debounces[info.key] = rates
        if registration.concurrency is not None:
            rule = registration.concurrency
            self._scheduler.slot_limits[info.key] = (rule.job_type, rule.limit)

    def handler(
        self,
        job_type: type[J],
        *,
        timeout: Seconds | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: RateLimit | None = None,
        debounce: Debounce | None = None,
        cooldown: Cooldown | None = None,
        concurrency: ConcurrencyLimit[J] | None = None,
    ) -> _HandlerDecorator[J]:
        """Decorator form of `add_handler`."""
        _concurrency(concurrency)

        def register(handler: Any) -> None:
            self.add_handler(
                job_type,
                handler,
                timeout=timeout,
                retry=retry,
                rate_limit=rate_limit,
                debounce=debounce,
                cooldown=cooldown,
                concurrency=concurrency,
            )

        return _HandlerDecorator(register)

    @overload
    def task(
        self, function: Callable[Concatenate[JobContext, P], Awaitable[R]], /
    ) -> Task[P, R]: ...
    @overload
    def task(self, function: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...
    @overload
    def task(
        self,
        *,
        name: str | None = None,
        version: int = 1,
        retry: RetryPolicy | None = None,
        timeout: Seconds | None = None,
        rate_limit: RateLimit | None = None,
        debounce: Debounce | None = None,
        cooldown: Cooldown | None = None,
        concurrency: ConcurrencyLimit[Any] | None = None,
    ) -> TaskDecorator: ...
    def task(
        self,
        function: Callable[..., Awaitable[Any]] | None = None,
        *,
        name: str | None = None,
        version: int = 1,
        retry: RetryPolicy | None = None,
        timeout: Seconds | None = None,
        rate_limit: RateLimit | None = None,
        debounce: Debounce | None = None,
        cooldown: Cooldown | None = None,
        concurrency: ConcurrencyLimit[Any] | None = None,
    ) -> Task[Any, Any] | TaskDecorator:
        """Make an async function an on-demand job: ``@host.task`` or
        ``@host.task(name=..., version=..., retry=..., timeout=...)`` (and ``rate_limit=``,
        ``debounce=``, ``cooldown=``, ``concurrency=``, as `add_handler` takes them; the key
        of a `ConcurrencyLimit` gets the call's arguments as attributes, e.g.
        ``key=lambda call: call.customer_id``).

        ``await fn.enqueue(**arguments)`` and ``await fn.schedule(delay_or_at, **arguments)``
        queue a call, checked against the function's signature; the function's return value
        is the job's result. Parameters annotated ``JobContext`` (typed: the first one) or
        defaulting to ``Inject()`` are filled per run, not passed. ``name`` defaults to
        ``"module.qualname"``, so renaming or moving the function renames the job type:
        queued calls then wait for a worker that has the old name. Pass ``name=`` to keep it
        stable; bump ``version`` when a change of parameters would not fit queued calls.
        Raises `ConfigurationError` for a sync function, ``*args``/``**kwargs``, or an
        unannotated parameter.
        """

        # Checked before the payload type is registered, so a corrected retry can reuse it.
        _retry(retry, self.retry)
        if timeout is not None:
            seconds("timeout", timeout, positive=True)
        Rates.create("", _same, rate_limit=rate_limit, debounce=debounce, cooldown=cooldown)
        _concurrency(concurrency)

        def register(function: Callable[..., Awaitable[Any]]) -> Task[Any, Any]:
            self._check_not_running()
            task: Task[Any, Any] = Task(
                function, name=name, version=version, scheduler=lambda: self.scheduler
            )
            self.add_handler(
                task.payload_type,
                task.handler,
                timeout=timeout,
                retry=retry,
                rate_limit=rate_limit,
                debounce=debounce,
                cooldown=cooldown,
                concurrency=concurrency,
            )
            if task.decode_result is not None:
                key = job_type_info(task.payload_type).key
                self._scheduler.result_types[key] = task.decode_result
            return task

        return TaskDecorator(register) if function is None else register(function)

    # -- hosted jobs -------------------------------------------------------------------------

    def add_job(
        self,
        job: JobCode,
        *,
        name: str | None = None,
        interval: Seconds = timedelta(0),
        initial_delay: Seconds = timedelta(0),
        instance_count: int = 1,
        iteration_limit: int | None = None,
        timeout: Seconds | None = None,
        failure_backoff: Seconds = timedelta(seconds=1),
        max_failure_backoff: Seconds = timedelta(minutes=5),
        wait_for_startup_actions: bool = True,
    ) -> None:
        """Run ``job`` continuously in **every process** that runs the host.

        After each run the loop waits ``interval`` (zero: back to back); after a failure it
        waits at least a backoff that doubles from ``failure_backoff`` up to
        ``max_failure_backoff``. ``instance_count`` loops run concurrently; each stops after
        ``iteration_limit`` runs, if given. ``job`` is an async function or a class with
        ``async def run(self, ctx)``; each run gets a fresh scope.
        """
        self._check_not_running()
        if (
            isinstance(instance_count, bool)
            or not isinstance(instance_count, int)
            or instance_count < 1
        ):
            raise ConfigurationError(f"instance_count must be an int >= 1, got {instance_count!r}")
        if iteration_limit is not None and (
            isinstance(iteration_limit, bool)
            or not isinstance(iteration_limit, int)
            or iteration_limit < 1
        ):
            raise ConfigurationError(
                f"iteration_limit must be None or an int >= 1, got {iteration_limit!r}"
            )
        backoff = RetryPolicy(
            backoff=timedelta(seconds=seconds("failure_backoff", failure_backoff)),
            max_backoff=timedelta(seconds=seconds("max_failure_backoff", max_failure_backoff)),
        )
        self._hosted.add(
            HostedJob(
                name=name or job_name_of(job),
                kind=JobKind.CONTINUOUS,
                code=JobCallable.create(job),
                timeout_s=_optional_seconds("timeout", timeout),
                wait_for_startup=wait_for_startup_actions,
                interval_s=seconds("interval", interval),
                initial_delay_s=seconds("initial_delay", initial_delay),
                instance_count=instance_count,
                iteration_limit=iteration_limit,
                failure_backoff=backoff,
            )
        )

    def job(
        self,
        *,
        name: str | None = None,
        interval: Seconds = timedelta(0),
        initial_delay: Seconds = timedelta(0),
        instance_count: int = 1,
        iteration_limit: int | None = None,
        timeout: Seconds | None = None,
        failure_backoff: Seconds = timedelta(seconds=1),
        max_failure_backoff: Seconds = timedelta(minutes=5),
        wait_for_startup_actions: bool = True,
    ) -> Callable[[JC], JC]:
        """Decorator form of `add_job`."""

        def register(job: JC) -> JC:
            self.add_job(
                job,
                name=name,
                interval=interval,
                initial_delay=initial_delay,
                instance_count=instance_count,
                iteration_limit=iteration_limit,
                timeout=timeout,
                failure_backoff=failure_backoff,
                max_failure_backoff=max_failure_backoff,
                wait_for_startup_actions=wait_for_startup_actions,
            )
            return job

        return register

    def add_cron_job(
        self,
        job: JobCode,
        cron: str,
        *,
        name: str | None = None,
        timezone: str = "UTC",
        overlap: Overlap = "skip",
        timeout: Seconds | None = None,
        wait_for_startup_actions: bool = True,
    ) -> None:
        """Run ``job`` on a cron schedule in **every process** that runs the host.

        ``cron`` is a 5-field expression, a 6-field one with leading seconds, or an alias
        such as ``@hourly``, evaluated in ``timezone`` (an IANA name). With
        ``overlap="skip"`` a tick is skipped while the previous run still runs. For work
        that must run once per tick across all processes, use `add_distributed_cron_job`.
        """
        self._check_not_running()
        _choice("overlap", overlap, ("skip", "allow"))
        self._hosted.add(
            HostedJob(
                name=name or job_name_of(job),
                kind=JobKind.CRON,
                code=JobCallable.create(job),
                timeout_s=_optional_seconds("timeout", timeout),
                wait_for_startup=wait_for_startup_actions,
                schedule=CronSchedule.parse(cron, timezone),
                overlap=overlap,
            )
        )

    def cron(
        self,
        cron: str,
        *,
        name: str | None = None,
        timezone: str = "UTC",
        overlap: Overlap = "skip",
        timeout: Seconds | None = None,
        wait_for_startup_actions: bool = True,
    ) -> Callable[[JC], JC]:
        """Decorator form of `add_cron_job`."""

        def register(job: JC) -> JC:
            self.add_cron_job(
                job,
                cron,
                name=name,
                timezone=timezone,
                overlap=overlap,
                timeout=timeout,
                wait_for_startup_actions=wait_for_startup_actions,
            )
            return job

        return register

    def add_distributed_cron_job(
        self,
        job: JobCode,
        cron: str,
        *,
        name: str | None = None,
        timezone: str = "UTC",
        overlap: Overlap = "skip",
        misfire: Misfire = "skip",
        misfire_grace: Seconds = timedelta(minutes=5),
        timeout: Seconds | None = None,
        wait_for_startup_actions: bool = True,
    ) -> None:
        """Run ``job`` once per cron tick across **every process** of the cluster.

        Each tick is claimed atomically in Redis and run as a durable queued job by one
        worker, with the tick as ``ctx.scheduled_at``. ``overlap="skip"`` skips a tick while
        the previous run is alive. Ticks missed while every process was down are skipped,
        or with ``misfire="run_once"`` the latest one runs once if it is within
        ``misfire_grace``. The name must be stable across deploys (it keys the state).
        """
        self._check_not_running()
        _choice("overlap", overlap, ("skip", "allow"))
        _choice("misfire", misfire, ("skip", "run_once"))
        self._hosted.add(
            HostedJob(
                name=name or job_name_of(job),
                kind=JobKind.DISTRIBUTED_CRON,
                code=JobCallable.create(job),
                timeout_s=_optional_seconds("timeout", timeout),
                wait_for_startup=wait_for_startup_actions,
                schedule=CronSchedule.parse(cron, timezone),
                overlap=overlap,
                misfire=misfire,
                misfire_grace_s=seconds("misfire_grace", misfire_grace),
            )
        )

    def distributed_cron(
        self,
        cron: str,
        *,
        name: str | None = None,
        timezone: str = "UTC",
        overlap: Overlap = "skip",
        misfire: Misfire = "skip",
        misfire_grace: Seconds = timedelta(minutes=5),
        timeout: Seconds | None = None,
        wait_for_startup_actions: bool = True,
    ) -> Callable[[JC], JC]:
        """Decorator form of `add_distributed_cron_job`."""

        def register(job: JC) -> JC:
            self.add_distributed_cron_job(
                job,
                cron,
                name=name,
                timezone=timezone,
                overlap=overlap,
                misfire=misfire,
                misfire_grace=misfire_grace,
                timeout=timeout,
                wait_for_startup_actions=wait_for_startup_actions,
            )
            return job

        return register

    # -- startup actions ---------------------------------------------------------------------

    def add_startup_action(
        self,
        action: JobCode,
        *,
        priority: int = 0,
        name: str | None = None,
        timeout: Seconds | None = None,
    ) -> None:
        """Run ``action`` at startup, before gated jobs, the worker, and readiness.

        Actions run in ascending ``priority`` groups; actions with the same priority run
        concurrently, each in its own scope. ``action`` is an async function (services by
        ``Inject()``) or a class with ``async def run(self, ctx)``.
        """
        self._check_not_running()
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ConfigurationError(f"priority must be an int, got {priority!r}")
        self._startup.add(
            StartupAction(
                name=name or job_name_of(action),
                priority=priority,
                code=JobCallable.create(action, what="startup action"),
                timeout_s=_optional_seconds("timeout", timeout),
            )
        )

    def startup_action(
        self, priority: int = 0, *, name: str | None = None, timeout: Seconds | None = None
    ) -> Callable[[JC], JC]:
        """Decorator form of `add_startup_action`."""

        def register(action: JC) -> JC:
            self.add_startup_action(action, priority=priority, name=name, timeout=timeout)
            return action

        return register

    # -- running -----------------------------------------------------------------------------

    @property
    def scheduler(self) -> Scheduler:
        """Enqueue, schedule, delete and inspect on-demand jobs (while the host runs)."""
        return self._scheduler if self._eager is None else self._eager

    @property
    def running(self) -> bool:
        """True between the start and the end of `run`."""
        return self._running

    @property
    def startup_state(self) -> StartupState:
        """Where the startup actions are: pending, running, succeeded or failed."""
        return self._startup.state

    @property
    def failed_startup_action(self) -> tuple[str, str] | None:
        """``(name, error)`` of the startup action that failed, if one did."""
        if self._startup.state is StartupState.FAILED and self._startup.failed_action:
            return self._startup.failed_action, self._startup.error or ""
        return None

    @property
    def running_startup_actions(self) -> tuple[str, ...]:
        """Names of the startup actions running right now."""
        return tuple(sorted(self._startup.running_now))

    @property
    def ready(self) -> bool:
        """True while the host runs and every startup action has succeeded."""
        return self._running and self._startup.state is StartupState.SUCCEEDED

    @contextlib.asynccontextmanager
    async def _connected(self) -> AsyncIterator[Store]:
        embedded: EmbeddedRedis | None = None
        watcher: asyncio.Task[None] | None = None
        try:
            if self.redis_client is not None:
                client = await adopt_redis(self.redis_client, timeout_s=self.redis_timeout_s)
                url = f"{client.target} (the application's client)"
            else:
                given = resolve_redis_url(self.redis_url)
                if given is not None:
                    url = given
                else:
                    embedded = EmbeddedRedis(self.data_dir)
                    url = await asyncio.to_thread(embedded.start)
                    logger.info(
                        "%s the embedded server at %s (data in %s)",
                        "started" if embedded.launched else "joined",
                        url,
                        self.data_dir,
                    )
                    watcher = asyncio.get_running_loop().create_task(
                        _watch_embedded(embedded), name="hostedjobs:embedded"
                    )
                client = await open_redis(
                    url, timeout_s=self.redis_timeout_s, queue_name=self.queue_name
                )
            names = ShardLayout(self.queue_name, self.shards).names
            cluster = self.redis_client is None and is_cluster_url(url)
            timeout_s = self.redis_timeout_s
            # On a cluster each shard's client is pinned to the node owning its slot.
            clients = ShardClients(
                client,
                self.queue_name,
                (lambda name: open_redis(url, timeout_s=timeout_s, queue_name=name))
                if cluster
                else None,
            )
            try:
                stores = [
                    Store(
                        await clients.get(name),
                        name,
                        meta_ttl_s=int(self.keep_result_s) + 86_400,
                        hash_tag=self.shards > 1 or cluster,
                        replicas=1 if self.durability == "replicated" else 0,
                        replication_timeout_ms=int(timeout_s * 1000),
                    )
                    for name in names
                ]
                # Once per server (its settings), with every shard it holds (their keys' ACL).
                by_server: dict[int, list[Store]] = {}
                for shard in stores:
                    by_server.setdefault(id(shard.redis), []).append(shard)
                for first, *others in by_server.values():
                    await check_server(
                        first.redis,  # type: ignore[arg-type]
                        first.keys,
                        accept=self.accept_risks,
                        replicas=first.replicas,
                        shards=[other.keys for other in others],
                    )
                await settle_shard_count(
                    clients.get,
                    self.queue_name,
                    self.shards,
                    live_since_ms=int((time.time() - BEAT_TTL_S) * 1000),
                    hash_tag=cluster,
                )
            except BaseException:
                await clients.close()
                raise
            store = stores[0]
            self._url = url
            self._target = client.target
            self._scheduler._attach(store, stores)
            self._handlers.store = store if len(stores) == 1 else _ShardedProgress(self._scheduler)
            self._distributed.store = store  # distributed cron lives on shard 0
            self.schedules._attach(store)  # and so do runtime schedules
            if self.instrumentation is not None:
                for shard in stores:
                    self.instrumentation.attach(shard.keys.queue, shard)
            try:
                yield store
            finally:
                if self.instrumentation is not None:
                    for shard in stores:
                        self.instrumentation.attach(shard.keys.queue, None)
                self._scheduler._attach(None)
                self._handlers.store = None
                self._distributed.store = None
                self.schedules._attach(None)
                await clients.close()
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)

    @contextlib.asynccontextmanager
    async def _in_process(self) -> AsyncIterator[Store | None]:
        """Eager mode's stand-in for `_connected`: jobs go to the in-process scheduler."""
        assert self._eager is not None
        self._url = "in-process (eager mode, no Redis)"
        self._eager.running = True
        self._handlers.store = self._eager
        try:
            yield None
        finally:
            self._eager.running = self._eager.taking_jobs = False
            self._handlers.store = None

    def _enter_eager(self, clock: Clock) -> EagerScheduler:
        """Run jobs in this process from now on, with no Redis (see `hostedjobs.testing`)."""
        if self._running:
            raise ConfigurationError(
                "the host is already running: enter eager mode before it starts (before the "
                "app's lifespan, TestClient(app), or host.run())"
            )
        if self._eager is not None:
            raise ConfigurationError("this JobHost is already in eager mode")
        self._eager = EagerScheduler(
            self.queue_name, self._queued_function, self._handlers.unknown_message, clock
        )
        self._eager.keep_result_s = self.keep_result_s
        self._eager.result_types = self._scheduler.result_types  # the same dict: later tasks too
        self._eager.instrumentation = self.instrumentation
        self.clock = self._hosted.clock = clock
        return self._eager

    def _leave_eager(self, clock: Clock) -> None:
        """Back to Redis, with ``clock`` (the one before eager mode)."""
        if self._running:
            raise ConfigurationError("stop the host (leave its lifespan) before leaving eager mode")
        self._eager = None
        self.clock = self._hosted.clock = clock

    async def _run_due(self) -> int:
        """Eager mode: run the cron ticks and on-demand jobs due by the clock."""
        if self._eager is None or not self._running:
            raise ConfigurationError(
                "run_due needs a host running in eager mode: `with hostedjobs.testing.eager(host):`"
                " around the app's lifespan (TestClient(app)) or `async with host.run():`"
            )
        ran = await self._hosted.run_due(
            startup_succeeded=self.ready, before_tick=self._eager.run_due
        )
        return ran + await self._eager.run_due()

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[JobHost]:
        """Connect to Redis only: no startup actions, hosted jobs or worker.

        For tools and scripts that enqueue, inspect (`status`, `scheduler.get`) or trigger
        distributed jobs, like the ``hostedjobs status`` command.
        """
        if self._running:
            raise ConfigurationError("this JobHost is already running")
        self._running = True
        try:
            async with self._connected() if self._eager is None else self._in_process():
                yield self
        finally:
            self._running = False

    @contextlib.asynccontextmanager
    async def run(
        self, *, concurrency: int | None = None, burst: bool = False
    ) -> AsyncIterator[JobHost]:
        """Connect to Redis, run startup actions, hosted jobs and the worker; stop it all.

        On exit it stops scheduling and taking jobs, waits up to ``shutdown_grace`` for
        running ones, then cancels the rest (queued jobs go back to the queue).
        ``concurrency`` overrides the host's; ``burst`` makes the worker stop once the queue
        is empty (see `wait_until_idle`). In blocking startup mode a failed startup action
        raises `StartupActionError` here.
        """
        if self._running:
            raise ConfigurationError("this JobHost is already running")
        self._running = True
        self._grace = Grace()
        self._startup.reset()
        startup_task: asyncio.Task[bool] | None = None
        try:
            async with contextlib.AsyncExitStack() as stack:
                stack.enter_context(visible())
                store = await stack.enter_async_context(
                    self._connected() if self._eager is None else self._in_process()
                )
                try:
                    if store is not None:
                        await self._check_queue_is_ours()
                        if self.run_worker:
                            self._start_workers(concurrency or self.concurrency, burst)
                    self._hosted.start(loops=store is not None)
                    if store is not None:
                        self.schedules._start()
                    logger.info(
                        "hostedjobs started on %s, queue %r%s, %s: %d job type(s), "
                        "%d startup action(s), hosted jobs: %s",
                        "no Redis (eager mode)" if store is None else redacted(self._url),
                        self.queue_name,
                        f" in {self.shards} shards" if self.shards > 1 else "",
                        "running a worker" if self.run_worker else "no worker (enqueue only)",
                        len(self._handlers.registrations),
                        len(self._startup.actions),
                        ", ".join(sorted(self.hosted_jobs)) or "none",
                    )
                    startup_task = asyncio.get_running_loop().create_task(
                        self._run_startup_actions(), name="hostedjobs:startup"
                    )
                    # Eager mode: taking jobs before the test's body runs (see eager()).
                    blocking = self.startup_mode == "blocking" or (
                        self._eager is not None
                        and (self._eager.wait_for_startup or not self._startup.actions)
                    )
                    if blocking and not await asyncio.shield(startup_task):
                        name, error = self.failed_startup_action or ("?", "")
                        raise StartupActionError(f"startup action {name!r} failed: {error}")
                    yield self
                finally:
                    if startup_task is not None and not startup_task.done():
                        startup_task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await startup_task
                    forced = asyncio.get_running_loop().create_task(self._hurry_if_forced())
                    try:
                        await asyncio.gather(
                            self._hosted.stop(self.shutdown_grace_s, self._grace),
                            self._stop_worker(),
                            self.schedules._stop(),
                        )
                    finally:
                        forced.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await forced
                        await self.services.aclose()
        finally:
            self._running = False

    async def _run_startup_actions(self) -> bool:
        succeeded = await self._startup.run(self._runner)
        if succeeded:
            for supervisor in self._supervisors:
                supervisor.worker.resume_taking_jobs()
            if self._eager is not None:
                self._eager.taking_jobs = True
                await self._eager.run_due()
        elif self.startup_mode == "background" and self.on_startup_failure == "exit":
            _stop_process(str(self._startup.failed_action))
        return succeeded

    def _start_workers(self, concurrency: int, burst: bool) -> None:
        """One worker per shard, all sharing ``concurrency`` slots (`SlotBudget`)."""
        self._handlers.cron_names = sorted(self._distributed.jobs)
        stores = self._scheduler.stores
        slots = SlotBudget(concurrency) if len(stores) > 1 else None
        pauses = PausedJobs()
        self._pauses = (
            pauses,
            asyncio.get_running_loop().create_task(
                pauses.follow(stores[0]), name="hostedjobs:paused-jobs"
            ),
        )
        for index, store in enumerate(stores):
            worker = Worker(
                store,
                self._queued_function,
                unknown=self._handlers.unknown_message,
                roster=self._roster(),
                concurrency=concurrency,
                keep_result_s=self.keep_result_s,
                fallback_poll_s=self.fallback_poll_s,
                burst=burst,
                slots=slots,
                shard=index if len(stores) > 1 else None,
                shards=len(stores),
                pauses=pauses,
                rate_store=stores[0],
            )
            # Queue processing waits for the startup actions (see _run_startup_actions).
            supervisor = WorkerSupervisor(worker)
            self._supervisors.append(supervisor)
            supervisor.start()

    @property
    def _supervisor(self) -> WorkerSupervisor | None:
        """The worker of an unsharded queue (shard 0's worker of a sharded one)."""
        return self._supervisors[0] if self._supervisors else None

    def _roster(self) -> list[str]:
        """The queued function names this host runs: handlers and distributed cron jobs."""
        crons = (function_name(name) for name in self._distributed.jobs)
        return sorted([*self._handlers.registrations, *crons])

    async def _check_queue_is_ours(self) -> None:
        """Refuse to start on a queue that another application's workers use.

        Two applications on one queue take each other's jobs (parked, not run, but never
        right) and share distributed cron names; versions of one application (a rolling
        deploy) share most of their job types. So a live worker whose job types and
        distributed cron jobs have nothing in common with this host's is another application.
        """
        mine = set(self._roster())
        if not mine:
            return
        try:
            beats = await self.workers()
        except (RedisError, OSError) as exc:
            logger.debug("could not read the queue's workers: %r", exc)
            return
        for beat in beats:
            if beat.functions and not mine.intersection(beat.functions):
                raise ConfigurationError(
                    f"queue {self.queue_name!r} is already used by another application: worker "
                    f"{beat.worker_id} runs {', '.join(beat.functions)} and none of this "
                    f"application's {', '.join(sorted(mine))}. Give each application its own "
                    "queue: JobHost(queue_name=...)"
                )

    def _queued_function(self, name: str) -> QueuedFunction | None:
        """What runs the jobs queued under ``name``: a handler or a distributed job; None if
        this process has no code for it (the worker parks such jobs for one that has)."""
        function = self._handlers.function(name)
        if function is None:
            cron = job_name(name)
            function = None if cron is None else self._distributed.function(cron)
        return function

    async def _stop_worker(self) -> None:
        if self._pauses is not None:
            (pauses, following), self._pauses = self._pauses, None
            pauses.stop()
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        if self._supervisors:
            try:
                await asyncio.gather(
                    *(s.stop(self.shutdown_grace_s, self._grace) for s in self._supervisors)
                )
            finally:
                self._supervisors = []

    def hurry_shutdown(self) -> None:
        """Stop waiting for running jobs: those still going are cancelled now, and queued
        ones go back to the queue unchanged (a shutdown is not a try). Call it during a
        shutdown, as the ``hostedjobs worker`` command does on a second signal; before one,
        it makes the next shutdown cancel at once."""
        self._grace.hurry()

    async def _hurry_if_forced(self) -> None:
        """During a shutdown: the server's force quit (uvicorn: a second Ctrl-C) ends the
        grace, as a second signal does for ``hostedjobs worker``."""
        # Polled: the flag is the server's, set from its signal handler, with no event to wait on.
        while not server_forcing_exit():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        logger.warning("the server is forcing its exit: cancelling running jobs now")
        self.hurry_shutdown()

    async def wait_until_idle(self) -> None:
        """In burst mode, wait until the worker has emptied the queue (every shard of it)
        and stopped."""
        await asyncio.gather(*(supervisor.wait() for supervisor in self._supervisors))

    def lifespan(self, app: Any) -> contextlib.AbstractAsyncContextManager[None]:
        """A Starlette/FastAPI ``lifespan=``: runs the host for the app's lifetime.

        A FastAPI app's ``dependency_overrides`` apply to the jobs' ``Depends`` too, as to
        its routes (read at each run)."""
        overrides = getattr(app, "dependency_overrides", None)
        if isinstance(overrides, Mapping):
            self._runner.dependency_overrides = overrides
        return self._lifespan()

    @contextlib.asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        async with self.run():
            yield

    async def health_report(self) -> dict[str, Any]:
        """What a health endpoint shows: Redis, this process's worker and scheduler, startup.

        ``healthy`` is False when Redis does not answer (within `HEALTH_REDIS_TIMEOUT_S`,
        2 s, or ``redis_timeout`` if shorter), the worker loop (if this process runs one) is
        gone or stuck, the cron scheduler died, or a startup action failed.
        """
        report: dict[str, Any] = {"startup": str(self.startup_state)}
        redis_ok = False
        if self._running and self._eager is not None:
            redis_ok = True
            report["redis"] = {"ok": True, "eager": "jobs run in this process, without Redis"}
        elif self._running and self._scheduler._store is not None:
            started = time.perf_counter()
            wait_s = min(self.redis_timeout_s, HEALTH_REDIS_TIMEOUT_S)
            try:
                async with asyncio.timeout(wait_s):
                    clients = {id(s.redis): s for s in self._scheduler.stores}
                    await asyncio.gather(*(s.ping() for s in clients.values()))
            except TimeoutError:
                error = f"Redis at {self._target} did not answer within {wait_s:g}s"
                report["redis"] = {"ok": False, "error": error}
            except (RedisError, OSError) as exc:
                report["redis"] = {"ok": False, "error": str(exc)}
            else:
                redis_ok = True
                latency = round((time.perf_counter() - started) * 1000, 2)
                report["redis"] = {"ok": True, "latency_ms": latency}
        else:
            report["redis"] = {"ok": False, "error": "the host is not running"}
        worker_ok = True
        if self.run_worker and self._eager is None:
            supervisors = self._supervisors
            worker_ok = bool(supervisors) and all(s.alive for s in supervisors)
            report["worker"] = {"alive": worker_ok}
            if supervisors:
                report["worker"].update(
                    id=supervisors[0].worker.worker_id,
                    running=sum(len(s.worker.tasks) for s in supervisors),
                    restarts=sum(s.restarts for s in supervisors),
                )
                if len(supervisors) > 1:
                    report["worker"]["shards"] = [s.worker.worker_id for s in supervisors]
        scheduler = self._hosted.scheduler_alive
        if scheduler is not None:
            report["scheduler"] = {"alive": scheduler}
        report["healthy"] = (
            redis_ok and worker_ok and scheduler is not False and self.failed_startup_action is None
        )
        return report

    async def health(self, request: Request) -> Response:
        """A health endpoint: ``Route("/health", host.health)``; 200 or 503 with the report."""
        return health_response(await self.health_report())

    async def readiness(self, request: Request) -> Response:
        """A readiness endpoint: ``Route("/ready", host.readiness)``.

        200 once every startup action has succeeded; 503 with ``Retry-After`` while they run
        (naming them) and after a failure (naming the failed action and its error).
        """
        return readiness_response(self)

    # -- status and control ------------------------------------------------------------------

    def dashboard(
        self, *, auth: AuthCheck | None = None, title: str = "hostedjobs", refresh_s: float = 3
    ) -> ASGIApp:
        """A dashboard to mount: ``Mount("/jobs", app=host.dashboard(auth=is_admin))``.

        ``auth`` is called with each request (sync or async) and returns True if it may run
        hosted jobs now, delete queued jobs and retry failed ones; without it the dashboard
        is read-only. Reading is open to whoever reaches the mount: protect it as the rest of
        the app (e.g. ``Mount(..., middleware=[...])``). Pages refresh every ``refresh_s``
        seconds. Needs ``pip install 'hostedjobs[dashboard]'`` (Jinja2).
        """
        from .dashboard import create_dashboard

        return create_dashboard(self, auth=auth, title=title, refresh_s=refresh_s)

    async def status(self) -> list[HostedJobStatus]:
        """One entry per hosted job: schedule, next run, last run, running now, history.

        Distributed cron jobs are read from Redis, so every process reports the same.
        """
        return await self._hosted.status()

    async def workers(self, *, max_age: Seconds = BEAT_TTL_S) -> list[WorkerBeat]:
        """The worker processes of this queue (on every host) whose heartbeat is at most
        ``max_age`` old, newest first; each says its host, pid, running and finished counts.
        A sharded queue has one worker per shard in each process (its ``queue`` names the
        shard). Empty in eager mode."""
        if self._eager is not None:
            return []  # eager mode: jobs run in the caller, with no worker process
        max_age_s = seconds("max_age", max_age)
        stores = self._scheduler.stores
        if len(stores) == 1:
            return await read_beats(stores[0], max_age_s=max_age_s)
        shards = await asyncio.gather(*(read_beats(s, max_age_s=max_age_s) for s in stores))
        return sorted((b for beats in shards for b in beats), key=lambda b: -b.beat_at)

    async def worker_states(self) -> list[WorkerState]:
        """Every worker of this queue (each shard's, on every host) that beat in the last
        10 minutes and did not stop cleanly, newest first: alive, stale (two beats missed)
        or gone (its heartbeat expired), with its lease; what the dashboard's workers page
        shows. Reads indexes only (no keyspace scan). Empty in eager mode."""
        if self._eager is not None:
            return []
        return await read_worker_states(self._scheduler.stores)

    async def run_once(self, name: str) -> JobResult:
        """Run the continuous or per-process cron job ``name`` once in this process, now, and
        return its result (the ``hostedjobs run`` command). Raises `UnknownJobError` for an
        unknown name, `ConfigurationError` for a distributed cron job (`trigger` it)."""
        return await self._hosted.run_once(name)

    async def trigger(self, name: str) -> str:
        """Run the hosted job ``name`` now, outside its schedule; returns the run id.

        Continuous and cron jobs run in this process; a distributed cron job is queued for
        any worker (the id is its queued job's id). Raises `UnknownJobError` for an unknown
        name.
        """
        if not self._running:
            raise HostNotRunningError(
                "the host is not running: start it (lifespan or host.run()) before triggering jobs"
            )
        return await self._hosted.trigger(name)

    async def pause(self, name: str) -> bool:
        """Pause the hosted job ``name`` in every process, until `resume`; True if it was
        not paused already.

        Stored in Redis, so it outlives restarts, and every process obeys within a second:
        a continuous job starts no new run (a running one finishes); a cron job skips its
        ticks, and a distributed cron job's ticks are claimed but not run, the first skipped
        tick of each pause recorded as ``skipped`` with the message ``paused``. Run now
        (`trigger`) still runs it. Raises `UnknownJobError` for an unknown name,
        `HostNotRunningError` unless the host runs (or is `connected`).
        """
        self._check_controllable()
        return await self._hosted.set_paused(name, True)

    async def resume(self, name: str) -> bool:
        """Resume the hosted job ``name`` in every process; True if it was paused.

        Ticks skipped while paused are not made up (nor is a distributed job's missed tick
        caught up on later, whatever its ``misfire``): the next run is the next tick.
        Raises as `pause`.
        """
        self._check_controllable()
        return await self._hosted.set_paused(name, False)

    async def pause_jobs(self, job_type: str, *, where: Mapping[str, Any] | None = None) -> bool:
        """Pause the on-demand jobs of ``job_type`` in every worker process, until
        `resume_jobs`; with ``where``, only the jobs whose payload's top-level fields equal
        each of its values (``where={"customer_id": 42}``). True if that pause is new.

        Stored in Redis, so it outlives restarts; every worker obeys within a second (this
        process's at once). A paused job stays queued: a worker that claims it parks it with
        the reason ``paused`` (visible as queued, holding no slot) until the pause is lifted.
        A job that started before its worker heard of the pause runs to the end. Raises
        `UnknownJobTypeError` for a job type this application does not define,
        `ConfigurationError` for an empty ``where`` or one with a value that is not a str,
        int, float, bool or None, `HostNotRunningError` unless the host runs (or is
        `connected`).
        """
        checked = self._checked_pause(job_type, where)
        changed = await set_paused(self._scheduler.stores, job_type, checked, True)
        await self._follow_pauses_now()
        return changed

    async def resume_jobs(self, job_type: str, *, where: Mapping[str, Any] | None = None) -> bool:
        """Lift the pauses of ``job_type``: without ``where`` every one (whole and keyed),
        with it only the pause of that ``where``. The type's parked jobs go back to the
        queue at once, each once; those that another pause still holds are parked again.
        True if a pause ended. Raises as `pause_jobs`."""
        checked = self._checked_pause(job_type, where)
        changed = await set_paused(self._scheduler.stores, job_type, checked or None, False)
        await self._follow_pauses_now()
        return changed

    async def paused_jobs(self) -> list[JobPause]:
        """The pauses of on-demand job types in force, by job type. Raises
        `HostNotRunningError` unless the host runs (or is `connected`)."""
        self._check_controllable()
        return read_pauses(await self._scheduler.stores[0].job_pauses())

    async def _follow_pauses_now(self) -> None:
        """This process's workers obey at once (others at the notice, or within a second)."""
        if self._pauses is not None:
            self._pauses[0].apply(read_pauses(await self._scheduler.stores[0].job_pauses()))

    def _checked_pause(self, job_type: str, where: Mapping[str, Any] | None) -> dict[str, Any]:
        self._check_controllable()
        if self._eager is not None:
            raise ConfigurationError(
                "pausing job types needs Redis: eager mode (hostedjobs.testing.eager) has none"
            )
        known = {job_type_of(name) for name in self._handlers.registrations}
        if job_type not in known and not registered_versions(job_type):
            raise UnknownJobTypeError(
                f"no job type named {job_type!r} in this application; job types here: "
                f"{', '.join(sorted(known)) or 'none'}"
            )
        return checked_where(where)

    def lock(self, name: str, *, ttl: Seconds = 30, timeout: Seconds | None = None) -> Lock:
        """A lock named ``name``, held by one holder at a time across every process on this
        queue's Redis: ``async with host.lock("nightly-import", ttl=30, timeout=10) as lock:``.

        ``ttl`` (seconds or a `timedelta`): the lock lapses this long after its holder's
        last renewal, so a crashed holder blocks others at most that long; while held it is
        renewed every ``ttl / 3``. ``timeout``: how long ``async with`` waits (None: for
        ever) before raising `LockTimeoutError`; ``await lock.acquire(blocking=False)`` only
        tries. ``lock.token`` is its fencing token, ``lock.lost`` tells a lapse while held
        (`LockLostError` on leaving ``async with``). Semantics from Foundatio's
        ``ILockProvider``, redis-py's ``Lock`` and Kleppmann's fencing tokens: see
        `hostedjobs.locks`. Raises `ConfigurationError` for an empty name, a ttl <= 0 or a
        negative timeout, `HostNotRunningError` unless the host runs (or is `connected`).
        """
        store = self._distributed.store
        if store is None:
            if self._eager is not None:
                raise ConfigurationError(
                    "named locks need Redis: eager mode (hostedjobs.testing.eager) has none"
                )
            raise HostNotRunningError(
                "the host is not running: start it (lifespan, host.run() or host.connected()) "
                "before taking locks"
            )
        return Lock(store, name, ttl=ttl, timeout=timeout)

    def _check_controllable(self) -> None:
        if not self._running:
            raise HostNotRunningError(
                "the host is not running: start it (lifespan, host.run() or host.connected()) "
                "before pausing or resuming jobs"
            )

    @property
    def hosted_jobs(self) -> dict[str, HostedJob]:
        """The registered hosted jobs by name."""
        return dict(self._hosted.jobs)


def _same(value: object) -> object:
    return value
