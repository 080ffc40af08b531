"""Prometheus metrics on a real Redis: counters, durations and lateness after real runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from hostedjobs import JobContext, JobHost, JobResult, RetryPolicy, job_type
from hostedjobs.metrics import PrometheusMetrics
from hostedjobs.storage import Store, open_redis
from hostedjobs.testing import wait_for_job
from tests.waiting import eventually


@job_type("tests.metrics.work")
@dataclass
class Work:
    fail_until_try: int = 0
    give_up: bool = False


def make_host(redis_url: str, queue_name: str, **options: Any) -> tuple[JobHost, PrometheusMetrics]:
    metrics = PrometheusMetrics(registry=CollectorRegistry())
    options.setdefault("retry", RetryPolicy(max_tries=3, backoff=timedelta(milliseconds=10)))
    host = JobHost(redis_url=redis_url, queue_name=queue_name, instrumentation=[metrics], **options)

    @host.handler(Work)
    async def work(job: Work, ctx: JobContext) -> JobResult | None:
        if job.give_up:
            return JobResult.failed("no")
        if ctx.attempt <= job.fail_until_try:
            raise RuntimeError(f"try {ctx.attempt}")
        return None

    return host, metrics


def sample(metrics: PrometheusMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_on_demand_runs_are_counted_and_timed_by_outcome(
    redis_url: str, queue_name: str
) -> None:
    """Succeeded, retried and failed tries each move their counter and the duration histogram."""
    host, metrics = make_host(redis_url, queue_name)
    labels = {"job": "tests.metrics.work", "kind": "on_demand"}
    async with host.run():
        ok = await host.scheduler.enqueue(Work())
        flaky = await host.scheduler.enqueue(Work(fail_until_try=1))
        doomed = await host.scheduler.enqueue(Work(fail_until_try=99))
        refused = await host.scheduler.enqueue(Work(give_up=True))
        for job_id in (ok, flaky, doomed, refused):
            await wait_for_job(host, job_id)
    assert sample(metrics, "hostedjobs_jobs_started_total", **labels) == 1 + 2 + 3 + 1
    assert sample(metrics, "hostedjobs_jobs_succeeded_total", **labels) == 2
    assert sample(metrics, "hostedjobs_jobs_retried_total", **labels) == 1 + 2
    assert sample(metrics, "hostedjobs_jobs_failed_total", **labels) == 2
    for outcome, count in (("succeeded", 2), ("retried", 3), ("failed", 2)):
        assert (
            sample(metrics, "hostedjobs_job_duration_seconds_count", outcome=outcome, **labels)
            == count
        )
    assert sample(metrics, "hostedjobs_job_duration_seconds_sum", outcome="succeeded", **labels) > 0


async def test_cron_runs_record_their_lateness(redis_url: str, queue_name: str) -> None:
    """Cron and distributed cron runs observe start-minus-tick; continuous runs do not."""
    host, metrics = make_host(redis_url, queue_name)

    @host.cron("* * * * * *", name="every-second")
    async def every_second() -> None:
        return None

    @host.distributed_cron("* * * * * *", name="cluster-second")
    async def cluster_second() -> JobResult:
        return JobResult.cancelled("nothing to do")

    @host.job(iteration_limit=2, name="loop", failure_backoff=0)
    async def loop() -> None:
        raise ValueError("broken")

    def count(name: str, job: str, kind: str) -> float:
        return sample(metrics, name, job=job, kind=kind)

    async with host.run():
        await eventually(
            lambda: (
                count("hostedjobs_jobs_succeeded_total", "every-second", "cron") >= 1
                and count("hostedjobs_jobs_cancelled_total", "cluster-second", "distributed_cron")
                >= 1
                and count("hostedjobs_jobs_failed_total", "loop", "continuous") >= 2
            )
        )
    lateness = "hostedjobs_cron_lateness_seconds_count"
    assert count(lateness, "every-second", "cron") >= 1
    assert count(lateness, "cluster-second", "distributed_cron") >= 1
    assert count(lateness, "loop", "continuous") == 0
    # A per-process tick starts before the next one (how early depends on the machine's load).
    assert (
        sample(
            metrics,
            "hostedjobs_cron_lateness_seconds_bucket",
            job="every-second",
            kind="cron",
            le="1.0",
        )
        >= 1
    )
    assert count("hostedjobs_jobs_failed_total", "loop", "continuous") == 2


async def test_manual_triggers_do_not_count_as_late(redis_url: str, queue_name: str) -> None:
    """A triggered run is counted as a run but observes no lateness."""
    host, metrics = make_host(redis_url, queue_name)

    @host.cron("0 0 1 1 *", name="yearly")
    async def yearly() -> None:
        return None

    async with host.run():
        await host.trigger("yearly")
        await eventually(
            lambda: sample(metrics, "hostedjobs_jobs_succeeded_total", job="yearly", kind="cron")
        )
    assert sample(metrics, "hostedjobs_jobs_started_total", job="yearly", kind="cron") == 1
    assert sample(metrics, "hostedjobs_cron_lateness_seconds_count", job="yearly", kind="cron") == 0


def test_metrics_route_serves_counters_and_queue_depth(redis_url: str, queue_name: str) -> None:
    """GET /metrics renders the registry, with the queue's depth read from Redis."""
    host, metrics = make_host(redis_url, queue_name)
    app = Starlette(routes=[Route("/metrics", metrics.endpoint)], lifespan=host.lifespan)
    with TestClient(app) as client:
        portal = client.portal
        assert portal is not None
        job_id = portal.call(host.scheduler.enqueue, Work())
        portal.call(wait_for_job, host, job_id)
        portal.call(lambda: host.scheduler.schedule(Work(), delay=timedelta(hours=1)))
        response = client.get("/metrics")
        openmetrics = client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    body = response.text
    assert 'hostedjobs_jobs_succeeded_total{job="tests.metrics.work",kind="on_demand"} 1.0' in body
    assert f'hostedjobs_queue_depth{{queue="{queue_name}"}} 1.0' in body
    assert f'hostedjobs_queue_due{{queue="{queue_name}"}} 0.0' in body
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")
    # Once the host stopped, its queue is no longer reported.
    assert f'queue="{queue_name}"' not in generate_latest(metrics.registry).decode()


async def test_a_redis_outage_at_scrape_time_skips_the_queue_gauges(
    restartable_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis down, sampling logs a warning and keeps the gauges' last values."""
    metrics = PrometheusMetrics(registry=CollectorRegistry())
    store = Store(await open_redis(restartable_redis.url), "outage")
    try:
        metrics.attach("outage", store)
        await metrics.sample_queue_depth()
        assert sample(metrics, "hostedjobs_queue_depth", queue="outage") == 0
        restartable_redis.stop()
        await metrics.sample_queue_depth()
    finally:
        await store.close()
    assert sample(metrics, "hostedjobs_queue_depth", queue="outage") == 0
    assert "cannot read the depth of queue 'outage'" in caplog.text
