"""`Scheduler`: enqueue, schedule, delete and inspect on-demand jobs.

Jobs are stored in arq's layout (a job key, a queue zset scored by due time, a result key), so
stock `arq.jobs.Job` handles can read them; payloads are JSON, never pickle.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from arq.connections import ArqRedis

from . import keys
from .commits import FinishedState
from .exceptions import (
    ConfigurationError,
    HostNotRunningError,
    JobAlreadyExistsError,
    PayloadError,
)
from .instrumentation import Instrumentation
from .serialization import encode_payload, error_message, job_record, job_type_info, loads

__all__ = ["JobInfo", "JobStatus", "Scheduler"]

_EXPIRES_EXTRA_MS = 86_400_000
"""A job not started within a day of its due time expires, as in arq."""

# Adds a job unless its id is taken (by a queued, running or finished job), and wakes a worker,
# in one atomic step.
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
redis.call('LPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[5]) - 1)
return 1
"""

# The same for a batch: ARGV = queue, wake, wake_kept, job prefix, result prefix, score,
# ttl_ms, the ids separated by spaces, then one job record per id. (One argument per job
# rather than four: packing arguments is most of the client's cost.)
_ENQUEUE_MANY = """
local queue, wake, job_prefix, result_prefix = ARGV[1], ARGV[2], ARGV[4], ARGV[5]
local score, ttl = ARGV[6], ARGV[7]
local added, i = 0, 9
for id in string.gmatch(ARGV[8], '%S+') do
  if redis.call('EXISTS', job_prefix .. id, result_prefix .. id) == 0 then
    redis.call('PSETEX', job_prefix .. id, ttl, ARGV[i])
    redis.call('ZADD', queue, score, id)
    added = added + 1
  end
  i = i + 1
end
if added > 0 then
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, tonumber(ARGV[3]) - 1)
end
return added
"""

_BATCH = 500
_BATCHES_IN_FLIGHT = 4
"""Jobs per script call in `enqueue_many`: large enough to amortise the round trip, small
enough not to hold Redis for long."""

# Removes a job that is queued or deferred and not running; atomic against a worker's claim,
# which sets the in-progress key in one step too.
_DELETE = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2], KEYS[4], KEYS[5])
redis.call('PUBLISH', ARGV[2], 'deleted')
return 1
"""

# Puts a failed job back in the queue under its id, if its result is still the failed one the
# caller read (so two clicks on "retry" queue it once).
_RETRY = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('DEL', KEYS[1], KEYS[5], KEYS[6])
redis.call('ZREM', KEYS[7], ARGV[5])
redis.call('PSETEX', KEYS[2], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[5])
redis.call('LPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[6]) - 1)
redis.call('PUBLISH', ARGV[7], 'requeued')
return 1
"""

# Ids scored in [ARGV[1], ARGV[2]] and not running (no in-progress lock), from the ARGV[3]th
# such id on, at most ARGV[4]: a bounded walk in pages. hostedjobs workers move the jobs they
# run past the due range (see the worker's claim), but a job run by a stock arq worker, or
# one whose worker just crashed, keeps its place and is skipped here.
_WAITING = """
local queue, lock_prefix = KEYS[1], ARGV[5]
local low, high = ARGV[1], ARGV[2]
local skip, want, cap = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
local found, offset, page = {}, 0, 200
while #found < want and offset < cap do
  local ids = redis.call('ZRANGEBYSCORE', queue, low, high, 'LIMIT', offset, page)
  for _, id in ipairs(ids) do
    if redis.call('EXISTS', lock_prefix .. id) == 0 then
      if skip > 0 then skip = skip - 1 else found[#found + 1] = id end
      if #found >= want then break end
    end
  end
  if #ids < page then break end
  offset = offset + page
end
return found
"""

_LIST_SCAN_CAP = 20_000
"""How many ids one page of queued or scheduled jobs looks at, at most, past running ones."""

_CANCELLED_MARK = "__cancelled__"

_UNTRACED: contextlib.nullcontext[None] = contextlib.nullcontext()


class JobStatus(enum.StrEnum):
    """Where an on-demand job is in its life."""

    QUEUED = "queued"
    """Due now, waiting for a free worker."""
    SCHEDULED = "scheduled"
    """Due later: scheduled with a delay or time, or waiting to be retried."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    """The handler returned `JobResult.cancelled`."""


_WAITING_STATES = (JobStatus.QUEUED, JobStatus.SCHEDULED)


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A snapshot of one on-demand job, as `Scheduler.get` reads it from Redis."""

    id: str
    status: JobStatus
    job_type: str
    """The job type's name, e.g. ``"send-email"``."""
    version: int | None
    tries: int
    """Tries started so far (a retried job has more than one)."""
    payload: Any
    """The job's fields as stored (JSON); finished jobs keep them while their result is kept."""
    enqueued_at: datetime | None
    scheduled_for: datetime | None
    """When a queued or scheduled job is due; None once it runs or has finished."""
    started_at: datetime | None
    finished_at: datetime | None
    result: Any
    """What the handler returned (JSON), for a succeeded job."""
    message: str | None
    """The message of a `JobResult`, if the handler returned one."""
    error: str | None
    """``"ExcType: message"`` of a failed job, or of the last failed try of a retried one."""
    progress: float | None
    progress_message: str | None

    @property
    def finished(self) -> bool:
        """True once the job has succeeded, failed or been cancelled."""
        return self.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def _new_id() -> str:
    """A random job id, like arq's (32 hex digits), without building a UUID object."""
    return os.urandom(16).hex()


def _ms_to_datetime(ms: float | int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _split_key(function_name: str) -> tuple[str, int | None]:
    name, _, version = function_name.rpartition("@")
    if name and version.isdigit():
        return name, int(version)
    return function_name, None


class Scheduler:
    """Puts on-demand jobs in the queue and reads them back; reach it as ``host.scheduler``.

    Usable while the host runs (inside its lifespan, ``host.run()``, or a worker process);
    before that its methods raise `HostNotRunningError`.
    """

    def __init__(self, queue_name: str) -> None:
        self.queue_name = queue_name
        self._pool: ArqRedis | None = None
        self._enqueue_script: Any = None
        self._enqueue_many_script: Any = None
        self._delete_script: Any = None
        self._retry_script: Any = None
        self._waiting_script: Any = None
        self.instrumentation: Instrumentation | None = None

    def _attach(self, pool: ArqRedis | None) -> None:
        self._pool = pool
        if pool is not None:
            self._enqueue_script = pool.register_script(_ENQUEUE)
            self._enqueue_many_script = pool.register_script(_ENQUEUE_MANY)
            self._delete_script = pool.register_script(_DELETE)
            self._retry_script = pool.register_script(_RETRY)
            self._waiting_script = pool.register_script(_WAITING)

    @property
    def pool(self) -> ArqRedis:
        """The host's Redis pool (an `arq.connections.ArqRedis`)."""
        if self._pool is None:
            raise HostNotRunningError(
                "the job host is not running: use the scheduler inside the app's lifespan "
                "(lifespan=host.lifespan), inside `async with host.run():`, or in a "
                "`hostedjobs worker` process"
            )
        return self._pool

    async def enqueue(self, job: object, *, job_id: str | None = None) -> str:
        """Queue ``job`` (an instance of a ``@job_type`` dataclass) to run as soon as possible.

        Returns the job id. Raises `PayloadError` (a TypeError) naming the field if the job
        holds a value that cannot be stored as JSON, and `JobAlreadyExistsError` if an
        explicit ``job_id`` is already taken.
        """
        return await self._add(job, job_id, due_ms=None)

    async def enqueue_many(self, jobs: Iterable[object]) -> list[str]:
        """Queue many jobs at once, in a few round trips; returns their ids, in order.

        Every job is validated before anything is sent: a job that cannot be stored raises
        `PayloadError` naming its position and field, and then nothing is queued.
        """
        if self.instrumentation is None:
            return await self._enqueue_many(jobs, None)
        jobs = list(jobs)
        with self.instrumentation.enqueue(None, None, len(jobs)) as trace:
            return await self._enqueue_many(jobs, trace)

    async def _enqueue_many(self, jobs: Iterable[object], trace: str | None) -> list[str]:
        now_ms = int(time.time() * 1000)
        ttl_ms = _EXPIRES_EXTRA_MS
        prepared: list[tuple[str, bytes]] = []
        for index, job in enumerate(jobs):
            try:
                info = job_type_info(job)
                payload = encode_payload(job)
            except PayloadError as exc:
                raise PayloadError(f"jobs[{index}]: {exc}") from exc
            data = job_record(info.key, payload, now_ms, trace)
            prepared.append((_new_id(), data))
        pool = self.pool
        wake = keys.wake_key(self.queue_name)

        async def send(batch: list[tuple[str, bytes]]) -> None:
            args: list[Any] = [
                self.queue_name,
                wake,
                keys.WAKE_TOKENS_KEPT,
                keys.JOB_PREFIX,
                keys.RESULT_PREFIX,
                now_ms,
                ttl_ms,
                " ".join(job_id for job_id, _ in batch),
            ]
            args.extend(data for _, data in batch)
            await self._enqueue_many_script(keys=[], args=args, client=pool)

        # A few batches in flight at once: packing one overlaps Redis running the previous.
        batches = [prepared[i : i + _BATCH] for i in range(0, len(prepared), _BATCH)]
        for i in range(0, len(batches), _BATCHES_IN_FLIGHT):
            await asyncio.gather(*(send(b) for b in batches[i : i + _BATCHES_IN_FLIGHT]))
        return [job_id for job_id, _ in prepared]

    async def schedule(
        self,
        job: object,
        *,
        at: datetime | None = None,
        delay: timedelta | None = None,
        job_id: str | None = None,
    ) -> str:
        """Queue ``job`` to run at an aware datetime ``at``, or after ``delay``.

        A time in the past runs at once. Returns the job id.
        """
        if (at is None) == (delay is None):
            raise ConfigurationError("schedule() takes exactly one of at= or delay=")
        if at is not None:
            if at.tzinfo is None or at.utcoffset() is None:
                raise ConfigurationError(
                    f"schedule(at={at!r}) needs an aware datetime, e.g. "
                    "datetime(..., tzinfo=timezone.utc), so it means the same instant everywhere"
                )
            due_ms = int(at.timestamp() * 1000)
        else:
            assert delay is not None
            if delay < timedelta(0):
                raise ConfigurationError(f"schedule(delay={delay!r}) must not be negative")
            due_ms = int(time.time() * 1000 + delay.total_seconds() * 1000)
        return await self._add(job, job_id, due_ms=due_ms)

    async def _add(self, job: object, job_id: str | None, *, due_ms: int | None) -> str:
        info = job_type_info(job)
        payload = encode_payload(job)
        pool = self.pool
        job_id = job_id or _new_id()
        instrumentation = self.instrumentation
        # Without instrumentation, a shared do-nothing block: no object per enqueue.
        with (
            _UNTRACED if instrumentation is None else instrumentation.enqueue(info.name, job_id)
        ) as trace:
            now_ms = int(time.time() * 1000)
            score = now_ms if due_ms is None or due_ms < now_ms else due_ms
            data = job_record(info.key, payload, now_ms, trace)
            added = await self._enqueue_script(
                keys=[
                    keys.JOB_PREFIX + job_id,
                    keys.RESULT_PREFIX + job_id,
                    self.queue_name,
                    keys.wake_key(self.queue_name),
                ],
                args=[
                    data,
                    score,
                    score - now_ms + _EXPIRES_EXTRA_MS,
                    job_id,
                    keys.WAKE_TOKENS_KEPT,
                ],
                client=pool,
            )
            if not added:
                raise JobAlreadyExistsError(
                    f"a job with id {job_id!r} already exists (queued, running or with a kept "
                    "result); use another id, or delete the queued one first"
                )
        return job_id

    async def delete(self, job_id: str) -> bool:
        """Remove a queued or scheduled job so it never runs; its id can then be reused.

        Returns False, changing nothing, if the job is running, finished or unknown.
        """
        deleted = await self._delete_script(
            keys=[
                self.queue_name,
                keys.JOB_PREFIX + job_id,
                keys.IN_PROGRESS_PREFIX + job_id,
                keys.RETRY_PREFIX + job_id,
                keys.meta_key(job_id),
            ],
            args=[job_id, keys.events_channel(job_id)],
            client=self.pool,
        )
        return bool(deleted)

    async def retry(self, job_id: str) -> bool:
        """Queue a failed job again under the same id, with its payload and a fresh try count.

        Returns False, changing nothing, unless the job has failed and its result is still
        kept (a job that succeeded, is queued or running, or is unknown is left alone).
        """
        pool = self.pool
        raw = await pool.get(keys.RESULT_PREFIX + job_id)
        if raw is None:
            return False
        record = loads(raw)
        if record.get("s") or not isinstance(record.get("f"), str):
            return False
        args = record.get("a") or [None]
        now_ms = int(time.time() * 1000)
        data = job_record(record["f"], args[0], now_ms)
        retried = await self._retry_script(
            keys=[
                keys.RESULT_PREFIX + job_id,
                keys.JOB_PREFIX + job_id,
                self.queue_name,
                keys.wake_key(self.queue_name),
                keys.RETRY_PREFIX + job_id,
                keys.meta_key(job_id),
                keys.finished_index(self.queue_name, JobStatus.FAILED),
            ],
            args=[
                raw,
                data,
                now_ms,
                _EXPIRES_EXTRA_MS,
                job_id,
                keys.WAKE_TOKENS_KEPT,
                keys.events_channel(job_id),
            ],
            client=pool,
        )
        return bool(retried)

    async def jobs(self, status: JobStatus, *, offset: int = 0, limit: int = 50) -> list[JobInfo]:
        """A page of jobs in ``status``: queued and scheduled by due time, the others newest
        first. Reads indexes only, never the keyspace.

        Running, succeeded, failed and cancelled jobs are listed from indexes that hostedjobs
        workers keep (jobs run by stock arq workers are not listed there); finished jobs stay
        listed while their result is kept, up to the newest 10,000 per state.
        """
        if offset < 0 or limit < 1:
            raise ConfigurationError("jobs() needs offset >= 0 and limit >= 1")
        pool = self.pool
        now_ms = int(time.time() * 1000)
        ids: list[bytes]
        if status in _WAITING_STATES:
            low, high = ("-inf", now_ms) if status is JobStatus.QUEUED else (f"({now_ms}", "+inf")
            ids = await self._waiting_script(
                keys=[self.queue_name],
                args=[low, high, offset, limit, keys.IN_PROGRESS_PREFIX, _LIST_SCAN_CAP],
                client=pool,
            )
        else:
            index = (
                keys.running_index(self.queue_name)
                if status is JobStatus.RUNNING
                else keys.finished_index(self.queue_name, status)
            )
            ids = await pool.zrevrange(index, offset, offset + limit - 1)
        infos = await self._get_many([i.decode() for i in ids])
        # An index can briefly lag the job (a stock arq worker finished it, say): list only
        # jobs that are in the state asked for.
        return [info for info in infos if info is not None and info.status is status]

    async def counts(self, *, since: timedelta | None = None) -> dict[JobStatus, int]:
        """How many jobs are in each state, from the same indexes as `jobs`.

        With ``since``, finished states count only jobs that finished within that period.
        """
        pool = self.pool
        now_ms = int(time.time() * 1000)
        low = "-inf" if since is None else now_ms - int(since.total_seconds() * 1000)
        finished = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
        async with pool.pipeline(transaction=False) as pipe:
            pipe.zcount(self.queue_name, "-inf", now_ms)
            pipe.zcount(self.queue_name, f"({now_ms}", "+inf")
            pipe.zcard(keys.running_index(self.queue_name))
            for state in finished:
                pipe.zcount(keys.finished_index(self.queue_name, state), low, "+inf")
            due, later, running, *done = await pipe.execute()
        # Jobs running on hostedjobs workers sit in the queue scored in the near future (see
        # the worker's claim): count them as running, not scheduled.
        counts = {
            JobStatus.QUEUED: due,
            JobStatus.SCHEDULED: max(0, later - running),
            JobStatus.RUNNING: running,
        }
        counts.update(zip(finished, done, strict=True))
        return counts

    async def watch(self, job_id: str, *, recheck_every: float = 5.0) -> AsyncIterator[JobInfo]:
        """Yield the job's state each time it changes (progress, start, retry, end).

        The first item is the current state; the iterator ends after a finished state, or at
        once if the job is unknown or deleted. Changes are pushed (Redis pub/sub); the state
        is also re-read every ``recheck_every`` seconds in case a message was missed::

            async for info in host.scheduler.watch(job_id):
                print(info.status, info.progress, info.progress_message)
        """
        pubsub = self.pool.pubsub()
        await pubsub.subscribe(keys.events_channel(job_id))
        try:
            last: JobInfo | None = None
            while True:
                info = await self.get(job_id)
                if info is None:
                    return
                if info != last:
                    yield info
                    last = info
                if info.finished:
                    return
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=recheck_every)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def get(self, job_id: str) -> JobInfo | None:
        """The job's status, tries, times, result or error, and progress; None if unknown."""
        (info,) = await self._get_many([job_id])
        return info

    async def _get_many(self, job_ids: list[str]) -> list[JobInfo | None]:
        if not job_ids:
            return []
        running = keys.running_index(self.queue_name)
        async with self.pool.pipeline(transaction=True) as pipe:
            for job_id in job_ids:
                pipe.get(keys.JOB_PREFIX + job_id)
                pipe.get(keys.RESULT_PREFIX + job_id)
                pipe.exists(keys.IN_PROGRESS_PREFIX + job_id)
                pipe.zscore(self.queue_name, job_id)
                pipe.get(keys.RETRY_PREFIX + job_id)
                pipe.hgetall(keys.meta_key(job_id))
                pipe.zscore(running, job_id)
            replies = await pipe.execute()
        return [_job_info(job_id, *replies[i * 7 : i * 7 + 7]) for i, job_id in enumerate(job_ids)]


def _job_info(
    job_id: str,
    raw_job: bytes | None,
    raw_result: bytes | None,
    running: int,
    score: float | None,
    retries: bytes | None,
    meta: dict[bytes, bytes],
    running_since: float | None,
) -> JobInfo | None:
    record = loads(raw_result) if raw_result else (loads(raw_job) if raw_job else None)
    if record is None:
        return None
    fields = {k.decode(): v.decode() for k, v in meta.items()}
    job_type, version = _split_key(str(record.get("f", "")))
    value = record.get("r")
    message: str | None = None
    error = fields.get("error")
    if raw_result:
        if not record.get("s"):
            status, error = JobStatus.FAILED, error_message(value) or repr(value)
            value = None
        elif isinstance(value, dict) and _CANCELLED_MARK in value:
            status, message, value = JobStatus.CANCELLED, value[_CANCELLED_MARK], None
        else:
            status = JobStatus.SUCCEEDED
            if isinstance(value, dict) and "__message__" in value:
                message, value = value["__message__"], value.get("value")
    elif running:
        status = JobStatus.RUNNING
    elif score is not None:
        status = JobStatus.SCHEDULED if score > time.time() * 1000 else JobStatus.QUEUED
    else:
        return None
    args = record.get("a") or [None]
    progress = fields.get("progress")
    return JobInfo(
        id=job_id,
        status=status,
        job_type=job_type,
        version=version,
        tries=int(record.get("t") or 0) if raw_result else int(retries or 0),
        payload=args[0],
        enqueued_at=_ms_to_datetime(record.get("et")),
        # A running job's score is its lock's lapse time (see the worker's claim), not a due time.
        scheduled_for=_ms_to_datetime(score) if status in _WAITING_STATES else None,
        started_at=_ms_to_datetime(record.get("st") or (running_since if running else None)),
        finished_at=_ms_to_datetime(record.get("ft")),
        result=value,
        message=message,
        error=error,
        progress=float(progress) if progress is not None else None,
        progress_message=fields.get("progress_message"),
    )


def finished_state(success: bool, value: Any) -> FinishedState:
    """The state a finished run is indexed under, from arq's success flag and stored value."""
    if not success:
        return "failed"
    if isinstance(value, dict) and _CANCELLED_MARK in value:
        return "cancelled"
    return "succeeded"


def stored_outcome(value: Any, message: str | None, *, cancelled: bool) -> Any:
    """How a handler's return value is kept in arq's result (read back by `Scheduler.get`)."""
    if cancelled:
        return {_CANCELLED_MARK: message}
    if message is not None:
        return {"__message__": message, "value": value}
    return value
