"""Hosted services: continuous jobs, per-process cron, and the tick loop of distributed cron.

Continuous jobs and per-process cron jobs run in every process that runs the host. All cron
ticks (per-process and distributed) come from one scheduler task that sleeps until the
earliest tick in a heap, so ticks start on time without polling, however many jobs there are.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from .clock import Clock
from .context import JobContext
from .definitions import HostedJob
from .distributed import DistributedCron
from .exceptions import ConfigurationError, UnknownJobError
from .outcomes import JobKind, Outcome
from .results import JobResult
from .runner import Runner, RunReport
from .shutdown import Grace
from .startup import StartupActions
from .status import HostedJobStatus, RunRecord, RunTracker

__all__ = ["HostedServices"]

logger = logging.getLogger("hostedjobs.hosted")

_SPIN_S = 0.002
"""The loop's timers fire up to a millisecond late (epoll rounds its timeout up), so the
scheduler wakes this much before a tick and yields to the loop until the tick is due."""
MAX_DUE_TICKS = 10_000
"""`HostedServices.run_due` runs at most this many ticks of one job in one call."""


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
            RunRecord(ctx.run_id, scheduled_at, ctx.started_at, manual=manual)
        )
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
            await self._run(job, self._begin(job, tick, manual=False))
        return ran

    # -- continuous ---------------------------------------------------------------------------

    async def _continuous(self, job: HostedJob) -> None:
        if not await self._gate(job):
            return
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
        if job.overlap == "skip" and tracker.running:
            logger.warning(
                "%s: skipped the tick at %s, the previous run is still running", job.name, tick
            )
            tracker.skipped(tick, "the previous run was still running")
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

    # -- status -------------------------------------------------------------------------------

    async def status(self) -> list[HostedJobStatus]:
        """Every hosted job's status, in registration order."""
        result = []
        for job in self.jobs.values():
            tracker = self._trackers.get(job.name) or RunTracker()
            if job.kind is JobKind.DISTRIBUTED_CRON and self.distributed.store is not None:
                result.append(await self.distributed.status(job, tracker.next_run))
                continue
            last = tracker.last()
            result.append(
                HostedJobStatus(
                    name=job.name,
                    kind=job.kind,
                    schedule=job.describe_schedule(),
                    timezone=job.schedule.timezone if job.schedule else None,
                    next_run=tracker.next_run,
                    last_scheduled_at=last.scheduled_at if last else None,
                    last_started_at=last.started_at if last else None,
                    last_finished_at=last.finished_at if last else None,
                    last_outcome=last.outcome if last else None,
                    last_message=last.message if last else None,
                    running=len(tracker.running),
                    history=(
                        *sorted(tracker.running.values(), key=lambda r: r.started_at, reverse=True),
                        *tracker.history,
                    ),
                )
            )
        return result
