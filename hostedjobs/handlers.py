"""On-demand jobs' handlers: what a worker runs for each job type it knows.

Each registered job type is queued under the name ``"<type>@<version>"``; a worker asks
`Handlers.function` for that name and gets a `QueuedFunction` that decodes the payload and
runs the handler through the one run path (`Runner`), or None for a name it has no handler
for (the worker parks such jobs for a worker that has one; `Handlers.unknown_message` says
what to deploy).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Concatenate, Protocol, TypeAlias, TypeVar

from redis.exceptions import RedisError

from .concurrency import ConcurrencyLimit, SlotRule
from .context import JobContext
from .exceptions import ConfigurationError
from .outcomes import JobKind
from .rates import Rates
from .retries import RetryPolicy
from .runner import QueuedFunction, QueuedRun, Runner, RunReport
from .runs import JobCallable
from .serialization import JobTypeInfo, decode_payload, registered_versions

__all__ = [
    "Handler",
    "HandlerClass",
    "HandlerFunction",
    "HandlerRegistration",
    "Handlers",
    "ProgressStore",
]

logger = logging.getLogger("hostedjobs.handlers")

J = TypeVar("J")
J_contra = TypeVar("J_contra", contravariant=True)


class HandlerClass(Protocol[J_contra]):
    """For type checkers: a handler class, whose ``async def handle`` takes the job first
    (then, in any order, ``ctx: JobContext`` and ``Inject()`` services)."""

    def handle(self, job: J_contra, /, *args: Any, **kwargs: Any) -> Awaitable[object]:
        """Run one job."""
        ...


HandlerFunction: TypeAlias = Callable[Concatenate[J, ...], Awaitable[object]]
"""For type checkers: an async handler function taking a job of type ``J`` first."""

Handler: TypeAlias = HandlerFunction[J] | type[HandlerClass[J]]
"""What `JobHost.add_handler` takes for a job type ``J``: an async function whose first
parameter accepts a ``J``, or a class whose ``async def handle`` does. Type checkers reject a
sync one, and one for another job type; at run time the job parameter is found by its
annotation wherever it is, but only the job-first form is typed."""


class ProgressStore(Protocol):
    """Where runs' progress goes: the host's `Store`, or an in-process scheduler's jobs."""

    async def progress(self, job_id: str, values: dict[str, str]) -> None:
        """Store a running job's progress fields (``progress``, ``progress_message``, ``at``)."""


@dataclass(frozen=True, slots=True)
class HandlerRegistration:
    """A job type, the handler that runs it, and its retry and timeout settings."""

    job: JobTypeInfo
    handler: JobCallable
    retry: RetryPolicy
    timeout_s: float
    rates: Rates | None = None
    """Its rate limit, debounce and cooldown, if any (`hostedjobs.rates`)."""
    concurrency: SlotRule | None = None

    @classmethod
    def create(
        cls,
        job: JobTypeInfo,
        handler: Any,
        *,
        retry: RetryPolicy,
        timeout_s: float,
        rates: Rates | None = None,
        concurrency: ConcurrencyLimit[Any] | None = None,
    ) -> HandlerRegistration:
        """Analyse ``handler`` once: an async function, or a class with ``async def handle``."""
        callable_ = JobCallable.create(
            handler, method="handle", provided_types=(JobContext, job.cls), what="handler"
        )
        rule = None
        if concurrency is not None:
            rule = SlotRule(concurrency, job.name, functools.partial(decode_payload, job.cls))
        return cls(job, callable_, retry, timeout_s, rates, rule)


@dataclass(frozen=True, slots=True)
class _HandlerFunction:
    handlers: Handlers
    registration: HandlerRegistration

    @property
    def max_tries(self) -> int:
        return self.registration.retry.max_tries

    @property
    def rates(self) -> Rates | None:
        return self.registration.rates

    @property
    def concurrency(self) -> SlotRule | None:
        return self.registration.concurrency

    async def run(self, run: QueuedRun) -> RunReport:
        registration = self.registration
        job_cls = registration.job.cls
        ctx = self.handlers.context(registration.job.name, run)
        payload = run.args[0] if run.args else None

        def provide() -> dict[type[Any], object]:
            if run.decoded is not None:
                return {job_cls: run.decoded}
            return {job_cls: decode_payload(job_cls, payload)}

        return await self.handlers.runner.run(
            registration.handler,
            ctx,
            kind=JobKind.ON_DEMAND,
            timeout_s=registration.timeout_s,
            provide=provide,
            retry=registration.retry,
            traceparent=run.kwargs.get("traceparent"),
            interrupted=run.interrupted,
        )


class Handlers:
    """The handlers of one host, by job type and version."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.store: ProgressStore | None = None
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

    def function(self, name: str) -> QueuedFunction | None:
        """What runs jobs queued under ``name``, if a handler is registered for it."""
        registration = self._registrations.get(name)
        return None if registration is None else _HandlerFunction(self, registration)

    def unknown_message(self, name: str) -> str:
        """Why this process cannot run jobs queued under ``name``, and what to deploy."""
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

    def context(self, job_name: str, run: QueuedRun) -> JobContext:
        """The `JobContext` of one try of a queued job, reporting progress to the store."""
        job_id = run.job_id

        async def progress(percent: float, message: str | None) -> None:
            assert self.store is not None, "the host is not connected"
            try:
                await self.store.progress(
                    job_id,
                    {
                        "progress": repr(percent),
                        "progress_message": message or "",
                        "at": repr(time.time()),
                    },
                )
            except (RedisError, OSError) as exc:
                # Progress is best effort: a Redis blip must not fail the work it describes.
                logger.warning("job %s: could not store its progress: %r", job_id, exc)

        return JobContext(
            job_name=job_name,
            run_id=job_id,
            attempt=run.attempt,
            scheduled_at=datetime.fromtimestamp(run.due_ms / 1000, tz=UTC),
            started_at=datetime.now(UTC),
            _progress=progress,
        )


def _name(handler: Any) -> str:
    return str(getattr(handler, "__qualname__", handler))
