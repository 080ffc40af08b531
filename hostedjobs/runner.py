"""The one run path: every run of every kind of job goes through `Runner.run`.

On-demand jobs, continuous and per-process cron jobs, distributed cron runs, startup actions
and manual triggers all get the same treatment here: a fresh scope, the run's own deadline
(told apart from a `TimeoutError` the job's code raises itself), the instrumentation's start
and end events, one log record per outcome, and one `RunReport` saying how it ended. What
happens next (commit to Redis, retry, backoff, readiness) is the caller's business.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .context import JobContext
from .exceptions import DependencyResolutionError, PayloadDecodeError, UnknownJobTypeError
from .instrumentation import Instrumentation
from .outcomes import JobKind, Outcome
from .results import JobResult
from .retries import RetryPolicy
from .runs import JobCallable
from .scope import ScopeProvider

__all__ = [
    "PERMANENT_ERRORS",
    "TRACEBACK_LIMIT",
    "QueuedFunction",
    "QueuedRun",
    "RunReport",
    "Runner",
    "error_text",
    "error_traceback",
]

logger = logging.getLogger("hostedjobs.run")

PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    PayloadDecodeError,
    DependencyResolutionError,
    UnknownJobTypeError,
)
"""Failures a retry cannot fix: the job fails at once, whatever its retry policy."""


def error_text(error: BaseException) -> str:
    """``"ExcType: message"``, how an error is shown and stored."""
    return f"{type(error).__name__}: {error}"


TRACEBACK_LIMIT = 8192
"""The most characters of a traceback stored with a failed try: its end (the innermost
frames and the error) is kept, and a first line says how much was cut."""


def error_traceback(error: BaseException | None, limit: int = TRACEBACK_LIMIT) -> str | None:
    """The formatted traceback of ``error`` (chained causes too, no local variables), at
    most ``limit`` characters; None if there is no error. Only what the exception itself
    holds (its message and the code's lines) is written down: nothing is added that could
    hold a secret the message did not already show."""
    if error is None:
        return None
    text = "".join(traceback.format_exception(error)).rstrip("\n")
    if len(text) <= limit:
        return text
    tail = text[len(text) - limit :]
    # Start at a frame (or at least a line), not inside one.
    frame = tail.find("\n  File ")
    tail = tail[frame + 1 :] if frame >= 0 else tail[tail.find("\n") + 1 :]
    return f"[{len(text) - len(tail)} characters of the traceback cut; its end follows]\n{tail}"


@dataclass(frozen=True, slots=True)
class RunReport:
    """How one run ended."""

    outcome: Outcome
    """Succeeded, failed, cancelled, or retried (failed with tries left)."""
    value: Any = None
    """What the code returned, unless it returned a `JobResult` or None."""
    message: str | None = None
    """The `JobResult`'s message, or the error's ``"ExcType: message"``."""
    error: BaseException | None = None
    retry_in_s: float | None = None
    """For a retried run: how long until the next try."""
    duration_s: float = 0.0
    counted: bool = True
    """For a retried run: False if it never started (it waits its turn), so no try is used."""

    @property
    def result(self) -> JobResult:
        """The report as a `JobResult` (a retried run counts as failed)."""
        if self.outcome is Outcome.SUCCEEDED:
            shown = self.message if self.message is not None or self.value is None else None
            return JobResult.success(
                str(self.value) if shown is None and self.value is not None else shown
            )
        if self.outcome is Outcome.CANCELLED:
            return JobResult.cancelled(self.message)
        return JobResult(Outcome.FAILED, self.message, self.error)


@dataclass(frozen=True, slots=True)
class QueuedRun:
    """One try of a queued job, as a worker hands it to the job's `QueuedFunction`."""

    job_id: str
    function: str
    """The name it was queued under (``"type@version"`` for on-demand jobs)."""
    args: list[Any]
    kwargs: dict[str, Any]
    attempt: int
    """1 for the first try (shutdowns do not count)."""
    due_ms: int
    enqueued_ms: int
    interrupted: Callable[[], Outcome]
    """What a cancellation of this run means: cancelled (asked for), or given back (a
    shutdown: the job will run again)."""
    decoded: Any = None
    """The payload, if the worker decoded it already (for a concurrency key), else None."""


class QueuedFunction(Protocol):
    """What a worker runs for the jobs queued under one name."""

    @property
    def max_tries(self) -> int:
        """A job whose tries (shutdowns not counted) exceed this fails without running."""

    async def run(self, run: QueuedRun) -> RunReport:
        """Run one try; never raises, except `asyncio.CancelledError`."""


def _interrupted() -> Outcome:
    return Outcome.CANCELLED


class Runner:
    """Runs jobs' code with a scope per run; shared by every part of the engine."""

    def __init__(self, provider: ScopeProvider) -> None:
        self.provider = provider
        self.instrumentation: Instrumentation | None = None
        self.dependency_overrides: Mapping[Any, Callable[..., Any]] | None = None
        """FastAPI's ``app.dependency_overrides`` (read at each run, so a test may change it)."""

    async def run(
        self,
        code: JobCallable,
        ctx: JobContext,
        *,
        kind: JobKind,
        timeout_s: float | None,
        provide: Callable[[], Mapping[type[Any], object]] | None = None,
        retry: RetryPolicy | None = None,
        traceparent: str | None = None,
        manual: bool = False,
        interrupted: Callable[[], Outcome] = _interrupted,
    ) -> RunReport:
        """Run ``code`` once in a fresh scope and report how it ended; never raises, except
        `asyncio.CancelledError` once the scope has closed with it.

        ``provide`` builds the values the run may ask for by type besides ``ctx`` (an
        on-demand job's payload); its errors fail the run. With ``retry``, a failure that a
        retry could fix and that leaves tries (``ctx.attempt < retry.max_tries``) is reported
        `Outcome.RETRIED` with its delay. ``interrupted`` says what a cancellation means (by
        default `Outcome.CANCELLED`; a worker's shutdown gives the job back: `RETRIED`).
        """
        observer = (
            None
            if self.instrumentation is None
            else self.instrumentation.run_started(kind, ctx, traceparent, manual=manual)
        )
        started = time.perf_counter()
        deadline = asyncio.timeout(timeout_s)
        try:
            provided: dict[type[Any], object] = {JobContext: ctx}
            if provide is not None:
                provided.update(provide())
            # The deadline sits inside the scope (and the Depends values, closed before the
            # scope), so cleanup sees a TimeoutError rather than the CancelledError the
            # deadline uses internally.
            async with (
                self.provider.scope(provided) as resolver,
                code.dependencies(self.dependency_overrides) as dependencies,
                deadline,
            ):
                value = await code.call(resolver, provided, dependencies)
        except asyncio.CancelledError:
            outcome = interrupted()
            if observer is not None:
                observer.end(outcome)
            ctx.logger.info(
                "interrupted (%s)",
                "it will run again" if outcome is Outcome.RETRIED else "cancelled",
                extra=_fields(outcome, started),
            )
            raise
        except Exception as exc:
            error: BaseException = exc
            if timeout_s is not None and deadline.expired() and isinstance(exc, TimeoutError):
                error = TimeoutError(f"the run exceeded its timeout of {timeout_s:g}s")
            report = self._failed(ctx, error, started, retry)
        else:
            if timeout_s is not None and deadline.expired():
                # The code caught the cancellation its deadline sent, and went on: still a
                # run over its time limit.
                error = TimeoutError(f"the run exceeded its timeout of {timeout_s:g}s")
                report = self._failed(ctx, error, started, retry)
            else:
                report = self._returned(ctx, value, started)
        if observer is not None:
            observer.end(report.outcome, report.error)
        return report

    def _returned(self, ctx: JobContext, value: Any, started: float) -> RunReport:
        duration_s = time.perf_counter() - started
        if isinstance(value, JobResult):
            report = RunReport(value.outcome, None, value.message, value.error, None, duration_s)
            if value.outcome is Outcome.FAILED:
                ctx.logger.warning(
                    "failed: %s", value.message, extra=_fields(Outcome.FAILED, started)
                )
                return report
        else:
            report = RunReport(Outcome.SUCCEEDED, value, None, None, None, duration_s)
        if logger.isEnabledFor(logging.DEBUG):
            ctx.logger.debug(
                "%s in %.3fs", report.outcome, duration_s, extra=_fields(report.outcome, started)
            )
        return report

    def _failed(
        self, ctx: JobContext, error: BaseException, started: float, retry: RetryPolicy | None
    ) -> RunReport:
        duration_s = time.perf_counter() - started
        message = error_text(error)
        if (
            retry is not None
            and ctx.attempt < retry.max_tries
            and not isinstance(error, PERMANENT_ERRORS)
        ):
            delay = retry.delay(ctx.attempt)
            ctx.logger.warning(
                "try %d of %d failed (%s); retrying in %.2fs",
                ctx.attempt,
                retry.max_tries,
                message,
                delay,
                extra={
                    **_fields(Outcome.RETRIED, started),
                    "error_type": type(error).__name__,
                    "retry_in_s": delay,
                },
            )
            return RunReport(Outcome.RETRIED, None, message, error, delay, duration_s)
        ctx.logger.error(
            "failed: %s", message, exc_info=error, extra=_fields(Outcome.FAILED, started)
        )
        return RunReport(Outcome.FAILED, None, message, error, None, duration_s)


def _fields(outcome: Outcome, started: float) -> dict[str, Any]:
    """The structured fields of a record about a run (see docs/observability.md)."""
    return {"outcome": outcome.value, "duration_s": time.perf_counter() - started}
