"""Hosted services: continuous jobs, per-process cron, and the tick loop of distributed cron.

Continuous jobs and per-process cron jobs run in every process that runs the host. All cron
ticks (per-process and distributed) come from one scheduler task that sleeps until the
earliest tick in a heap, so ticks start on time without polling, however many jobs there are.

Each process publishes its continuous and per-process cron runs to Redis so that any process
can show them all (`HostedServices.status`): runs are noted in memory as they start and end,
and one task writes what changed, at most every `PUBLISH_INTERVAL_S`, in one transaction: the
ended runs (only the newest `HISTORY_LENGTH` per job if more ended since the last write) and
a snapshot of the running ones that lapses after `PROCESS_TTL_S` unless refreshed. A job that
loops as fast as it can thus costs Redis a few writes a second, and a Redis outage costs the
job nothing (the writes fail, are logged once, and resume with the newest runs).

Pausing is stored in Redis (a set of paused names); every process re-reads it when a notice
comes on the control channel and every `PAUSE_RECHECK_S` in any case.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .clock import Clock
from .context import JobContext
from .control import follow
from .definitions import HostedJob
from .distributed import DistributedCron
from .exceptions import ConfigurationError, UnknownJobError
from .outcomes import JobKind, Outcome
from .results import JobResult
from .runner import Runner, RunReport
from .shutdown import Grace
from .startup import StartupActions
from .status import (
    HISTORY_LENGTH,
    PAUSED_MESSAGE,
    HostedJobStatus,
    ProcessRuns,
    RunRecord,
    RunTracker,
    parse_time,
)
from .storage import Store

__all__ = ["HostedServices"]

logger = logging.getLogger("hostedjobs.hosted")

_SPIN_S = 0.002
"""The loop's timers fire up to a millisecond late (epoll rounds its timeout up), so the
scheduler wakes this much before a tick and yields to the loop until the tick is due."""
MAX_DUE_TICKS = 10_000
"""`HostedServices.run_due` runs at most this many ticks of one job in one call."""
PUBLISH_INTERVAL_S = 0.25
"""A process writes its hosted jobs' runs to Redis at most this often (4 writes a second)."""
REFRESH_S = 2.0
"""...and at least this often, so its snapshot of running runs does not lapse."""
PROCESS_TTL_S = 10.0
"""A process's snapshot lapses this long after its last write: a killed process's running
runs stop being shown as running."""
PAUSE_RECHECK_S = 1.0
"""Every process re-reads the paused jobs this often, even without a notice."""
_REDIS_TIMEOUT_S = 5.0
_FINAL_PUBLISH_S = 2.0
"""How long a stopping process tries to publish its last runs (it does not hold a shutdown
for Redis)."""


class HostedServices:
    """Runs the hosted jobs of one host while it runs."""

    def __init__(
        self,
        runner: Runner,
        clock: Clock,
        startup: StartupActions,
        distributed: DistributedCron,
    ) -> None:
        self.runner = runner
        self.clock = clock
        self.startup = startup
        self.distributed = distributed
        self.jobs: dict[str, HostedJob] = {}
        self._trackers: dict[str, RunTracker] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._job_loops: set[asyncio.Task[object]] = set()
        self._cron_task: asyncio.Task[object] | None = None
        self._runs: set[asyncio.Task[RunReport]] = set()
        self._heap: list[tuple[datetime, int, HostedJob]] = []
        self._sequence = itertools.count()
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.paused: set[str] = set()
        """The paused jobs' names, as this process last read them."""
        self._unpaused: dict[str, asyncio.Event] = {}
        self._paused_known = asyncio.Event()
        self._publish_wanted = asyncio.Event()
        self._publishing = False
        self._publish_failing = False

    @property
    def process(self) -> str:
        """This process as other processes see it: ``"<hostname>:<pid>"``."""
        return f"{self.hostname}:{self.pid}"

    @property
    def _store(self) -> Store | None:
        return self.distributed.store  # shard 0: distributed cron and hosted runs live there

    def add(self, job: HostedJob) -> None:
        """Register a job; names are unique across every kind."""
        if job.name in self.jobs:
            raise ConfigurationError(
                f"a hosted job named {job.name!r} is already registered; names must be unique "
                "(pass name='...')"
            )
        self.jobs[job.name] = job
        if job.kind is JobKind.DISTRIBUTED_CRON:
            self.distributed.jobs[job.name] = job

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, *, loops: bool = True) -> None:
        """Start every job's loop (gated ones wait for the startup actions).

        With ``loops=False`` nothing starts on its own: cron ticks run when `run_due` finds
        them due by the clock (eager mode, for tests).
        """
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._heap = []
        self._cron_task = None
        self._trackers = {name: RunTracker() for name in self.jobs}
        self.pid = os.getpid()  # the host may have been built before a fork
        self._unpaused = {name: asyncio.Event() for name in self.jobs}
        for name, gate in self._unpaused.items():
            if name not in self.paused:
                gate.set()
        self._paused_known = asyncio.Event()
        self._publish_wanted = asyncio.Event()
        self._publishing = False
        store = self._store
        if not loops or store is None:
            self._paused_known.set()
        else:
            self._spawn(self._control_loop(store), "hostedjobs:control")
            if any(job.kind is not JobKind.DISTRIBUTED_CRON for job in self.jobs.values()):
                self._publishing = True
                self._spawn(self._publish_loop(store), "hostedjobs:publish")
        if not loops:
            now = self.clock.now()
            for job in self.jobs.values():
                if job.schedule is not None:
                    self._trackers[job.name].next_run = job.schedule.next_tick(now)
            return
        for job in self.jobs.values():
            if job.kind is JobKind.CONTINUOUS:
                for instance in range(job.instance_count):
                    self._spawn(
                        self._continuous(job), f"hostedjobs:{job.name}:{instance}", runs_jobs=True
                    )
            else:
                self._spawn(self._schedule_first_tick(job), f"hostedjobs:{job.name}:first-tick")
        if any(job.schedule is not None for job in self.jobs.values()):
            self._cron_task = self._spawn(self._cron_loop(), "hostedjobs:cron")

    @property
    def scheduler_alive(self) -> bool | None:
        """Whether the cron tick loop runs (None when there are no cron jobs)."""
        if self._cron_task is None:
            return None
        return not self._cron_task.done()

    def _spawn(
        self, coroutine: object, name: str, *, runs_jobs: bool = False
    ) -> asyncio.Task[object]:
        """Start a task; those that run jobs inline get the shutdown grace, others do not."""
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(coroutine, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        if runs_jobs:
            self._job_loops.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        self._job_loops.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("hosted job task %s crashed", task.get_name(), exc_info=exc)

    async def stop(self, grace_s: float, grace: Grace | None = None) -> None:
        """Stop scheduling; let runs finish within ``grace_s`` (or until ``grace`` is
        hurried), then cancel them."""
        self._stopping.set()
        self._changed.set()
        # Scheduling (the tick loop, claims being retried) stops at once; runs get the grace.
        scheduling = [t for t in self._tasks if t not in self._job_loops and not t.done()]
        for task in scheduling:
            task.cancel()
        if scheduling:
            await asyncio.wait(scheduling, timeout=5)
        pending = [t for t in (*self._job_loops, *self._runs) if not t.done()]
        if pending:
            late = await (grace or Grace()).wait(pending, grace_s)
            for task in late:
                logger.warning(
                    "cancelling %s: it did not finish within the grace period", task.get_name()
                )
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5)
        store = self._store
        if self._publishing and store is not None:
            self._publishing = False
            with contextlib.suppress(Exception):  # Redis down: the snapshot lapses on its own
                async with asyncio.timeout(_FINAL_PUBLISH_S):
                    await self._publish(store)
                    await store.forget_hosted_process(self.process)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; False if the host is stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0)):  # wait_for can swallow a cancel (3.11)
                await self._stopping.wait()
        return not self._stopping.is_set()

    async def _gate(self, job: HostedJob) -> bool:
        if not job.wait_for_startup:
            return True
        if await self.startup.wait():
            return True
        logger.error(
            "%s will not start: startup action %r failed", job.name, self.startup.failed_action
        )
        return False

    # -- runs ---------------------------------------------------------------------------------

    def _begin(self, job: HostedJob, scheduled_at: datetime | None, manual: bool) -> JobContext:
        ctx = JobContext(
            job_name=job.name,
            run_id=uuid.uuid4().hex,
            attempt=1,
            scheduled_at=scheduled_at,
            started_at=self.clock.now(),
        )
        self._trackers[job.name].started(
            RunRecord(
                ctx.run_id,
                scheduled_at,
                ctx.started_at,
                manual=manual,
                hostname=self.hostname,
                pid=self.pid,
            )
        )
        self._publish_wanted.set()
        return ctx

    async def _run(self, job: HostedJob, ctx: JobContext, *, manual: bool = False) -> RunReport:
        tracker = self._trackers[job.name]
        try:
            report = await self.runner.run(
                job.code, ctx, kind=job.kind, timeout_s=job.timeout_s, manual=manual
            )
        except asyncio.CancelledError:
            tracker.finished(ctx.run_id, JobResult.cancelled("cancelled by shutdown"))
            raise
        finally:
            self._publish_wanted.set()
        tracker.finished(ctx.run_id, report.result)
        return report

    async def run_once(self, name: str) -> JobResult:
        """Run a continuous or per-process cron job once, here and now, and wait for it."""
        job = self._job(name)
        if job.kind is JobKind.DISTRIBUTED_CRON:
            raise ConfigurationError(
                f"{name!r} is a distributed cron job: trigger it (host.trigger) so a worker runs it"
            )
        self._trackers.setdefault(name, RunTracker())
        report = await self._run(job, self._begin(job, self.clock.now(), manual=True), manual=True)
        return report.result

    def _start_run(
        self, job: HostedJob, scheduled_at: datetime | None, *, manual: bool = False
    ) -> str:
        ctx = self._begin(job, scheduled_at, manual)
        task = asyncio.get_running_loop().create_task(
            self._run(job, ctx, manual=manual), name=f"hostedjobs:{job.name}:run"
        )
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)
        return ctx.run_id

    def _job(self, name: str) -> HostedJob:
        job = self.jobs.get(name)
        if job is None:
            known = ", ".join(sorted(self.jobs)) or "none"
            raise UnknownJobError(f"no hosted job named {name!r} (registered: {known})")
        return job

    async def trigger(self, name: str) -> str:
        """Run a hosted job now; returns the run id (for distributed cron, the queued job's)."""
        job = self._job(name)
        if job.kind is JobKind.DISTRIBUTED_CRON and self.distributed.store is not None:
            return await self.distributed.trigger(job)
        if name not in self._trackers:
            self._trackers[name] = RunTracker()
        return self._start_run(job, self.clock.now(), manual=True)

    async def run_due(
        self,
        *,
        startup_succeeded: bool,
        before_tick: Callable[[datetime], Awaitable[int]] | None = None,
    ) -> int:
        """Without loops (`start(loops=False)`): run, here and in tick order, every cron and
        distributed cron tick that the clock has passed since the last call; returns how
        many ran. Gated jobs skip the ticks that pass before the startup actions succeed.
        ``before_tick(tick)`` runs first what else was due by then (on-demand jobs).

        Raises `ConfigurationError`, running nothing, if one job has more than `MAX_DUE_TICKS`
        ticks due (the clock was moved too far for its schedule).
        """
        now = self.clock.now()
        due: list[tuple[datetime, int, HostedJob, datetime]] = []
        for job in self.jobs.values():
            tracker = self._trackers.get(job.name)
            if job.schedule is None or tracker is None or tracker.next_run is None:
                continue
            if job.wait_for_startup and not startup_succeeded:
                tracker.next_run = job.schedule.next_tick(now)
                continue
            tick = tracker.next_run
            ticks = 0
            while tick <= now:
                ticks += 1
                if ticks > MAX_DUE_TICKS:
                    raise ConfigurationError(
                        f"{job.name} has more than {MAX_DUE_TICKS} ticks due between "
                        f"{tracker.next_run} and {now}: move the clock in smaller steps"
                    )
                following = job.schedule.next_tick(tick)
                due.append((tick, next(self._sequence), job, following))
                tick = following
        due.sort(key=lambda item: item[:2])
        ran = len(due)
        for tick, _, job, following in due:
            if before_tick is not None:
                ran += await before_tick(tick)
            self._trackers[job.name].next_run = following
            if job.name in self.paused:
                self._skip_paused(job, tick)
                ran -= 1
                continue
            await self._run(job, self._begin(job, tick, manual=False))
        return ran

    # -- continuous ---------------------------------------------------------------------------

    async def _continuous(self, job: HostedJob) -> None:
        if not await self._gate(job):
            return
        await self._paused_known.wait()
        tracker = self._trackers[job.name]
        if job.initial_delay_s:
            tracker.next_run = self.clock.now() + timedelta(seconds=job.initial_delay_s)
            if not await self._sleep(job.initial_delay_s):
                return
        iterations = failures = 0
        while not self._stopping.is_set():
            if job.iteration_limit is not None and iterations >= job.iteration_limit:
                logger.info("%s: finished its %d iterations", job.name, job.iteration_limit)
                return
            if not await self._wait_unpaused(job):
                return
            ctx = self._begin(job, None, manual=False)
            report = await self._run(job, ctx)
            iterations += 1
            delay = job.interval_s
            if report.outcome is Outcome.FAILED:
                failures += 1
                delay = max(delay, job.failure_backoff.delay(failures))
            else:
                failures = 0
            tracker.next_run = self.clock.now() + timedelta(seconds=delay)
            if delay and not await self._sleep(delay):
                return
            # Yield to the loop even when running back to back.
            await asyncio.sleep(0)

    # -- cron ---------------------------------------------------------------------------------

    async def _schedule_first_tick(self, job: HostedJob) -> None:
        if not await self._gate(job):
            return
        await self._paused_known.wait()  # a job paused before a restart skips its first tick
        assert job.schedule is not None
        now = self.clock.now()
        first = job.schedule.next_tick(now)
        if job.kind is JobKind.DISTRIBUTED_CRON and job.misfire == "run_once":
            await self._catch_up(job, now, first)
        self._push(job, first)

    async def _catch_up(self, job: HostedJob, now: datetime, first: datetime) -> None:
        assert job.schedule is not None
        try:
            last = await self.distributed.last_fired_tick(job)
        except Exception as exc:
            logger.warning("%s: cannot read the last fired tick (%r); no catch-up", job.name, exc)
            return
        missed = job.schedule.previous_tick(now)
        if last is None or missed is None or missed <= last:
            return
        if (now - missed).total_seconds() > job.misfire_grace_s:
            logger.info(
                "%s: missed the tick at %s, beyond its misfire grace; skipping it", job.name, missed
            )
            return
        logger.info("%s: running the tick missed at %s (misfire=run_once)", job.name, missed)
        await self.distributed.fire(job, missed, first)

    def _push(self, job: HostedJob, tick: datetime) -> None:
        heapq.heappush(self._heap, (tick, next(self._sequence), job))
        self._trackers[job.name].next_run = tick
        self._changed.set()

    async def _cron_loop(self) -> None:
        while not self._stopping.is_set():
            if not self._heap:
                self._changed.clear()
                await self._changed.wait()
                continue
            tick, _, job = self._heap[0]
            delay = (tick - self.clock.now()).total_seconds()
            if delay > _SPIN_S:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay - _SPIN_S):
                        await self._changed.wait()
                continue
            if delay > 0:
                await asyncio.sleep(0)
                continue
            heapq.heappop(self._heap)
            assert job.schedule is not None
            now = self.clock.now()
            following = job.schedule.next_tick(tick)
            if following <= now:
                logger.warning("%s: the scheduler was late; skipping ticks up to %s", job.name, now)
                following = job.schedule.next_tick(now)
            self._push(job, following)
            self._dispatch(job, tick, following)

    def _dispatch(self, job: HostedJob, tick: datetime, following: datetime) -> None:
        if job.kind is JobKind.DISTRIBUTED_CRON:
            self._spawn(self._fire(job, tick, following), f"hostedjobs:{job.name}:fire")
            return
        tracker = self._trackers[job.name]
        if job.name in self.paused:
            self._skip_paused(job, tick)
            return
        if job.overlap == "skip" and tracker.running:
            logger.warning(
                "%s: skipped the tick at %s, the previous run is still running", job.name, tick
            )
            tracker.skipped(
                tick, "the previous run was still running", hostname=self.hostname, pid=self.pid
            )
            self._publish_wanted.set()
            return
        self._start_run(job, tick)

    async def _fire(self, job: HostedJob, tick: datetime, following: datetime) -> None:
        delay = 0.05
        while True:
            try:
                await self.distributed.fire(job, tick, following)
                return
            except Exception as exc:
                if self.clock.now() >= following or self._stopping.is_set():
                    logger.error("%s: could not fire the tick at %s: %r", job.name, tick, exc)
                    return
                logger.warning(
                    "%s: firing the tick at %s failed (%r); retrying", job.name, tick, exc
                )
                await self._sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- pause ------------------------------------------------------------------------------

    async def set_paused(self, name: str, paused: bool) -> bool:
        """Pause (or resume) the hosted job ``name`` in every process; True if that changed
        its state. Stored in Redis when connected (every process obeys within
        `PAUSE_RECHECK_S`, at once when the notice arrives), else in this process only.

        Raises `UnknownJobError` for an unknown name.
        """
        self._job(name)
        names = set(self.paused)
        changed = (name not in names) if paused else (name in names)
        store = self._store
        if store is not None:
            changed = await store.set_paused("hosted", name, paused)
        if paused:
            names.add(name)
        else:
            names.discard(name)
        self._apply_paused(names)
        return changed

    def _apply_paused(self, names: set[str]) -> None:
        names = names & self.jobs.keys()
        if names != self.paused:
            self._publish_wanted.set()  # so other processes see that this one obeys
        for name in sorted(names ^ self.paused):
            logger.info("%s: %s", name, "paused" if name in names else "resumed")
            if name in self._trackers:
                self._trackers[name].paused_noted = False
            gate = self._unpaused.get(name)
            if gate is not None:
                if name in names:
                    gate.clear()
                else:
                    gate.set()
        self.paused = names

    async def _wait_unpaused(self, job: HostedJob) -> bool:
        """Wait while ``job`` is paused; False if the host is stopping."""
        gate = self._unpaused.get(job.name)
        if gate is not None and not gate.is_set():
            loop = asyncio.get_running_loop()
            waits = {loop.create_task(gate.wait()), loop.create_task(self._stopping.wait())}
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
        return not self._stopping.is_set()

    def _skip_paused(self, job: HostedJob, tick: datetime) -> None:
        """A cron tick while paused: the first of each pause is recorded as skipped."""
        tracker = self._trackers[job.name]
        if not tracker.paused_noted:
            tracker.paused_noted = True
            tracker.skipped(tick, PAUSED_MESSAGE, hostname=self.hostname, pid=self.pid)
            self._publish_wanted.set()

    async def _control_loop(self, store: Store) -> None:
        """Follow the paused set (`hostedjobs.control.follow`)."""

        async def read() -> float:
            async with asyncio.timeout(_REDIS_TIMEOUT_S):
                self._apply_paused(await store.paused_names("hosted"))
            self._paused_known.set()
            return PAUSE_RECHECK_S

        await follow(
            store,
            read,
            what="the paused hosted jobs",
            stopping=self._stopping,
            failed=self._paused_known.set,  # start as last known rather than not at all
        )

    # -- publishing runs ----------------------------------------------------------------------

    async def _publish_loop(self, store: Store) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_S):
                    await self._publish_wanted.wait()
            self._publish_wanted.clear()
            await self._publish(store)
            # Coalesce: whatever starts or ends meanwhile goes in the next write.
            await asyncio.sleep(PUBLISH_INTERVAL_S)

    async def _publish(self, store: Store) -> None:
        """Write this process's ended runs and running snapshot; a failure is logged (once
        until a write succeeds again) and the runs stay for the next write."""
        now = datetime.now(UTC)
        runs: dict[str, list[str]] = {}
        last: dict[str, str] = {}
        sent: list[tuple[RunTracker, set[int]]] = []
        jobs: dict[str, object] = {}
        for name, tracker in self._trackers.items():
            if self.jobs[name].kind is JobKind.DISTRIBUTED_CRON:
                continue
            ended = list(tracker.unpublished)
            if ended:
                runs[name] = [json.dumps(run.to_json()) for run in reversed(ended)]
                ran = next((run for run in ended if run.outcome != Outcome.SKIPPED), None)
                if ran is not None:
                    last[name] = json.dumps(ran.to_json())
                sent.append((tracker, {id(run) for run in ended}))
            running = sorted(tracker.running.values(), key=lambda r: r.started_at, reverse=True)
            jobs[name] = {
                "running": [run.to_json() for run in running[:HISTORY_LENGTH]],
                "count": len(running),
                "next_run": tracker.next_run.isoformat() if tracker.next_run else None,
                "paused": name in self.paused,
            }
        snapshot = {"hostname": self.hostname, "pid": self.pid, "at": now.isoformat(), "jobs": jobs}
        try:
            async with asyncio.timeout(_REDIS_TIMEOUT_S):
                await store.publish_hosted(
                    self.process,
                    json.dumps(snapshot),
                    ttl_ms=int(PROCESS_TTL_S * 1000),
                    now_ms=int(time.time() * 1000),
                    runs=runs,
                    last=last,
                    history_length=HISTORY_LENGTH,
                )
        except Exception as exc:
            if not self._publish_failing:
                logger.warning(
                    "cannot publish the hosted jobs' runs (%r); the jobs go on, and the newest "
                    "%d runs of each are published once Redis answers",
                    exc,
                    HISTORY_LENGTH,
                )
                self._publish_failing = True
            return
        if self._publish_failing:
            logger.info("publishing the hosted jobs' runs again")
            self._publish_failing = False
        for tracker, ids in sent:
            kept = [run for run in tracker.unpublished if id(run) not in ids]
            tracker.unpublished.clear()
            tracker.unpublished.extend(kept)

    # -- status -------------------------------------------------------------------------------

    async def status(self) -> list[HostedJobStatus]:
        """Every hosted job's status, in registration order, as every process sees it.

        Continuous and per-process cron jobs merge what every live process published (this
        process's own state is read from memory): running counts are summed, the history
        merges every process's runs, the last run is the newest across processes, and the
        next run is the soonest any live process will start. If Redis cannot be read, they
        show this process's runs only (logged).
        """
        store = self._store
        per_process = [j.name for j in self.jobs.values() if j.kind is not JobKind.DISTRIBUTED_CRON]
        shared: tuple[list[bytes], dict[str, tuple[list[bytes], bytes | None]], set[str]] | None
        shared = None
        if store is not None:
            try:
                shared = await store.read_hosted(
                    per_process, history_length=HISTORY_LENGTH, now_ms=int(time.time() * 1000)
                )
            except Exception as exc:
                if not per_process or any(
                    j.kind is JobKind.DISTRIBUTED_CRON for j in self.jobs.values()
                ):
                    raise
                logger.warning(
                    "cannot read other processes' hosted job runs (%r); showing this one's", exc
                )
        paused = self.paused if shared is None else shared[2]
        snapshots = [] if shared is None else _snapshots(shared[0], self.process, self._publishing)
        result = []
        for job in self.jobs.values():
            tracker = self._trackers.get(job.name)
            if job.kind is JobKind.DISTRIBUTED_CRON and store is not None:
                status = await self.distributed.status(job, tracker.next_run if tracker else None)
                status = dataclasses.replace(status, paused=job.name in paused)
            else:
                stored = None if shared is None else shared[1].get(job.name)
                status = self._merged(job, tracker, snapshots, stored, job.name in paused)
            if status.paused:
                status = dataclasses.replace(status, next_run=None)  # nothing starts while paused
            result.append(status)
        return result

    def _merged(
        self,
        job: HostedJob,
        tracker: RunTracker | None,
        snapshots: list[dict[str, Any]],
        stored: tuple[list[bytes], bytes | None] | None,
        paused: bool,
    ) -> HostedJobStatus:
        now = datetime.now(UTC)
        processes: list[ProcessRuns] = []
        running: list[RunRecord] = []
        for snapshot in snapshots:
            entry = snapshot["jobs"].get(job.name)
            if not isinstance(entry, dict):
                continue
            records = [RunRecord.from_json(r) for r in entry.get("running") or () if r]
            count = entry.get("count")
            obeys = entry.get("paused") is True
            processes.append(
                ProcessRuns(
                    hostname=str(snapshot.get("hostname")),
                    pid=int(snapshot.get("pid") or 0),
                    running=count if type(count) is int else len(records),
                    next_run=None if obeys else parse_time(entry.get("next_run")),
                    seen_at=parse_time(snapshot.get("at")) or now,
                    paused=obeys,
                )
            )
            running.extend(records)
        if tracker is not None:
            processes.append(
                ProcessRuns(
                    self.hostname,
                    self.pid,
                    len(tracker.running),
                    None if job.name in self.paused else tracker.next_run,
                    now,
                    paused=job.name in self.paused,
                )
            )
            running.extend(tracker.running.values())
        ended: list[RunRecord] = []
        candidates: list[RunRecord] = list(running)
        if stored is None:
            ended = list(tracker.history) if tracker is not None else []
        else:
            raw_runs, raw_last = stored
            seen: set[str] = set()
            for run in (
                *(_record(item) for item in raw_runs),
                *(tracker.unpublished if tracker is not None else ()),
            ):
                key = json.dumps(run.to_json(), sort_keys=True) if run is not None else ""
                if run is not None and key not in seen:
                    seen.add(key)
                    ended.append(run)
            ended.sort(key=lambda r: r.finished_at or r.started_at, reverse=True)
            del ended[HISTORY_LENGTH:]
            if raw_last is not None and (last_run := _record(raw_last)) is not None:
                candidates.append(last_run)
        candidates.extend(run for run in ended if run.outcome != Outcome.SKIPPED)
        last = max(candidates, key=lambda r: r.started_at) if candidates else None
        next_runs = [p.next_run for p in processes if p.next_run is not None]
        return HostedJobStatus(
            name=job.name,
            kind=job.kind,
            schedule=job.describe_schedule(),
            timezone=job.schedule.timezone if job.schedule else None,
            next_run=min(next_runs) if next_runs else None,
            last_scheduled_at=last.scheduled_at if last else None,
            last_started_at=last.started_at if last else None,
            last_finished_at=last.finished_at if last else None,
            last_outcome=last.outcome if last else None,
            last_message=last.message if last else None,
            running=sum(p.running for p in processes),
            history=(*sorted(running, key=lambda r: r.started_at, reverse=True), *ended),
            paused=paused,
            processes=tuple(processes),
        )


def _snapshots(raw: list[bytes], own: str, skip_own: bool) -> list[dict[str, Any]]:
    """The processes' published snapshots; this process's own is left out when its live
    state is at hand (it is newer)."""
    snapshots = []
    for item in raw:
        try:
            snapshot = json.loads(item)
        except ValueError:
            continue
        if not isinstance(snapshot, dict) or not isinstance(snapshot.get("jobs"), dict):
            continue
        if skip_own and f"{snapshot.get('hostname')}:{snapshot.get('pid')}" == own:
            continue
        snapshots.append(snapshot)
    return snapshots


def _record(raw: bytes) -> RunRecord | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return RunRecord.from_json(data) if isinstance(data, dict) else None
