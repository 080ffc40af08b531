"""Distributed cron: one run per tick across every process, durable and observable.

At each tick every process that runs the host calls `DistributedCron.fire`. One script
claims the tick (keyed by job name and tick, so clocks that disagree by less than the period
still agree on the key), records it as the last fired tick, and enqueues a queued job whose
id is derived from the tick: two processes can never both win, and a process dying between
claim and enqueue cannot lose the tick. Any worker runs the job; while it runs it holds a
lease renewed by a heartbeat, which is how the next tick knows the previous run is alive (a
crashed run's lease lapses within seconds). A crashed worker's run goes back to the queue
once the worker's lease lapses and runs again; with ``overlap="skip"`` it is never skipped
for a newer run's lease (it waits its turn), and only a run that is alive holds a tick back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from .clock import LAST_MS
from .context import JobContext
from .definitions import HostedJob
from .exceptions import PayloadDecodeError
from .outcomes import JobKind, Outcome
from .runner import QueuedRun, Runner, RunReport, error_text
from .serialization import queued_record
from .status import HISTORY_LENGTH, PAUSED_MESSAGE, HostedJobStatus, RunRecord
from .storage import Store

__all__ = ["DistributedCron", "Fired"]

logger = logging.getLogger("hostedjobs.distributed")

LEASE_MS = 10_000
"""A run's lease lapses this long after its last heartbeat."""
HEARTBEAT_S = 3.0
MAX_TRIES = 5
"""A run interrupted by crashes runs again, this many times at most (its own failures are
never retried: the next tick is the retry)."""

_FUNCTION_PREFIX = "hostedjobs.cron:"
_STILL_RUNNING = "the previous run was still running"
_STILL_QUEUED = "the previous run was still queued: is a worker running?"
_WAITING = "tried again after a crash; waiting for the running run to end"


class Fired:
    """What `DistributedCron.fire` did with a tick."""

    CLAIMED_ELSEWHERE = 0
    ENQUEUED = 1
    SKIPPED = 2
    """The previous run is still running (its lease is alive)."""
    ALREADY_ENQUEUED = 3
    SKIPPED_QUEUED = 4
    """The previous run has not started yet: no worker took it (is one running?)."""
    SKIPPED_PAUSED = 5
    """The job is paused: the tick is claimed (it never runs later) but not enqueued."""


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def function_name(name: str) -> str:
    """The name a distributed job's runs are queued under."""
    return _FUNCTION_PREFIX + name


def job_name(function: str) -> str | None:
    """The distributed job a queued function name belongs to, if it is one."""
    return function[len(_FUNCTION_PREFIX) :] if function.startswith(_FUNCTION_PREFIX) else None


@dataclass(frozen=True, slots=True)
class _RunFunction:
    """What a worker runs for one distributed job's queued runs."""

    cron: DistributedCron
    job: HostedJob
    max_tries: int = MAX_TRIES

    async def run(self, run: QueuedRun) -> RunReport:
        tick = run.args[0] if run.args else run.due_ms
        if type(tick) is not int or not 0 <= tick <= LAST_MS:
            # fire.lua and trigger write [tick, manual]; anything else came from elsewhere.
            error = PayloadDecodeError(
                f"the queued run of {self.job.name!r} has the tick {tick!r:.40} as its first "
                "argument, not a time in ms since the epoch; was it written to the queue by "
                "something other than hostedjobs?"
            )
            return RunReport(Outcome.FAILED, message=error_text(error), error=error)
        manual = bool(run.args[1]) if len(run.args) > 1 else False
        return await self.cron.run(self.job, run, tick, manual)


class DistributedCron:
    """The Redis side of every distributed cron job of one host (one queue)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.jobs: dict[str, HostedJob] = {}
        self.store: Store | None = None
        self._owner = uuid.uuid4().hex[:12]
        self.hostname = socket.gethostname()

    def function(self, name: str) -> _RunFunction | None:
        """What runs the queued runs of the distributed job named ``name``."""
        job = self.jobs.get(name)
        return None if job is None else _RunFunction(self, job)

    def _store(self) -> Store:
        assert self.store is not None, "the host is not connected"
        return self.store

    async def fire(self, job: HostedJob, tick: datetime, next_run: datetime | None) -> int:
        """Claim ``tick`` and, unless the previous run is alive, enqueue its run."""
        store = self._store()
        assert job.schedule is not None
        tick_ms = _ms(tick)
        run_id = store.keys.cron_run_id(job.name, tick_ms)
        now_ms = int(time.time() * 1000)
        after_next = job.schedule.next_tick(next_run) if next_run is not None else tick
        now = datetime.now(UTC)
        skipped = RunRecord("", tick, now, now, Outcome.SKIPPED.value, _STILL_RUNNING)
        skipped_queued = RunRecord("", tick, now, now, Outcome.SKIPPED.value, _STILL_QUEUED)
        paused = RunRecord("", tick, now, now, Outcome.SKIPPED.value, PAUSED_MESSAGE)
        fired = await store.fire_tick(
            job.name,
            tick_ms=tick_ms,
            # The claim outlives the run and any process's skew: two periods and an hour.
            claim_ttl_ms=max(_ms(after_next) - tick_ms, 0) + 3_600_000,
            owner=self._owner,
            run_id=run_id,
            record=queued_record(function_name(job.name), [tick_ms], now_ms),
            record_ttl_ms=max(tick_ms - now_ms, 0) + 86_400_000,
            skip_if_running=job.overlap == "skip",
            skipped_entry=json.dumps(skipped.to_json()),
            skipped_while_queued_entry=json.dumps(skipped_queued.to_json()),
            next_run=next_run.isoformat() if next_run else "",
            history_length=HISTORY_LENGTH,
            now_ms=now_ms,
            paused_entry=json.dumps(paused.to_json()),
        )
        if fired == Fired.SKIPPED_PAUSED:
            logger.debug("%s: the tick at %s is skipped, the job is paused", job.name, tick)
        elif fired == Fired.SKIPPED:
            logger.warning("%s: skipped the tick at %s, %s", job.name, tick, _STILL_RUNNING)
        elif fired == Fired.SKIPPED_QUEUED:
            logger.warning(
                "%s: skipped the tick at %s, the previous run has not started yet; is a worker "
                "running for queue %r?",
                job.name,
                tick,
                store.keys.queue,
            )
        return fired

    async def trigger(self, job: HostedJob) -> str:
        """Enqueue a run now, outside the schedule; returns its job id."""
        store = self._store()
        now_ms = int(time.time() * 1000)
        run_id = f"{store.keys.cron_run_id(job.name, now_ms)}:manual:{uuid.uuid4().hex}"
        instrumentation = self.runner.instrumentation
        with (
            contextlib.nullcontext()
            if instrumentation is None
            else instrumentation.enqueue(job.name, run_id)
        ) as traceparent:
            record = queued_record(function_name(job.name), [now_ms, True], now_ms, traceparent)
            await store.enqueue(run_id, record, due_ms=now_ms, ttl_ms=86_400_000)
        return run_id

    async def last_fired_tick(self, job: HostedJob) -> datetime | None:
        """The newest tick any process fired for ``job`` (kept for misfire handling)."""
        tick_ms = await self._store().last_fired_tick(job.name)
        return None if tick_ms is None else datetime.fromtimestamp(tick_ms / 1000, UTC)

    async def run(self, job: HostedJob, run: QueuedRun, tick_ms: int, manual: bool) -> RunReport:
        """One run, in a worker: take the lease, keep it alive, run the job, record it."""
        store = self._store()
        scheduled_at = datetime.fromtimestamp(tick_ms / 1000, UTC)
        ctx = JobContext(
            job_name=job.name,
            run_id=run.job_id,
            attempt=run.attempt,
            scheduled_at=scheduled_at,
            started_at=datetime.now(UTC),
        )
        here = self.hostname, os.getpid()
        started = RunRecord(
            run.job_id, scheduled_at, ctx.started_at, manual=manual, hostname=here[0], pid=here[1]
        )
        began = await store.start_run(
            job.name,
            run.job_id,
            lease_ms=LEASE_MS,
            skip_if_held=job.overlap == "skip",
            scheduled_at=scheduled_at.isoformat(),
            started_at=ctx.started_at.isoformat(),
            running_entry=json.dumps(started.to_json()),
            retry=run.attempt > 1 and not manual,
        )
        if began == 2:
            return RunReport(
                Outcome.RETRIED, message=_WAITING, retry_in_s=HEARTBEAT_S, counted=False
            )
        if not began:
            record = RunRecord(
                run.job_id,
                scheduled_at,
                ctx.started_at,
                datetime.now(UTC),
                Outcome.SKIPPED.value,
                _STILL_RUNNING,
                manual,
                *here,
            )
            await self._record(job.name, record)
            return RunReport(Outcome.SKIPPED, message=_STILL_RUNNING)
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(job.name, run.job_id))
        try:
            report = await self.runner.run(
                job.code,
                ctx,
                kind=JobKind.DISTRIBUTED_CRON,
                timeout_s=job.timeout_s,
                traceparent=run.kwargs.get("traceparent"),
                manual=manual,
                interrupted=run.interrupted,
            )
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await asyncio.shield(store.release_lease(job.name, run.job_id))
        shown = report.result
        finished = RunRecord(
            run.job_id,
            scheduled_at,
            ctx.started_at,
            datetime.now(UTC),
            shown.outcome.value,
            shown.message,
            manual,
            *here,
        )
        await self._record(job.name, finished)
        return report

    async def _heartbeat(self, name: str, run_id: str) -> None:
        store = self._store()
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                renewed = await store.renew_lease(name, run_id, lease_ms=LEASE_MS)
            except Exception as exc:  # keep beating through a Redis blip
                logger.warning("could not renew the lease of run %s: %r", run_id, exc)
                continue
            if not renewed:
                logger.warning("run %s lost its lease (it expired); another run may start", run_id)

    async def _record(self, name: str, record: RunRecord) -> None:
        state = None
        if record.outcome != Outcome.SKIPPED:
            state = {
                "last_finished_at": record.finished_at.isoformat() if record.finished_at else "",
                "last_outcome": record.outcome or "",
                "last_message": record.message or "",
            }
        await self._store().record_run(
            name, json.dumps(record.to_json()), state=state, history_length=HISTORY_LENGTH
        )

    async def status(self, job: HostedJob, next_run: datetime | None = None) -> HostedJobStatus:
        """The job's status as every process sees it (read from Redis).

        ``next_run`` is this process's own next tick, shown until a tick has been fired.
        """
        assert job.schedule is not None
        state, raw_history, running = await self._store().cron_status(job.name, HISTORY_LENGTH)
        history = [RunRecord.from_json(json.loads(item)) for item in raw_history]
        if running and "running_run" in state:
            history.insert(0, RunRecord.from_json(json.loads(state["running_run"])))

        def parsed(field: str) -> datetime | None:
            value = state.get(field)
            return datetime.fromisoformat(value) if value else None

        return HostedJobStatus(
            name=job.name,
            kind=JobKind.DISTRIBUTED_CRON,
            schedule=job.schedule.expression,
            timezone=job.schedule.timezone,
            next_run=parsed("next_run") or next_run,
            last_scheduled_at=parsed("last_scheduled_at"),
            last_started_at=parsed("last_started_at"),
            last_finished_at=parsed("last_finished_at"),
            last_outcome=state.get("last_outcome") or None,
            last_message=state.get("last_message") or None,
            running=1 if running else 0,
            history=tuple(history),
        )
