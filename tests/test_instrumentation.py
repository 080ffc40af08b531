"""The instrumentation seam: which events a host reports, and that none cost nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hostedjobs import JobContext, JobHost, RetryPolicy, job_type
from hostedjobs.exceptions import ConfigurationError
from hostedjobs.instrumentation import (
    Instrumentation,
    RunKind,
    RunObserver,
    RunOutcome,
    combine,
)
from hostedjobs.storage import Store
from hostedjobs.testing import wait_for_job
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent


@job_type("tests.instrumentation.nap")
@dataclass
class Nap:
    seconds: float = 0.0


@job_type("tests.instrumentation.broken")
@dataclass
class Broken:
    """Its handler raises."""


class Events(Instrumentation):
    """Writes down every event it receives, tagged with its own name."""

    def __init__(self, tag: str, log: list[tuple[Any, ...]]) -> None:
        self.tag = tag
        self.log = log

    def attach(self, queue_name: str, store: Store | None) -> None:
        self.log.append((self.tag, "attach", store is not None))

    @contextlib.contextmanager
    def _enqueue(self, job_type: str | None, count: int) -> Iterator[str | None]:
        self.log.append((self.tag, "enqueue", job_type, count))
        yield f"trace-of-{self.tag}" if self.tag == "second" else None
        self.log.append((self.tag, "enqueued", job_type))

    def enqueue(
        self, job_type: str | None, job_id: str | None, count: int = 1
    ) -> contextlib.AbstractContextManager[str | None]:
        return self._enqueue(job_type, count)

    def run_started(
        self, kind: RunKind, ctx: JobContext, traceparent: str | None, *, manual: bool = False
    ) -> RunObserver:
        self.log.append((self.tag, "start", kind, ctx.job_name, traceparent))
        return _Ended(self, ctx.job_name)


class _Ended(RunObserver):
    def __init__(self, events: Events, job_name: str) -> None:
        self.events = events
        self.job_name = job_name

    def end(self, outcome: RunOutcome, error: BaseException | None = None) -> None:
        error_type = type(error).__name__ if error is not None else None
        self.events.log.append((self.events.tag, "end", self.job_name, outcome, error_type))


def test_combine_returns_none_one_or_a_fan_out() -> None:
    """No instrumentation is None (the fast path); one is itself; a non-instance is refused."""
    assert combine([]) is None
    assert JobHost().instrumentation is None
    single = Instrumentation()
    assert combine([single]) is single
    assert combine([single, Instrumentation()]) not in (None, single)
    with pytest.raises(ConfigurationError, match="PrometheusMetrics"):
        JobHost(instrumentation=[object()])  # type: ignore[list-item]


async def test_events_reach_every_instrumentation_in_order(redis_url: str, queue_name: str) -> None:
    """Enqueue and run events go to each part; the first traceparent given is the job's."""
    log: list[tuple[Any, ...]] = []
    host = JobHost(
        redis_url=redis_url,
        queue_name=queue_name,
        instrumentation=[Events("first", log), Events("second", log)],
    )

    @host.handler(Nap)
    async def nap(job: Nap) -> None:
        await asyncio.sleep(job.seconds)

    @host.handler(Broken, retry=RetryPolicy(max_tries=1))
    async def broken(job: Broken) -> None:
        raise ValueError("broken")

    async with host.run():
        await wait_for_job(host, await host.scheduler.enqueue(Nap()))
        failing = await host.scheduler.enqueue(Broken())
        assert (await wait_for_job(host, failing)).status == "failed"
    nap_events = [e for e in log if "tests.instrumentation.nap" in e]
    assert nap_events == [
        ("first", "enqueue", "tests.instrumentation.nap", 1),
        ("second", "enqueue", "tests.instrumentation.nap", 1),
        ("second", "enqueued", "tests.instrumentation.nap"),
        ("first", "enqueued", "tests.instrumentation.nap"),
        ("first", "start", RunKind.ON_DEMAND, "tests.instrumentation.nap", "trace-of-second"),
        ("second", "start", RunKind.ON_DEMAND, "tests.instrumentation.nap", "trace-of-second"),
        ("second", "end", "tests.instrumentation.nap", RunOutcome.SUCCEEDED, None),
        ("first", "end", "tests.instrumentation.nap", RunOutcome.SUCCEEDED, None),
    ]
    failed = ("end", "tests.instrumentation.broken", RunOutcome.FAILED, "ValueError")
    assert ("first", *failed) in log
    assert log[0] == ("first", "attach", True)
    assert log[-2:] == [("first", "attach", False), ("second", "attach", False)]


async def test_runs_interrupted_by_shutdown_are_retried_or_cancelled(
    redis_url: str, queue_name: str
) -> None:
    """A queued run cut short goes back to the queue (retried); a hosted run is cancelled."""
    log: list[tuple[Any, ...]] = []
    host = JobHost(
        redis_url=redis_url,
        queue_name=queue_name,
        instrumentation=[Events("only", log)],
        shutdown_grace=timedelta(milliseconds=50),
    )

    @host.handler(Nap)
    async def nap(job: Nap) -> None:
        await asyncio.sleep(job.seconds)

    @host.job(name="forever")
    async def forever() -> None:
        await asyncio.sleep(60)

    async with host.run():
        await host.scheduler.enqueue(Nap(seconds=60))
        await eventually(lambda: sum(1 for e in log if e[1] == "start") >= 2, what="both runs")
    assert ("only", "end", "tests.instrumentation.nap", RunOutcome.RETRIED, None) in log
    assert ("only", "end", "forever", RunOutcome.CANCELLED, None) in log


async def test_the_base_class_ignores_every_event(redis_url: str, queue_name: str) -> None:
    """`Instrumentation()` itself is a valid, silent instrumentation."""
    host = JobHost(
        redis_url=redis_url,
        queue_name=queue_name,
        instrumentation=[Instrumentation()],
        retry=RetryPolicy(max_tries=1),
    )

    @host.handler(Nap)
    async def nap(job: Nap) -> None:
        return None

    async with host.run():
        info = await wait_for_job(host, await host.scheduler.enqueue(Nap()))
    assert info.status == "succeeded"


def test_without_the_extras_nothing_is_imported_and_jobs_still_run(redis_url: str) -> None:
    """With prometheus_client and opentelemetry unimportable, hostedjobs runs jobs as before,
    creates no instrumentation, and the extras' modules say which extra to install."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        for name in ("prometheus_client", "opentelemetry"):
            sys.modules[name] = None  # blocks the import, as if not installed

        from dataclasses import dataclass
        from hostedjobs import JobHost, job_type
        from hostedjobs.testing import wait_for_job

        @job_type("tests.instrumentation.plain")
        @dataclass
        class Plain:
            n: int

        host = JobHost(queue_name="no-extras")

        @host.handler(Plain)
        async def plain(job: Plain) -> int:
            return job.n * 2

        async def main() -> None:
            async with host.run():
                info = await wait_for_job(host, await host.scheduler.enqueue(Plain(n=21)))
            assert info.result == 42, info
            assert host.instrumentation is None

        asyncio.run(main())
        for module in ("hostedjobs.metrics", "hostedjobs.tracing"):
            assert module not in sys.modules, module
        for module, extra in (("hostedjobs.metrics", "prometheus"), ("hostedjobs.tracing", "otel")):
            try:
                __import__(module)
            except ImportError as exc:
                assert f"hostedjobs[{extra}]" in str(exc), exc
            else:
                raise AssertionError(f"{module} imported without its extra")
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTEDJOBS_")}
    env["HOSTEDJOBS_REDIS_URL"] = redis_url
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
