"""OpenTelemetry spans on a real Redis: request -> enqueue -> run, one trace, outcomes recorded."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from arq.jobs import Job
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from hostedjobs import JobContext, JobHost, RetryPolicy, job_type
from hostedjobs.serialization import loads
from hostedjobs.testing import wait_for_job
from hostedjobs.tracing import OpenTelemetryTracing
from tests.waiting import eventually


@job_type("tests.tracing.send")
@dataclass
class Send:
    to: str
    fail_until_try: int = 0


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A tracer provider of this test's own that keeps finished spans in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def make_host(redis_url: str, queue_name: str, provider: TracerProvider, **options: Any) -> JobHost:
    options.setdefault("retry", RetryPolicy(max_tries=3, backoff=timedelta(milliseconds=10)))
    host = JobHost(
        redis_url=redis_url,
        queue_name=queue_name,
        instrumentation=[OpenTelemetryTracing(tracer_provider=provider)],
        **options,
    )
    tracer = provider.get_tracer("tests")

    @host.handler(Send)
    async def send(job: Send, ctx: JobContext) -> None:
        with tracer.start_as_current_span("smtp"):
            if ctx.attempt <= job.fail_until_try:
                raise ConnectionError(f"smtp down (try {ctx.attempt})")

    return host


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def test_the_trace_runs_from_the_request_through_the_enqueue_into_the_job(
    redis_url: str, queue_name: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """request -> enqueue (producer) -> run (consumer, current while the handler runs)."""
    provider, exporter = spans
    host = make_host(redis_url, queue_name, provider)
    tracer = provider.get_tracer("tests")

    async def signup(request: Request) -> JSONResponse:
        with tracer.start_as_current_span("POST /signup"):
            job_id = await host.scheduler.enqueue(Send(to="ada@example.com"))
        return JSONResponse({"job": job_id})

    app = Starlette(routes=[Route("/signup", signup, methods=["POST"])], lifespan=host.lifespan)
    with TestClient(app) as client:
        job_id = client.post("/signup").json()["job"]
        assert client.portal is not None
        info = client.portal.call(wait_for_job, host, job_id)
    assert info.status == "succeeded"

    (request,) = named(exporter, "POST /signup")
    (enqueue,) = named(exporter, "enqueue tests.tracing.send")
    (run,) = named(exporter, "run tests.tracing.send")
    (smtp,) = named(exporter, "smtp")
    assert enqueue.kind is SpanKind.PRODUCER
    assert run.kind is SpanKind.CONSUMER
    assert parent_id(enqueue) == span_id(request)
    assert parent_id(run) == span_id(enqueue)
    assert parent_id(smtp) == span_id(run)
    assert len({trace_id(s) for s in (request, enqueue, run, smtp)}) == 1
    assert enqueue.attributes is not None
    assert enqueue.attributes["hostedjobs.job.id"] == job_id
    assert dict(run.attributes or {}) == {
        "hostedjobs.job.name": "tests.tracing.send",
        "hostedjobs.job.kind": "on_demand",
        "hostedjobs.job.id": job_id,
        "hostedjobs.job.attempt": 1,
        "hostedjobs.job.manual": False,
        "hostedjobs.job.outcome": "succeeded",
    }
    assert run.status.status_code is StatusCode.UNSET


async def test_retried_and_failed_tries_record_their_exception(
    redis_url: str, queue_name: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """Each try is a span under the same enqueue; failures carry the exception and an error."""
    provider, exporter = spans
    retry = RetryPolicy(max_tries=2, backoff=timedelta(milliseconds=10))
    host = make_host(redis_url, queue_name, provider, retry=retry)
    async with host.run():
        job_id = await host.scheduler.enqueue(Send(to="bob@example.com", fail_until_try=5))
        info = await wait_for_job(host, job_id)
    assert info.status == "failed"
    (enqueue,) = named(exporter, "enqueue tests.tracing.send")
    first, second = sorted(
        named(exporter, "run tests.tracing.send"),
        key=lambda s: str((s.attributes or {})["hostedjobs.job.attempt"]),
    )
    assert parent_id(first) == parent_id(second) == span_id(enqueue)
    assert (first.attributes or {})["hostedjobs.job.outcome"] == "retried"
    assert (second.attributes or {})["hostedjobs.job.outcome"] == "failed"
    assert second.status.status_code is StatusCode.ERROR
    assert second.status.description == "ConnectionError: smtp down (try 2)"
    for span, message in ((first, "smtp down (try 1)"), (second, "smtp down (try 2)")):
        (event,) = [e for e in span.events if e.name == "exception"]
        assert event.attributes is not None
        assert event.attributes["exception.message"] == message


async def test_a_traced_job_is_still_read_by_stock_arq(
    redis_url: str, queue_name: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """The traceparent is the call's keyword argument: arq's Job.info() reads the job."""
    provider, exporter = spans
    host = make_host(redis_url, queue_name, provider, run_worker=False)
    async with host.run():
        job_id = await host.scheduler.enqueue(Send(to="carol@example.com"))
        job = Job(job_id, host.scheduler.pool, _queue_name=queue_name, _deserializer=loads)
        info = await job.info()
    (enqueue,) = named(exporter, "enqueue tests.tracing.send")
    assert info is not None
    assert info.function == "tests.tracing.send@1"
    assert list(info.args) == [{"to": "carol@example.com", "fail_until_try": 0}]
    traceparent = info.kwargs["traceparent"]
    assert traceparent.startswith(f"00-{trace_id(enqueue):032x}-{span_id(enqueue):016x}-")


async def test_enqueue_many_is_one_producer_span_parenting_every_run(
    redis_url: str, queue_name: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """A batch is one span with its count; each job's run continues it."""
    provider, exporter = spans
    host = make_host(redis_url, queue_name, provider)
    async with host.run():
        ids = await host.scheduler.enqueue_many(Send(to=f"{i}@example.com") for i in range(3))
        for job_id in ids:
            await wait_for_job(host, job_id)
    (batch,) = named(exporter, "enqueue_many")
    assert (batch.attributes or {})["hostedjobs.job.count"] == 3
    runs = named(exporter, "run tests.tracing.send")
    assert len(runs) == 3
    assert {parent_id(run) for run in runs} == {span_id(batch)}


async def test_hosted_runs_get_spans_and_a_triggered_distributed_run_joins_the_trace(
    redis_url: str, queue_name: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """Continuous runs are internal spans; `trigger` of a distributed job is traced to its run."""
    provider, exporter = spans
    host = make_host(redis_url, queue_name, provider)
    tracer = provider.get_tracer("tests")

    @host.job(iteration_limit=1, name="refresh")
    async def refresh() -> None:
        raise ValueError("stale")

    @host.distributed_cron("0 0 1 1 *", name="yearly-report")
    async def yearly_report() -> None:
        return None

    async with host.run():
        with tracer.start_as_current_span("operator"):
            await host.trigger("yearly-report")
        await eventually(
            lambda: named(exporter, "run yearly-report") and named(exporter, "run refresh"),
            what="both runs' spans",
        )
    (refresh_run,) = named(exporter, "run refresh")
    assert refresh_run.kind is SpanKind.INTERNAL
    assert (refresh_run.attributes or {})["hostedjobs.job.kind"] == "continuous"
    assert (refresh_run.attributes or {})["hostedjobs.job.outcome"] == "failed"
    assert refresh_run.status.description == "ValueError: stale"
    (operator,) = named(exporter, "operator")
    (enqueue,) = named(exporter, "enqueue yearly-report")
    (report_run,) = named(exporter, "run yearly-report")
    assert parent_id(enqueue) == span_id(operator)
    assert parent_id(report_run) == span_id(enqueue)
    assert report_run.kind is SpanKind.CONSUMER
    assert (report_run.attributes or {})["hostedjobs.job.manual"] is True


async def test_without_an_sdk_nothing_is_stored_and_jobs_run(
    redis_url: str, queue_name: str
) -> None:
    """With only the API (no tracer provider set up), no traceparent is stored."""
    host = JobHost(
        redis_url=redis_url, queue_name=queue_name, instrumentation=[OpenTelemetryTracing()]
    )

    @host.handler(Send)
    async def send(job: Send) -> None:
        return None

    async with host.run():
        job_id = await host.scheduler.enqueue(Send(to="dan@example.com"))
        job = Job(job_id, host.scheduler.pool, _queue_name=queue_name, _deserializer=loads)
        queued = await job.info()
        info = await wait_for_job(host, job_id)
    assert queued is not None
    assert queued.kwargs == {}
    assert info.status == "succeeded"
