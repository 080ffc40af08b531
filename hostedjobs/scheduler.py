"""`Scheduler`: enqueue, schedule, delete and inspect on-demand jobs.

Jobs are stored in arq's layout (a job key, a queue zset scored by due time, a result key), so
stock `arq.jobs.Job` handles can read them; payloads are JSON, never pickle.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import os
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeAlias, TypeVar, overload

from .clock import LAST_MS
from .concurrency import WAITING_REASON, ConcurrencyLimit
from .durations import Seconds, seconds
from .exceptions import (
    ConfigurationError,
    HostNotRunningError,
    JobAlreadyExistsError,
    PayloadDecodeError,
    PayloadError,
)
from .history import (
    HistoryPoint,
    HistoryWindow,
    JobTypeStats,
    history_field_names,
    history_points,
    job_type_stats,
)
from .instrumentation import Instrumentation
from .outcomes import JobStatus, Outcome
from .pauses import PAUSED_REASON
from .rates import Rates
from .records import head_start_of, queued_due_ms
from .serialization import (
    dumps,
    encode_payload,
    error_message,
    job_record,
    job_type_info,
    read_record,
)
from .storage import Store, StoredJob
from .storage.shards import ShardLayout
from .storage.store import try_entries

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from typing_extensions import TypeVar as DefaultedTypeVar

    # A bare `JobInfo` or `JobId` (no type argument) means `JobInfo[Any]`, so annotations
    # written before they were generic stay valid under `mypy --strict`.
    R_co = DefaultedTypeVar("R_co", covariant=True, default=Any)
else:
    R_co = TypeVar("R_co", covariant=True)

__all__ = [
    "SCAN_LIMIT",
    "JobCount",
    "JobId",
    "JobInfo",
    "JobList",
    "JobPayload",
    "JobStatus",
    "Scheduler",
    "TryError",
]

SCAN_LIMIT = 20_000
"""How many waiting or running jobs a job type filter looks at, at most, per shard, unless
`Scheduler.jobs` or `Scheduler.count` is given another ``scan_limit``."""

R = TypeVar("R")


class _DataclassPayload(Protocol):
    __dataclass_fields__: ClassVar[dict[str, Any]]


class _PydanticPayload(Protocol):
    __pydantic_fields__: ClassVar[dict[str, Any]]


class _StructPayload(Protocol):
    __struct_fields__: ClassVar[tuple[str, ...]]


JobPayload: TypeAlias = _DataclassPayload | _PydanticPayload | _StructPayload
"""What `Scheduler.enqueue` takes, for type checkers: an instance of a dataclass, a pydantic
model or a msgspec Struct. Only the kind is checked statically; that its class is a
``@job_type`` is checked at enqueue (`PayloadError`)."""


class JobId(str, Generic[R_co]):
    """A job's id, as `Scheduler.enqueue` returns it: a `str` that also carries, for type
    checkers, the type ``R`` of the job's result, so ``(await scheduler.get(job_id)).result``
    is typed. Any plain `str` id works wherever a `JobId` is taken."""

    __slots__ = ()


_EXPIRES_EXTRA_MS = 86_400_000
"""A job not started within a day of its due time expires, as in arq."""

_UNTRACED: contextlib.nullcontext[None] = contextlib.nullcontext()


_WAITING_STATES = (JobStatus.QUEUED, JobStatus.SCHEDULED)


@dataclass(frozen=True, slots=True)
class TryError:
    """One failed try of a job, as its history keeps it."""

    attempt: int
    """The try's number (1 for the first)."""
    at: datetime | None
    """When the try ended."""
    error: str
    """``"ExcType: message"``."""
    traceback: str | None
    """Its formatted traceback (at most `TRACEBACK_LIMIT` characters, the end kept), if
    the try raised."""
    worker: str | None = None
    """The id of the worker that ran the try, for a try lost with its worker (its lease
    lapsed); None otherwise and in records stored before it was kept."""
    started_at: datetime | None = None
    """When a try lost with its worker started; None otherwise."""


@dataclass(frozen=True, slots=True)
class JobInfo(Generic[R_co]):
    """A snapshot of one on-demand job, as `Scheduler.get` reads it from Redis.

    ``R`` is the type of the job's result: a `JobId` returned for a function job
    (``@host.task``) carries its return type, so ``get`` types ``result`` as ``R | None``;
    a plain `str` id gives ``JobInfo[Any]``."""

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
    result: R_co | None
    """What the handler returned, for a succeeded job; else None. As JSON holds it, except
    for function jobs, whose result is rebuilt as their function's return type."""
    message: str | None
    """The message of a `JobResult`, if the handler returned one; for a queued job no worker
    here can run, why it waits."""
    error: str | None
    """``"ExcType: message"`` of a failed job, or of the last failed try of a retried one."""
    progress: float | None
    progress_message: str | None
    traceback: str | None = None
    """The formatted traceback of the failed job, or of the last failed try of a retried one
    (at most 8,192 characters, its end kept); None if that try did not raise or was stored
    before hostedjobs kept tracebacks."""
    errors: tuple[TryError, ...] = ()
    """The failed tries so far, oldest first (the newest 10)."""
    worker: str | None = None
    """The id of the worker that runs the job now, or that finished it (hostedjobs workers
    record both: the claim in the worker's claims, the outcome in the result)."""

    @property
    def finished(self) -> bool:
        """True once the job has succeeded, failed or been cancelled."""
        return self.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobList(list["JobInfo[Any]"]):
    """A page of jobs from `Scheduler.jobs`: a list, and whether its type filter's scan
    stopped early."""

    scan_limited: bool = False
    """True if the job type filter examined ``scan_limit`` entries and stopped with more
    left: jobs of the type further down the list are missing from the page."""


class JobCount(int):
    """A count from `Scheduler.count`: an int, and whether its type filter's scan stopped
    early."""

    scan_limited: bool
    """True if the job type filter examined ``scan_limit`` entries (on some shard) and
    stopped with more left: the count is of those examined, a lower bound."""

    def __new__(cls, value: int, *, scan_limited: bool = False) -> JobCount:
        count = super().__new__(cls, value)
        count.scan_limited = scan_limited
        return count


def _prepare_many(
    jobs: Iterable[object], trace: str | None, now_ms: int, head_start_ms: int = 0
) -> list[tuple[str, bytes]]:
    """A new id and stored record for each job, all encoded before any is stored; a job that
    cannot be encoded raises `PayloadError` naming its index."""
    prepared: list[tuple[str, bytes]] = []
    for index, job in enumerate(jobs):
        try:
            info = job_type_info(job)
            payload = encode_payload(job)
        except PayloadError as exc:
            raise PayloadError(f"jobs[{index}]: {exc}") from exc
        prepared.append((_new_id(), job_record(info.key, payload, now_ms, trace, head_start_ms)))
    return prepared


def _debounced_priority(key: str) -> ConfigurationError:
    return ConfigurationError(
        f"job type {key} is debounced: its jobs wait for a quiet period, "
        "which a priority's head start would cut short; enqueue it without priority"
    )


_MOST_HEAD_START = timedelta(days=30)
"""The largest priority (head start) `Scheduler.enqueue` takes: 30 days."""


def _head_start_ms(priority: object) -> int:
    """A priority as its head start in whole ms (0 for None); raises `ConfigurationError`
    for a value that is not a `timedelta` from 0 to `_MOST_HEAD_START`."""
    if priority is None:
        return 0
    if not isinstance(priority, timedelta):
        raise ConfigurationError(
            f"priority={priority!r}: a priority is a head start, a timedelta, e.g. "
            "priority=timedelta(minutes=10) (the job goes ahead of every job enqueued less "
            "than 10 minutes before it); a number is refused so that it is not read as a level"
        )
    if priority < timedelta(0):
        raise ConfigurationError(
            f"priority={priority!r} is negative: a head start cannot hold a job back; to run "
            "it later, use schedule(job, delay=...)"
        )
    if priority > _MOST_HEAD_START:
        raise ConfigurationError(
            f"priority={priority!r} is more than {_MOST_HEAD_START.days} days: a head start "
            "longer than any backlog only means 'first'; did you mean timedelta(seconds=...) "
            "rather than timedelta(days)?"
        )
    return priority // timedelta(milliseconds=1)


def _new_id() -> str:
    """A random job id, like arq's (32 hex digits), without building a UUID object."""
    return os.urandom(16).hex()


def _ms_to_datetime(ms: float | int | None) -> datetime | None:
    if ms is None or not 0 <= ms <= LAST_MS:  # NaN too
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


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
        self.keep_result_s = 86_400.0
        self._store: Store | None = None
        self._shards: Sequence[Store] = ()
        """With ``shards > 1``: each shard's store, by index (`ShardLayout`)."""
        self._layout = ShardLayout(queue_name, 1)
        self.instrumentation: Instrumentation | None = None
        self.result_types: dict[str, Callable[[Any], Any]] = {}
        """Decoders of results by wire name (``"type@version"``): `get` rebuilds the result
        of such a job as its function's return type (a dataclass, a datetime...) from its
        JSON form. Function jobs (``@host.task``) register theirs here."""
        self.debounces: dict[str, Rates] = {}
        """The debounced job types by wire name (``"type@version"``), registered by the
        host's handlers: `enqueue` defers such a job by the quiet period and records it as
        its key's latest (`hostedjobs.rates.Debounce`)."""
        self.slot_limits: dict[str, tuple[str, ConcurrencyLimit[Any]]] = {}
        """The concurrency-limited job types by wire name: (job type, limit). On a sharded
        queue a limited job's generated id falls in its group's shard, whose Redis holds the
        group's slots, so the limit holds across every shard."""

    def _attach(self, store: Store | None, shards: Sequence[Store] = ()) -> None:
        """Use ``store``; a sharded queue also gives every shard's store (``store`` is
        shard 0's), and jobs are then routed to their shard by id."""
        self._store = store
        self._shards = shards if len(shards) > 1 else ()
        self._layout = ShardLayout(self.queue_name, max(len(shards), 1))

    @property
    def stores(self) -> list[Store]:
        """Every shard's store (one for an unsharded queue); raises `HostNotRunningError`
        before the host runs."""
        return list(self._shards) or [self.store]

    def _store_for(self, job_id: str) -> Store:
        """The store of the shard holding ``job_id``."""
        if self._shards:
            return self._shards[self._layout.of(job_id)]
        return self.store

    def _id_for_slots(self, job: object, job_type: str, limit: ConcurrencyLimit[Any]) -> str:
        """A new id in the shard that holds the slots of ``job``'s concurrency group (a
        group's slots and waiting jobs are in one shard's Redis, beside its jobs)."""
        try:
            group = limit.group(job)
        except ValueError:
            return _new_id()  # the worker fails the job for its key
        wanted = zlib.crc32(f"{job_type}\n{group}".encode()) % len(self._shards)
        while True:  # a shard in len(shards) tries on average: ids spread by crc32
            job_id = _new_id()
            if self._layout.of(job_id) == wanted:
                return job_id

    def _now_ms(self) -> int:
        """The time a ``delay`` counts from, in ms since the epoch."""
        return int(time.time() * 1000)

    @property
    def store(self) -> Store:
        """The host's storage (raises `HostNotRunningError` before the host runs)."""
        if self._store is None:
            raise HostNotRunningError(
                "the job host is not running: use the scheduler inside the app's lifespan "
                "(lifespan=host.lifespan), inside `async with host.run():`, or in a "
                "`hostedjobs worker` process"
            )
        return self._store

    @property
    def pool(self) -> Redis:
        """The host's Redis client, for reading what hostedjobs stored (tests, tools)."""
        return self.store.redis

    async def enqueue(
        self, job: JobPayload, *, job_id: str | None = None, priority: timedelta | None = None
    ) -> JobId[Any]:
        """Queue ``job`` (an instance of a ``@job_type`` dataclass) to run as soon as possible.

        ``priority`` is a head start (a `timedelta`, at most 30 days): the job is
        placed in the queue as if it had been enqueued that much earlier, so workers pick it
        before every job enqueued less than that before it, while older jobs still go first
        (nothing starves). Its due time (`JobInfo.scheduled_for`, ``ctx.scheduled_at``) stays
        the enqueue time. See docs/flow-control.md, "Priorities".

        Returns the job id. Raises `ConfigurationError` for a bad ``priority`` or ``job_id``,
        `PayloadError` (a TypeError) naming the field if the job
        holds a value that cannot be stored as JSON, `JobAlreadyExistsError` if an explicit
        ``job_id`` is already taken, and `RedisUnavailableError` if Redis does not answer
        within the host's ``redis_timeout``. Then the job may have been stored all the same
        (Redis ran the call, its answer was lost): to retry safely, pass your own ``job_id``
        and enqueue again; `JobAlreadyExistsError` then means the first call was stored.
        """
        return await self._add(job, job_id, due_ms=None, head_start_ms=_head_start_ms(priority))

    async def enqueue_many(
        self, jobs: Iterable[JobPayload], *, priority: timedelta | None = None
    ) -> list[JobId[Any]]:
        """Queue many jobs at once, in a few round trips; returns their ids, in order.

        ``priority`` is every job's head start, as for `enqueue`. Every job is validated
        before anything is sent: a job that cannot be stored raises `PayloadError` naming its
        position and field, and then nothing is queued; a bad ``priority`` raises
        `ConfigurationError`.
        """
        head_start = _head_start_ms(priority)
        if self.instrumentation is None:
            return await self._enqueue_many(jobs, None, head_start)
        jobs = list(jobs)
        with self.instrumentation.enqueue(None, None, len(jobs)) as trace:
            return await self._enqueue_many(jobs, trace, head_start)

    async def _enqueue_many(
        self, jobs: Iterable[JobPayload], trace: str | None, head_start_ms: int = 0
    ) -> list[JobId[Any]]:
        if self.debounces or (self._shards and self.slot_limits):
            jobs = list(jobs)
            one_by_one = {*self.debounces, *(self.slot_limits if self._shards else ())}
            if any(job_type_info(job).key in one_by_one for job in jobs):
                # As for any batch, every job is checked before one is queued: it encodes,
                # takes the priority, and its debounce key can be computed.
                _prepare_many(jobs, trace, self._now_ms(), head_start_ms)
                for job in jobs:
                    if (rates := self.debounces.get(job_type_info(job).key)) is not None:
                        if head_start_ms:
                            raise _debounced_priority(job_type_info(job).key)
                        rates.debounce_key(job)
                # Each debounced job records its key's latest, and each limited job of a
                # sharded queue gets an id in its group's shard: one at a time, in order.
                return [
                    await self._add(job, None, due_ms=None, head_start_ms=head_start_ms)
                    for job in jobs
                ]
        now_ms = self._now_ms()
        prepared = _prepare_many(jobs, trace, now_ms, head_start_ms)
        # A head start is a score in the past (see `queued_due_ms`); the expiry counts from now.
        due_ms = now_ms - head_start_ms
        if not self._shards:
            await self.store.enqueue_many(prepared, due_ms=due_ms, ttl_ms=_EXPIRES_EXTRA_MS)
        else:
            groups = self._layout.group([job_id for job_id, _ in prepared])
            await asyncio.gather(
                *(
                    self._shards[shard].enqueue_many(
                        [prepared[i] for i in positions], due_ms=due_ms, ttl_ms=_EXPIRES_EXTRA_MS
                    )
                    for shard, positions in groups.items()
                )
            )
        return [JobId(job_id) for job_id, _ in prepared]

    async def schedule(
        self,
        job: JobPayload,
        *,
        at: datetime | None = None,
        delay: Seconds | None = None,
        job_id: str | None = None,
    ) -> JobId[Any]:
        """Queue ``job`` to run at an aware datetime ``at``, or after ``delay`` (a `timedelta`
        or seconds).

        A time in the past runs at once. Returns the job id. There is no ``priority`` here: in
        the queue a head start is an earlier due time, so a scheduled job with one would run
        early (see docs/flow-control.md, "Priorities"); enqueue it with ``priority`` when it
        is due instead.
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
            due_ms = self._now_ms() + int(seconds("schedule(delay=...)", delay) * 1000)
        if due_ms > _LATEST_DUE_MS:
            given = f"at={at!r}" if at is not None else f"delay={delay!r}"
            raise ConfigurationError(
                f"schedule({given}) is too far ahead: a job can be due at the latest at the end "
                "of year 9999"
            )
        return await self._add(job, job_id, due_ms=due_ms)

    async def _add(
        self, job: object, job_id: str | None, *, due_ms: int | None, head_start_ms: int = 0
    ) -> JobId[Any]:
        info = job_type_info(job)
        payload = encode_payload(job)
        if job_id is not None and (not isinstance(job_id, str) or not job_id):
            raise ConfigurationError(f"job_id must be a non-empty string, got {job_id!r}")
        given = job_id is not None
        if job_id is None and self._shards and info.key in self.slot_limits:
            job_id = self._id_for_slots(job, *self.slot_limits[info.key])
        job_id = job_id or _new_id()
        store = self._store_for(job_id)
        debounce: tuple[str, str | None] | None = None
        if self.debounces and (rates := self.debounces.get(info.key)) is not None:
            assert rates.debounce is not None
            if head_start_ms:
                raise _debounced_priority(info.key)
            debounce = (rates.job_type, rates.debounce_key(job))
            quiet_until = int(time.time() * 1000) + rates.debounce.quiet_ms
            due_ms = quiet_until if due_ms is None else max(due_ms, quiet_until)
        instrumentation = self.instrumentation
        # Without instrumentation, a shared do-nothing block: no object per enqueue.
        with (
            _UNTRACED if instrumentation is None else instrumentation.enqueue(info.name, job_id)
        ) as trace:
            now_ms = int(time.time() * 1000)
            score = now_ms if due_ms is None or due_ms < now_ms else due_ms
            ttl_ms = score - now_ms + _EXPIRES_EXTRA_MS
            latest_here = debounce is not None and not self._shards
            added = await store.enqueue(
                job_id,
                job_record(info.key, payload, now_ms, trace, head_start_ms),
                # A head start is a score in the past (see `queued_due_ms`).
                due_ms=score - head_start_ms,
                ttl_ms=ttl_ms,
                debounce=debounce if latest_here else None,
            )
            if added and debounce is not None and not latest_here:
                # A sharded queue keeps debounce keys on shard 0, apart from the job's shard.
                await self.stores[0].mark_latest(job_id, *debounce, ttl_ms=ttl_ms)
            # A fresh random id found taken was stored by this very call: a connection lost
            # after the write (a failover) made the client send it again.
            if not added and given:
                raise JobAlreadyExistsError(
                    f"a job with id {job_id!r} already exists (queued, running or with a kept "
                    "result); use another id, or delete the queued one first"
                )
        return JobId(job_id)

    async def delete(self, job_id: str) -> bool:
        """Remove a queued or scheduled job so it never runs; its id can then be reused.

        The deleted job stays visible as cancelled (message ``"deleted"``) in the cancelled
        list and to `get` while a result would be kept (``keep_result``), from a record kept
        apart from arq's keys: a new job may take the id at once, and then `get` shows the
        new one. Returns False, changing nothing, if the job is running, finished or unknown.
        """
        store = self._store_for(job_id)
        keep_ms = int(self.keep_result_s * 1000)
        if keep_ms <= 0:
            return await store.delete(job_id)
        (job,) = await store.read_jobs([job_id])
        if job.record is None:
            return await store.delete(job_id)
        now_ms = int(time.time() * 1000)
        tombstone, job_type = _cancelled(job, job_id, self.queue_name, now_ms, "deleted")
        return await store.delete(
            job_id, tombstone=tombstone, keep_ms=keep_ms, now_ms=now_ms, job_type=job_type
        )

    async def cancel(self, job_id: str) -> bool:
        """Cancel a queued, scheduled or running job; it ends `JobStatus.CANCELLED`.

        A queued or scheduled job is cancelled at once (its id stays taken while its result
        is kept; `delete` frees it instead). A running job's worker is asked to stop it: the
        run is cancelled within about a second (its scope sees the cancellation) and stored
        cancelled. Returns False if the job is unknown or already finished. Stock arq's
        ``Job.abort`` does the same to jobs running on hostedjobs workers.
        """
        store = self._store_for(job_id)
        for _ in range(3):
            (job,) = await store.read_jobs([job_id])
            record = job.record
            if record is None or job.result is not None or job.unreadable_result:
                return False
            now_ms = int(time.time() * 1000)
            # Its history stays: the tries it had, and the last one's error.
            message = (
                "cancelled before it started"
                if not job.tries
                else f"cancelled before try {job.tries + 1}"
                + (f" (try {job.tries}: {job.meta['error']})" if "error" in job.meta else "")
            )
            data, job_type = _cancelled(job, job_id, self.queue_name, now_ms, message)
            done = await store.cancel(
                job_id,
                record,
                data if self.keep_result_s > 0 else None,
                keep_ms=int(self.keep_result_s * 1000),
                now_ms=now_ms,
                job_type=job_type,
            )
            if done:
                return True
            # The job changed between the two reads (it started, or finished): look again.
        return False

    async def retry(self, job_id: str) -> bool:
        """Queue a failed job again under the same id, with its payload, its priority (head
        start) and a fresh try count.

        Returns False, changing nothing, unless the job has failed and its result is still
        kept (a job that succeeded, is queued or running, or is unknown is left alone).
        """
        store = self._store_for(job_id)
        (job,) = await store.read_jobs([job_id])
        raw = job.result
        record = _readable(raw)[0]
        if raw is None or record is None or _outcome(record) is not Outcome.FAILED:
            return False  # unknown, not failed, or its result unreadable: nothing to run again
        args = record["a"] or [None]
        now_ms = int(time.time() * 1000)
        head_start = head_start_of(record)
        return await store.retry(
            job_id,
            raw,
            job_record(record["f"], args[0], now_ms, head_start_ms=head_start),
            due_ms=now_ms - head_start,
            ttl_ms=_EXPIRES_EXTRA_MS,
            job_type=_split_key(str(record["f"]))[0],
            worker_id=record["w"] if isinstance(record.get("w"), str) else "",
        )

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
        """A page of jobs in ``status`` (a `JobStatus` or its value, e.g. ``"failed"``):
        queued and scheduled by due time (soonest first), the others newest first. Reads
        indexes only, never the keyspace.

        Filters, all optional: ``job_type`` (a job type's name, without version), ``worker``
        (a worker id; running and finished jobs only: waiting jobs have none, so the page is
        then empty), and a time range ``since``/``until`` (aware datetimes, inclusive) on
        the time the list is ordered by: when a finished job finished, when a running one
        was claimed, when a queued or scheduled one is due. ``newest_first`` turns the order
        around (for waiting jobs: the latest due first); None keeps each list's own order.

        Finished jobs of a type or a worker are read from their own indexes (one range read
        per page, whatever the depth); waiting and running jobs of a type are found by
        reading records: ``scan_limit`` is how many waiting (or running) entries at most are
        examined per shard (default `SCAN_LIMIT`), in the list's order, and the page's
        ``scan_limited`` says when it stopped with more left. Running, succeeded,
        failed and cancelled jobs are listed from indexes that hostedjobs workers keep (jobs
        run by stock arq workers are not listed there); finished jobs stay listed while
        their result is kept, up to the newest 100,000 per state. Distributed cron runs are
        not listed (see their hosted job). Raises `ConfigurationError` for a bad status,
        offset, limit, scan limit or naive datetime.
        """
        if offset < 0 or limit < 1:
            raise ConfigurationError("jobs() needs offset >= 0 and limit >= 1")
        query = _Query.of(status, job_type, worker, since, until, newest_first, scan_limit)
        if query.status in _WAITING_STATES and worker is not None:
            return JobList()
        stores = self._shards or [self.store]
        now_ms = int(time.time() * 1000)
        if len(stores) == 1:
            entries, limited = await _entries(stores[0], query, now_ms, offset, limit)
            ids = [job_id for _, job_id in entries]
        else:
            pages = await asyncio.gather(
                *(_entries(store, query, now_ms, 0, offset + limit) for store in stores)
            )
            limited = any(page_limited for _, page_limited in pages)
            merged = heapq.merge(*(page for page, _ in pages))
            ids = [job_id for _, job_id in itertools.islice(merged, offset, offset + limit)]
        infos = await self._get_many(ids)
        # An index can briefly lag the job (a stock arq worker finished it, say): list only
        # jobs that are in the state asked for.
        found = JobList(
            info
            for info in infos
            if info is not None
            and info.status is query.status
            and (job_type is None or info.job_type == job_type)
        )
        found.scan_limited = limited
        return found

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
        """How many jobs `jobs` lists with the same filters (for paging). Exact for finished
        jobs (one ZCOUNT per shard); for waiting and running jobs of a type, counted among
        at most ``scan_limit`` entries per shard, and ``scan_limited`` on the count says
        when that stopped with more left (the count is then a lower bound)."""
        query = _Query.of(status, job_type, worker, since, until, None, scan_limit)
        if query.status in _WAITING_STATES and worker is not None:
            return JobCount(0)
        now_ms = int(time.time() * 1000)
        stores = self._shards or [self.store]
        counted = await asyncio.gather(*(_count(store, query, now_ms) for store in stores))
        return JobCount(
            sum(n for n, _ in counted), scan_limited=any(limited for _, limited in counted)
        )

    async def parked(self) -> dict[str, int]:
        """How many queued jobs workers set aside, by job type: those of a paused type (or
        payload), and those no live worker has the code for. They count as queued."""
        found: dict[str, int] = {}
        for shard in await asyncio.gather(*(store.parked_counts() for store in self.stores)):
            for function, count in shard.items():
                job_type = _split_key(function)[0]
                found[job_type] = found.get(job_type, 0) + count
        return found

    async def counts(self, *, since: Seconds | None = None) -> dict[JobStatus, int]:
        """How many jobs are in each state, from the same indexes as `jobs`.

        With ``since``, finished states count only jobs that finished within that period.
        """
        now_ms = int(time.time() * 1000)
        since_ms = None if since is None else now_ms - int(seconds("since", since) * 1000)
        if not self._shards:
            return await self.store.counts(now_ms=now_ms, since_ms=since_ms)
        counts: dict[JobStatus, int] = {}
        for shard in await asyncio.gather(
            *(store.counts(now_ms=now_ms, since_ms=since_ms) for store in self._shards)
        ):
            for status, count in shard.items():
                counts[status] = counts.get(status, 0) + count
        return counts

    async def history(
        self,
        *,
        since: Seconds = 3600,
        job_type: str | None = None,
        bin: Seconds = 60,
    ) -> list[HistoryPoint]:
        """How many runs of on-demand jobs succeeded, failed, were retried and were
        cancelled, per ``bin`` (default: per minute) over the last ``since`` (default: an
        hour, at most 24 h), oldest first, empty bins included (zeros).

        Bins start at UTC multiples of ``bin`` (a whole number of minutes); the last one
        holds the current minute, so it is still filling. ``job_type`` (a function name)
        counts its runs only. Distributed cron runs count under their function, like any
        run; a sharded queue's counts are summed over its shards. Raises
        `ConfigurationError` for a window beyond the 24 h kept, or a bin that is not whole
        minutes. Costs one pipelined read of 4 fields per minute per shard.
        """
        window = HistoryWindow.of(
            self._now_ms(), seconds("since", since), seconds("bin", bin, positive=True)
        )
        fields = history_field_names(job_type)
        shards = await asyncio.gather(
            *(
                store.history(window.first_minute, window.last_minute, fields=fields)
                for store in self.stores
            )
        )
        minutes = [_summed(minute) for minute in zip(*shards, strict=True)]
        return history_points(window, minutes, job_type)

    async def job_types(self, *, since: Seconds = 3600) -> list[JobTypeStats]:
        """Every job type that ran in the last ``since`` (default: an hour, at most 24 h),
        with its run counts and run-time percentiles (seconds, within 9.05 %), busiest first.

        Raises `ConfigurationError` for a window beyond the 24 h kept. Reads every field of
        each minute's history hash (one pipelined read per shard), summed as they come.
        """
        window = HistoryWindow.of(self._now_ms(), seconds("since", since), 60)
        shards = await asyncio.gather(
            *(
                store.history_totals(window.first_minute, window.last_minute)
                for store in self.stores
            )
        )
        return job_type_stats(shards)

    @overload
    def watch(
        self, job_id: JobId[R], *, recheck_every: float = 5.0
    ) -> AsyncIterator[JobInfo[R]]: ...
    @overload
    def watch(self, job_id: str, *, recheck_every: float = 5.0) -> AsyncIterator[JobInfo]: ...
    async def watch(self, job_id: str, *, recheck_every: float = 5.0) -> AsyncIterator[JobInfo]:
        """Yield the job's state each time it changes (progress, start, retry, end).

        The first item is the current state; the iterator ends after a finished state, or at
        once if the job is unknown or deleted. Changes are pushed (Redis pub/sub); the state
        is also re-read every ``recheck_every`` seconds in case a message was missed::

            async for info in host.scheduler.watch(job_id):
                print(info.status, info.progress, info.progress_message)
        """
        store = self._store_for(job_id)
        pubsub = store.events()
        await pubsub.subscribe(store.keys.events)
        try:
            async for info in self._changes(
                job_id, lambda: _next_event_about(pubsub, job_id, recheck_every)
            ):
                yield info
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _changes(
        self, job_id: str, next_change: Callable[[], Awaitable[object]]
    ) -> AsyncIterator[JobInfo]:
        """`watch`'s loop: the job's state whenever it differs from the last one yielded,
        until it has finished or is gone; ``next_change`` waits for a reason to look again."""
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
            await next_change()

    @overload
    async def get(self, job_id: JobId[R]) -> JobInfo[R] | None: ...
    @overload
    async def get(self, job_id: str) -> JobInfo | None: ...
    async def get(self, job_id: str) -> JobInfo | None:
        """The job's status, tries, times, result or error, and progress; None if unknown.

        A function job's result comes back as its function's return type (see
        `result_types`); any other job's as JSON holds it.
        """
        (info,) = await self._get_many([job_id])
        return self._typed_result(info)

    async def get_many(self, job_ids: Sequence[str]) -> list[JobInfo | None]:
        """`get` for many ids at once (one round trip per shard): each id's `JobInfo`, or
        None where the job is unknown, in the order given."""
        infos = await self._get_many(list(job_ids))
        return [self._typed_result(info) for info in infos]

    def _typed_result(self, info: JobInfo | None) -> JobInfo | None:
        """``info`` with a function job's result rebuilt as its return type (`result_types`)."""
        if info is not None and info.result is not None and self.result_types:
            decode = self.result_types.get(f"{info.job_type}@{info.version}")
            if decode is not None:
                info = dataclasses.replace(info, result=decode(info.result))
        return info

    async def _get_many(self, job_ids: list[str]) -> list[JobInfo | None]:
        if self._shards:
            stored = await self._read_sharded(job_ids)
        else:
            stored = await self.store.read_jobs(job_ids)
        return [_job_info(job_id, job) for job_id, job in zip(job_ids, stored, strict=True)]

    async def _read_sharded(self, job_ids: list[str]) -> list[StoredJob]:
        """`Store.read_jobs` over the shards: each shard's ids read at once, concurrently."""
        groups = self._layout.group(job_ids)
        found: list[StoredJob | None] = [None] * len(job_ids)

        async def read(shard: int, positions: list[int]) -> None:
            jobs = await self._shards[shard].read_jobs([job_ids[i] for i in positions])
            for position, job in zip(positions, jobs, strict=True):
                found[position] = job

        await asyncio.gather(*(read(shard, positions) for shard, positions in groups.items()))
        return [job for job in found if job is not None]


_LATEST_DUE_MS = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() * 1000)
"""The latest due time `Scheduler.schedule` takes: the last second `datetime` can show."""


_SCAN_BATCH = 500


def _aware_ms(name: str, value: datetime | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(f"jobs({name}={value!r}) needs an aware datetime")
    return int(value.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class _Query:
    """What `Scheduler.jobs` and `Scheduler.count` were asked for."""

    status: JobStatus
    job_type: str | None
    worker: str | None
    min_ms: int | None
    max_ms: int | None
    newest_first: bool
    scan_limit: int = SCAN_LIMIT

    @classmethod
    def of(
        cls,
        status: JobStatus | str,
        job_type: str | None,
        worker: str | None,
        since: datetime | None,
        until: datetime | None,
        newest_first: bool | None,
        scan_limit: int = SCAN_LIMIT,
    ) -> _Query:
        state = _status(status)
        if isinstance(scan_limit, bool) or not isinstance(scan_limit, int) or scan_limit < 1:
            raise ConfigurationError(f"jobs(scan_limit={scan_limit!r}) needs an int >= 1")
        for name, value in (("job_type", job_type), ("worker", worker)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(f"jobs({name}={value!r}) needs a non-empty string")
        if newest_first is None:
            newest_first = state not in _WAITING_STATES
        return cls(
            state,
            job_type,
            worker,
            _aware_ms("since", since),
            _aware_ms("until", until),
            newest_first,
            scan_limit,
        )


def _of_type(records: list[bytes | None], job_type: str) -> list[bool]:
    """Which of ``records`` are of ``job_type`` (unreadable ones are not)."""
    found = []
    for raw in records:
        record = _readable(raw)[0]
        found.append(record is not None and _split_key(str(record["f"]))[0] == job_type)
    return found


async def _waiting(
    store: Store, query: _Query, now_ms: int, offset: int, limit: int
) -> tuple[list[tuple[str, str | None, int]], bool]:
    """A page of waiting jobs matching ``query`` (a job type: by their records, at most
    ``query.scan_limit`` of them), and whether that scan stopped with more left."""

    async def page(start: int, size: int) -> list[tuple[str, str | None, int]]:
        return await store.waiting_entries(
            due=query.status is JobStatus.QUEUED,
            now_ms=now_ms,
            offset=start,
            limit=size,
            min_ms=query.min_ms,
            max_ms=query.max_ms,
            latest_first=query.newest_first,
        )

    if query.job_type is None:
        return await page(offset, limit), False
    found: list[tuple[str, str | None, int]] = []
    start = 0
    limited = False
    while len(found) < offset + limit:
        if start >= query.scan_limit:
            # Stopped at the limit: more entries only if the next one exists.
            limited = bool(await page(start, 1))
            break
        size = min(_SCAN_BATCH, query.scan_limit - start)
        batch = await page(start, size)
        matches = _of_type(await store.records([e[0] for e in batch]), query.job_type)
        found += (entry for entry, match in zip(batch, matches, strict=True) if match)
        if len(batch) < size:
            break
        start += size
    return found[offset : offset + limit], limited


async def _running(store: Store, query: _Query) -> tuple[list[tuple[str, int]], bool]:
    """Every running job matching ``query``, latest claim first (a job type: among the
    latest ``query.scan_limit``), and whether that scan stopped with more left."""
    entries = await store.running_entries(
        worker_id=query.worker, min_ms=query.min_ms, max_ms=query.max_ms
    )
    cap = SCAN_LIMIT if query.job_type is None else query.scan_limit
    limited = query.job_type is not None and len(entries) > cap
    entries = entries[:cap]
    if query.job_type is not None:
        matches: list[bool] = []
        for i in range(0, len(entries), _SCAN_BATCH):
            batch = [job_id for job_id, _ in entries[i : i + _SCAN_BATCH]]
            matches += _of_type(await store.records(batch), query.job_type)
        entries = [entry for entry, match in zip(entries, matches, strict=True) if match]
    return entries, limited


async def _entries(
    store: Store, query: _Query, now_ms: int, offset: int, limit: int
) -> tuple[list[tuple[tuple[Any, ...], str]], bool]:
    """A page of one store's jobs matching ``query``, each with a key that orders pages of
    several shards the same way (so they merge), and whether a type scan stopped early."""
    sign = -1 if query.newest_first else 1
    if query.status in _WAITING_STATES:
        page, limited = await _waiting(store, query, now_ms, offset, limit)
        # Soonest (or latest) due first, the parked ones after, by function.
        return [
            ((function is not None, function or "", sign * due), job_id)
            for job_id, function, due in page
        ], limited
    if query.status is JobStatus.RUNNING:
        running, limited = await _running(store, query)
        if not query.newest_first:
            running.reverse()
        page_of = running[offset : offset + limit]
        return [((sign * ms,), job_id) for job_id, ms in page_of], limited
    finished = await store.finished_entries(
        query.status,
        job_type=query.job_type,
        worker_id=query.worker,
        min_ms=query.min_ms,
        max_ms=query.max_ms,
        newest_first=query.newest_first,
        offset=offset,
        limit=limit,
    )
    return [((sign * ms,), job_id) for job_id, ms in finished], False


async def _count(store: Store, query: _Query, now_ms: int) -> tuple[int, bool]:
    """How many of one store's jobs match ``query``, and whether a type scan stopped early."""
    if query.status.finished:
        return await store.finished_count(
            query.status,
            job_type=query.job_type,
            worker_id=query.worker,
            min_ms=query.min_ms,
            max_ms=query.max_ms,
        ), False
    if query.status is JobStatus.RUNNING:
        running, limited = await _running(store, query)
        return len(running), limited
    if query.job_type is None and query.min_ms is None and query.max_ms is None:
        return (await store.counts(now_ms=now_ms, since_ms=None))[query.status], False
    if query.job_type is None:
        return len((await _waiting(store, query, now_ms, 0, SCAN_LIMIT))[0]), False
    # One more than can match: the scan goes on to its limit even if all it saw matched.
    waiting, limited = await _waiting(store, query, now_ms, 0, query.scan_limit + 1)
    return len(waiting), limited


def _cancelled(
    job: StoredJob, job_id: str, queue_name: str, now_ms: int, message: str
) -> tuple[bytes, str]:
    """A cancelled (or deleted) waiting job's result record, and its job type: its stored
    fields kept, an unreadable record cancelled all the same as a job of no known type."""
    stored = (_readable(job.record)[0] if job.record else None) or {
        "f": _UNREADABLE,
        "a": [],
        "k": {},
        "et": 0,
    }
    record = {
        **stored,
        "t": job.tries,
        "s": True,
        "r": None,
        "st": None,
        "ft": now_ms,
        "q": queue_name,
        "id": job_id,
        "o": Outcome.CANCELLED.value,
        "m": message,
    }
    return dumps(record), _split_key(str(stored["f"]))[0]


def _status(status: JobStatus | str) -> JobStatus:
    try:
        return JobStatus(status)
    except ValueError:
        known = ", ".join(s.value for s in JobStatus)
        raise ConfigurationError(f"unknown job status {status!r}; use one of: {known}") from None


async def _next_event_about(pubsub: Any, job_id: str, timeout_s: float) -> None:
    """Wait until an event names ``job_id`` (events name several ids), or ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is None:
            continue
        data = message.get("data")
        if isinstance(data, bytes) and job_id in data.decode(errors="replace").split(" ")[1:]:
            return


def _summed(hashes: Iterable[dict[str, int]]) -> dict[str, int]:
    """One minute's history fields, summed over shards."""
    total: dict[str, int] = {}
    for fields in hashes:
        for field, value in fields.items():
            total[field] = total.get(field, 0) + value
    return total


def _outcome(record: dict[str, Any]) -> Outcome:
    """How a finished job ended: hostedjobs' own field, else arq's success flag."""
    stored = record.get("o")
    if isinstance(stored, str):
        with contextlib.suppress(ValueError):
            return Outcome(stored)
    return Outcome.SUCCEEDED if record.get("s") else Outcome.FAILED


_UNREADABLE = "<unreadable>"
"""The job type shown for a job whose stored record cannot be read."""


def _readable(raw: bytes | None) -> tuple[dict[str, Any] | None, str | None]:
    """A stored record, or why it cannot be read (`read_record`)."""
    if raw is None:
        return None, None
    try:
        return read_record(raw), None
    except PayloadDecodeError as exc:
        return None, str(exc)


def _progress(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:  # written by something else: no progress to show
        return None


def _job_info(job_id: str, job: StoredJob) -> JobInfo | None:
    """What `Scheduler.get` shows; None if the job is unknown (or expired).

    A record that cannot be read (written by something else, or damaged) does not hide the
    job, nor break the lists holding it: the job is shown where it is (queued, scheduled,
    running) with the job type ``<unreadable>`` and an error saying what is wrong, which is
    the error a worker fails it with; an unreadable result reads as failed.
    """
    if job.record is None and job.result is None and job.deleted is not None:
        job = dataclasses.replace(job, result=job.deleted, meta={})
    finished = job.result is not None or job.unreadable_result is not None
    if finished:
        record, unreadable = _readable(job.result)
        unreadable = job.unreadable_result or unreadable
    else:
        record, unreadable = _readable(job.record)
        unreadable = job.unreadable_record or unreadable
    if unreadable is not None:
        record = {"f": _UNREADABLE, "a": [], "k": {}, "et": 0}
        if finished:
            record.update(s=False, o=Outcome.FAILED.value, m=unreadable)
    if record is None:
        return None
    job_type, version = _split_key(record["f"])
    value = record.get("r")
    message: str | None = None
    error = unreadable or job.meta.get("error")
    trace = job.meta.get("traceback") or None
    history = try_entries(job.meta)
    if finished:
        kept = record.get("te")
        history = kept if isinstance(kept, list) else []
        trace = record.get("tb") if isinstance(record.get("tb"), str) else None
        outcome = _outcome(record)
        status = JobStatus.of(outcome)
        stored_message = record.get("m")
        if outcome is Outcome.FAILED:
            error = stored_message if "o" in record else (error_message(value) or repr(value))
            value = None
        else:
            message = stored_message
    elif job.locked:
        status = JobStatus.RUNNING
    elif job.score_ms is not None:
        status = JobStatus.SCHEDULED if job.score_ms > time.time() * 1000 else JobStatus.QUEUED
    elif "parked" in job.meta:
        # Set aside by a worker with no code for it, for one that has (Store.park).
        status = JobStatus.QUEUED
        reason = job.meta.get("parked_reason", "")
        if reason == PAUSED_REASON:
            message = "paused: its job type is paused; it runs once resumed"
        elif reason.startswith(WAITING_REASON):
            message = reason  # set aside until a run of its type (and key) ends
        else:
            message = "waiting for a worker that can run it: " + reason
    else:
        return None
    args = record["a"] or [None]
    return JobInfo(
        id=job_id,
        status=status,
        job_type=job_type,
        version=version,
        tries=(record.get("t") or 0) if finished else job.tries,
        payload=args[0],
        enqueued_at=_ms_to_datetime(record["et"] or None),
        # A running job's score is its lock's lapse time (see the worker's claim), not a due time.
        scheduled_for=_ms_to_datetime(queued_due_ms(job.score_ms, record))
        if status in _WAITING_STATES and job.score_ms is not None
        else None,
        started_at=_ms_to_datetime(
            record.get("st") or (job.running_since_ms if job.locked else None)
        ),
        finished_at=_ms_to_datetime(record.get("ft")),
        result=value,
        message=message,
        error=error,
        progress=_progress(job.meta.get("progress")),
        progress_message=job.meta.get("progress_message"),
        traceback=trace,
        errors=tuple(_try_error(entry) for entry in history if isinstance(entry, dict)),
        worker=(record.get("w") if isinstance(record.get("w"), str) else None)
        if finished
        else job.claimant
        if status is JobStatus.RUNNING
        else None,
    )


def _try_error(entry: dict[str, Any]) -> TryError:
    """A try history entry (stored JSON) as a `TryError`, whatever fields it lacks."""
    at = entry.get("at")
    trace = entry.get("traceback")
    worker = entry.get("worker")
    started = entry.get("started_at")
    return TryError(
        attempt=entry["try"] if isinstance(entry.get("try"), int) else 0,
        at=_ms_to_datetime(at) if isinstance(at, int | float) else None,
        error=str(entry.get("error") or ""),
        traceback=trace if isinstance(trace, str) and trace else None,
        worker=worker if isinstance(worker, str) and worker else None,
        started_at=_ms_to_datetime(started) if isinstance(started, int | float) else None,
    )
