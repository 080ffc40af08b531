"""Distributed cron on Redis: one run per tick across every process, durable and observable.

At each tick every process that runs the host calls `DistributedCron.fire`. One Lua script
claims the tick (keyed by job name and tick, so clocks that disagree by less than the period
still agree on the key), records it as the last fired tick, and enqueues an arq job whose id is
derived from the tick: two processes can never both win, and a process dying between claim and
enqueue cannot lose the tick. Any worker runs the job; while it runs it holds a lease renewed by
a heartbeat, which is how the next tick knows the previous run is alive (a crashed run's lease
lapses within seconds). A crashed worker's run stays in the queue and is retried by arq.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from arq.connections import ArqRedis
from arq.jobs import serialize_job
from arq.worker import Function

from . import keys
from .context import JobContext
from .instrumentation import Instrumentation, RunKind, RunOutcome
from .scope import ScopeProvider
from .serialization import dumps
from .status import HISTORY_LENGTH, HostedJobStatus, JobKind, RunRecord

if TYPE_CHECKING:
    from .hosted import HostedJob

__all__ = ["ClaimOutcome", "DistributedCron"]

logger = logging.getLogger("hostedjobs.distributed")

LEASE_MS = 10_000
"""A run's lease lapses this long after its last heartbeat."""
HEARTBEAT_S = 3.0
_NO_TIMEOUT_S = 10 * 365 * 86_400.0

# KEYS: claim, last_tick, lease, pending, state, history, job, result, queue, wake
# ARGV: tick_ms, claim_ttl_ms, owner, job_id, job_data, job_ttl_ms, skip_if_running,
#       skipped_record, next_run, wake_kept, job_prefix, in_progress_prefix, history_length,
#       skipped_record_while_queued
_FIRE = """
if not redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ARGV[2]) then return 0 end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > last then redis.call('SET', KEYS[2], ARGV[1]) end
redis.call('HSET', KEYS[5], 'next_run', ARGV[9])
if ARGV[7] == '1' then
  local busy = 0
  if redis.call('EXISTS', KEYS[3]) == 1 then busy = 2 end
  local pending = redis.call('GET', KEYS[4])
  if busy == 0 and pending and redis.call('EXISTS', ARGV[11] .. pending) == 1
      and redis.call('EXISTS', ARGV[12] .. pending) == 0 then
    busy = 4
  end
  if busy > 0 then
    local record = ARGV[8]
    if busy == 4 then record = ARGV[14] end
    redis.call('LPUSH', KEYS[6], record)
    redis.call('LTRIM', KEYS[6], 0, tonumber(ARGV[13]) - 1)
    return busy
  end
end
if redis.call('EXISTS', KEYS[7], KEYS[8]) > 0 then return 3 end
redis.call('PSETEX', KEYS[7], ARGV[6], ARGV[5])
redis.call('ZADD', KEYS[9], ARGV[1], ARGV[4])
redis.call('SET', KEYS[4], ARGV[4])
redis.call('LPUSH', KEYS[10], '1')
redis.call('LTRIM', KEYS[10], 0, tonumber(ARGV[10]) - 1)
return 1
"""

# Takes the run's lease (unless the previous run holds it and overlaps are skipped) and
# records the start, in one round trip. KEYS: lease, state. ARGV: run id, lease ms,
# skip_if_held, last_scheduled_at, last_started_at, running_run.
_START = """
local took = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
if not took and ARGV[3] == '1' then return 0 end
redis.call('HSET', KEYS[2], 'last_scheduled_at', ARGV[4], 'last_started_at', ARGV[5],
  'running_run', ARGV[6])
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ClaimOutcome:
    """What `DistributedCron.fire` did with a tick."""

    CLAIMED_ELSEWHERE = 0
    ENQUEUED = 1
    SKIPPED = 2
    """The previous run is still running (its lease is alive)."""
    ALREADY_ENQUEUED = 3
    SKIPPED_QUEUED = 4
    """The previous run has not started yet: no worker took it (is one running?)."""


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class _Keys:
    prefix: str

    @property
    def last_tick(self) -> str:
        return f"{self.prefix}:last_tick"

    @property
    def lease(self) -> str:
        return f"{self.prefix}:lease"

    @property
    def pending(self) -> str:
        return f"{self.prefix}:pending"

    @property
    def state(self) -> str:
        return f"{self.prefix}:state"

    @property
    def history(self) -> str:
        return f"{self.prefix}:history"

    def claim(self, tick_ms: int) -> str:
        return f"{self.prefix}:claim:{tick_ms}"


class DistributedCron:
    """The Redis side of every distributed cron job of one host (one queue)."""

    def __init__(
        self,
        queue_name: str,
        *,
        provider: ScopeProvider,
    ) -> None:
        self.queue_name = queue_name
        self.provider = provider
        self.jobs: dict[str, HostedJob] = {}
        self.pool: ArqRedis | None = None
        self.instrumentation: Instrumentation | None = None
        self._scripts: dict[str, Any] = {}
        self._owner = uuid.uuid4().hex[:12]

    def attach(self, pool: ArqRedis | None) -> None:
        """Use ``pool`` (None detaches)."""
        self.pool = pool
        if pool is not None:
            self._scripts = {
                "fire": pool.register_script(_FIRE),
                "start": pool.register_script(_START),
                "renew": pool.register_script(_RENEW),
                "release": pool.register_script(_RELEASE),
            }

    def _keys(self, name: str) -> _Keys:
        return _Keys(f"hostedjobs:{self.queue_name}:cron:{name}")

    @staticmethod
    def function_name(name: str) -> str:
        """The arq function a job's runs are enqueued under."""
        return f"hostedjobs.cron:{name}"

    def job_id(self, name: str, tick_ms: int) -> str:
        """The arq job id of the run for one tick: the same in every process."""
        return f"hostedjobs:{self.queue_name}:cron:{name}:{tick_ms}"

    def arq_functions(self) -> list[Function]:
        """One arq function per distributed job, run by whichever worker takes it."""
        return [self._function(job) for job in self.jobs.values()]

    def _function(self, job: HostedJob) -> Function:
        async def run(
            ctx: dict[str, Any], tick_ms: int, manual: bool = False, traceparent: str | None = None
        ) -> Any:
            return await self.run(job, ctx, tick_ms, manual, traceparent)

        # The job's own timeout is enforced inside the run, where it is recorded; arq's is a
        # backstop (and without one, arq would impose the host's job_timeout).
        timeout = job.timeout_s + 5 if job.timeout_s is not None else _NO_TIMEOUT_S
        # Several tries so that a run interrupted by a crash or a shutdown runs again; the
        # run itself never raises, so a failing job is not retried.
        return Function(self.function_name(job.name), run, timeout, None, None, 5)

    async def fire(self, job: HostedJob, tick: datetime, next_run: datetime | None) -> int:
        """Claim ``tick`` and, unless the previous run is alive, enqueue its run."""
        assert self.pool is not None and job.schedule is not None
        tick_ms = _ms(tick)
        keys_ = self._keys(job.name)
        job_id = self.job_id(job.name, tick_ms)
        now_ms = int(time.time() * 1000)
        after_next = job.schedule.next_tick(next_run) if next_run is not None else tick
        # The claim outlives the run and any process's skew: two periods and an hour.
        claim_ttl_ms = max(_ms(after_next) - tick_ms, 0) + 3_600_000
        data = serialize_job(
            self.function_name(job.name), (tick_ms,), {}, None, now_ms, serializer=dumps
        )
        now = datetime.now(UTC)
        skipped = RunRecord("", tick, now, now, "skipped", "the previous run was still running")
        skipped_queued = RunRecord(
            "", tick, now, now, "skipped", "the previous run was still queued: is a worker running?"
        )
        outcome: int = await self._scripts["fire"](
            keys=[
                keys_.claim(tick_ms),
                keys_.last_tick,
                keys_.lease,
                keys_.pending,
                keys_.state,
                keys_.history,
                keys.JOB_PREFIX + job_id,
                keys.RESULT_PREFIX + job_id,
                self.queue_name,
                keys.wake_key(self.queue_name),
            ],
            args=[
                tick_ms,
                claim_ttl_ms,
                self._owner,
                job_id,
                data,
                max(tick_ms - now_ms, 0) + 86_400_000,
                "1" if job.overlap == "skip" else "0",
                json.dumps(skipped.to_json()),
                next_run.isoformat() if next_run else "",
                keys.WAKE_TOKENS_KEPT,
                keys.JOB_PREFIX,
                keys.IN_PROGRESS_PREFIX,
                HISTORY_LENGTH,
                json.dumps(skipped_queued.to_json()),
            ],
        )
        if outcome == ClaimOutcome.SKIPPED:
            logger.warning(
                "%s: skipped the tick at %s, the previous run is still running", job.name, tick
            )
        elif outcome == ClaimOutcome.SKIPPED_QUEUED:
            logger.warning(
                "%s: skipped the tick at %s, the previous run has not started yet; is a worker "
                "running for queue %r?",
                job.name,
                tick,
                self.queue_name,
            )
        return outcome

    async def trigger(self, job: HostedJob) -> str:
        """Enqueue a run now, outside the schedule; returns its job id."""
        assert self.pool is not None
        now_ms = int(time.time() * 1000)
        job_id = f"hostedjobs:{self.queue_name}:cron:{job.name}:manual:{uuid.uuid4().hex}"
        if self.instrumentation is None:
            await self._enqueue_manual(job, job_id, now_ms, None)
        else:
            with self.instrumentation.enqueue(job.name, job_id) as trace:
                await self._enqueue_manual(job, job_id, now_ms, trace)
        return job_id

    async def _enqueue_manual(
        self, job: HostedJob, job_id: str, now_ms: int, traceparent: str | None
    ) -> None:
        assert self.pool is not None
        kwargs = {} if traceparent is None else {"traceparent": traceparent}
        data = serialize_job(
            self.function_name(job.name), (now_ms, True), kwargs, None, now_ms, serializer=dumps
        )
        async with self.pool.pipeline(transaction=True) as pipe:
            pipe.psetex(keys.JOB_PREFIX + job_id, 86_400_000, data)
            pipe.zadd(self.queue_name, {job_id: now_ms})
            pipe.lpush(keys.wake_key(self.queue_name), b"1")
            pipe.ltrim(keys.wake_key(self.queue_name), 0, keys.WAKE_TOKENS_KEPT - 1)
            await pipe.execute()

    async def last_fired_tick(self, job: HostedJob) -> datetime | None:
        """The newest tick any process fired for ``job`` (kept for misfire handling)."""
        assert self.pool is not None
        raw = await self.pool.get(self._keys(job.name).last_tick)
        return None if raw is None else datetime.fromtimestamp(int(raw) / 1000, UTC)

    async def run(
        self,
        job: HostedJob,
        arq_ctx: dict[str, Any],
        tick_ms: int,
        manual: bool,
        traceparent: str | None = None,
    ) -> Any:
        """One run, in a worker: take the lease, keep it alive, run the job, record it."""
        assert self.pool is not None
        keys_ = self._keys(job.name)
        run_id: str = arq_ctx["job_id"]
        scheduled_at = datetime.fromtimestamp(tick_ms / 1000, UTC)
        ctx = JobContext(
            job_name=job.name,
            run_id=run_id,
            attempt=arq_ctx["job_try"],
            scheduled_at=scheduled_at,
            started_at=datetime.now(UTC),
        )
        started = RunRecord(run_id, scheduled_at, ctx.started_at, manual=manual)
        began = await self._scripts["start"](
            keys=[keys_.lease, keys_.state],
            args=[
                run_id,
                LEASE_MS,
                "1" if job.overlap == "skip" else "0",
                scheduled_at.isoformat(),
                ctx.started_at.isoformat(),
                json.dumps(started.to_json()),
            ],
        )
        if not began:
            record = RunRecord(
                run_id,
                scheduled_at,
                ctx.started_at,
                datetime.now(UTC),
                "skipped",
                "the previous run was still running",
                manual,
            )
            await self._record(keys_, record)
            return {"outcome": "skipped"}
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(keys_.lease, run_id))
        observer = (
            None
            if self.instrumentation is None
            else self.instrumentation.run_started(
                RunKind.DISTRIBUTED_CRON, ctx, traceparent, manual=manual
            )
        )
        try:
            try:
                result = await job.code.invoke(self.provider, ctx, timeout_s=job.timeout_s)
            except BaseException:
                # Only a cancellation gets here (a shutdown): the worker puts the run back.
                if observer is not None:
                    observer.end(RunOutcome.RETRIED)
                raise
            if observer is not None:
                observer.end(RunOutcome(result.outcome), result.error)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await asyncio.shield(self._scripts["release"](keys=[keys_.lease], args=[run_id]))
        finished = RunRecord(
            run_id,
            scheduled_at,
            ctx.started_at,
            datetime.now(UTC),
            str(result.outcome),
            result.message,
            manual,
        )
        await self._record(keys_, finished)
        return {"outcome": str(result.outcome), "message": result.message}

    async def _heartbeat(self, lease_key: str, run_id: str) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                renewed = await self._scripts["renew"](keys=[lease_key], args=[run_id, LEASE_MS])
            except Exception as exc:  # keep beating through a Redis blip
                logger.warning("could not renew the lease of run %s: %r", run_id, exc)
                continue
            if not renewed:
                logger.warning("run %s lost its lease (it expired); another run may start", run_id)

    async def _record(self, keys_: _Keys, record: RunRecord) -> None:
        assert self.pool is not None
        async with self.pool.pipeline(transaction=True) as pipe:
            if record.outcome != "skipped":
                pipe.hset(
                    keys_.state,
                    mapping={
                        "last_finished_at": record.finished_at.isoformat()
                        if record.finished_at
                        else "",
                        "last_outcome": record.outcome or "",
                        "last_message": record.message or "",
                    },
                )
                pipe.hdel(keys_.state, "running_run")
            pipe.lpush(keys_.history, json.dumps(record.to_json()))
            pipe.ltrim(keys_.history, 0, HISTORY_LENGTH - 1)
            await pipe.execute()

    async def status(self, job: HostedJob, next_run: datetime | None = None) -> HostedJobStatus:
        """The job's status as every process sees it (read from Redis).

        ``next_run`` is this process's own next tick, shown until a tick has been fired.
        """
        assert self.pool is not None and job.schedule is not None
        keys_ = self._keys(job.name)
        async with self.pool.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys_.state)
            pipe.lrange(keys_.history, 0, HISTORY_LENGTH - 1)
            pipe.exists(keys_.lease)
            raw_state, raw_history, running = await pipe.execute()
        state = {k.decode(): v.decode() for k, v in raw_state.items()}
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
