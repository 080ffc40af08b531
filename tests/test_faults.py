"""Faults users found in the engine: one test per input, written before the fix.

Each test drives the engine through the public API only (`JobHost`, ``host.scheduler``,
handlers, hosted jobs, `RetryPolicy`, `JobResult`) and fails on the engine as the fault was
reported; it passes once the fault is fixed. They wait for conditions with generous
deadlines and never assert on wall time: the one resource they measure, CPU, is this
process's own (`time.process_time`), which other processes on a loaded machine do not
inflate.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from starlette.requests import Request

from hostedjobs import JobContext, JobHost, JobInfo, JobResult, JobStatus, RetryPolicy, job_type
from hostedjobs.exceptions import StartupActionError
from tests.script_keys import ScriptKeyWatch, summarize

if TYPE_CHECKING:
    from hostedjobs.status import HostedJobStatus

T = TypeVar("T")

DEADLINE_S = 60.0
"""How long anything that should take a second or two may take on a loaded machine."""

FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


async def _until(
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    what: str,
    *,
    timeout: float = DEADLINE_S,
    every: float = 0.1,
) -> T:
    """Read until ``done`` holds; fails naming ``what`` and the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = await read()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g}s for {what}; last seen: {value!r}")
        await asyncio.sleep(every)
        value = await read()
    return value


async def _finished(host: JobHost, job_id: str, *, timeout: float = DEADLINE_S) -> JobInfo:
    """The job once it has finished (polled every 0.1 s, so the wait itself costs little CPU)."""
    info = await _until(
        lambda: host.scheduler.get(job_id),
        lambda i: i is not None and i.status in FINISHED,
        f"job {job_id} to finish",
        timeout=timeout,
    )
    assert info is not None
    return info


async def _hosted(host: JobHost, name: str) -> HostedJobStatus:
    """``host.status()``'s entry for the hosted job ``name``."""
    for status in await host.status():
        if status.name == name:
            return status
    raise AssertionError(f"no hosted job named {name!r}")


def _finished_runs(status: HostedJobStatus) -> int:
    return sum(
        1 for run in status.history if run.finished_at is not None and run.outcome != "skipped"
    )


# -- 1. A saturated worker spins ----------------------------------------------------------

MAX_IDLE_CPU_S = 1.0
"""CPU a worker may use while its slots are busy with sleeping jobs (it needs well under
0.2 s); a worker that spins uses about as much CPU as time passes."""


@job_type("tests.faults.nap")
@dataclass
class Nap:
    seconds: float


def _napping_host(redis_url: str, queue_name: str, concurrency: int) -> JobHost:
    host = JobHost(redis_url=redis_url, queue_name=queue_name, concurrency=concurrency)

    @host.handler(Nap)
    async def nap(job: Nap) -> None:
        await asyncio.sleep(job.seconds)

    return host


async def _cpu_until_succeeded(host: JobHost, job_ids: Iterable[str]) -> tuple[float, float]:
    """CPU seconds this process uses, and wall seconds, until every job has succeeded."""
    cpu, wall = time.process_time(), time.monotonic()
    for job_id in job_ids:
        info = await _finished(host, job_id)
        assert info.status is JobStatus.SUCCEEDED, info
    return time.process_time() - cpu, time.monotonic() - wall


@pytest.mark.parametrize("concurrency", [2, 1])
async def test_a_saturated_worker_does_not_spin_while_a_scheduled_job_is_due(
    redis_url: str, queue_name: str, concurrency: int
) -> None:
    """User input 1, "a saturated worker spins": every slot busy with a job sleeping 2 s, and
    a job scheduled 0.5 s ahead falls due. The worker must wait for a slot; the engine as
    found went round its loop without suspending (the 2-s jobs took ~15 s, nearly all of it
    CPU).

    The scheduled job is queued first, so that the claims filling the slots see its due time
    (a worker that learnt of it later would not spin, by luck).
    """
    host = _napping_host(redis_url, queue_name, concurrency)
    async with host.run():
        deferred = await host.scheduler.schedule(Nap(0.01), delay=timedelta(seconds=0.5))
        busy = [await host.scheduler.enqueue(Nap(2.0)) for _ in range(concurrency)]
        cpu_s, wall_s = await _cpu_until_succeeded(host, [*busy, deferred])
    assert cpu_s < MAX_IDLE_CPU_S, (
        f"the worker used {cpu_s:.2f}s of CPU in {wall_s:.1f}s while its slots were busy"
    )


@job_type("tests.faults.flaky")
@dataclass
class Flaky:
    pass


async def test_a_saturated_worker_does_not_spin_while_a_retry_is_due(
    redis_url: str, queue_name: str
) -> None:
    """User input 1, "a saturated worker spins", by another path: a failed try waits out its
    backoff while the only slot is busy with a job sleeping 5 s; when the retry falls due the
    worker must wait for the slot, not spin."""
    host = _napping_host(redis_url, queue_name, 1)

    @host.handler(Flaky, retry=RetryPolicy(max_tries=2, backoff=timedelta(seconds=3), jitter=0))
    async def flaky(job: Flaky, ctx: JobContext) -> None:
        if ctx.attempt == 1:
            raise ValueError("the first try fails")

    async with host.run():
        retried = await host.scheduler.enqueue(Flaky())
        # Waiting out its backoff (if this wait is slower than the backoff, the retry simply
        # runs before the long job, and nothing is tested).
        await _until(
            lambda: host.scheduler.get(retried),
            lambda i: i is not None and (i.status is JobStatus.SCHEDULED or i.finished),
            "the first try to fail",
        )
        busy = await host.scheduler.enqueue(Nap(5.0))
        cpu_s, wall_s = await _cpu_until_succeeded(host, [busy, retried])
    assert cpu_s < MAX_IDLE_CPU_S, (
        f"the worker used {cpu_s:.2f}s of CPU in {wall_s:.1f}s while its slot was busy"
    )


async def test_a_saturated_worker_does_not_spin_on_a_due_time_gone_stale(
    redis_url: str, queue_name: str
) -> None:
    """User input 1, "a saturated worker spins", with nothing due at all: the worker learnt a
    scheduled job's due time while claiming, then the job was deleted. When that time passes
    while its only slot is busy, the worker must not spin on the stale time.

    (The same stale time arises on its own for a job running past the lock horizon, 60 s,
    which is too slow for a test.)
    """
    started = asyncio.Event()
    host = JobHost(redis_url=redis_url, queue_name=queue_name, concurrency=1)

    @host.handler(Nap)
    async def nap(job: Nap) -> None:
        started.set()
        await asyncio.sleep(job.seconds)

    async with host.run():
        # Due well after the busy job has started, and gone before then.
        doomed = await host.scheduler.schedule(Nap(0.01), delay=timedelta(seconds=5))
        busy = await host.scheduler.enqueue(Nap(8.0))
        await asyncio.wait_for(started.wait(), DEADLINE_S)
        assert await host.scheduler.delete(doomed), "the scheduled job was not deleted in time"
        cpu_s, wall_s = await _cpu_until_succeeded(host, [busy])
    assert cpu_s < MAX_IDLE_CPU_S, (
        f"the worker used {cpu_s:.2f}s of CPU in {wall_s:.1f}s with nothing due"
    )


# -- 2. A shutdown uses up a try ----------------------------------------------------------


@job_type("tests.faults.interrupted")
@dataclass
class Interrupted:
    seconds: float


def _interruptible_host(
    redis_url: str, queue_name: str, started: asyncio.Event, max_tries: int
) -> JobHost:
    host = JobHost(
        redis_url=redis_url, queue_name=queue_name, shutdown_grace=timedelta(seconds=0.2)
    )

    @host.handler(Interrupted, retry=RetryPolicy(max_tries=max_tries))
    async def interrupted(job: Interrupted) -> None:
        started.set()
        await asyncio.sleep(job.seconds)

    return host


async def _interrupt_runs(redis_url: str, queue_name: str, job_id: str | None, times: int) -> str:
    """Start a host ``times`` times, each stopped once the job runs; returns the job's id."""
    for _ in range(times):
        started = asyncio.Event()
        host = _interruptible_host(redis_url, queue_name, started, max_tries=times)
        async with host.run():
            if job_id is None:
                job_id = await host.scheduler.enqueue(Interrupted(1.5))
            await asyncio.wait_for(started.wait(), DEADLINE_S)
        # Leaving the block stopped the host while the run slept: it was cancelled.
    assert job_id is not None
    return job_id


async def _run_to_the_end(redis_url: str, queue_name: str, job_id: str, max_tries: int) -> JobInfo:
    started = asyncio.Event()
    host = _interruptible_host(redis_url, queue_name, started, max_tries=max_tries)
    async with host.run():
        return await _finished(host, job_id)


async def test_a_run_cancelled_by_a_shutdown_does_not_use_up_a_try(
    redis_url: str, queue_name: str
) -> None:
    """User input 2, "a shutdown uses up a try": with ``RetryPolicy(max_tries=1)``, a host
    stopped while the job runs puts it back, and the next host must run it to success. The
    engine as found failed it with "max 1 retries exceeded" without running it."""
    job_id = await _interrupt_runs(redis_url, queue_name, None, times=1)
    info = await _run_to_the_end(redis_url, queue_name, job_id, max_tries=1)
    assert info.status is JobStatus.SUCCEEDED, info.error


async def test_three_shutdowns_in_a_row_do_not_use_up_three_tries(
    redis_url: str, queue_name: str
) -> None:
    """User input 2, "a shutdown uses up a try": with ``max_tries=3``, three hosts in turn are
    stopped while the job runs; the fourth must run it to success."""
    job_id = await _interrupt_runs(redis_url, queue_name, None, times=3)
    info = await _run_to_the_end(redis_url, queue_name, job_id, max_tries=3)
    assert info.status is JobStatus.SUCCEEDED, info.error


# -- 3. A user's TimeoutError is taken for the run's own timeout ---------------------------


async def test_a_continuous_jobs_own_timeout_error_is_an_ordinary_failure(
    redis_url: str, queue_name: str
) -> None:
    """User input 3(a), "a user's TimeoutError is taken for the run's own timeout": a
    continuous job with no ``timeout=`` raising ``TimeoutError("mine")`` fails that run like
    any error, and the loop goes on to its three iterations. The engine as found crashed the
    loop on the first (formatting its absent timeout: ``TypeError`` on ``None``)."""
    runs = 0
    host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)

    @host.job(name="raises-own-timeout", iteration_limit=3, failure_backoff=0.05)
    async def raises_own_timeout() -> None:
        nonlocal runs
        runs += 1
        raise TimeoutError("mine")

    async with host.run():
        status = await _until(
            lambda: _hosted(host, "raises-own-timeout"),
            lambda s: _finished_runs(s) >= 3,
            "three finished runs",
            timeout=30,
        )
    assert runs == 3
    assert status.last_outcome == "failed"
    assert "mine" in (status.last_message or ""), status.last_message
    assert "timed out" not in (status.last_message or ""), status.last_message


@job_type("tests.faults.own-timeout")
@dataclass
class RaisesOwnTimeout:
    pass


@job_type("tests.faults.outlives-timeout")
@dataclass
class OutlivesTimeout:
    pass


async def test_a_handlers_own_timeout_error_is_not_taken_for_the_runs_timeout(
    redis_url: str, queue_name: str
) -> None:
    """User input 3(b), "a user's TimeoutError is taken for the run's own timeout": a handler
    raising ``TimeoutError("mine")`` (max_tries=1) fails with its own message; the engine as
    found reported "the run exceeded its timeout of 300s". Also 3(c), the converse: a
    handler outliving ``timeout=0.2`` is reported as the run's own timeout."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name)

    @host.handler(RaisesOwnTimeout, retry=RetryPolicy(max_tries=1))
    async def raises(job: RaisesOwnTimeout) -> None:
        raise TimeoutError("mine")

    @host.handler(OutlivesTimeout, timeout=0.2, retry=RetryPolicy(max_tries=1))
    async def outlives(job: OutlivesTimeout) -> None:
        await asyncio.sleep(5)

    async with host.run():
        slow = await _finished(host, await host.scheduler.enqueue(OutlivesTimeout()))
        own = await _finished(host, await host.scheduler.enqueue(RaisesOwnTimeout()))
    assert slow.status is JobStatus.FAILED
    assert slow.error is not None and "timeout" in slow.error.lower(), slow.error
    assert "mine" not in slow.error
    assert own.status is JobStatus.FAILED
    assert own.error is not None and "mine" in own.error, own.error
    assert "exceeded its timeout" not in own.error, own.error


async def test_a_distributed_cron_jobs_own_timeout_error_is_an_ordinary_failure(
    redis_url: str, queue_name: str
) -> None:
    """User input 3, "a user's TimeoutError is taken for the run's own timeout", for a
    distributed cron job (every second, no ``timeout=``): its run is recorded as failed with
    its own message, and its queued run ends with the same outcome and message. The engine
    as found crashed the run (``TypeError`` on the absent timeout), so nothing was recorded
    and the queued run failed with that ``TypeError``."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name)

    @host.distributed_cron("* * * * * *", name="cron-raises-own-timeout")
    async def cron_raises_own_timeout() -> None:
        raise TimeoutError("mine")

    async def state() -> tuple[HostedJobStatus, list[JobInfo]]:
        # The queued runs are read by id: they are listed under their hosted job, not with
        # the on-demand jobs.
        status = await _hosted(host, "cron-raises-own-timeout")
        runs = await host.scheduler.get_many([run.run_id for run in status.history])
        return status, [info for info in runs if info is not None and info.finished]

    async with host.run():
        status, failed = await _until(
            state, lambda s: s[0].last_outcome is not None and bool(s[1]), "a run to end"
        )
        # Not an on-demand job: none of its runs is listed with them.
        assert await host.scheduler.jobs(JobStatus.FAILED) == []
    # The queued run carries the run's own outcome and message, nothing else.
    assert [info.error for info in failed][:1] == ["TimeoutError: mine"]
    assert status.last_outcome == "failed"
    assert "mine" in (status.last_message or ""), status.last_message
    assert "timed out" not in (status.last_message or ""), status.last_message


def _request(path: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": path, "headers": []})


async def test_a_startup_actions_own_timeout_error_fails_startup_with_its_message(
    redis_url: str, queue_name: str
) -> None:
    """User input 3, "a user's TimeoutError is taken for the run's own timeout", for a startup
    action (no ``timeout=``) raising ``TimeoutError("mine")``: startup fails naming the action
    and its message, in blocking mode (`StartupActionError`) and in background mode
    (readiness). The engine as found raised ``TypeError`` from formatting the absent timeout,
    and readiness never named the action."""
    blocking = JobHost(redis_url=redis_url, queue_name=queue_name, startup_mode="blocking")
    background = JobHost(
        redis_url=redis_url, queue_name=queue_name, on_startup_failure="stay", run_worker=False
    )
    for host in (blocking, background):

        @host.startup_action(name="migrate")
        async def migrate() -> None:
            raise TimeoutError("mine")

    with pytest.raises(StartupActionError, match="mine"):
        async with blocking.run():
            pass

    async def failed() -> tuple[str, str] | None:
        return background.failed_startup_action

    async with background.run():
        failure = await _until(failed, lambda f: f is not None, "startup to fail")
        response = await background.readiness(_request("/ready"))
    assert failure is not None
    name, error = failure
    assert (name, "mine" in error) == ("migrate", True), error
    assert response.status_code == 503
    body = json.loads(bytes(response.body))
    assert body["failed_action"] == "migrate"
    assert "mine" in body["error"] and "timed out" not in body["error"], body


# -- 4. Results carry in-band markers -------------------------------------------------------


@job_type("tests.faults.returns")
@dataclass
class Returns:
    kind: str


RETURNED: dict[str, dict[str, Any]] = {
    "cancelled-marker": {"__cancelled__": "no", "count": 3},
    "message-marker": {"__message__": "hi", "value": 1, "extra": 2},
    "error-marker": {"__error__": {"type": "ValueError", "message": "not an error"}},
}


async def test_a_returned_dict_is_the_result_whatever_its_keys(
    redis_url: str, queue_name: str
) -> None:
    """User input 4, "results carry in-band markers": a handler returning
    ``{"__cancelled__": "no", "count": 3}`` succeeded with that dict as its result (the engine
    as found reported it cancelled, result None), and one returning
    ``{"__message__": "hi", "value": 1, "extra": 2}`` keeps every key (the engine as found
    kept only ``value``, as the result, and "hi" as a message). `JobResult.cancelled` and
    `JobResult.success` still report their outcome and message."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name)

    @host.handler(Returns)
    async def returns(job: Returns) -> Any:
        if job.kind == "cancelled":
            return JobResult.cancelled("why")
        if job.kind == "success":
            return JobResult.success("msg")
        return RETURNED[job.kind]

    kinds = ["cancelled", "success", *RETURNED]
    async with host.run():
        ids = {kind: await host.scheduler.enqueue(Returns(kind)) for kind in kinds}
        infos = {kind: await _finished(host, job_id) for kind, job_id in ids.items()}
        succeeded = {i.id for i in await host.scheduler.jobs(JobStatus.SUCCEEDED)}
        cancelled = {i.id for i in await host.scheduler.jobs(JobStatus.CANCELLED)}

    why = infos["cancelled"]
    assert (why.status, why.message, why.result) == (JobStatus.CANCELLED, "why", None)
    msg = infos["success"]
    assert (msg.status, msg.message, msg.result) == (JobStatus.SUCCEEDED, "msg", None)
    for kind, value in RETURNED.items():
        info = infos[kind]
        assert (info.status, info.result, info.message, info.error) == (
            JobStatus.SUCCEEDED,
            value,
            None,
            None,
        ), kind
    # Listed by the state they ended in, too.
    assert cancelled == {why.id}
    assert succeeded == {infos[kind].id for kind in ["success", *RETURNED]}


# -- 5. No key may be built inside a script -------------------------------------------------


@job_type("tests.faults.work")
@dataclass
class Work:
    mode: str
    seconds: float = 0.0


LONG_RUN_S = 17.0
"""A run long enough for its worker to renew its lock at least once (every 15 s today)."""
LONG_CRON_RUN_S = 4.0
"""A distributed cron run long enough for its lease to be renewed (every 3 s today)."""


async def test_every_script_key_is_declared(redis_url: str, queue_name: str) -> None:
    """User input 5, "no key may be built inside a script": every key a Lua script touches
    must be passed in its KEYS (Redis Cluster, key-routing proxies and ACL key patterns rely
    on it). A workload doing everything the engine uses scripts for runs under MONITOR (see
    tests/script_keys.py), and no script may use a key it did not declare. The engine as
    found built keys from ARGV in its claim, commit and lock-renewal scripts, among others.
    """
    hold_started = asyncio.Event()
    cron_runs = 0
    host = JobHost(
        redis_url=redis_url,
        queue_name=queue_name,
        concurrency=8,
        shutdown_grace=timedelta(seconds=0.2),
        retry=RetryPolicy(max_tries=2, backoff=timedelta(seconds=0.05), jitter=0),
    )

    @host.handler(Work)
    async def work(job: Work, ctx: JobContext) -> dict[str, str]:
        if job.mode == "fail":
            raise ValueError("this job always fails")
        if job.mode == "flaky" and ctx.attempt == 1:
            raise ValueError("the first try fails")
        if job.mode == "hold":
            hold_started.set()
            await asyncio.sleep(3600)
        await ctx.report_progress(10, "started")
        await asyncio.sleep(job.seconds)
        await ctx.report_progress(100, "done")
        return {"mode": job.mode}

    @host.distributed_cron("* * * * * *", name="tick")
    async def tick() -> None:
        nonlocal cron_runs
        cron_runs += 1
        if cron_runs == 1:
            await asyncio.sleep(LONG_CRON_RUN_S)

    def cron_done(status: HostedJobStatus) -> bool:
        runs = [r for r in status.history if r.outcome == "succeeded"]
        return sum(not r.manual for r in runs) >= 2 and any(r.manual for r in runs)

    # Scripts flushed first: each is loaded again in view, so findings show its first line.
    async with ScriptKeyWatch(redis_url, flush_scripts=True) as watch, host.run():
        scheduler = host.scheduler
        long_run = await scheduler.enqueue(Work("long", LONG_RUN_S))
        quick = [
            await scheduler.enqueue(Work("ok")),
            *await scheduler.enqueue_many(Work("ok") for _ in range(5)),
            await scheduler.schedule(Work("ok"), delay=timedelta(seconds=0.3)),
            await scheduler.enqueue(Work("flaky")),
        ]
        doomed = await scheduler.schedule(Work("ok"), delay=timedelta(hours=1))
        failing = await scheduler.enqueue(Work("fail"))
        for status in JobStatus:
            await scheduler.jobs(status)
        await scheduler.counts()
        assert await scheduler.delete(doomed)
        for job_id in quick:
            assert (await _finished(host, job_id)).status is JobStatus.SUCCEEDED
        assert (await _finished(host, failing)).status is JobStatus.FAILED
        assert await scheduler.retry(failing)
        assert (await _finished(host, failing)).status is JobStatus.FAILED
        await host.trigger("tick")
        await _until(lambda: _hosted(host, "tick"), cron_done, "two cron ticks and a manual run")
        for status in JobStatus:
            await scheduler.jobs(status)
        await scheduler.counts()
        info = await _finished(host, long_run, timeout=LONG_RUN_S + DEADLINE_S)
        assert info.status is JobStatus.SUCCEEDED
        await scheduler.enqueue(Work("hold"))
        await asyncio.wait_for(hold_started.wait(), DEADLINE_S)
        # The host stopped while the held job ran: it was put back in the queue.
    assert len(watch.calls) > 1, "MONITOR showed no script calls of the engine"
    assert not watch.findings, summarize(watch.findings)
