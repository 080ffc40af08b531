"""Prometheus metrics of job runs, cron lateness and queue depth (the ``prometheus`` extra).

Enable them by handing a `PrometheusMetrics` to the host, and serve them with its endpoint::

    metrics = PrometheusMetrics()
    host = JobHost(instrumentation=[metrics])
    app = Starlette(routes=[Route("/metrics", metrics.endpoint)], lifespan=host.lifespan)

Metrics are counted where runs happen (in the process that runs them) and go to
prometheus_client's default registry unless another is given.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from .context import JobContext
from .instrumentation import Instrumentation, RunKind, RunObserver, RunOutcome

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.exposition import choose_encoder
except ImportError as exc:  # pragma: no cover - the dev extra installs it
    raise ImportError(
        "hostedjobs.metrics needs prometheus_client: pip install 'hostedjobs[prometheus]'"
    ) from exc

if TYPE_CHECKING:
    from .storage import Store

__all__ = ["DURATION_BUCKETS", "LATENESS_BUCKETS", "PrometheusMetrics"]

logger = logging.getLogger("hostedjobs.metrics")

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
"""Seconds, for ``hostedjobs_job_duration_seconds``: from quick handlers to long batch runs."""
LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60)
"""Seconds, for ``hostedjobs_cron_lateness_seconds``: ticks normally start within a few ms."""

_CRON_KINDS = (RunKind.CRON, RunKind.DISTRIBUTED_CRON)
_RUN_OUTCOMES = (RunOutcome.SUCCEEDED, RunOutcome.FAILED, RunOutcome.RETRIED, RunOutcome.CANCELLED)
_SAMPLE_TIMEOUT_S = 1.0
"""The pool retries through outages for many seconds; a scrape must not wait that long."""


class PrometheusMetrics(Instrumentation):
    """Counts runs, times them, measures cron lateness, and samples queue depth.

    All names start with ``namespace`` (``hostedjobs``); every run metric is labelled by
    ``job`` (the hosted job's name or the job type's) and ``kind`` (``on_demand``,
    ``continuous``, ``cron``, ``distributed_cron``):

    - ``hostedjobs_jobs_started_total``, ``..._succeeded_total``, ``..._failed_total``,
      ``..._retried_total``, ``..._cancelled_total``: runs (tries) by how they ended;
    - ``hostedjobs_job_duration_seconds`` (histogram, also labelled ``outcome``);
    - ``hostedjobs_cron_lateness_seconds`` (histogram): how long after its scheduled tick a
      cron or distributed cron run started (manual triggers are not counted);
    - ``hostedjobs_queue_depth`` and ``hostedjobs_queue_due`` (gauges, labelled ``queue``):
      the jobs in the queue (queued, scheduled, retrying and running), and those due now
      (waiting or running), read from Redis when the endpoint is scraped.

    Use one instance per registry: the metrics are registered when it is created.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry = REGISTRY,
        namespace: str = "hostedjobs",
        duration_buckets: tuple[float, ...] = DURATION_BUCKETS,
        lateness_buckets: tuple[float, ...] = LATENESS_BUCKETS,
    ) -> None:
        self.registry = registry
        labels = ("job", "kind")

        def counter(name: str, documentation: str) -> Counter:
            return Counter(name, documentation, labels, namespace=namespace, registry=registry)

        self.started = counter("jobs_started", "Runs (tries) started.")
        self._ended = {
            RunOutcome.SUCCEEDED: counter("jobs_succeeded", "Runs that succeeded."),
            RunOutcome.FAILED: counter("jobs_failed", "Runs that failed for good."),
            RunOutcome.RETRIED: counter(
                "jobs_retried", "Tries that failed or were interrupted, and were queued again."
            ),
            RunOutcome.CANCELLED: counter(
                "jobs_cancelled", "Runs that returned JobResult.cancelled or were cancelled."
            ),
        }
        self.duration = Histogram(
            "job_duration_seconds",
            "How long runs took, by outcome.",
            (*labels, "outcome"),
            namespace=namespace,
            registry=registry,
            buckets=duration_buckets,
        )
        self.lateness = Histogram(
            "cron_lateness_seconds",
            "How long after its scheduled tick a cron or distributed cron run started.",
            labels,
            namespace=namespace,
            registry=registry,
            buckets=lateness_buckets,
        )
        self.queue_depth = Gauge(
            "queue_depth",
            "Jobs in the queue: queued, scheduled, retrying and running.",
            ("queue",),
            namespace=namespace,
            registry=registry,
        )
        self.queue_due = Gauge(
            "queue_due",
            "Jobs in the queue that are due now: waiting for a worker, or running.",
            ("queue",),
            namespace=namespace,
            registry=registry,
        )
        self._stores: dict[str, Store] = {}
        self._children: dict[tuple[str, str], _Children] = {}

    def counter(self, outcome: RunOutcome) -> Counter:
        """The counter of runs that ended with ``outcome``."""
        return self._ended[outcome]

    def attach(self, queue_name: str, store: Store | None) -> None:
        """Sample ``queue_name``'s depth from ``store`` at each scrape (None: stop)."""
        if store is not None:
            self._stores[queue_name] = store
        elif self._stores.pop(queue_name, None) is not None:
            self.queue_depth.remove(queue_name)
            self.queue_due.remove(queue_name)

    def run_started(
        self, kind: RunKind, ctx: JobContext, traceparent: str | None, *, manual: bool = False
    ) -> RunObserver:
        """Count the run, and observe its lateness if it is a scheduled cron run."""
        labels = (ctx.job_name, kind.value)
        children = self._children.get(labels)
        if children is None:
            children = self._children[labels] = _Children(self, labels)
        children.started.inc()
        if kind in _CRON_KINDS and not manual and ctx.scheduled_at is not None:
            late_s = (ctx.started_at - ctx.scheduled_at).total_seconds()
            # Clocks of different replicas may disagree by a little: never "early".
            self.lateness.labels(*labels).observe(max(late_s, 0.0))
        return _RunMetrics(children, time.perf_counter())

    async def sample_queue_depth(self) -> None:
        """Read each attached queue's size (ZCARD, ZCOUNT: no scan) into the gauges."""
        now_ms = int(time.time() * 1000)
        for queue_name, store in list(self._stores.items()):
            try:
                async with asyncio.timeout(_SAMPLE_TIMEOUT_S):
                    depth, due = await store.queue_depth(now_ms=now_ms)
            except (RedisError, OSError, TimeoutError) as exc:
                logger.warning("cannot read the depth of queue %r: %r", queue_name, exc)
                continue
            self.queue_depth.labels(queue_name).set(depth)
            self.queue_due.labels(queue_name).set(due)

    async def endpoint(self, request: Request) -> Response:
        """The scrape endpoint: ``Route("/metrics", metrics.endpoint)``.

        Samples the queue depth, then renders the registry (OpenMetrics when the scraper
        asks for it).
        """
        await self.sample_queue_depth()
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(self.registry), media_type=content_type)


class _Children:
    """One job's labelled metrics, looked up once: ``labels()`` takes a lock each time."""

    __slots__ = ("ended", "started")

    def __init__(self, metrics: PrometheusMetrics, labels: tuple[str, str]) -> None:
        self.started = metrics.started.labels(*labels)
        self.ended = {
            outcome: (
                metrics.counter(outcome).labels(*labels),
                metrics.duration.labels(*labels, outcome.value),
            )
            for outcome in _RUN_OUTCOMES
        }


class _RunMetrics(RunObserver):
    __slots__ = ("_children", "_started")

    def __init__(self, children: _Children, started: float) -> None:
        self._children = children
        self._started = started

    def end(self, outcome: RunOutcome, error: BaseException | None = None) -> None:
        counter, duration = self._children.ended[outcome]
        counter.inc()
        duration.observe(time.perf_counter() - self._started)
