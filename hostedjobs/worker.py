"""The engine: an arq worker that wakes on enqueue, claims in batches, and is supervised.

`HostedWorker` stays an `arq.worker.Worker` with arq's key layout and job semantics (stock
`arq.jobs.Job` handles read its jobs, and stock workers can share its queue) and replaces what
makes arq slow or awkward inside an app: the 0.5 s poll, six round trips per job (now one
claim per batch of jobs and one group commit per batch of outcomes), locks sized by the
longest timeout, a loop that dies on the first Redis error, signal handlers, and a `close()`
that never drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis
from arq.cron import CronJob
from arq.jobs import deserialize_job_raw
from arq.worker import Function, JobExecutionFailed, Retry, RetryJob, Worker
from redis.exceptions import NoScriptError, RedisError

from . import keys
from .commits import KEEP_FOREVER, OutcomeCommitter
from .exceptions import PayloadError
from .health import BEAT_INTERVAL_S, WorkerBeat, new_worker_id, remove_beat, write_beat
from .scheduler import finished_state
from .serialization import dumps, loads, result_record

__all__ = ["HostedWorker", "WorkerSupervisor"]

logger = logging.getLogger("hostedjobs.worker")

# Claims up to ARGV[2] due jobs in one atomic step, so a job is claimed by exactly one worker
# and `Scheduler.delete` (also atomic) can never race a claim; for each it also reads the job
# and counts the try, which arq does in a second round trip per job. A claimed job stays in
# the queue zset, as arq keeps it, but its score moves to when its lock would lapse (renewed
# with the lock): claims never wade through running jobs, and a crashed worker's job becomes
# due again when its lock lapses. Jobs a stock arq worker runs keep their score and are
# skipped by their lock. Returns {more_due, next_due_score_or_empty, {id, score, payload,
# try, ...}, redis_ms}; a missing payload is '' (a nil would cut the array short). An empty
# ARGV[1] means "now" is Redis's clock minus ARGV[11], the worker's measured offset: a claim
# pipelined behind a BLPOP runs when the BLPOP returns, not when it was sent.
_CLAIM = """
local queue, wake = KEYS[1], KEYS[2]
local now, limit, lock_ms, page = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local clock = redis.call('TIME')
local redis_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if now == '' then now = string.format('%d', redis_ms - tonumber(ARGV[11])) end
local lock_prefix, job_prefix, retry_prefix = ARGV[6], ARGV[7], ARGV[8]
local scan_cap, events, running = tonumber(ARGV[9]), ARGV[10], KEYS[3]
local lapse = tonumber(now) + tonumber(lock_ms)
local claimed, taken, more, offset = {}, 0, 0, 0
-- Pages of due ids; claimed ones leave the due range, so the offset only counts those skipped
-- (locked by a stock arq worker, or by a crashed one whose lock has not lapsed yet).
while more == 0 and taken <= limit and offset < scan_cap do
  local due = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'WITHSCORES', 'LIMIT', offset, page)
  local skipped = 0
  for i = 1, #due, 2 do
    local id = due[i]
    if redis.call('EXISTS', lock_prefix .. id) == 0 then
      if taken >= limit then more = 1 break end
      redis.call('PSETEX', lock_prefix .. id, lock_ms, '1')
      local tries = redis.call('INCR', retry_prefix .. id)
      redis.call('EXPIRE', retry_prefix .. id, 88400)
      claimed[#claimed + 1] = id
      claimed[#claimed + 1] = due[i + 1]
      claimed[#claimed + 1] = redis.call('GET', job_prefix .. id) or ''
      claimed[#claimed + 1] = tries
      redis.call('ZADD', queue, lapse, id)
      redis.call('ZADD', running, now, id)
      redis.call('PUBLISH', events .. id, 'running')
      taken = taken + 1
    else
      skipped = skipped + 1
    end
  end
  if #due < page * 2 then break end
  offset = offset + skipped
end
if more == 1 then
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, tonumber(ARGV[5]) - 1)
else
  redis.call('DEL', wake)
end
local later = redis.call('ZRANGEBYSCORE', queue, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
return {more, later[2] or '', claimed, redis_ms}
"""

_CLAIM_SCAN_CAP = 5000
"""How many due ids one claim skips, at most, past ones locked by stock arq workers."""

# Renews the locks of this worker's running jobs and moves their queue scores along with them
# (see _CLAIM); a job whose lock is gone (its outcome was just committed) is left alone.
_RENEW = """
local lock_prefix, lock_ms, queue = ARGV[1], ARGV[2], ARGV[3]
local lapse = tonumber(ARGV[4]) + tonumber(lock_ms)
for i = 5, #ARGV do
  if redis.call('PEXPIRE', lock_prefix .. ARGV[i], lock_ms) == 1 then
    redis.call('ZADD', queue, 'XX', lapse, ARGV[i])
  end
end
return 1
"""

LOCK_TTL_S = 60.0
"""A running job's in-progress lock lapses this long after its worker stopped renewing it.

arq sizes the lock by the longest job timeout (plus 10 s), so a crashed worker's jobs wait
that long, five minutes by default, before another worker may retry them. Renewing the
lock while the job runs makes the wait independent of timeouts."""
LOCK_RENEW_S = 15.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def _fields(name: str, job_id: str, job_try: int, outcome: str, start_ms: int) -> dict[str, Any]:
    """The structured fields of a record about one run (see docs/observability.md)."""
    return {
        "job_name": name,
        "run_id": job_id,
        "attempt": job_try,
        "outcome": outcome,
        "duration_s": (_now_ms() - start_ms) / 1000,
    }


class _Functions(dict[str, Function | CronJob]):
    """arq's function registry, answering unknown names with a clear failing function."""

    def __init__(self, known: Iterable[Function], missing: Callable[[str], Function]) -> None:
        super().__init__((f.name, f) for f in known)
        self._missing = missing

    def __missing__(self, name: str) -> Function:
        return self._missing(name)


class HostedWorker(Worker):
    """An `arq.worker.Worker` that sleeps on a wake list instead of polling.

    Enqueuers push a token on ``<queue>:wake``; an idle worker blocks on it, with a fallback
    poll every ``fallback_poll`` seconds for jobs enqueued by stock arq clients, and a timer to
    the earliest deferred job so scheduled jobs and retries start on time. A full worker waits
    for one of its own runs to end instead of taking tokens other workers could use.

    Build it inside the running event loop (arq binds the loop at construction).
    """

    def __init__(
        self,
        functions: Iterable[Function],
        *,
        pool: ArqRedis,
        queue_name: str,
        missing_function: Callable[[str], Function],
        concurrency: int,
        job_timeout_s: float,
        keep_result_s: float,
        max_tries: int,
        fallback_poll_s: float = 1.0,
        burst: bool = False,
        self_timed: bool = False,
        on_job_start: Any = None,
        on_job_end: Any = None,
    ) -> None:
        known = list(functions)
        super().__init__(
            # arq insists on at least one function; the real registry is installed below.
            functions=known or [Function("hostedjobs:none", _never, None, None, None, None)],
            queue_name=queue_name,
            redis_pool=pool,
            burst=burst,
            handle_signals=False,
            max_jobs=concurrency,
            job_timeout=job_timeout_s,
            keep_result=keep_result_s,
            poll_delay=fallback_poll_s,
            max_tries=max_tries,
            job_serializer=dumps,
            job_deserializer=loads,
            log_results=False,
            on_job_start=on_job_start,
            on_job_end=on_job_end,
        )
        self.loop = asyncio.get_running_loop()
        self.functions = _Functions(known, missing_function)
        self.in_progress_timeout_s = LOCK_TTL_S
        self._locks_renewed_at = time.monotonic()
        self.fallback_poll_s = fallback_poll_s
        self._wake_key = keys.wake_key(queue_name)
        self._running_key = keys.running_index(queue_name)
        self._claim_script = pool.register_script(_CLAIM)
        self._renew_script = pool.register_script(_RENEW)
        self._released: set[asyncio.Task[Any]] = set()
        self.self_timed = self_timed
        self.worker_id = new_worker_id()
        self.started_at = time.time()
        self.last_loop_at = time.monotonic()
        self._last_beat = 0.0
        self._beat: asyncio.Task[None] | None = None
        self._commits = OutcomeCommitter(pool, queue_name, index_max_age_s=keep_result_s)
        self._kick = asyncio.Event()
        self._wait: asyncio.Task[Any] | None = None
        self._reserved = 0
        self._own_wake_key = f"{self._wake_key}:{self.worker_id}"
        self._clock_offset_ms: int | None = None
        self._claim_due = True
        self._next_due_ms: int | None = None
        self._stopping = False

    async def main(self) -> None:
        """Claim and run jobs until `drain` is called (or, in burst mode, the queue is empty).

        Redis errors do not end the loop: they are logged and retried with backoff, so an
        outage pauses the worker instead of silently killing it.
        """
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        failures = 0
        while not self._stopping:
            try:
                await self._poll_iteration()
                if self.burst and await self._burst_finished():
                    return
                await self._wait_for_work()
            except (RedisError, OSError) as exc:
                self._forget_wait()
                self._claim_due = True
                failures += 1
                delay = min(0.05 * 2**failures, 5.0)
                log = logger.warning if failures == 1 or failures % 20 == 0 else logger.debug
                log("Redis error in the worker loop (%s); retrying in %.2fs", exc, delay)
                await self._sleep_unless_kicked(delay)
            else:
                if failures:
                    logger.info("worker reconnected to Redis after %d failed attempts", failures)
                failures = 0

    async def heart_beat(self) -> None:
        """This worker's own heartbeat every couple of seconds (and arq's shared one hourly)."""
        self.last_loop_at = time.monotonic()
        beating = self._beat is not None and not self._beat.done()
        if self.last_loop_at - self._last_beat >= BEAT_INTERVAL_S and not beating:
            self._last_beat = self.last_loop_at
            # In the background: a job enqueued meanwhile must not wait for this round trip.
            self._beat = self.loop.create_task(self._write_beat())
        await self.record_health()

    async def _write_beat(self) -> None:
        try:
            await write_beat(
                self.pool,
                WorkerBeat(
                    worker_id=self.worker_id,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    queue=self.queue_name,
                    started_at=self.started_at,
                    beat_at=time.time(),
                    running=len(self.tasks),
                    completed=self.jobs_complete,
                    failed=self.jobs_failed,
                    retried=self.jobs_retried,
                ),
            )
        except (RedisError, OSError) as exc:
            logger.debug("could not write the worker's heartbeat: %s", exc)

    async def _poll_iteration(self) -> None:
        # Claim when something may have changed: a kick (a slot freed, more jobs due, a
        # resume), a timer or poll that fired, or an error; a claim pipelined behind the last
        # BLPOP has just looked otherwise.
        kicked = self._kick.is_set()
        self._kick.clear()
        free = self._free_slots()
        if free > 0 and (kicked or self._claim_due):
            await self._claim(free)
        if self.allow_abort_jobs:
            await self._cancel_aborted_jobs()
        self._reap_finished()
        if self.tasks and time.monotonic() - self._locks_renewed_at >= LOCK_RENEW_S:
            await self._renew_locks()
        await self.heart_beat()

    async def _renew_locks(self) -> None:
        self._locks_renewed_at = time.monotonic()
        ttl_ms = int(self.in_progress_timeout_s * 1000)
        await self._renew_script(
            keys=[],
            args=[keys.IN_PROGRESS_PREFIX, ttl_ms, self.queue_name, _now_ms(), *self.tasks],
        )

    def _free_slots(self) -> int:
        if not self.allow_pick_jobs or self._stopping:
            return 0
        free = self.max_jobs - self.job_counter
        if self.burst and self.max_burst_jobs >= 0:
            free = min(free, self.max_burst_jobs - self._jobs_started())
        return free

    def _claim_args(self, free: int, now_ms: int | None) -> list[Any]:
        return [
            "" if now_ms is None else now_ms,
            free,
            int(self.in_progress_timeout_s * 1000),
            free + 16,
            keys.WAKE_TOKENS_KEPT,
            keys.IN_PROGRESS_PREFIX,
            keys.JOB_PREFIX,
            keys.RETRY_PREFIX,
            _CLAIM_SCAN_CAP,
            keys.EVENTS_PREFIX,
            self._clock_offset_ms or 0,
        ]

    async def _claim(self, free: int) -> None:
        self._claim_due = False
        sent_ms = _now_ms()
        reply = await self._claim_script(
            keys=[self.queue_name, self._wake_key, self._running_key],
            args=self._claim_args(free, sent_ms),
        )
        # Redis's clock against ours, for claims pipelined behind a BLPOP (see _CLAIM); the
        # error is half this round trip.
        self._clock_offset_ms = int(reply[3]) - (sent_ms + _now_ms()) // 2
        self._start_claimed(reply)

    def _start_claimed(self, reply: list[Any]) -> None:
        more, next_due, claimed = reply[0], reply[1], reply[2]
        self._next_due_ms = int(float(next_due)) if next_due else None
        for i in range(0, len(claimed), 4):
            job_id = claimed[i].decode()
            self.job_counter += 1
            task = self.loop.create_task(
                self._execute(
                    job_id, int(float(claimed[i + 1])), claimed[i + 2], int(claimed[i + 3])
                )
            )
            task.add_done_callback(self._run_ended)
            self.tasks[job_id] = task
        if more:
            self._kick.set()

    async def _execute(self, job_id: str, score: int, raw: bytes, job_try: int) -> None:
        """One try of one claimed job, with arq's semantics; its outcome is group-committed."""
        start_ms = _now_ms()
        name, enqueue_ms = "<unknown>", 0
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] = {}
        function: Function | CronJob | None = None
        try:
            if not raw:
                raise JobExecutionFailed("job expired")
            name, args, kwargs, enqueue_try, enqueue_ms = deserialize_job_raw(
                raw, deserializer=loads
            )
            function = self.functions[name]
            job_try = max(job_try, enqueue_try or 0)
            max_tries = self.max_tries if function.max_tries is None else function.max_tries
            if job_try > max_tries:
                raise JobExecutionFailed(f"max {max_tries} retries exceeded")
        except Exception as exc:
            logger.warning(
                "job %s (%s) cannot run: %s",
                job_id,
                name,
                exc,
                extra=_fields(name, job_id, job_try, "failed", start_ms),
            )
            self._release_slot()
            await self._finish(
                job_id, name, args, kwargs, job_try, enqueue_ms, start_ms, False, exc, function
            )
            return
        ctx = {
            **self.ctx,
            "job_id": job_id,
            "job_try": job_try,
            "enqueue_time": datetime.fromtimestamp(enqueue_ms / 1000, tz=UTC),
            "score": score,
        }
        timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s
        # hostedjobs' own functions time their runs themselves (where the scope sees it);
        # a second timer per job would only cost time.
        deadline = asyncio.timeout(None if self.self_timed else timeout_s)
        try:
            async with deadline:
                result = await function.coroutine(ctx, *args, **kwargs)
        except Retry as retry:
            self.jobs_retried += 1
            self._release_slot()
            await self._commits.requeued(job_id, _now_ms() + (retry.defer_score or 0))
        except (asyncio.CancelledError, RetryJob):
            # Cancelled by a shutdown: back to the queue unchanged, for the next worker.
            logger.info(
                "job %s (%s) cancelled; it will run again",
                job_id,
                name,
                extra=_fields(name, job_id, job_try, "retried", start_ms),
            )
            self.jobs_retried += 1
            self._release_slot()
            await self._commits.requeued(job_id, score)
        except Exception as raised:
            error = raised
            if deadline.expired():
                error = TimeoutError(f"the job exceeded its timeout of {timeout_s:g}s")
            logger.error(
                "job %s (%s) failed on try %d: %s: %s",
                job_id,
                name,
                job_try,
                type(error).__name__,
                error,
                exc_info=error,
                extra=_fields(name, job_id, job_try, "failed", start_ms),
            )
            self._release_slot()
            await self._finish(
                job_id, name, args, kwargs, job_try, enqueue_ms, start_ms, False, error, function
            )
        else:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "job %s (%s) succeeded in %d ms",
                    job_id,
                    name,
                    _now_ms() - start_ms,
                    extra=_fields(name, job_id, job_try, "succeeded", start_ms),
                )
            self._release_slot()
            await self._finish(
                job_id, name, args, kwargs, job_try, enqueue_ms, start_ms, True, result, function
            )

    async def _finish(
        self,
        job_id: str,
        name: str,
        args: Any,
        kwargs: Any,
        job_try: int,
        enqueue_ms: int,
        start_ms: int,
        success: bool,
        result: Any,
        function: Function | CronJob | None,
    ) -> None:
        if success:
            self.jobs_complete += 1
        else:
            self.jobs_failed += 1
        forever = self.keep_result_forever
        keep_s = self.keep_result_s
        if function is not None:
            forever = (
                forever if function.keep_result_forever is None else function.keep_result_forever
            )
            keep_s = keep_s if function.keep_result_s is None else function.keep_result_s
        data = None
        if forever or keep_s > 0:
            # arq's result layout (see arq.jobs.serialize_result), so stock handles read it.
            record = {
                "t": job_try,
                "f": name,
                "a": args,
                "k": kwargs,
                "et": enqueue_ms,
                "s": success,
                "st": start_ms,
                "ft": _now_ms(),
                "q": self.queue_name,
                "id": job_id,
            }
            try:
                data = result_record(record, result)
            except PayloadError as exc:
                logger.warning(
                    "job %s (%s): its result cannot be stored: %s",
                    job_id,
                    name,
                    exc,
                    extra={"job_name": name, "run_id": job_id, "attempt": job_try},
                )
                data = result_record({**record, "s": False}, "unable to serialize result")
        state = finished_state(success, result)
        keep_ms = KEEP_FOREVER if forever else int(keep_s * 1000)
        await self._commits.finished(job_id, state, data, keep_ms)

    def _release_slot(self) -> None:
        # The slot is free once the job's code is done: the next claim goes out while this
        # outcome is still being committed, so a wave of jobs does not wait a round trip.
        task = asyncio.current_task()
        if task is not None and task not in self._released:
            self._released.add(task)
            self.job_counter -= 1
            self._kick.set()

    def _run_ended(self, task: asyncio.Task[Any]) -> None:
        if task in self._released:
            self._released.discard(task)
            if self.burst:
                # A burst worker may be waiting only for outcomes to be stored before it exits.
                self._kick.set()
        else:
            self.job_counter -= 1
            self._kick.set()

    def _reap_finished(self) -> None:
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                if not task.cancelled() and (exc := task.exception()) is not None:
                    # A run raises only when Redis failed while its outcome was stored; the
                    # job keeps its in-progress lock and runs again once the lock lapses.
                    logger.error(
                        "job %s: could not record its outcome: %r",
                        job_id,
                        exc,
                        extra={"run_id": job_id},
                    )

    async def _burst_finished(self) -> bool:
        if self.tasks:
            return False
        if 0 <= self.max_burst_jobs <= self._jobs_started():
            return True
        return bool(await self.pool.zcard(self.queue_name) == 0)

    async def _wait_for_work(self) -> None:
        if self._next_due_ms is not None and self._next_due_ms <= _now_ms():
            self._claim_due = True
            return
        if self._wait is None and (free := self._free_slots()) > 0:
            # Wait on the wake list with a claim pipelined behind the BLPOP, so a wake-up (or
            # the fallback poll) claims in the same round trip. The slots it may fill are
            # reserved meanwhile; slots freed later are claimed directly. (Burst workers only
            # block: their loop must be able to end with nothing outstanding.)
            pipelined = not self.burst and self._clock_offset_ms is not None
            self._reserved = free if pipelined else 0
            self.job_counter += self._reserved
            self._wait = self.loop.create_task(self._wake_then_claim(self._reserved))
        # While a BLPOP is out, its own timeout is the fallback poll; waiting here for the
        # same period as well would look at the queue twice per period.
        timeout = self.fallback_poll_s * (3 if self._wait is not None else 1)
        if self._next_due_ms is not None:
            timeout = min(timeout, (self._next_due_ms - _now_ms()) / 1000)
        if timeout > 0 and not self._kick.is_set():
            kicked = self.loop.create_task(self._kick.wait())
            waiters: set[asyncio.Future[Any]] = {kicked}
            if self._wait is not None:
                waiters.add(self._wait)
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                kicked.cancel()
        if (
            self._reserved
            and self._wait is not None
            and not self._wait.done()
            and self._next_due_ms is not None
            and self._next_due_ms <= _now_ms()
        ):
            # A deferred job is due while our free slots wait behind the BLPOP: wake it.
            await self._wake_own_wait()
        if self._wait is None or not self._reserved:
            # Nothing pipelined looks at the queue for us: the next iteration claims.
            self._claim_due = True
        if self._wait is not None and self._wait.done():
            self._collect_wait()

    async def _wake_then_claim(self, free: int) -> Any:
        async with self.pool.pipeline(transaction=False) as pipe:
            # Redis >= 6 takes a fractional BLPOP timeout; redis-py's annotation says int.
            pipe.blpop([self._wake_key, self._own_wake_key], timeout=self.fallback_poll_s)  # type: ignore[arg-type]
            if free:
                # EVALSHA itself: a registered Script would have the pipeline check for it
                # with an extra round trip first. A NOSCRIPT error reloads it (_claim).
                pipe.evalsha(
                    self._claim_script.sha,
                    3,
                    self.queue_name,
                    self._wake_key,
                    self._running_key,
                    *self._claim_args(free, None),
                )
            replies = await pipe.execute()
        return replies[1] if free else None

    async def _wake_own_wait(self) -> None:
        """Make our outstanding BLPOP return now (the token is ours alone), and wait for it."""
        async with self.pool.pipeline(transaction=False) as pipe:
            pipe.lpush(self._own_wake_key, "1")
            pipe.pexpire(self._own_wake_key, 60_000)
            await pipe.execute()
        if (wait := self._wait) is not None:
            await asyncio.wait({wait}, timeout=self.fallback_poll_s + 5)

    def _take_wait(self) -> asyncio.Task[Any] | None:
        """The outstanding wait, now ours to settle; its reserved slots are free again."""
        wait, self._wait = self._wait, None
        self.job_counter -= self._reserved
        self._reserved = 0
        return wait

    def _collect_wait(self) -> None:
        wait = self._take_wait()
        if wait is None or wait.cancelled():
            return
        error = wait.exception()
        if isinstance(error, NoScriptError):
            # Redis lost its scripts (a restart): the direct claim loads it again.
            self._kick.set()
        elif error is not None:
            raise error
        elif (reply := wait.result()) is not None:
            self._claim_due = False
            self._start_claimed(reply)

    async def _sleep_unless_kicked(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._kick.wait(), delay)
        self._kick.clear()

    def _forget_wait(self) -> None:
        wait = self._take_wait()
        if wait is not None:
            wait.cancel()
            if wait.done() and not wait.cancelled():
                wait.exception()

    async def _settle_wait(self) -> None:
        # On the way out: a claim pipelined behind our BLPOP is woken and its jobs started
        # (the drain then treats them like the others); cancelling it instead could leave
        # jobs claimed but not run until their locks lapse.
        wait = self._wait
        if wait is not None and self._reserved:
            with contextlib.suppress(RedisError, OSError):
                if not wait.done():
                    await self._wake_own_wait()
                # The worker loop may have collected it meanwhile.
                if self._wait is wait and wait.done():
                    self._collect_wait()
        self._forget_wait()

    def stop_taking_jobs(self) -> None:
        """Stop claiming new jobs and leave the loop; runs in progress go on."""
        self._stopping = True
        self.allow_pick_jobs = False
        self._kick.set()

    def resume_taking_jobs(self) -> None:
        """Start (or restart) claiming, e.g. once startup actions have finished."""
        self.allow_pick_jobs = True
        self._kick.set()

    async def drain(self, grace_s: float) -> None:
        """Stop taking jobs, give runs ``grace_s`` seconds to end, then cancel the rest.

        Cancelled runs are put back in the queue unchanged (arq's "will be run again"), so
        another worker takes them at once; their scopes see the cancellation.
        """
        self.stop_taking_jobs()
        await self._settle_wait()
        running = [t for t in self.tasks.values() if not t.done()]
        if running:
            logger.info("waiting up to %.1fs for %d running job(s)", grace_s, len(running))
            _, pending = await asyncio.wait(running, timeout=grace_s)
            for job_id, task in list(self.tasks.items()):
                if task in pending:
                    logger.warning(
                        "job %s did not finish within the grace period; cancelling",
                        job_id,
                        extra={"run_id": job_id},
                    )
                    task.cancel()
            if pending:
                # run_job stores the re-queue after its job task is cancelled; let it.
                _, still = await asyncio.wait(pending, timeout=5)
                for task in still:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        self._reap_finished()
        if self._beat is not None:
            # A heartbeat written after the removal would bring the worker back to life.
            await asyncio.wait({self._beat}, timeout=5)
        with contextlib.suppress(RedisError, OSError):
            await remove_beat(self.pool, self.queue_name, self.worker_id)


async def _never(ctx: dict[str, Any]) -> None:  # pragma: no cover - never enqueued
    raise RuntimeError("placeholder function")


class WorkerSupervisor:
    """Runs a `HostedWorker` as a task of the current loop and restarts its loop if it dies.

    The worker's own loop already survives Redis errors; this catches everything else (a bug,
    a hook that raised) so the worker is never silently gone.
    """

    def __init__(self, worker: HostedWorker, *, max_restart_delay_s: float = 30.0) -> None:
        self.worker = worker
        self._max_restart_delay_s = max_restart_delay_s
        self._task: asyncio.Task[None] | None = None
        self.restarts = 0

    def start(self) -> None:
        """Start the worker loop in the background."""
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name="hostedjobs-worker"
        )

    @property
    def alive(self) -> bool:
        """True while the worker loop runs and has gone round recently."""
        if self._task is None or self._task.done():
            return False
        quiet_s = time.monotonic() - self.worker.last_loop_at
        return quiet_s < self.worker.fallback_poll_s * 3 + 10

    @property
    def finished(self) -> bool:
        """True once the loop has ended for good (burst mode finished, or stopped)."""
        return self._task is not None and self._task.done()

    async def wait(self) -> None:
        """Wait until the worker loop ends (burst mode, or after `stop`)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _supervise(self) -> None:
        delay = 0.5
        while True:
            try:
                await self.worker.main()
            except asyncio.CancelledError:
                raise
            except Exception:
                if self.worker._stopping:
                    return
                self.restarts += 1
                logger.exception("the worker loop crashed; restarting it in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_restart_delay_s)
            else:
                return

    async def stop(self, grace_s: float) -> None:
        """Drain the worker (see `HostedWorker.drain`) and end its loop."""
        await self.worker.drain(grace_s)
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=5)
            except TimeoutError:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
