"""The engine: a worker that wakes on enqueue, claims in batches, commits in groups, and never
spins.

It keeps arq's key layout and job semantics, so stock `arq.jobs.Job` handles read its jobs
and stock arq workers can share its queue, but it owns its loop. The loop does one thing at
a time and always suspends: it claims while slots are free and jobs are due, and otherwise
waits, for a wake token or the fallback poll (only while it has a free slot), for the next
deferred job to come due (only while it has a free slot), or for a slot to free up.
Renewing the worker's lease, noticing cancelled jobs and heartbeats happen in a separate task
on a timer.

A worker's claimed jobs are its own while its lease lives: one key renewed every couple of
seconds whatever it runs, so a crash costs its jobs at most `LEASE_TTL_S` (plus a poll)
before another worker takes them back, and a running job costs Redis nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import random
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from redis.exceptions import RedisError

from .commits import OutcomeCommitter
from .concurrency import SlotRule, waiting_reason
from .exceptions import JobFailedError, PayloadDecodeError, PayloadError
from .health import (
    BEAT_INTERVAL_S,
    RATE_WINDOW_S,
    RUNNING_LISTED,
    RunningJob,
    WorkerBeat,
    new_worker_id,
    write_beat,
)
from .history import job_type_of
from .outcomes import JobStatus, Outcome
from .pauses import PAUSED_REASON, PausedJobs
from .rates import Rates
from .records import HEAD_START_FIELD, head_start_of, queued_due_ms
from .runner import QueuedFunction, QueuedRun, RunReport, error_text, error_traceback
from .serialization import dumps, read_record, result_record
from .shutdown import Grace
from .storage import Admission, Claimed, Finished, LeaseLostError, Peeked, Requeued, Store
from .storage.store import TRIES_KEPT, SlotRequest

__all__ = [
    "LEASE_RENEW_S",
    "LEASE_TTL_S",
    "SlotBudget",
    "Worker",
    "WorkerSupervisor",
    "finished_record",
]

logger = logging.getLogger("hostedjobs.worker")

LEASE_TTL_S = 8.0
"""A worker's lease, and with it its claim on the jobs it runs, lapses this long (by Redis's
clock) after the worker last renewed it; then other workers give its jobs back to the queue.

arq sizes a job's lock by the longest job timeout (plus 10 s), so a crashed worker's jobs
wait that long, five minutes by default; a lease renewed while the worker lives makes the
wait independent of timeouts and of how many jobs run. The price: an event loop blocked
for longer than this (synchronous code in an ``async def``) loses the worker its jobs."""
LEASE_RENEW_S = 2.0
"""How often a worker renews its lease."""
ABORT_CHECK_S = 0.5
"""How often a worker with running jobs looks for ones asked to stop (arq's abort set)."""
UNLIMITED_RECONCILE_S = 10.0
"""How often a worker that runs no limited job type still looks for jobs waiting for a
concurrency slot that no run will free (one read): after a crash, the limit may have been
removed from the code, and then no limited worker would move them back (a worker running a
limited type looks at each lease renewal)."""
_CLAIM_BATCH = 500
"""Jobs one claim takes at most: it holds Redis for a bounded time (and Lua's stack)."""
_STALL_S = 2.0
"""A reply this much later than expected means Redis or the loop stalled (see `_recover`)."""
_SKIP_CAP = 4000
"""How many due ids one peek looks at, at most, past ones locked by stock arq workers."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def finished_record(
    job_id: str,
    base: dict[str, Any],
    start_ms: int,
    report: RunReport,
    *,
    queue: str,
    finished_ms: int,
    history: Sequence[dict[str, Any]] = (),
    worker_id: str | None = None,
    lost_try: bool = False,
) -> tuple[JobStatus, bytes]:
    """The stored result of a finished job, and the status it ends in.

    ``base`` is the job's record (``f``, ``a``, ``k``, ``et`` and ``t``, the tries);
    ``history`` the earlier failed tries' entries (``try``, ``at`` ms, ``error``,
    ``traceback``), oldest first, kept in the result with this try's if it failed. With
    ``lost_try`` the job failed as its last try was lost with its worker: that try is the
    last entry of ``history``, and the report's message (no error) is the job's.
    """
    outcome = report.outcome
    status = JobStatus.of(outcome)
    # arq's result layout (stock `Job.info()` reads it), plus the outcome, its message and
    # the error kept apart from the value, so no return value is mistaken for them.
    record = {
        **base,
        "s": outcome is not Outcome.FAILED,
        "st": start_ms,
        "ft": finished_ms,
        "q": queue,
        "id": job_id,
        "o": outcome.value,
        "m": report.message,
    }
    value: Any = report.value
    if worker_id is not None:
        record["w"] = worker_id
    tries = list(history)
    if lost_try:
        record["m"] = report.message
    elif outcome is Outcome.FAILED:
        error = report.error or JobFailedError(report.message or "the job reported failure")
        record["m"] = error_text(error)
        value = error
        trace = error_traceback(report.error)
        if trace is not None:
            record["tb"] = trace
        tries.append(
            {
                "try": base.get("t") or 0,
                "at": finished_ms,
                "error": record["m"],
                "traceback": trace or "",
            }
        )
    if tries:
        record["te"] = tries[-TRIES_KEPT:]
    try:
        data = result_record(record, value)
    except PayloadError as exc:
        logger.warning(
            "job %s: its result cannot be stored: %s", job_id, exc, extra={"run_id": job_id}
        )
        record.update(s=False, o=Outcome.FAILED.value, m=f"PayloadError: {exc}")
        data = dumps({**record, "r": None})
        status = JobStatus.FAILED
    return status, data


class _Parked(NamedTuple):
    """A claimed job this worker has no code for, or of a paused job type."""

    function: str
    reason: str | None = None


class _Admissions:
    """The admission checks (`Store.admit_rates`) of the jobs that start in one turn of the
    loop, sent as one script call: a claimed batch costs one round trip, not one per job."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[tuple[Admission, asyncio.Future[tuple[int, str]]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def admit(self, admission: Admission) -> tuple[int, str]:
        """The verdict on one job (see `Store.admit_rates`); raises what Redis raises."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, str]] = loop.create_future()
        self._pending.append((admission, future))
        if len(self._pending) == 1:
            # After the other runs started by the same claim have asked (their tasks are
            # already scheduled, ahead of this callback).
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Admission, asyncio.Future[tuple[int, str]]]]) -> None:
        try:
            verdicts = await self.store.admit_rates([admission for admission, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), verdict in zip(batch, verdicts, strict=True):
            if not future.done():
                future.set_result(verdict)


class _Waiting(NamedTuple):
    """A claimed job of a limited type that found every concurrency slot in use: Redis set
    it aside (`Store.acquire_slots`), so nothing is committed."""


_WAITING = _Waiting()


class SlotBudget:
    """How many jobs may run at once, shared by the workers that take slots from it.

    A process serving a sharded queue runs one worker per shard; they share one budget, so
    the process never runs more than ``size`` jobs in total. A worker reserves slots before
    it claims (so two workers' claims in flight cannot both take the last slots) and gives
    back the ones its claim did not fill; a slot given back wakes every worker sharing it.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0
        self._kicks: list[asyncio.Event] = []

    @property
    def free(self) -> int:
        """Slots neither running a job nor reserved by a claim in flight."""
        return self.size - self.busy

    def join(self, kick: asyncio.Event) -> None:
        """Set ``kick`` (a worker's wake-up event) whenever a slot is given back."""
        self._kicks.append(kick)

    def take(self, count: int) -> None:
        """Reserve ``count`` slots."""
        self.busy += count

    def give(self, count: int, *, quiet: asyncio.Event | None = None) -> None:
        """Give back ``count`` slots, waking the workers sharing them (except ``quiet``)."""
        self.busy -= count
        for kick in self._kicks:
            if kick is not quiet:
                kick.set()


class Worker:
    """Claims and runs queued jobs of one queue, ``concurrency`` at a time.

    Enqueuers push a token on the queue's wake list; an idle worker blocks on it, with a
    fallback poll every ``fallback_poll_s`` seconds (for jobs enqueued by stock arq clients),
    and a timer to the earliest deferred job so scheduled jobs and retries start on time.
    ``functions`` maps a queued job's function name to what runs it, or to None if this
    worker has no code for it: such a job is parked for a worker that has (`Store.park`),
    with ``unknown(name)`` as the reason, and taken back by any worker that can run it.
    ``slots``: a budget shared with other workers (one per shard of a sharded queue);
    by default its own, of ``concurrency`` slots. ``shard`` and ``shards``: which shard of
    how many this worker serves (None and 1: an unsharded queue), shown in its heartbeat.
    ``rate_store``: where the fleet's rate limits, debounce and cooldown live (shard 0's
    store for a sharded queue; by default ``store``).
    """

    def __init__(
        self,
        store: Store,
        functions: Callable[[str], QueuedFunction | None],
        *,
        unknown: Callable[[str], str] = lambda name: f"no code for {name!r} here",
        roster: Sequence[str] = (),
        concurrency: int,
        keep_result_s: float,
        fallback_poll_s: float = 1.0,
        burst: bool = False,
        slots: SlotBudget | None = None,
        shard: int | None = None,
        shards: int = 1,
        pauses: PausedJobs | None = None,
        rate_store: Store | None = None,
    ) -> None:
        self.store = store
        self._admissions = _Admissions(store if rate_store is None else rate_store)
        """Rate limit, debounce and cooldown checks, sent together (`_admit_rate`)."""
        if pauses is None:
            pauses = PausedJobs()
            pauses.known.set()
        self.pauses = pauses
        """The paused job types this worker parks instead of running (`hostedjobs.pauses`)."""
        self.shard = shard
        self.shards = shards
        self.functions = functions
        self.unknown = unknown
        self.roster = tuple(roster)
        """The function names this worker runs, shown in its heartbeat."""
        self.concurrency = concurrency
        self.keep_result_s = keep_result_s
        self.fallback_poll_s = fallback_poll_s
        self.burst = burst
        self.worker_id = new_worker_id()
        self.started_at = time.time()
        self.last_loop_at = time.monotonic()
        self.completed = self.failed = self.retried = 0
        self.taking_jobs = False
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._running_functions: dict[str, str] = {}
        """The function of each running job whose record has been read (for heartbeats)."""
        self._finished_seen: deque[tuple[float, int]] = deque()
        """(monotonic time, jobs finished) at recent heartbeats: the rate's window."""
        self._kick = asyncio.Event()
        self._slots = slots if slots is not None else SlotBudget(concurrency)
        self._slots.join(self._kick)
        self._stopping = False
        self._claim_due = True
        self._next_due_ms: int | None = None
        self._skip_hint = 0
        self._upcoming: list[str] = []
        self._unparked: list[str] = []
        self._peeked_at = 0.0
        self._clock_offset_ms: int | None = None
        self._wait: asyncio.Task[Peeked | None] | None = None
        self._aborting: set[str] = set()
        self._functions: dict[str, QueuedFunction | None] = {}
        self._job_types: dict[str, str] = {}
        self._parked_warned: set[str] = set()
        self._rules: dict[str, SlotRule | None] = {}
        self._acquiring: set[str] = set()
        """Jobs whose slot request is in flight (`_acquire_concurrency`)."""
        self._reclaimed: set[str] = set()
        """Jobs claimed again while their slot request was in flight: set aside, moved back
        by a release and claimed before their task ended (see `_ended`)."""
        self._holding: dict[str, tuple[str, str, int]] = {}
        self._acquires: list[tuple[SlotRequest, asyncio.Future[int]]] = []
        self._acquiring_call: asyncio.Task[None] | None = None
        self._releases: list[tuple[tuple[str, str, int, str], asyncio.Future[None]]] = []
        self._releasing: asyncio.Task[None] | None = None
        """The concurrency slot each running job holds: (job type, group, limit)."""
        self._limited = any(self._rule(name) is not None for name in self.roster)
        """Whether this worker runs a limited job type (and so reconciles slots)."""
        self._cron_prefix = f"{store.keys.namespace}:cron:"
        self._commits = OutcomeCommitter(
            store,
            self.worker_id,
            index_max_age_s=keep_result_s,
            on_error=self._redis_failed,
            lease_held=lambda: time.monotonic() < self._lease_sure_until,
        )
        self._lease_sure_until = 0.0
        """Until when this worker's lease surely lives (by its own clock)."""
        self._beat: asyncio.Task[None] | None = None
        self._leased = False
        self._claims_in_doubt = False
        self._redis_ok_since = time.monotonic()
        self._lease_renewed_at = 0.0
        self._maintenance: asyncio.Task[None] | None = None

    # -- the loop --------

    async def main(self) -> None:
        """Claim and run jobs until `drain` is called (or, in burst mode, the queue is empty).

        Redis errors do not end the loop: they are logged and retried with backoff, so an
        outage pauses the worker instead of silently killing it.
        """
        if self._maintenance is None or self._maintenance.done():
            self._maintenance = asyncio.get_running_loop().create_task(self._maintain())
        await self.pauses.known.wait()  # a type paused before a restart runs no job
        failures = 0
        try:
            while not self._stopping:
                try:
                    if self.burst and await self._burst_finished():
                        return
                    if not self._leased:
                        await self._take_lease()
                    if self._claims_in_doubt:
                        await self._release_lost_claims()
                    await self._step()
                except (RedisError, OSError) as exc:
                    self._redis_failed(exc)
                    self._forget_wait()
                    self._claim_due = True
                    failures += 1
                    delay = min(0.05 * 2**failures, 5.0)
                    log = logger.warning if failures == 1 or failures % 20 == 0 else logger.debug
                    log("Redis error in the worker loop (%s); retrying in %.2fs", exc, delay)
                    await self._sleep_unless_kicked(delay)
                else:
                    if failures:
                        logger.info(
                            "worker reconnected to Redis after %d failed attempts", failures
                        )
                    failures = 0
        finally:
            if not self._stopping:  # a drain keeps renewing the lease while runs finish
                await self._stop_maintenance()

    async def _stop_maintenance(self) -> None:
        maintenance, self._maintenance = self._maintenance, None
        if maintenance is not None:
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance

    async def _release_lost_claims(self) -> None:
        """Give back the jobs this worker holds in Redis but does not run: a claim whose reply
        never came (it timed out, but Redis ran it) would otherwise hold them for as long as
        this worker lives. Runs between turns of the loop, so no claim is in flight."""
        held = await self.store.claims(self.worker_id)
        lost = sorted(held - self.tasks.keys())
        if lost and (released := await self.store.release(self.worker_id, lost, now_ms=_now_ms())):
            logger.warning(
                "%d job(s) claimed by a call whose reply was lost went back to the queue",
                released,
            )
        self._claims_in_doubt = False

    def _redis_failed(self, exc: BaseException) -> None:
        self._redis_ok_since = time.monotonic()

    def _answered(self, sent: float, expected_s: float = 0.0) -> None:
        """Note a reply that took much longer than ``expected_s``: Redis (or this loop) was
        stalled, so other workers' leases may have lapsed without their fault."""
        if time.monotonic() - sent > expected_s + _STALL_S:
            self._redis_ok_since = time.monotonic()

    async def _take_lease(self) -> None:
        sent = time.monotonic()
        await self.store.lease_worker(self.worker_id, lease_ms=int(LEASE_TTL_S * 1000), take=True)
        self._leased_at(sent)
        self._leased = True

    def _leased_at(self, sent: float) -> None:
        # The lease was renewed after ``sent``; a margin for the commit's own trip to Redis.
        self._lease_sure_until = sent + LEASE_TTL_S - _STALL_S
        self._lease_renewed_at = time.monotonic()

    def _function(self, name: str) -> QueuedFunction | None:
        found = self._functions.get(name)
        if found is None:
            found = self.functions(name)
            if found is not None:  # only known names: unknown ones could be any number
                self._functions[name] = found
        return found

    def _job_type(self, function: str) -> str:
        found = self._job_types.get(function)
        if found is None:
            found = self._job_types[function] = job_type_of(function)
        return found

    def _rule(self, name: str) -> SlotRule | None:
        if name in self._rules:
            return self._rules[name]
        function = self._function(name)
        found = getattr(function, "concurrency", None)
        rule = found if isinstance(found, SlotRule) else None
        if function is not None:
            self._rules[name] = rule
        return rule

    async def _unpark(self, parked: list[str]) -> None:
        """Take back as many parked jobs this worker can run as it has free slots, and claim
        them next (before a peek, which could find them for a worker without their code)."""
        runnable = [
            name
            for name in parked
            if self._function(name) is not None and self._job_type(name) not in self.pauses.types
        ]
        free = self._free_slots() - len(self._unparked)
        if runnable and (moved := await self.store.unpark(runnable, limit=free)):
            logger.info("%d parked job(s) of %s taken back", len(moved), ", ".join(runnable))
            self._unparked.extend(moved)
            self._claim_due = True
            self._kick.set()

    def _lease_lost(self) -> None:
        """Other workers took this worker's jobs back (its lease lapsed: it lost Redis, or
        its loop was blocked, for longer than the lease). They run elsewhere now, so the
        runs here are cancelled and their outcomes would be refused."""
        self._leased = False
        self._lease_sure_until = 0.0
        if self.tasks:
            logger.error(
                "this worker's lease lapsed and its %d running job(s) went back to the queue; "
                "cancelling them here (is the event loop blocked by synchronous code?)",
                len(self.tasks),
            )
            for task in self.tasks.values():
                task.cancel()

    async def _recover(self, lapsed: list[str]) -> None:
        """Give back the jobs of workers whose lease lapsed: unless this worker itself lost
        Redis, or saw it (or its own loop) stall, within the last lease: then everyone's
        lease may have lapsed during the outage, and their owners are about to renew them."""
        lapsed = [w for w in lapsed if w != self.worker_id]
        now = time.monotonic()
        # Also only while this worker's own renewals go through: a reply read at a thaw may
        # come before the (late) reply of a renewal stuck in the same freeze.
        renewing = now - self._lease_renewed_at < LEASE_RENEW_S + _STALL_S
        if not lapsed or not renewing or now - self._redis_ok_since < LEASE_TTL_S:
            return
        recovered = await self.store.recover(lapsed, now_ms=_now_ms())
        if recovered:
            logger.warning(
                "%d job(s) of stopped worker(s) %s went back to the queue",
                recovered,
                ", ".join(lapsed),
            )

    def _peek_limit(self, free: int) -> int:
        return min(free, _CLAIM_BATCH) + min(self._skip_hint, _SKIP_CAP)

    def _free_slots(self) -> int:
        if not self.taking_jobs or self._stopping:
            return 0
        return self._slots.free

    async def _step(self) -> None:
        """Claim once, or wait once: every path suspends."""
        self.last_loop_at = time.monotonic()
        kicked = self._kick.is_set()
        self._kick.clear()
        free = self._free_slots()
        if free > 0 and self._next_due_ms is not None and self._next_due_ms <= _now_ms():
            self._claim_due = True
        # A freed slot is worth a look only when no blocking wait is out: one that is out
        # already looks for the worker.
        if free > 0 and (self._claim_due or (kicked and self._wait is None)):
            self._claim_due = False
            if self._unparked:
                ids, self._unparked = self._unparked, []
                await self._claim(ids, _now_ms(), more=True)
                return
            if self._upcoming and time.monotonic() - self._peeked_at < self.fallback_poll_s:
                # The last claim saw these due next: claim them without a peek. (A peek at
                # least every fallback period still returns lapsed claims to the queue.)
                ids, self._upcoming = self._upcoming, []
                await self._claim(ids, _now_ms(), more=False)
                return
            sent_ms, sent = _now_ms(), time.monotonic()
            peeked = await self.store.peek(self._peek_limit(free), now_ms=sent_ms)
            self._answered(sent)
            # Redis's clock against ours, for peeks that ride behind a BLPOP (their "now" is
            # Redis's clock minus this); the error is half this round trip.
            self._clock_offset_ms = peeked.redis_ms - (sent_ms + _now_ms()) // 2
            await self._peeked(peeked)
            return
        await self._wait_for_work(free)

    async def _peeked(self, peeked: Peeked) -> None:
        self._peeked_at = time.monotonic()
        self._next_due_ms = peeked.next_due_ms
        if peeked.lapsed:
            await self._recover(peeked.lapsed)
        await self._claim(peeked.ids, peeked.now_ms, more=peeked.more)

    async def _claim(self, ids: list[str], now_ms: int, *, more: bool) -> None:
        free = self._free_slots()
        if not ids or free <= 0:
            self._claim_due = self._claim_due or (more and free > 0)
            return
        limit = min(free, _CLAIM_BATCH)
        # Set until the reply is read: a claim whose reply is lost (a timeout after Redis ran
        # it) leaves jobs this worker holds but does not run (see _release_lost_claims).
        self._claims_in_doubt = True
        claimed: list[Claimed] = []
        self._slots.take(limit)
        try:
            claimed, locked, self._upcoming = await self.store.claim(
                ids,
                worker_id=self.worker_id,
                now_ms=now_ms,
                limit=limit,
                lookahead=min(self.concurrency, _CLAIM_BATCH),
            )
            # A job it runs already is answered as its own (see claim.lua): a candidate from
            # a peek older than that claim. It must not start twice.
            if self._acquiring:
                self._reclaimed.update(job.id for job in claimed if job.id in self._acquiring)
            claimed = [job for job in claimed if job.id not in self.tasks]
        except LeaseLostError:
            self._claims_in_doubt = False
            self._lease_lost()
            self._claim_due = True
            return
        finally:
            if unused := limit - len(claimed):
                self._slots.give(unused, quiet=self._kick)
        self._claims_in_doubt = False
        self._skip_hint = locked
        for job in claimed:
            self._start(job)
        if self._free_slots() <= 0 and self._wait is not None and not self._wait.done():
            # Full while a blocking wait is out: end it with this worker's own token, so it
            # does not take a wake token another worker could use.
            await self.store.wake_worker(self.worker_id)
        if not claimed:
            # Nothing taken (others were quicker, or stock arq workers hold them): what the
            # claim saw due next is no better a lead; the next look is a peek.
            self._upcoming = []
        # More may be due: past the peek's limit, behind jobs a stock arq worker had locked,
        # or seen by the claim itself.
        if more or (len(claimed) == limit and len(ids) > limit) or self._upcoming:
            self._claim_due = True

    def _start(self, job: Claimed) -> None:
        # Its slot was taken by the claim.
        task = asyncio.get_running_loop().create_task(self._execute(job))
        self.tasks[job.id] = task
        task.add_done_callback(functools.partial(self._ended, job.id))

    def _ended(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(job_id) is task:
            del self.tasks[job_id]
            self._running_functions.pop(job_id, None)
        if self._reclaimed and job_id in self._reclaimed:
            # Held again but not started (its task still ran): give it back to the queue.
            self._reclaimed.discard(job_id)
            self._claims_in_doubt = True
            self._kick.set()
        self._aborting.discard(job_id)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Storing the outcome outlasts Redis outages; only a fault in the outcome itself
            # ends here: the job stays claimed and runs again once the lease lapses.
            logger.error(
                "job %s: could not record its outcome: %r", job_id, exc, extra={"run_id": job_id}
            )
        if self.burst or self._stopping:
            self._kick.set()

    def _release_slot(self) -> None:
        # The slot is free once the job's code is done: the next claim goes out while this
        # outcome is still being committed, so a wave of jobs does not wait a round trip.
        self._slots.give(1)

    async def _wait_for_work(self, free: int) -> None:
        timeout = self.fallback_poll_s
        waiters: set[asyncio.Future[Any]] = set()
        if free > 0:
            if self._wait is None and not self.burst:
                if self._clock_offset_ms is None:
                    self._claim_due = True  # a peek can ride a BLPOP once the clocks are known
                    return
                # Burst workers only sleep: their loop must be able to end with nothing out.
                # Jittered, so idle workers' polls do not fall into step with each other (or
                # with a schedule) and always hand one of them every job.
                self._wait = asyncio.get_running_loop().create_task(
                    self._wait_then_peek(
                        self.fallback_poll_s * random.uniform(0.9, 1.1), self._peek_limit(free)
                    )
                )
            if self._wait is not None:
                waiters.add(self._wait)
                # The BLPOP's own timeout is the fallback poll; this is a backstop.
                timeout = self.fallback_poll_s * 3
            if self._next_due_ms is not None:
                timeout = min(timeout, max((self._next_due_ms - _now_ms()) / 1000, 0.001))
        kicked = asyncio.get_running_loop().create_task(self._kick.wait())
        waiters.add(kicked)
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            kicked.cancel()
        if self._wait is not None and self._wait.done():
            wait, self._wait = self._wait, None
            peeked = wait.result()  # a Redis error goes to the loop's backoff
            if peeked is None:
                self._claim_due = True  # Redis lost its scripts: the direct peek loads them
            else:
                await self._peeked(peeked)
        elif self._wait is None and free > 0:
            self._claim_due = True  # a burst worker's poll

    async def _wait_then_peek(self, block_s: float, limit: int) -> Peeked | None:
        sent = time.monotonic()
        assert self._clock_offset_ms is not None
        peeked = await self.store.wait_then_peek(
            self.worker_id, block_s, limit, self._clock_offset_ms
        )
        self._answered(sent, block_s)
        return peeked

    async def _sleep_unless_kicked(self, delay: float) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._kick.wait()
        self._kick.clear()

    def _forget_wait(self) -> None:
        wait, self._wait = self._wait, None
        if wait is not None:
            wait.cancel()

    async def _burst_finished(self) -> bool:
        if self.tasks or not self.taking_jobs:
            return False
        return await self.store.queue_size() == 0

    # -- one job --------

    async def _execute(self, job: Claimed) -> None:
        """One try of one claimed job; its outcome is group-committed."""
        outcome: Finished | Requeued | _Parked | _Waiting
        try:
            outcome = await self._run(job)
        except asyncio.CancelledError:
            # A shutdown: back in the queue unchanged, and this try does not count.
            self.retried += 1
            outcome = Requeued(job.id, job.score_ms, counted=False, tries=job.tries)
        finally:
            self._release_slot()
        if self._holding and job.id in self._holding:
            await self._release_concurrency(job.id)
        if isinstance(outcome, _Waiting):
            pass
        elif isinstance(outcome, _Parked):
            await self._park(job, outcome.function, outcome.reason)
        elif not await self._commits.commit(outcome):
            logger.warning(
                "job %s: outcome not stored by this worker: it no longer held the job (its "
                "lease lapsed and the job runs again elsewhere, or an earlier attempt whose "
                "answer was lost stored it)",
                job.id,
                extra={"run_id": job.id},
            )

    async def _park(self, job: Claimed, function: str, reason: str | None) -> None:
        if reason is None:
            reason = self.unknown(function)
        elif reason == PAUSED_REASON:
            logger.debug("job %s (%s) parked: its type is paused", job.id, function)
        if reason != PAUSED_REASON and function not in self._parked_warned:
            self._parked_warned.add(function)
            logger.warning(
                "job %s is for %r, which this worker cannot run: parked for a worker that can (%s)",
                job.id,
                function,
                reason,
                extra={"run_id": job.id},
            )
        try:
            await self.store.park(
                job.id,
                worker_id=self.worker_id,
                function=function,
                due_ms=job.score_ms,
                tries=job.tries,
                reason=reason,
            )
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            logger.warning("job %s: could not park it (%s); the lease gives it back", job.id, exc)

    async def _run(self, job: Claimed) -> Finished | Requeued | _Parked | _Waiting:
        start_ms = _now_ms()
        base: dict[str, Any] = {"t": job.tries, "f": "<unknown>", "a": [], "k": {}, "et": 0}
        try:
            if job.unreadable:
                raise PayloadDecodeError(job.unreadable)
            if not job.record:
                raise JobFailedError("the job expired before a worker took it")
            record = read_record(job.record)
            base.update(f=record["f"], a=record.get("a") or [], k=record.get("k") or {})
            base["et"] = record.get("et") or 0
            if head_start := head_start_of(record):
                base[HEAD_START_FIELD] = head_start  # kept in the result: a retry keeps it
            attempt = max(job.tries, int(record.get("t") or 0))
            base["t"] = attempt
            name = str(record["f"])
            self._running_functions[job.id] = name
            function = self._function(name)
            if function is None:
                return _Parked(name)
            if (
                self.pauses.types
                and not job.aborted  # a cancelled job ends now, paused or not
                and self._job_type(name) in self.pauses.types
                and self.pauses.holds(self._job_type(name), base["a"])
            ):
                return _Parked(name, PAUSED_REASON)
            if attempt > function.max_tries and not job.aborted:
                lost = await self._lost_last_try(job.id, attempt, function.max_tries)
                if lost is not None:
                    base["t"] = attempt - 1  # the tries that started; this one never did
                    return self._finished(
                        job.id, base, start_ms, lost[0], ran=False, history=lost[1], lost_try=True
                    )
                raise JobFailedError(f"max {function.max_tries} tries exceeded")
        except Exception as exc:
            logger.warning(
                "job %s (%s) cannot run: %s",
                job.id,
                base["f"],
                exc,
                extra={"run_id": job.id, "job_name": base["f"], "outcome": Outcome.FAILED.value},
            )
            # Raised by this worker's checks: its traceback is of hostedjobs, not of the job.
            error = exc.with_traceback(None)
            report = RunReport(Outcome.FAILED, message=error_text(error), error=error)
            return self._finished(job.id, base, start_ms, report, ran=False)
        if job.aborted:
            # Cancelled while queued, or while its worker was gone (this try was never run).
            when = "before it started" if attempt <= 1 else f"before try {attempt} started"
            report = RunReport(Outcome.CANCELLED, message=f"cancelled {when}")
            base["t"] = attempt - 1  # the tries that started
            return self._finished(job.id, base, start_ms, report, aborted=True, ran=False)
        decoded: object | None = None
        rule = self._rule(name)
        if rule is not None:
            try:
                decoded = await self._acquire_concurrency(job, name, rule, base["a"])
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
                logger.warning("job %s: no concurrency slot (%s); given back", job.id, exc)
                return Requeued(job.id, job.score_ms, counted=False, tries=job.tries)
            except JobFailedError as exc:
                error = exc.with_traceback(None)
                report = RunReport(Outcome.FAILED, message=error_text(error), error=error)
                return self._finished(job.id, base, start_ms, report, ran=False)
            if decoded is _WAITING:
                return _WAITING
        # After the slot: a job set aside for one must not use up a rate window's start.
        held = await self._admit_rate(job, function, base, start_ms)
        if held is not None:
            return held
        run = QueuedRun(
            job_id=job.id,
            function=base["f"],
            args=base["a"],
            kwargs=base["k"],
            attempt=attempt,
            due_ms=queued_due_ms(job.score_ms, record),
            enqueued_ms=int(base["et"]),
            interrupted=lambda: Outcome.CANCELLED if job.id in self._aborting else Outcome.RETRIED,
            decoded=decoded,
        )
        try:
            report = await function.run(run)
        except asyncio.CancelledError:
            if job.id not in self._aborting:
                raise
            report = RunReport(Outcome.CANCELLED, message="cancelled while it ran")
        if report.outcome is Outcome.RETRIED:
            self.retried += 1
            delay_ms = int((report.retry_in_s or 0) * 1000)
            return Requeued(
                job.id,
                _now_ms() + delay_ms,
                report.message,
                counted=report.counted,
                tries=job.tries,
                traceback=error_traceback(report.error),
                job_type=job_type_of(str(base["f"])),
                duration_s=report.duration_s if report.counted else None,
            )
        history = await self._try_history(job.id) if attempt > 1 else []
        return self._finished(
            job.id, base, start_ms, report, aborted=job.id in self._aborting, history=history
        )

    async def _admit_rate(
        self, job: Claimed, function: QueuedFunction, base: dict[str, Any], start_ms: int
    ) -> Finished | Requeued | None:
        """Apply the job type's rate limit, debounce and cooldown (`hostedjobs.rates`): None
        if the job may start now (its start counted), else what becomes of it: back in the
        queue until the window admits it (uncounted), or ended cancelled without running.
        One script for a type with any of them (shared by the jobs starting in the same turn
        of the loop); nothing at all for a type with none."""
        rates: Rates | None = getattr(function, "rates", None)
        if rates is None:
            return None
        try:
            keys = rates.keys_of(base["a"])
        except Exception as exc:
            error = exc.with_traceback(None)
            report = RunReport(Outcome.FAILED, message=error_text(error), error=error)
            return self._finished(job.id, base, start_ms, report, ran=False)
        rate, cooldown = rates.rate_limit, rates.cooldown
        admission = Admission(
            job.id,
            rates.job_type,
            None if rate is None else (keys.rate, rate.limit, rate.per_ms),
            None if rates.debounce is None else (keys.debounce,),
            None if cooldown is None else (keys.cooldown, cooldown.window_ms),
        )
        try:
            verdict, value = await self._admissions.admit(admission)
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            logger.warning(
                "job %s: its rate limit could not be checked (%s); back in the queue",
                job.id,
                exc,
                extra={"run_id": job.id},
            )
            return Requeued(job.id, _now_ms() + 1000, counted=False, tries=job.tries)
        if verdict == 0:
            return None
        if verdict == 1 and rate is not None and rate.excess == "wait":
            due_ms = _now_ms() + int(value)
            return Requeued(job.id, due_ms, counted=False, tries=job.tries)
        if verdict == 1:
            message = rates.rate_message(keys.rate)
        elif verdict == 2:
            message = rates.cooldown_message(keys.cooldown, int(value))
        else:
            message = f"dropped: superseded by job {value} (debounce)"
        logger.debug("job %s: %s", job.id, message, extra={"run_id": job.id})
        base["t"] = max(base["t"] - 1, 0)  # the tries that started: this one did not
        report = RunReport(Outcome.CANCELLED, message=message)
        return self._finished(job.id, base, start_ms, report, ran=False)

    async def _acquire_concurrency(
        self, job: Claimed, name: str, rule: SlotRule, args: list[Any]
    ) -> object | None:
        """Take a concurrency slot for ``job`` (one round trip): its decoded payload (None
        without a key) once it holds one, `_WAITING` if Redis set it aside for a slot.
        Raises `JobFailedError` if its payload cannot be decoded or its key raises."""
        try:
            group, decoded = rule.group_of(args)
        except Exception as exc:
            raise JobFailedError(f"its concurrency key could not be computed: {exc}") from exc
        limit = rule.limit.limit
        request = SlotRequest(
            job.id,
            rule.job_type,
            group,
            limit,
            name,
            job.score_ms,
            job.tries,
            waiting_reason(limit, group),
        )
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        # Requests made while one call is in flight go together in the next (as outcomes do).
        self._acquires.append((request, answer))
        if self._acquiring_call is None or self._acquiring_call.done():
            self._acquiring_call = asyncio.get_running_loop().create_task(self._send_acquires())
        self._acquiring.add(job.id)
        try:
            acquired = await answer
        finally:
            self._acquiring.discard(job.id)
        if acquired != 1:
            logger.debug("job %s (%s) waits for a concurrency slot", job.id, name)
            if self.tasks.get(job.id) is asyncio.current_task():
                # Off the worker's books now, not when the task ends: a release may move it
                # back and a claim take it again before then, and that claim must start it.
                del self.tasks[job.id]
                self._running_functions.pop(job.id, None)
            return _WAITING
        self._holding[job.id] = (rule.job_type, group, limit)
        return decoded

    async def _send_acquires(self) -> None:
        while self._acquires:
            batch, self._acquires = self._acquires[:_CLAIM_BATCH], self._acquires[_CLAIM_BATCH:]
            try:
                answers = await self.store.acquire_slots(
                    [request for request, _ in batch], worker_id=self.worker_id
                )
                if len(answers) != len(batch):
                    raise RedisError(f"{len(answers)} answers to {len(batch)} slot requests")
            except BaseException as exc:
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                for (_, answer), acquired in zip(batch, answers, strict=True):
                    if not answer.done():
                        answer.set_result(acquired)

    async def _release_concurrency(self, job_id: str) -> None:
        """Free the concurrency slot ``job_id`` held, moving the next waiter back to the
        queue. Releases that end while one is in flight go together in the next call (as
        outcomes do). On a Redis error the slot is freed later: it is stale once the job is
        no longer claimed (see `Store.release_slots`)."""
        job_type, group, limit = self._holding.pop(job_id)
        done = asyncio.get_running_loop().create_future()
        self._releases.append(((job_type, group, limit, job_id), done))
        if self._releasing is None or self._releasing.done():
            self._releasing = asyncio.get_running_loop().create_task(self._flush_releases())
        await asyncio.shield(done)

    async def _flush_releases(self) -> None:
        while self._releases:
            batch, self._releases = self._releases[:_CLAIM_BATCH], self._releases[_CLAIM_BATCH:]
            try:
                await self.store.release_slots(
                    [entry for entry, _ in batch], worker_id=self.worker_id
                )
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
                logger.warning("%d concurrency slot(s) not released now (%s)", len(batch), exc)
            finally:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def _reconcile_concurrency(self) -> None:
        """Free the slots of runs whose worker died, moving their waiters back: no run of
        theirs will end to do it."""
        try:
            moved = await self.store.reconcile_slots()
        except (RedisError, OSError):
            raise
        except Exception as exc:  # upkeep goes on (a damaged groups hash: fixed by hand)
            logger.warning("concurrency slots not reconciled: %r", exc)
            return
        if moved:
            logger.info("%d job(s) waiting for a concurrency slot went back to the queue", moved)

    async def _lost_last_try(
        self, job_id: str, attempt: int, max_tries: int
    ) -> tuple[RunReport, list[dict[str, Any]]] | None:
        """If the job's last try was lost with its worker (`Store.recover` kept it in the try
        history), the failure that ends the job and the history, that try's error saying no
        tries are left; else None."""
        history = await self._try_history(job_id)
        last = history[-1] if history else None
        if last is None or not last.get("worker") or last.get("try") != attempt - 1:
            return None
        message = f"{last.get('error')}; no tries left (max_tries={max_tries})"
        history[-1] = {**last, "error": message}
        return RunReport(Outcome.FAILED, message=message), history

    async def _try_history(self, job_id: str) -> list[dict[str, Any]]:
        """The earlier failed tries' entries kept in the job's meta hash (none if Redis does
        not answer: the outcome matters more than its history)."""
        try:
            return await self.store.try_history(job_id)
        except (RedisError, OSError) as exc:
            logger.debug("job %s: its try history could not be read: %r", job_id, exc)
            return []

    def _finished(
        self,
        job_id: str,
        base: dict[str, Any],
        start_ms: int,
        report: RunReport,
        *,
        aborted: bool = False,
        ran: bool = True,
        history: Sequence[dict[str, Any]] = (),
        lost_try: bool = False,
    ) -> Finished:
        if report.outcome is Outcome.FAILED:
            self.failed += 1
        else:
            self.completed += 1
        # Distributed cron runs are listed under their hosted job, not with on-demand jobs.
        indexed = not job_id.startswith(self._cron_prefix)
        job_type = job_type_of(str(base["f"]))
        duration_s = report.duration_s if ran else None
        if self.keep_result_s <= 0:
            status = JobStatus.of(report.outcome)
            return Finished(job_id, status, None, 0, aborted, job_type, indexed, duration_s)
        status, data = finished_record(
            job_id,
            base,
            start_ms,
            report,
            queue=self.store.keys.queue,
            finished_ms=_now_ms(),
            history=history,
            worker_id=self.worker_id,
            lost_try=lost_try,
        )
        keep_ms = int(self.keep_result_s * 1000)
        return Finished(job_id, status, data, keep_ms, aborted, job_type, indexed, duration_s)

    # -- timers: renewals, cancellations, heartbeats --------

    async def _maintain(self) -> None:
        renewed_at = checked_at = reconciled_at = time.monotonic()
        beat_at = -BEAT_INTERVAL_S
        while True:
            now = time.monotonic()
            if now - beat_at >= BEAT_INTERVAL_S and (self._beat is None or self._beat.done()):
                beat_at = now
                self._beat = asyncio.get_running_loop().create_task(self._write_beat())
            await asyncio.sleep(ABORT_CHECK_S)
            now = time.monotonic()
            self.last_loop_at = max(self.last_loop_at, now - self.fallback_poll_s)
            try:
                if self.tasks and now - checked_at >= ABORT_CHECK_S:
                    checked_at = now
                    await self._cancel_aborted()
                if self._leased and now - renewed_at >= LEASE_RENEW_S:
                    renewed_at = now
                    held, parked = await self.store.lease_worker(
                        self.worker_id, lease_ms=int(LEASE_TTL_S * 1000)
                    )
                    self._answered(now)
                    if held:
                        self._leased_at(now)
                    elif self._leased:
                        self._lease_lost()
                        self._kick.set()
                    if parked and self.taking_jobs and not self._stopping:
                        await self._unpark(parked)
                    if held and (self._limited or now - reconciled_at >= UNLIMITED_RECONCILE_S):
                        reconciled_at = now
                        await self._reconcile_concurrency()  # after the renewal: never delays it
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
                renewed_at = 0.0  # try again at the next tick: the lease matters most
                logger.debug("worker upkeep failed: %r", exc)

    async def _cancel_aborted(self) -> None:
        for job_id in await self.store.aborted(list(self.tasks)):
            task = self.tasks.get(job_id)
            if task is not None and job_id not in self._aborting:
                logger.info("job %s: cancelled while it ran", job_id, extra={"run_id": job_id})
                self._aborting.add(job_id)
                task.cancel()

    def _beat_now(self) -> WorkerBeat:
        """This worker's heartbeat: what it is, and what it does now."""
        now = time.monotonic()
        finished = self.completed + self.failed
        seen = self._finished_seen
        while len(seen) > 1 and now - seen[1][0] >= RATE_WINDOW_S:
            seen.popleft()
        recent_s, recent = (now - seen[0][0], finished - seen[0][1]) if seen else (0.0, 0)
        seen.append((now, finished))
        return WorkerBeat(
            worker_id=self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queue=self.store.keys.queue,
            started_at=self.started_at,
            beat_at=time.time(),
            running=len(self.tasks),
            completed=self.completed,
            failed=self.failed,
            retried=self.retried,
            functions=self.roster,
            concurrency=self._slots.size,
            running_jobs=tuple(
                RunningJob(job_id, self._running_functions.get(job_id, ""))
                for job_id in itertools.islice(self.tasks, RUNNING_LISTED)
            ),
            shard=self.shard,
            shards=self.shards,
            recent_finished=recent,
            recent_s=recent_s,
        )

    async def _write_beat(self) -> None:
        try:
            await write_beat(self.store, self._beat_now())
        except (RedisError, OSError) as exc:
            logger.debug("could not write the worker's heartbeat: %s", exc)

    # -- control --------

    def stop_taking_jobs(self) -> None:
        """Stop claiming new jobs and leave the loop; runs in progress go on."""
        self._stopping = True
        self._kick.set()

    def resume_taking_jobs(self) -> None:
        """Start (or restart) claiming, e.g. once startup actions have finished."""
        self.taking_jobs = True
        self._claim_due = True
        self._kick.set()

    async def drain(self, grace_s: float, grace: Grace | None = None) -> None:
        """Stop taking jobs, give runs ``grace_s`` seconds to end, then cancel the rest.

        Cancelled runs go back to the queue unchanged, without using up a try, so another
        worker takes them at once; their scopes see the cancellation.
        """
        self.stop_taking_jobs()
        wait = self._wait
        if wait is not None and not wait.done():
            # The BLPOP claims nothing: wake it so its connection comes back clean.
            with contextlib.suppress(RedisError, OSError):
                await self.store.wake_worker(self.worker_id)
            await asyncio.wait({wait}, timeout=2)
        self._forget_wait()
        running = [t for t in self.tasks.values() if not t.done()]
        if running:
            logger.info("waiting up to %.1fs for %d running job(s)", grace_s, len(running))
            pending = await (grace or Grace()).wait(running, grace_s)
            for job_id, task in list(self.tasks.items()):
                if task in pending:
                    logger.warning(
                        "job %s did not finish within the grace period; cancelling",
                        job_id,
                        extra={"run_id": job_id},
                    )
                    task.cancel()
            if pending:
                # The runs store their give-back after being cancelled; let them.
                _, still = await asyncio.wait(pending, timeout=5)
                for task in still:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        await self._stop_maintenance()
        if self._beat is not None:
            # A heartbeat written after the removal would bring the worker back to life.
            await asyncio.wait({self._beat}, timeout=5)
        done = not self.tasks and not self._commits.pending
        with contextlib.suppress(RedisError, OSError):
            if done and self._leased:
                # Claims whose answer was lost would go with the lease: give them back first.
                await self._release_lost_claims()
            # The lease goes only if every job was committed or given back; otherwise it
            # lapses and other workers give back what was not stored.
            await self.store.remove_beat(self.worker_id, release=done)


class WorkerSupervisor:
    """Runs a `Worker` as a task of the current loop and restarts its loop if it dies.

    The worker's own loop already survives Redis errors; this catches everything else (a bug)
    so the worker is never silently gone.
    """

    def __init__(self, worker: Worker, *, max_restart_delay_s: float = 30.0) -> None:
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

    async def stop(self, grace_s: float, grace: Grace | None = None) -> None:
        """Drain the worker (see `Worker.drain`) and end its loop."""
        await self.worker.drain(grace_s, grace)
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=5)
            except TimeoutError:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
