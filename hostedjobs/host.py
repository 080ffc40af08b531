"""`JobHost`: the one object users configure, register jobs on, and run with their app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .connection import open_pool, redacted, resolve_redis_url
from .embedded import EmbeddedRedis
from .exceptions import ConfigurationError
from .handlers import HandlerRegistration, HandlerRunner
from .retries import RetryPolicy
from .scheduler import Scheduler
from .scope import ScopeProvider, Services
from .serialization import job_type_info
from .worker import HostedWorker, WorkerSupervisor

__all__ = ["JobHost"]

logger = logging.getLogger("hostedjobs")

H = TypeVar("H")
Seconds = timedelta | float | int

DATA_DIR_ENV = "HOSTEDJOBS_DATA_DIR"


def _seconds(name: str, value: Seconds, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, timedelta | float | int):
        raise ConfigurationError(
            f"{name} must be a timedelta or a number of seconds, got {value!r}"
        )
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0 or (positive and seconds == 0):
        raise ConfigurationError(
            f"{name} must be {'positive' if positive else '>= 0'}, got {value!r}"
        )
    return seconds


class JobHost:
    """Hosts background work for an ASGI app: handlers for on-demand jobs and their worker.

    Configure it once at import time, register handlers on it, and hand its lifespan to the
    app (``Starlette(lifespan=host.lifespan)``) or nest ``async with host.run():`` in your own.
    While it runs, ``host.scheduler`` enqueues jobs and, unless ``run_worker=False``, an arq
    worker inside the app's event loop runs them.

    Args:
        services: where handlers' dependencies come from; a fresh scope is opened per run.
        redis_url: ``redis://host:port/db``; default ``$HOSTEDJOBS_REDIS_URL``, else an embedded
            private ``redis-server`` (development and demos) with its data in ``data_dir``.
        queue_name: the arq queue; apps sharing a Redis need different names.
        run_worker: run jobs in this process; False for web processes that only enqueue.
        concurrency: how many jobs this process runs at once.
        job_timeout: default per-run time limit (per handler: ``timeout=``).
        retry: default retry policy for failed runs (per handler: ``retry=``).
        keep_result: how long finished jobs stay visible to ``scheduler.get``.
        shutdown_grace: how long shutdown waits for running jobs before cancelling them
            (cancelled jobs go back to the queue).
        fallback_poll: how often an idle worker looks at the queue without being woken,
            which only matters for jobs enqueued by plain arq clients.
        data_dir: the embedded Redis's folder (default ``$HOSTEDJOBS_DATA_DIR`` or
            ``.hostedjobs``).
    """

    def __init__(
        self,
        services: ScopeProvider | None = None,
        *,
        redis_url: str | None = None,
        queue_name: str = "hostedjobs",
        run_worker: bool = True,
        concurrency: int = 16,
        job_timeout: Seconds = timedelta(minutes=5),
        retry: RetryPolicy | None = None,
        keep_result: Seconds = timedelta(days=1),
        shutdown_grace: Seconds = timedelta(seconds=20),
        fallback_poll: Seconds = timedelta(seconds=1),
        data_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not queue_name or not isinstance(queue_name, str):
            raise ConfigurationError(f"queue_name must be a non-empty string, got {queue_name!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1, got {concurrency!r}")
        resolve_redis_url(redis_url)  # fail early on a malformed URL
        self.services: ScopeProvider = services if services is not None else Services()
        self.redis_url = redis_url
        self.queue_name = queue_name
        self.run_worker = run_worker
        self.concurrency = concurrency
        self.job_timeout_s = _seconds("job_timeout", job_timeout, positive=True)
        self.retry = retry or RetryPolicy()
        self.keep_result_s = _seconds("keep_result", keep_result)
        self.shutdown_grace_s = _seconds("shutdown_grace", shutdown_grace)
        self.fallback_poll_s = _seconds("fallback_poll", fallback_poll, positive=True)
        self.data_dir = Path(data_dir or os.environ.get(DATA_DIR_ENV) or ".hostedjobs")
        self._scheduler = Scheduler(queue_name)
        self._handlers = HandlerRunner(self.services, keep_result_s=self.keep_result_s)
        self._supervisor: WorkerSupervisor | None = None
        self._running = False

    # -- registration -------------------------------------------------------------------------

    def add_handler(
        self,
        job_type: type[Any],
        handler: Any,
        *,
        timeout: Seconds | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Run ``handler`` for every job of ``job_type`` (a ``@job_type`` dataclass).

        ``handler`` is an async function taking the job (by its annotation), optionally
        ``ctx: JobContext``, and services as ``Inject()`` defaults; or a class whose
        constructor parameters are resolved from the run's scope and whose
        ``async def handle(self, job, ctx)`` is called.
        """
        if self._running:
            raise ConfigurationError("register handlers before the host starts")
        registration = HandlerRegistration.create(
            job_type_info(job_type),
            handler,
            retry=retry or self.retry,
            timeout_s=self.job_timeout_s
            if timeout is None
            else _seconds("timeout", timeout, positive=True),
        )
        self._handlers.register(registration)

    def handler(
        self,
        job_type: type[Any],
        *,
        timeout: Seconds | None = None,
        retry: RetryPolicy | None = None,
    ) -> Callable[[H], H]:
        """Decorator form of `add_handler`."""

        def register(handler: H) -> H:
            self.add_handler(job_type, handler, timeout=timeout, retry=retry)
            return handler

        return register

    # -- running ------------------------------------------------------------------------------

    @property
    def scheduler(self) -> Scheduler:
        """Enqueue, schedule, delete and inspect on-demand jobs (while the host runs)."""
        return self._scheduler

    @property
    def running(self) -> bool:
        """True between the start and the end of `run`."""
        return self._running

    @contextlib.asynccontextmanager
    async def run(
        self, *, concurrency: int | None = None, burst: bool = False
    ) -> AsyncIterator[JobHost]:
        """Connect to Redis, start the worker (unless ``run_worker=False``), and stop it all.

        On exit the worker stops taking jobs, waits up to ``shutdown_grace`` for running ones,
        then cancels the rest, which go back to the queue for the next worker.
        ``concurrency`` overrides the host's; ``burst`` makes the worker stop once the queue
        is empty (see `wait_until_idle`).
        """
        if self._running:
            raise ConfigurationError("this JobHost is already running")
        self._running = True
        embedded: EmbeddedRedis | None = None
        try:
            url = resolve_redis_url(self.redis_url)
            if url is None:
                embedded = EmbeddedRedis(self.data_dir)
                url = await asyncio.to_thread(embedded.start)
                logger.info(
                    "using the embedded redis-server at %s (data in %s)", url, self.data_dir
                )
            pool = await open_pool(url, queue_name=self.queue_name)
            self._scheduler._attach(pool)
            self._handlers.pool = pool
            try:
                if self.run_worker:
                    self._start_worker(pool, concurrency or self.concurrency, burst)
                    logger.info(
                        "hostedjobs worker started on %s queue %r with %d handler(s)",
                        redacted(url),
                        self.queue_name,
                        len(self._handlers.registrations),
                    )
                yield self
            finally:
                try:
                    if self._supervisor is not None:
                        await self._supervisor.stop(self.shutdown_grace_s)
                finally:
                    self._supervisor = None
                    self._scheduler._attach(None)
                    self._handlers.pool = None
                    await pool.aclose(close_connection_pool=True)
                    await self.services.aclose()
        finally:
            self._running = False
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)

    def _start_worker(self, pool: Any, concurrency: int, burst: bool) -> None:
        worker = HostedWorker(
            self._handlers.arq_functions(),
            pool=pool,
            queue_name=self.queue_name,
            missing_function=self._handlers.missing_function,
            concurrency=concurrency,
            job_timeout_s=self.job_timeout_s,
            keep_result_s=self.keep_result_s,
            max_tries=self.retry.max_tries,
            fallback_poll_s=self.fallback_poll_s,
            burst=burst,
        )
        self._supervisor = WorkerSupervisor(worker)
        self._supervisor.start()

    async def wait_until_idle(self) -> None:
        """In burst mode, wait until the worker has emptied the queue and stopped."""
        if self._supervisor is not None:
            await self._supervisor.wait()

    def lifespan(self, app: Any) -> contextlib.AbstractAsyncContextManager[None]:
        """A Starlette/FastAPI ``lifespan=``: runs the host for the app's lifetime."""
        return self._lifespan()

    @contextlib.asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        async with self.run():
            yield

    async def readiness(self, request: Request) -> Response:
        """A readiness endpoint: ``Route("/ready", host.readiness)``.

        200 while the host runs; 503 with ``Retry-After`` otherwise.
        """
        if self._running and self._scheduler._pool is not None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "starting"}, status_code=503, headers={"Retry-After": "5"})
