"""`EagerScheduler`: on-demand jobs kept and run in this process, for tests (no Redis).

It is a `Scheduler` whose jobs live in a dict instead of Redis. A job is stored in the same
form as in Redis (the payload encoded, the record written as JSON bytes) and run at once
through the same `QueuedFunction` a worker would call, which decodes the payload and runs
the handler through the `Runner`: scope, ``Inject``, `JobContext`, timeout, retries. Its
result is recorded as a worker records it, and read back by the same code as `Scheduler.get`.

Differences from the engine, on purpose: a due job runs inside the ``enqueue`` call that made
it due (a job enqueued by a running job runs after it, in the same call); a retry runs at
once, without its backoff; a scheduled job runs when `run_due` finds it due by the clock
(tests move a frozen clock); results are kept until the scheduler is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import itertools
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from .clock import Clock
from .durations import Seconds, seconds
from .exceptions import (
    ConfigurationError,
    HostNotRunningError,
    JobAlreadyExistsError,
    JobFailedError,
)
from .history import (
    MINUTE_MS,
    HistoryPoint,
    HistoryWindow,
    JobTypeStats,
    history_fields,
    history_points,
    job_type_stats,
)
from .outcomes import JobStatus, Outcome
from .records import HEAD_START_FIELD, head_start_of, queued_due_ms
from .runner import QueuedFunction, QueuedRun, RunReport, error_text, error_traceback
from .scheduler import (
    SCAN_LIMIT,
    JobCount,
    JobId,
    JobInfo,
    JobList,
    Scheduler,
    _job_info,
    _new_id,
    _prepare_many,
    _Query,
    _readable,
)
from .serialization import encode_payload, job_record, job_type_info, read_record
from .storage import KeyLayout, Store, StoredJob
from .storage.store import try_entries
from .worker import finished_record

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["EagerScheduler"]

logger = logging.getLogger("hostedjobs.eager")

_WAITING = (JobStatus.QUEUED, JobStatus.SCHEDULED)
_FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
_UNTRACED: contextlib.nullcontext[None] = contextlib.nullcontext()
_IN_RUN: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "hostedjobs_eager_run", default=False
)
"""True inside an eager run: a job it enqueues waits for the run to end (the outer call
runs it), as a queued job would, instead of running inside it."""


_HISTORY_KINDS = {JobStatus.SUCCEEDED: "s", JobStatus.FAILED: "f", JobStatus.CANCELLED: "c"}
"""The run history's field of each finished state."""


@dataclass(slots=True)
class _Job:
    """One job as Redis would hold it: its record, due time, tries, meta and result."""

    record: bytes
    sequence: int
    due_ms: int | None
    """When it is due; None while it runs and once it has finished."""
    tries: int = 0
    meta: dict[str, str] = field(default_factory=dict)
    result: bytes | None = None
    running_since_ms: int | None = None
    task: asyncio.Task[RunReport] | None = None
    cancelling: bool = False

    def stored(self) -> StoredJob:
        return StoredJob(
            record=self.record,
            result=self.result,
            locked=self.running_since_ms is not None,
            score_ms=self.due_ms,
            tries=self.tries,
            meta=dict(self.meta),
            running_since_ms=self.running_since_ms,
        )


class EagerScheduler(Scheduler):
    """A `Scheduler` that keeps jobs in this process and runs each one as soon as it is due.

    The host uses it in eager mode (`hostedjobs.testing.eager`); nothing here touches Redis.
    ``functions`` maps a queued name (``"type@version"``) to what runs it, as for a worker;
    ``unknown`` says why a name has none; ``clock`` tells when scheduled jobs are due.
    """

    def __init__(
        self,
        queue_name: str,
        functions: Callable[[str], QueuedFunction | None],
        unknown: Callable[[str], str],
        clock: Clock,
    ) -> None:
        super().__init__(queue_name)
        self.clock = clock
        self._functions = functions
        self._unknown = unknown
        self._queue_key = KeyLayout(queue_name).queue
        self._jobs: dict[str, _Job] = {}
        self._sequence = itertools.count()
        self._lock = threading.Lock()  # a test may read from another thread (TestClient)
        self.running = False
        """Set while the host runs: before and after, every method raises
        `HostNotRunningError`, as the Redis-backed scheduler does."""
        self.taking_jobs = False
        """Set once the startup actions have succeeded: jobs wait until then, as they wait
        for a worker that has not started taking jobs."""
        self.wait_for_startup = True
        """Whether the host's start waits for its startup actions (`testing.eager`)."""

    # -- no Redis ------------------------------------------------------------------------------

    def _no_redis(self) -> NoReturn:
        raise ConfigurationError(
            "this host runs in eager mode (hostedjobs.testing.eager): its jobs are kept in this "
            "process and there is no Redis to reach; read them with scheduler.get, jobs and counts"
        )

    @property
    def store(self) -> Store:
        """Raises `ConfigurationError`: eager mode has no Redis."""
        self._no_redis()

    @property
    def pool(self) -> Redis:
        """Raises `ConfigurationError`: eager mode has no Redis."""
        self._no_redis()

    def _now_ms(self) -> int:
        return int(self.clock.now().timestamp() * 1000)

    def _check_running(self) -> None:
        if not self.running:
            raise HostNotRunningError(
                "the job host is not running: start it inside eager(host), with the app's "
                "lifespan (`with TestClient(app):`) or `async with host.run():`"
            )

    # -- enqueue -------------------------------------------------------------------------------

    async def _add(
        self, job: object, job_id: str | None, *, due_ms: int | None, head_start_ms: int = 0
    ) -> JobId[Any]:
        info = job_type_info(job)
        payload = encode_payload(job)
        self._check_running()
        if job_id is not None and (not isinstance(job_id, str) or not job_id):
            raise ConfigurationError(f"job_id must be a non-empty string, got {job_id!r}")
        job_id = job_id or _new_id()
        instrumentation = self.instrumentation
        with (
            _UNTRACED if instrumentation is None else instrumentation.enqueue(info.name, job_id)
        ) as trace:
            now_ms = self._now_ms()
            record = job_record(info.key, payload, now_ms, trace, head_start_ms)
            if not self._store_job(job_id, record, max(due_ms or now_ms, now_ms) - head_start_ms):
                raise JobAlreadyExistsError(
                    f"a job with id {job_id!r} already exists (queued, running or with a kept "
                    "result); use another id, or delete the queued one first"
                )
        await self.run_due()
        return JobId(job_id)

    async def _enqueue_many(
        self, jobs: Iterable[object], trace: str | None, head_start_ms: int = 0
    ) -> list[JobId[Any]]:
        now_ms = self._now_ms()
        prepared = _prepare_many(jobs, trace, now_ms, head_start_ms)
        self._check_running()
        for job_id, record in prepared:
            self._store_job(job_id, record, now_ms - head_start_ms)
        await self.run_due()
        return [JobId(job_id) for job_id, _ in prepared]

    def _store_job(self, job_id: str, record: bytes, due_ms: int) -> bool:
        with self._lock:
            if job_id in self._jobs:
                return False
            self._jobs[job_id] = _Job(record, next(self._sequence), due_ms)
            return True

    # -- running -------------------------------------------------------------------------------

    async def run_due(self, until: datetime | None = None) -> int:
        """Run every job due by the clock (or by ``until``, if earlier), oldest due first,
        until none is; returns how many ran. Inside a run it does nothing: the outer call
        runs what the run enqueued. Before the startup actions succeed, nothing runs."""
        self._check_running()
        if _IN_RUN.get() or not self.taking_jobs:
            return 0
        ran = 0
        while (taken := self._take_due(until)) is not None:
            await self._run(*taken)
            ran += 1
        return ran

    def _take_due(self, until: datetime | None) -> tuple[str, _Job] | None:
        now_ms = self._now_ms()
        by_ms = now_ms if until is None else min(now_ms, int(until.timestamp() * 1000))
        with self._lock:
            due = [
                (job.due_ms, job.sequence, job_id, job)
                for job_id, job in self._jobs.items()
                if job.due_ms is not None and job.due_ms <= by_ms and "parked" not in job.meta
            ]
            if not due:
                return None
            _, _, job_id, job = min(due, key=lambda item: item[:2])
            job.running_since_ms = now_ms
            return job_id, job

    async def _run(self, job_id: str, job: _Job) -> None:
        due_ms = job.due_ms or self._now_ms()
        job.due_ms = None
        start_ms = self._now_ms()
        base: dict[str, Any] = {"t": job.tries, "f": "<unknown>", "a": [], "k": {}, "et": 0}
        try:
            record = read_record(job.record)
            base.update(f=record["f"], a=record.get("a") or [], k=record.get("k") or {})
            base["et"] = record.get("et") or 0
            if head_start := head_start_of(record):
                base[HEAD_START_FIELD] = head_start  # kept in the result: a retry keeps it
            function = self._functions(str(record["f"]))
        except Exception as exc:
            report = RunReport(Outcome.FAILED, message=error_text(exc), error=exc)
            self._finish(job_id, job, base, start_ms, report)
            return
        if function is None:
            # As a worker parks it: it waits, visibly, for code that can run it.
            reason = self._unknown(str(record["f"]))
            logger.warning("job %s cannot run here and waits: %s", job_id, reason)
            job.meta.update(parked="1", parked_reason=reason)
            job.running_since_ms = None
            return
        token = _IN_RUN.set(True)
        try:
            while True:
                if job.cancelling:  # asked between two tries
                    report = RunReport(
                        Outcome.CANCELLED, message=f"cancelled before try {job.tries + 1}"
                    )
                    break
                if job.tries >= function.max_tries:
                    error = JobFailedError(f"max {function.max_tries} tries exceeded")
                    report = RunReport(Outcome.FAILED, message=error_text(error), error=error)
                    break
                job.tries += 1
                base["t"] = job.tries
                start_ms = self._now_ms()
                report = await self._try(
                    job_id, job, base, due_ms, function, queued_due_ms(due_ms, record)
                )
                if report.outcome is not Outcome.RETRIED:
                    break
                if report.message:
                    job.meta["error"] = report.message
                    trace = error_traceback(report.error) or ""
                    job.meta["traceback"] = trace
                    job.meta[f"try:{job.tries}"] = json.dumps(
                        {
                            "try": job.tries,
                            "at": self._now_ms(),
                            "error": report.message,
                            "traceback": trace,
                        }
                    )
        finally:
            _IN_RUN.reset(token)
        self._finish(job_id, job, base, start_ms, report)

    async def _try(
        self,
        job_id: str,
        job: _Job,
        base: dict[str, Any],
        due_ms: int,
        function: QueuedFunction,
        scheduled_ms: int,
    ) -> RunReport:
        """One try; ``due_ms`` is the job's place in the queue (where a shutdown puts it
        back), ``scheduled_ms`` when it was due (`queued_due_ms`)."""
        run = QueuedRun(
            job_id=job_id,
            function=base["f"],
            args=base["a"],
            kwargs=base["k"],
            attempt=job.tries,
            due_ms=scheduled_ms,
            enqueued_ms=int(base["et"]),
            interrupted=lambda: Outcome.CANCELLED if job.cancelling else Outcome.RETRIED,
        )
        # Its own task, so that `cancel` can stop this run without stopping the caller.
        job.task = asyncio.ensure_future(function.run(run))
        try:
            return await job.task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not job.cancelling or (current is not None and current.cancelling()):
                # The caller was cancelled: the job goes back, and this try does not count.
                job.tries -= 1
                job.due_ms, job.running_since_ms = due_ms, None
                raise
            return RunReport(Outcome.CANCELLED, message="cancelled while it ran")
        finally:
            job.task = None

    def _finish(
        self, job_id: str, job: _Job, base: dict[str, Any], start_ms: int, report: RunReport
    ) -> None:
        job.running_since_ms = None
        if self.keep_result_s <= 0:
            with self._lock:
                self._jobs.pop(job_id, None)
            return
        _, job.result = finished_record(
            job_id,
            base,
            start_ms,
            report,
            queue=self._queue_key,
            finished_ms=self._now_ms(),
            history=try_entries(job.meta),
        )

    async def progress(self, job_id: str, values: dict[str, str]) -> None:
        """Keep a running job's progress (the `ProgressStore` of eager handlers)."""
        job = self._jobs.get(job_id)
        if job is not None:
            job.meta.update(values)

    # -- control -------------------------------------------------------------------------------

    async def delete(self, job_id: str) -> bool:
        """Remove a queued or scheduled job; False if it is running, finished or unknown."""
        self._check_running()
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or (job.due_ms is None and "parked" not in job.meta):
                return False
            del self._jobs[job_id]
            return True

    async def cancel(self, job_id: str) -> bool:
        """Cancel a queued, scheduled or running job; False if unknown or finished."""
        self._check_running()
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.result is not None:
                return False
            if job.running_since_ms is not None:
                job.cancelling = True
                if job.task is not None:
                    job.task.cancel()
                return True
            job.due_ms = None
        record = _readable(job.record)[0] or {"f": "<unreadable>", "a": [], "k": {}, "et": 0}
        base = {"t": job.tries, "f": record["f"], "a": record["a"], "k": record["k"]}
        base["et"] = record["et"]
        error = f" (try {job.tries}: {job.meta['error']})" if "error" in job.meta else ""
        message = (
            "cancelled before it started"
            if not job.tries
            else f"cancelled before try {job.tries + 1}{error}"
        )
        now_ms = self._now_ms()
        report = RunReport(Outcome.CANCELLED, message=message)
        self._finish(job_id, job, base, now_ms, report)
        return True

    async def retry(self, job_id: str) -> bool:
        """Run a failed job again under the same id with a fresh try count; False unless it
        failed and its result is kept."""
        self._check_running()
        with self._lock:
            job = self._jobs.get(job_id)
            record = None if job is None else _readable(job.result)[0]
            if job is None or record is None or record.get("o") != Outcome.FAILED.value:
                return False
            args = record["a"] or [None]
            now_ms = self._now_ms()
            head_start = head_start_of(record)
            self._jobs[job_id] = _Job(
                job_record(record["f"], args[0], now_ms, head_start_ms=head_start),
                next(self._sequence),
                now_ms - head_start,
            )
        await self.run_due()
        return True

    # -- reading -------------------------------------------------------------------------------

    async def get(self, job_id: str) -> JobInfo | None:
        """The job's status, tries, times, result or error, and progress; None if unknown."""
        self._check_running()
        job = self._jobs.get(job_id)
        return None if job is None else self._typed_result(self._info(job_id, job))

    def _info(self, job_id: str, job: _Job) -> JobInfo | None:
        info = _job_info(job_id, job.stored())
        if info is not None and info.status in _WAITING and job.due_ms is not None:
            # Due by this scheduler's clock, not the machine's.
            due = job.due_ms <= self._now_ms()
            info = dataclasses.replace(
                info, status=JobStatus.QUEUED if due else JobStatus.SCHEDULED
            )
        return info

    def _infos(self) -> list[tuple[_Job, JobInfo]]:
        with self._lock:
            jobs = list(self._jobs.items())
        return [
            (job, info) for job_id, job in jobs if (info := self._info(job_id, job)) is not None
        ]

    async def jobs(
        self,
        status: JobStatus | str,
        *,
        offset: int = 0,
        limit: int = 50,
        job_type: str | None = None,
        worker: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        newest_first: bool | None = None,
        scan_limit: int = SCAN_LIMIT,
    ) -> JobList:
        """A page of jobs in ``status``, filtered as `Scheduler.jobs` does: queued and
        scheduled by due time, others newest first (``newest_first`` turns it around).
        Every job is in memory: ``scan_limit`` is checked, and never reached."""
        if offset < 0 or limit < 1:
            raise ConfigurationError("jobs() needs offset >= 0 and limit >= 1")
        self._check_running()
        query = _Query.of(status, job_type, worker, since, until, newest_first, scan_limit)
        found = self._matching(query)
        return JobList(info for _, info in found[offset : offset + limit])

    async def count(
        self,
        status: JobStatus | str,
        *,
        job_type: str | None = None,
        worker: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        scan_limit: int = SCAN_LIMIT,
    ) -> JobCount:
        """How many jobs `jobs` lists with these filters."""
        self._check_running()
        query = _Query.of(status, job_type, worker, since, until, None, scan_limit)
        return JobCount(len(self._matching(query)))

    def _matching(self, query: _Query) -> list[tuple[_Job, JobInfo]]:
        wanted = query.status

        def when(job: _Job, info: JobInfo) -> float | None:
            if wanted in _WAITING:
                return job.due_ms
            moment = info.started_at if wanted is JobStatus.RUNNING else info.finished_at
            return None if moment is None else moment.timestamp() * 1000

        found = [
            (job, info)
            for job, info in self._infos()
            if info.status is wanted
            and (query.job_type is None or info.job_type == query.job_type)
            and (query.worker is None or info.worker == query.worker)
            and (query.min_ms is None or (when(job, info) or 0) >= query.min_ms)
            and (query.max_ms is None or (when(job, info) or 0) <= query.max_ms)
        ]
        if wanted in _WAITING:
            found.sort(key=lambda pair: (pair[0].due_ms or 0, pair[0].sequence))
            if query.newest_first:
                found.reverse()
        else:
            found.sort(key=lambda pair: pair[0].sequence, reverse=query.newest_first)
        return found

    async def get_many(self, job_ids: Sequence[str]) -> list[JobInfo | None]:
        """`get` for many ids at once."""
        return [await self.get(job_id) for job_id in job_ids]

    async def counts(self, *, since: Seconds | None = None) -> dict[JobStatus, int]:
        """How many jobs are in each state; with ``since``, finished states count only jobs
        that finished within that period (by the clock)."""
        self._check_running()
        since_ms = None
        if since is not None:
            since_ms = self._now_ms() - int(seconds("since", since) * 1000)
        counts = dict.fromkeys(JobStatus, 0)
        for _, info in self._infos():
            if (
                since_ms is not None
                and info.status in _FINISHED
                and (info.finished_at is None or info.finished_at.timestamp() * 1000 < since_ms)
            ):
                continue
            counts[info.status] += 1
        return counts

    async def history(
        self, *, since: Seconds = 3600, job_type: str | None = None, bin: Seconds = 60
    ) -> list[HistoryPoint]:
        """Like `Scheduler.history`, from the jobs this process keeps: each finished job
        counts once, in the minute it finished (eager mode keeps no retried tries)."""
        self._check_running()
        window = HistoryWindow.of(
            self._now_ms(), seconds("since", since), seconds("bin", bin, positive=True)
        )
        return history_points(window, self._history_minutes(window), job_type)

    async def job_types(self, *, since: Seconds = 3600) -> list[JobTypeStats]:
        """Like `Scheduler.job_types`, from the jobs this process keeps."""
        self._check_running()
        window = HistoryWindow.of(self._now_ms(), seconds("since", since), 60)
        return job_type_stats(self._history_minutes(window))

    def _history_minutes(self, window: HistoryWindow) -> list[dict[str, int]]:
        minutes: list[dict[str, int]] = [
            {} for _ in range(window.last_minute - window.first_minute + 1)
        ]
        for _, info in self._infos():
            kind = _HISTORY_KINDS.get(info.status)
            if kind is None or info.finished_at is None:
                continue
            offset = int(info.finished_at.timestamp() * 1000) // MINUTE_MS - window.first_minute
            if not 0 <= offset < len(minutes):
                continue
            started = info.started_at
            duration = (info.finished_at - started).total_seconds() if started else None
            minute = minutes[offset]
            for name, count in history_fields([(kind, info.job_type, duration)]).items():
                minute[name] = minute.get(name, 0) + count
        return minutes

    async def watch(self, job_id: str, *, recheck_every: float = 5.0) -> AsyncIterator[JobInfo]:
        """Yield the job's state each time it changes, until it has finished."""
        self._check_running()
        async for info in self._changes(job_id, lambda: asyncio.sleep(min(recheck_every, 0.01))):
            yield info
