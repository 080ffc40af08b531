"""OpenTelemetry spans for enqueues and runs, one trace from request to job (the ``otel`` extra).

Enable them by handing an `OpenTelemetryTracing` to the host::

    host = JobHost(instrumentation=[OpenTelemetryTracing()])

Each enqueue gets a producer span, and its W3C ``traceparent`` is stored with the job (as
the call's keyword argument in arq's job record); the run, in whichever worker takes it,
gets a consumer span that is its child, current while the job's code runs, so spans made by
the job (database, HTTP clients) join the same trace as the request that enqueued it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import Token

from . import __version__
from .context import JobContext
from .instrumentation import Instrumentation, RunKind, RunObserver, RunOutcome

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - the dev extra installs it
    raise ImportError(
        "hostedjobs.tracing needs opentelemetry-api: pip install 'hostedjobs[otel]'"
    ) from exc

__all__ = ["OpenTelemetryTracing"]

_QUEUED_KINDS = (RunKind.ON_DEMAND, RunKind.DISTRIBUTED_CRON)
_PROPAGATOR = TraceContextTextMapPropagator()


class OpenTelemetryTracing(Instrumentation):
    """A producer span per enqueue, and a span per run that continues the enqueue's trace.

    Spans come from ``tracer_provider`` (default: the global one, set by your OpenTelemetry
    SDK set-up). Their attributes: ``hostedjobs.job.name``, ``hostedjobs.job.kind``,
    ``hostedjobs.job.id`` (the run id), ``hostedjobs.job.attempt``, and, once a run ended,
    ``hostedjobs.job.outcome``; an enqueue of several jobs has ``hostedjobs.job.count``.
    Failures are recorded as exceptions with an error status.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("hostedjobs", __version__, tracer_provider)

    @contextlib.contextmanager
    def _enqueue(
        self, job_type: str | None, job_id: str | None, count: int
    ) -> Iterator[str | None]:
        attributes: dict[str, str | int] = {"hostedjobs.job.count": count}
        if job_type is not None:
            attributes["hostedjobs.job.name"] = job_type
        if job_id is not None:
            attributes["hostedjobs.job.id"] = job_id
        name = f"enqueue {job_type}" if job_type is not None else "enqueue_many"
        with self._tracer.start_as_current_span(
            name, kind=trace.SpanKind.PRODUCER, attributes=attributes
        ):
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier)
            # Nothing is injected when the span is not recorded (no SDK, or not sampled).
            yield carrier.get("traceparent")

    def enqueue(
        self, job_type: str | None, job_id: str | None, count: int = 1
    ) -> contextlib.AbstractContextManager[str | None]:
        """A producer span around storing the jobs; yields its ``traceparent``."""
        return self._enqueue(job_type, job_id, count)

    def run_started(
        self, kind: RunKind, ctx: JobContext, traceparent: str | None, *, manual: bool = False
    ) -> RunObserver:
        """Start the run's span (a child of its enqueue's) and make it current."""
        parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
        span = self._tracer.start_span(
            f"run {ctx.job_name}",
            context=parent,
            kind=trace.SpanKind.CONSUMER if kind in _QUEUED_KINDS else trace.SpanKind.INTERNAL,
            attributes={
                "hostedjobs.job.name": ctx.job_name,
                "hostedjobs.job.kind": kind.value,
                "hostedjobs.job.id": ctx.run_id,
                "hostedjobs.job.attempt": ctx.attempt,
                "hostedjobs.job.manual": manual,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        return _RunSpan(span, token)


class _RunSpan(RunObserver):
    __slots__ = ("_span", "_token")

    def __init__(self, span: trace.Span, token: Token[otel_context.Context]) -> None:
        self._span = span
        self._token = token

    def end(self, outcome: RunOutcome, error: BaseException | None = None) -> None:
        span = self._span
        span.set_attribute("hostedjobs.job.outcome", outcome.value)
        if error is not None:
            span.record_exception(error)
        if outcome is RunOutcome.FAILED:
            description = f"{type(error).__name__}: {error}" if error is not None else "failed"
            span.set_status(trace.Status(trace.StatusCode.ERROR, description))
        otel_context.detach(self._token)
        span.end()
