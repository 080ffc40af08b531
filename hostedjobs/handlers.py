"""Running on-demand jobs: decode the payload, open a scope, call the handler, decide retries.

Each registered job type becomes one arq function named ``"<type>@<version>"``; its body is
`HandlerRunner.run`. Unknown names get a function that fails the job with a clear message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis
from arq.worker import Function, Retry

from . import keys
from .context import JobContext
from .exceptions import (
    ConfigurationError,
    DependencyResolutionError,
    JobFailedError,
    PayloadDecodeError,
    UnknownJobTypeError,
)
from .instrumentation import Instrumentation, RunKind, RunOutcome
from .results import JobResult, Outcome
from .retries import RetryPolicy
from .runs import JobCallable
from .scheduler import stored_outcome
from .scope import ScopeProvider
from .serialization import JobTypeInfo, decode_payload, registered_versions

__all__ = ["HandlerRegistration", "HandlerRunner"]

logger = logging.getLogger("hostedjobs.handlers")

_PERMANENT = (PayloadDecodeError, DependencyResolutionError, UnknownJobTypeError, JobFailedError)
"""Failures a retry cannot fix."""

_TIMEOUT_MARGIN_S = 5.0
"""arq's own timeout is a backstop behind ours, which the scope and retry logic can see."""


@dataclass(frozen=True, slots=True)
class HandlerRegistration:
    """A job type, the handler that runs it, and its retry and timeout settings."""

    job: JobTypeInfo
    handler: JobCallable
    retry: RetryPolicy
    timeout_s: float

    @classmethod
    def create(
        cls, job: JobTypeInfo, handler: Any, *, retry: RetryPolicy, timeout_s: float
    ) -> HandlerRegistration:
        """Analyse ``handler`` once: an async function, or a class with ``async def handle``."""
        callable_ = JobCallable.create(
            handler, method="handle", provided_types=(JobContext, job.cls), what="handler"
        )
        return cls(job, callable_, retry, timeout_s)


class HandlerRunner:
    """Turns handler registrations into arq functions and runs them with a scope per run."""

    def __init__(self, provider: ScopeProvider, *, keep_result_s: float) -> None:
        self.provider = provider
        self.keep_result_s = keep_result_s
        self.pool: ArqRedis | None = None
        self.instrumentation: Instrumentation | None = None
        self._registrations: dict[str, HandlerRegistration] = {}
        self.cron_names: list[str] = []
        """Distributed cron jobs of this process, for the unknown-job message."""

    def register(self, registration: HandlerRegistration) -> None:
        """Add a handler; one per job type and version."""
        key = registration.job.key
        if key in self._registrations:
            existing = self._registrations[key].handler.target
            raise ConfigurationError(
                f"job type {key!r} already has a handler ({_name(existing)}); "
                f"register one handler per job type and version"
            )
        self._registrations[key] = registration

    @property
    def registrations(self) -> dict[str, HandlerRegistration]:
        """Registered handlers by wire name (``"type@version"``)."""
        return dict(self._registrations)

    def arq_functions(self) -> list[Function]:
        """One arq function per registered job type."""
        return [self._function(r) for r in self._registrations.values()]

    def _function(self, registration: HandlerRegistration) -> Function:
        async def run(
            ctx: dict[str, Any],
            payload: Any = None,
            *_: Any,
            traceparent: str | None = None,
            **__: Any,
        ) -> Any:
            return await self.run(registration, ctx, payload, traceparent)

        return Function(
            name=registration.job.key,
            coroutine=run,
            timeout_s=registration.timeout_s + _TIMEOUT_MARGIN_S,
            keep_result_s=None,
            keep_result_forever=None,
            max_tries=registration.retry.max_tries,
        )

    def missing_function(self, name: str) -> Function:
        """An arq function that fails a job whose type this process has no handler for."""
        message = self._unknown_type_message(name)

        async def fail(
            ctx: dict[str, Any], *_: Any, traceparent: str | None = None, **__: Any
        ) -> None:
            error = UnknownJobTypeError(message)
            if self.instrumentation is not None:
                run = self._context(name, ctx)
                self.instrumentation.run_started(RunKind.ON_DEMAND, run, traceparent).end(
                    RunOutcome.FAILED, error
                )
            raise error

        return Function(name, fail, None, None, None, 1)

    def _unknown_type_message(self, name: str) -> str:
        known = ", ".join(sorted(self._registrations)) or "none"
        if name.startswith("hostedjobs.cron:"):
            return (
                f"this process has no distributed cron job named {name.split(':', 1)[1]!r} "
                f"(was it renamed or removed?); distributed cron jobs here: "
                f"{', '.join(self.cron_names) or 'none'}. During a rolling deploy, start the "
                "workers that have it before removing the old ones"
            )
        type_name, _, version = name.rpartition("@")
        if not type_name or not version.isdigit():
            return (
                f"the queue holds a job for {name!r}, which is not a hostedjobs job type "
                f"(handlers here: {known}); was it enqueued by another application on the "
                "same queue_name?"
            )
        versions = registered_versions(type_name)
        hint = f" (job type versions defined here: {versions})" if versions else ""
        return (
            f"no handler for job type {type_name!r} version {version} in this process{hint}; "
            f"handlers here: {known}. Register one with @host.handler({type_name}) in every "
            "worker process, and deploy workers before the code that enqueues a new version"
        )

    def _context(self, job_name: str, arq_ctx: dict[str, Any]) -> JobContext:
        job_id: str = arq_ctx["job_id"]
        return JobContext(
            job_name=job_name,
            run_id=job_id,
            attempt=arq_ctx["job_try"],
            scheduled_at=datetime.fromtimestamp(arq_ctx["score"] / 1000, tz=UTC),
            started_at=datetime.now(UTC),
            _progress=lambda percent, message: self._store_progress(job_id, percent, message),
        )

    async def run(
        self,
        registration: HandlerRegistration,
        arq_ctx: dict[str, Any],
        payload: Any,
        traceparent: str | None = None,
    ) -> Any:
        """One try of one job: the body of the job type's arq function."""
        ctx = self._context(registration.job.name, arq_ctx)
        observer = (
            None
            if self.instrumentation is None
            else self.instrumentation.run_started(RunKind.ON_DEMAND, ctx, traceparent)
        )
        try:
            job_cls = registration.job.cls
            job = decode_payload(job_cls, payload)
            provided: dict[type[Any], object] = {JobContext: ctx, job_cls: job}
            try:
                # The timeout sits inside the scope so that cleanup sees a TimeoutError, not
                # the CancelledError the timeout uses internally.
                async with self.provider.scope(provided) as resolver:
                    async with asyncio.timeout(registration.timeout_s):
                        outcome = await registration.handler.call(resolver, provided)
            except TimeoutError:
                timed_out = TimeoutError(
                    f"the run exceeded its timeout of {registration.timeout_s:g}s"
                )
                raise self._retry_or_fail(registration, ctx, timed_out) from None
            except _PERMANENT:
                raise
            except Exception as exc:
                error = self._retry_or_fail(registration, ctx, exc)
                if error is exc:
                    raise
                raise error from exc
            stored = _stored(outcome)
        except BaseException as exc:
            if observer is not None:
                observer.end(*_raised(exc))
            raise
        if observer is not None:
            cancelled = isinstance(outcome, JobResult) and outcome.outcome is Outcome.CANCELLED
            observer.end(RunOutcome.CANCELLED if cancelled else RunOutcome.SUCCEEDED)
        return stored

    def _retry_or_fail(
        self,
        registration: HandlerRegistration,
        ctx: JobContext,
        error: Exception,
    ) -> Exception:
        policy = registration.retry
        if ctx.attempt >= policy.max_tries:
            # The worker logs the failure, with its traceback.
            return error
        delay = policy.delay(ctx.attempt)
        ctx.logger.warning(
            "try %d of %d failed (%s: %s); retrying in %.2fs",
            ctx.attempt,
            policy.max_tries,
            type(error).__name__,
            error,
            delay,
            extra={
                "outcome": RunOutcome.RETRIED.value,
                "duration_s": (datetime.now(UTC) - ctx.started_at).total_seconds(),
                "error_type": type(error).__name__,
                "retry_in_s": delay,
            },
        )
        self._remember_error(ctx.run_id, error)
        return _RetryAfter(delay, error)

    def _remember_error(self, job_id: str, error: Exception) -> None:
        if self.pool is None:  # pragma: no cover - the worker always sets it
            return
        task = asyncio.get_running_loop().create_task(
            self._write_meta(job_id, {"error": f"{type(error).__name__}: {error}"})
        )
        task.add_done_callback(_log_write_failure)

    async def _store_progress(self, job_id: str, percent: float, message: str | None) -> None:
        await self._write_meta(
            job_id,
            {"progress": repr(percent), "progress_message": message or "", "at": repr(time.time())},
            event="progress",
        )

    async def _write_meta(
        self, job_id: str, values: dict[str, str], *, event: str | None = None
    ) -> None:
        assert self.pool is not None
        key = keys.meta_key(job_id)
        async with self.pool.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=values)
            pipe.expire(key, int(self.keep_result_s) + 86_400)
            if event is not None:
                pipe.publish(keys.events_channel(job_id), event)
            await pipe.execute()


class _RetryAfter(Retry):
    """arq's `Retry`, remembering the error that failed the try."""

    def __init__(self, defer_s: float, error: Exception) -> None:
        super().__init__(defer=defer_s)
        self.error = error


def _raised(exc: BaseException) -> tuple[RunOutcome, BaseException | None]:
    """How a try that raised ``exc`` ended, and the error to report."""
    if isinstance(exc, _RetryAfter):
        return RunOutcome.RETRIED, exc.error
    if isinstance(exc, asyncio.CancelledError):
        # A shutdown: the worker puts the job back in the queue.
        return RunOutcome.RETRIED, None
    return RunOutcome.FAILED, exc


def _stored(outcome: Any) -> Any:
    if isinstance(outcome, JobResult):
        if outcome.outcome is Outcome.FAILED:
            raise JobFailedError(outcome.message or "the job reported failure")
        return stored_outcome(None, outcome.message, cancelled=outcome.outcome is Outcome.CANCELLED)
    return outcome


def _log_write_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.warning("could not store a retried job's last error: %r", exc)


def _name(handler: Any) -> str:
    return str(getattr(handler, "__qualname__", handler))
