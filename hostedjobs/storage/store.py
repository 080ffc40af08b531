"""`Store`: every Redis operation hostedjobs performs, named for what it does.

Nothing outside this package talks to Redis. Methods take and return plain values (ids,
records as bytes, milliseconds since the epoch); what they mean to a user is decided above.
Scripts keep each operation atomic; reads that need no atomicity are pipelined.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import (
    ExecAbortError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ResponseError,
)

from ..clock import LAST_MS
from ..concurrency import WAITING_REASON
from ..exceptions import NotReplicatedError
from ..history import HISTORY_TTL_S, MINUTE_MS, duration_bucket, history_fields
from ..outcomes import JobStatus
from .client import sent_once
from .layout import FINISHED_KEPT, WAKE_TOKENS_KEPT, WORKER_INDEX_TTL_MS, CronKeys, KeyLayout
from .scripts import Script, script

__all__ = [
    "Admission",
    "Claimed",
    "Finished",
    "LeaseLostError",
    "Peeked",
    "Requeued",
    "SlotRequest",
    "Store",
    "StoredJob",
    "StoredWorker",
    "try_entries",
]

TRIES_TTL_S = 88_400
"""arq's lifetime of a job's try counter."""

_ENQUEUE_BATCH = 500
_BATCHES_IN_FLIGHT = 4
"""Jobs per script call in `Store.enqueue_many`: large enough to amortise the round trip,
small enough not to hold Redis for long; a few calls in flight overlap packing and running."""

TRIES_KEPT = 10
"""How many tries' errors a job's history keeps (the newest), while it lives and in its result."""

_LIST_PAGE = 200
_LIST_SCAN_CAP = 20_000
"""How many ids one page of scheduled jobs looks at, at most, past running ones."""


def _score_ms(raw: bytes | str | float) -> int:
    """A zset score as ms, ``inf`` and ``-inf`` (written by something else) clamped to the
    times hostedjobs can name."""
    return int(min(max(float(raw), 0.0), float(LAST_MS)))


class LeaseLostError(Exception):
    """The worker's lease lapsed and its jobs were given back: it must take a new lease."""

    def __init__(self, worker_id: str) -> None:
        super().__init__(f"worker {worker_id} holds no lease")
        self.worker_id = worker_id


class Peeked(NamedTuple):
    """What a peek saw: due ids to try to claim, and when the next job comes due."""

    now_ms: int
    ids: list[str]
    more: bool
    """More jobs were due than the peek's limit."""
    next_due_ms: int | None
    redis_ms: int
    """Redis's clock when the peek ran."""
    lapsed: list[str]
    """Workers whose lease lapsed: their jobs are for `Store.recover` to give back."""


class Claimed(NamedTuple):
    """A job a worker has claimed: it holds it while its lease lives, and commits its outcome."""

    id: str
    score_ms: int
    """When it was due (for a job a claim sent again answered as already held: when it was
    claimed, see ``lua/claim.lua``)."""
    record: bytes
    """arq's job record; empty if the job had expired."""
    tries: int
    """Tries started, this one included."""
    aborted: bool
    """Cancelled (arq's abort set) before it started."""
    unreadable: str | None = None
    """Why the record could not be read as a string (its key holds another Redis type, or
    an empty string); ``record`` is then empty."""


class Finished(NamedTuple):
    """A job's final outcome, for `Store.commit`."""

    job_id: str
    status: JobStatus
    result: bytes | None
    """The result record (None: none kept)."""
    keep_ms: int
    """How long the result is kept; -1 for ever."""
    aborted: bool = False
    """It was in arq's abort set (cancelled): its entry there goes."""
    job_type: str = ""
    """The job type's name (no version), to list the job under in its type's index too."""
    indexed: bool = True
    """False for a run that is not an on-demand job (a distributed cron run): it is kept,
    but listed in none of the on-demand indexes."""
    duration_s: float | None = None
    """How long its run took (s); None if it never started."""


class Requeued(NamedTuple):
    """A job going back to the queue, for `Store.commit`."""

    job_id: str
    due_ms: int
    error: str | None = None
    """The failed try's error, shown until the next try ends."""
    counted: bool = True
    """False when a shutdown gave the job back: that try is not counted."""
    tries: int = 0
    """The tries started, the given-back one included (for an uncounted requeue; for a
    counted one with an ``error``, its number in the job's try history)."""
    traceback: str | None = None
    """The failed try's formatted traceback (bounded), shown with its error."""
    job_type: str = ""
    """The job type's name (no version; its type in the run history, "" unknown)."""
    duration_s: float | None = None
    """How long the failed try ran (s); None if it never started."""


class Admission(NamedTuple):
    """One job to admit under its type's limits, for `Store.admit_rates`; each limit None if
    the type has none."""

    job_id: str
    job_type: str
    """The type's name (no version): the limits hold across its versions."""
    rate: tuple[str | None, int, int] | None
    """``(key, limit, window ms)``; key None: one for the whole type."""
    debounce: tuple[str | None] | None
    """``(key,)``."""
    cooldown: tuple[str | None, int] | None
    """``(key, window ms)``."""


class SlotRequest(NamedTuple):
    """A claimed job's request for a concurrency slot (`Store.acquire_slots`)."""

    job_id: str
    job_type: str
    group: str
    """The key's value, or "" for a limit on the whole type."""
    limit: int
    function: str
    due_ms: int
    tries: int
    """Its tries counted by the claim (the waiting job's is uncounted)."""
    reason: str
    """Shown with the job while it waits."""


@dataclass(frozen=True, slots=True)
class StoredJob:
    """Everything stored about one job, as raw as Redis returns it."""

    record: bytes | None
    result: bytes | None
    locked: bool
    score_ms: float | None
    tries: int
    meta: dict[str, str]
    running_since_ms: float | None
    unreadable_record: str | None = None
    """Set (and ``record`` None) when the job's key holds another Redis type than a string,
    or an empty string."""
    unreadable_result: str | None = None
    """The same for the result's key."""
    deleted: bytes | None = None
    """A deleted job's tombstone (its record as cancelled), when no job holds the id now."""
    claimant: str | None = None
    """The hostedjobs worker that claimed it and runs it now (from the workers' claims)."""


class StoredWorker(NamedTuple):
    """A worker in the heartbeat index, as `Store.read_workers` finds it."""

    worker_id: str
    beat_ms: int
    """When it last beat (its clock, ms)."""
    beat: bytes | None
    """Its heartbeat, None once it expired (the worker stopped beating, not cleanly)."""
    lease_ms: int | None
    """When its lease lapses (Redis's clock, ms); None if it holds none (released at a clean
    stop, or taken back by another worker once it lapsed)."""


class Store:
    """One queue's storage on one Redis client (or connection pool)."""

    def __init__(
        self,
        redis: Redis,
        queue_name: str,
        *,
        meta_ttl_s: int = 86_400,
        hash_tag: bool = False,
        replicas: int = 0,
        replication_timeout_ms: int = 5_000,
    ) -> None:
        """``hash_tag``: every key of the queue in one cluster slot (see `KeyLayout`).

        ``replicas``: how many replicas must hold each acknowledged write (an enqueue, an
        outcome, a fired tick, an operator's delete, cancel or retry) before it returns;
        `NotReplicatedError` if fewer do within ``replication_timeout_ms``. 0: the primary's
        answer is enough.
        """
        self.redis = redis
        self.keys = KeyLayout(queue_name, hash_tag)
        self.meta_ttl_s = meta_ttl_s
        self.replicas = replicas
        self.replication_timeout_ms = replication_timeout_ms
        self.history_ttl_s = HISTORY_TTL_S
        """How long a minute of run history is kept (s); 0 keeps none."""
        scripts: dict[str, Script] = {
            name: script(redis, name)
            for name in (
                "enqueue",
                "enqueue_many",
                "peek",
                "claim",
                "delete",
                "cancel",
                "retry",
                "fire",
                "worker_lease",
                "recover",
                "park",
                "unpark",
                "acquire_slot",
                "release_slots",
                "release",
                "beat",
                "commit",
                "start_run",
                "renew_lease",
                "release_lease",
                "acquire_lock",
                "release_lock",
                "admit",
            )
        }
        self._scripts = scripts

    async def _write(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run the script ``name``, an acknowledged write: with `replicas`, it returns only
        once that many replicas hold it (Redis's WAIT)."""
        script = self._scripts[name]
        if not self.replicas:
            return await script.call(keys, args)
        reply, acknowledged = await script.call_replicated(
            keys, args, replicas=self.replicas, timeout_ms=self.replication_timeout_ms
        )
        if acknowledged < self.replicas:
            raise NotReplicatedError(
                f"Redis at {getattr(self.redis, 'target', 'Redis')}: {name} was written to the "
                f"primary but {acknowledged} of the {self.replicas} replica(s) required "
                f"confirmed it within {self.replication_timeout_ms} ms (a replica is down or "
                "lagging, or a failover is under way); it may be lost if the primary fails now"
            )
        return reply

    async def close(self) -> None:
        """Close the client and its connections."""
        await self.redis.aclose(close_connection_pool=True)

    async def ping(self) -> None:
        """Check that Redis answers."""
        await self.redis.ping()

    # -- enqueue --------------------------------------------------------------------------------

    async def enqueue(
        self,
        job_id: str,
        record: bytes,
        *,
        due_ms: int,
        ttl_ms: int,
        debounce: tuple[str, str | None] | None = None,
    ) -> bool:
        """Add one job due at ``due_ms``; False (nothing written) if its id is taken.

        ``debounce``: ``(job type, key)``: in the same step, record the job as the key's
        latest (`hostedjobs.rates.Debounce`), for as long as the job's record lives."""
        k = self.keys
        keys = [k.job(job_id), k.result(job_id), k.waiting, k.wake]
        args: list[Any] = [record, due_ms, ttl_ms, job_id, WAKE_TOKENS_KEPT]
        if debounce is not None:
            keys.append(k.rate("debounce", *debounce))
        added = await self._write("enqueue", keys, args)
        return bool(added)

    async def mark_latest(
        self, job_id: str, job_type: str, key: str | None, *, ttl_ms: int
    ) -> None:
        """Record ``job_id`` as its debounce key's latest job, for ``ttl_ms`` (a sharded
        queue's debounce keys live on shard 0, apart from the job's shard)."""
        await self.redis.set(self.keys.rate("debounce", job_type, key), job_id, px=ttl_ms)

    async def admit_rates(self, requests: Sequence[Admission]) -> list[tuple[int, str]]:
        """Admit jobs to start now under their types' limits (`Admission`), in one script
        call (`admit.lua`), each job in turn. Per job: ``(0, "")`` if admitted (its start is
        counted, its cooldown begun); ``(1, ms)`` over the rate limit, the ms until the window
        admits a start; ``(2, ms)`` in the cooldown, the ms left; ``(3, job id)`` superseded
        by that newer job of its debounce key."""
        k = self.keys
        keys: list[str] = []
        args: list[Any] = []
        for job_id, job_type, rate, debounce, cooldown in requests:
            keys += (
                k.rate("rate", job_type, None if rate is None else rate[0]),
                k.rate("debounce", job_type, None if debounce is None else debounce[0]),
                k.rate("cooldown", job_type, None if cooldown is None else cooldown[0]),
            )
            args += (
                job_id,
                0 if rate is None else rate[1],
                0 if rate is None else rate[2],
                0 if debounce is None else 1,
                0 if cooldown is None else cooldown[1],
            )
        verdicts = await self._scripts["admit"].call(keys, args)
        return [(int(verdict), value.decode()) for verdict, value in verdicts]

    async def enqueue_many(
        self, jobs: Sequence[tuple[str, bytes]], *, due_ms: int, ttl_ms: int
    ) -> int:
        """Add ``(id, record)`` pairs in batches; returns how many were added."""
        k = self.keys

        async def send(batch: Sequence[tuple[str, bytes]]) -> int:
            keys = [k.waiting, k.wake]
            args: list[Any] = [due_ms, ttl_ms, WAKE_TOKENS_KEPT]
            for job_id, record in batch:
                keys.append(k.job(job_id))
                keys.append(k.result(job_id))
                args.append(job_id)
                args.append(record)
            return int(await self._write("enqueue_many", keys, args))

        batches = [jobs[i : i + _ENQUEUE_BATCH] for i in range(0, len(jobs), _ENQUEUE_BATCH)]
        added = 0
        for i in range(0, len(batches), _BATCHES_IN_FLIGHT):
            group = batches[i : i + _BATCHES_IN_FLIGHT]
            added += sum(await asyncio.gather(*(send(b) for b in group)))
        return added

    # -- the worker's side ----------------------------------------------------------------------

    def _peek_args(self, limit: int, now_ms: int | None, clock_offset_ms: int) -> list[Any]:
        return [
            "" if now_ms is None else now_ms,
            limit,
            clock_offset_ms,
            WAKE_TOKENS_KEPT,
            random.random(),
        ]

    @staticmethod
    def _peeked(reply: list[Any]) -> Peeked:
        now, ids, more, later, redis_ms, lapsed = reply
        return Peeked(
            int(now),
            [i.decode() for i in ids],
            bool(more),
            _score_ms(later) if later else None,
            int(redis_ms),
            [w.decode() for w in lapsed],
        )

    async def peek(self, limit: int, *, now_ms: int, clock_offset_ms: int = 0) -> Peeked:
        """Up to ``limit`` due job ids (not claimed), and when the next deferred one is due."""
        k = self.keys
        reply = await self._scripts["peek"].call(
            [k.waiting, k.wake, k.leases], self._peek_args(limit, now_ms, clock_offset_ms)
        )
        return self._peeked(reply)

    async def wait_then_peek(
        self, worker_id: str, timeout_s: float, limit: int, clock_offset_ms: int
    ) -> Peeked | None:
        """Block until a wake token (the queue's or this worker's own) or ``timeout_s``, then
        peek, in one round trip; None if the peek could not run (Redis lost its scripts)."""
        k = self.keys
        peek = self._scripts["peek"]
        async with self.redis.pipeline(transaction=False) as pipe:
            # Redis >= 6 takes a fractional timeout; redis-py's annotation says int.
            pipe.blpop([k.wake, k.worker_wake(worker_id)], timeout=timeout_s)  # type: ignore[arg-type]
            # EVALSHA itself: a registered script would make the pipeline check for it first,
            # an extra round trip. If Redis lost it, the direct peek loads it again.
            pipe.evalsha(
                peek.sha,
                3,
                k.waiting,
                k.wake,
                k.leases,
                *self._peek_args(limit, None, clock_offset_ms),
            )
            replies = await pipe.execute(raise_on_error=False)
        reply = replies[1]
        if isinstance(reply, Exception):
            if "NOSCRIPT" in str(reply):
                return None
            raise reply
        if isinstance(replies[0], Exception):
            raise replies[0]
        return self._peeked(reply)

    async def wake_worker(self, worker_id: str) -> None:
        """Make one worker's blocking wait return now (the token is its alone)."""
        key = self.keys.worker_wake(worker_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(key, b"1")
            pipe.pexpire(key, 60_000)
            await pipe.execute()

    async def claim(
        self, ids: Sequence[str], *, worker_id: str, now_ms: int, limit: int, lookahead: int = 0
    ) -> tuple[list[Claimed], int, list[str]]:
        """Claim for ``worker_id`` up to ``limit`` of ``ids`` that are still due and not run by
        a stock arq worker; they are the worker's while its lease lives (`lease_worker`).
        Returns them (with their records, read in the same round trip), how many were locked
        by stock arq workers, and up to ``lookahead`` ids due next (to claim without a peek).

        Raises `LeaseLostError` if the worker holds no lease (nothing is claimed)."""
        k = self.keys
        claim = self._scripts["claim"]
        keys = [
            k.waiting,
            k.claimed,
            k.abort,
            k.tries,
            k.leases,
            k.claims(worker_id),
            *(k.lock(job_id) for job_id in ids),
        ]
        claim.check_keys(len(keys))
        spread = random.random()
        args: list[Any] = [now_ms, worker_id, limit, k.events, lookahead, spread, *ids]
        for attempt in range(2):
            # The records are read right behind the script: a claimed job's record cannot
            # change meanwhile, and reading them here keeps them out of the script.
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.evalsha(claim.sha, len(keys), *keys, *args)
                pipe.mget([k.job(job_id) for job_id in ids])
                reply, records = await pipe.execute(raise_on_error=False)
            if isinstance(reply, NoScriptError) and attempt == 0:
                await claim.load()  # Redis lost its scripts (a restart): load, then again
                continue
            if isinstance(reply, Exception):
                raise reply
            if isinstance(records, Exception):
                raise records
            break
        taken, locked, upcoming, leased = reply
        if not leased:
            raise LeaseLostError(worker_id)
        claimed = [
            Claimed(
                ids[int(taken[i]) - 1],
                _score_ms(taken[i + 1]),
                records[int(taken[i]) - 1] or b"",
                int(taken[i + 2]),
                bool(taken[i + 3]),
            )
            for i in range(0, len(taken), 4)
        ]
        # MGET answers nil for a key of another type, as for a missing one: tell them apart
        # (rare: an expired job, or a key written by something else), so the job fails
        # saying what is wrong instead of "expired".
        missing = [n for n, job in enumerate(claimed) if not job.record]
        if missing:
            async with self.redis.pipeline(transaction=False) as pipe:
                for n in missing:
                    pipe.type(k.job(claimed[n].id))
                types = await pipe.execute()
            for n, kind in zip(missing, types, strict=True):
                found = kind.decode() if isinstance(kind, bytes) else str(kind)
                if found != "none":
                    why = _unreadable(k.job(claimed[n].id), found)
                    claimed[n] = claimed[n]._replace(unreadable=why)
        return claimed, int(locked), [i.decode() for i in upcoming]

    async def lease_worker(
        self, worker_id: str, *, lease_ms: int, take: bool = False
    ) -> tuple[bool, list[str]]:
        """Renew ``worker_id``'s lease for ``lease_ms`` (by Redis's clock), or take a new one
        (``take``). Returns whether the worker holds it (False if it had lapsed and its jobs
        were given back by `recover`: the worker then holds none of the jobs it claimed
        before), and the functions that have parked jobs (`park`)."""
        k = self.keys
        held, parked = await self._scripts["worker_lease"].call(
            [k.leases, k.parked_functions], [worker_id, lease_ms, 1 if take else 0]
        )
        return bool(held), sorted(f.decode() for f in parked)

    async def park(
        self, job_id: str, *, worker_id: str, function: str, due_ms: int, tries: int, reason: str
    ) -> bool:
        """Set aside a job ``worker_id`` claimed but cannot run (no code for ``function``)
        for a worker that can, its try uncounted and ``reason`` in its meta hash. False if
        the worker no longer held the job."""
        k = self.keys
        parked = await self._scripts["park"].call(
            [
                k.claimed,
                k.tries,
                k.claims(worker_id),
                k.parked_functions,
                k.parked(function),
                k.meta(job_id),
            ],
            [job_id, function, due_ms, f"{tries - 1} 0", reason, self.meta_ttl_s],
        )
        return bool(parked)

    async def acquire_slots(self, requests: Sequence[SlotRequest], *, worker_id: str) -> list[int]:
        """Take a concurrency slot for each of ``requests`` (jobs ``worker_id`` claimed), in
        order, in one script call: per request 1 if the job holds one now (it runs), 0 if
        all its group's slots were in use (the job waits off the queue, its try uncounted,
        its reason in its meta hash, until `release_slots` moves it back), -1 if the worker
        no longer held the job."""
        if not requests:
            return []
        k = self.keys
        keys = [k.concurrency_groups, k.claimed, k.claims(worker_id), k.leases, k.tries]
        args: list[Any] = [worker_id, self.meta_ttl_s]
        for r in requests:
            keys += [
                k.concurrency_slots(r.job_type, r.group),
                k.concurrency_waiting(r.job_type, r.group),
                k.meta(r.job_id),
            ]
            args += [
                r.job_id,
                r.limit,
                r.due_ms,
                f"{r.tries - 1} 0",
                r.function,
                r.reason,
                f"{r.job_type}\n{r.group}",
            ]
        return [int(n) for n in await self._scripts["acquire_slot"].call(keys, args)]

    async def release_slots(
        self, entries: Sequence[tuple[str, str, int, str]], *, worker_id: str = ""
    ) -> int:
        """For each ``(job type, group, limit, job id)`` of ``entries``: free the job's
        concurrency slot (if an id is given, and ``worker_id`` holds it), drop the group's
        slots whose worker's lease lapsed or whose job is no longer claimed, and move as many
        waiting jobs back to the queue (oldest due first, waking workers) as it has free
        slots. Returns how many were moved."""
        if not entries:
            return 0
        k = self.keys
        keys = [k.waiting, k.wake, k.leases, k.claimed, k.concurrency_groups]
        args: list[Any] = [WAKE_TOKENS_KEPT, worker_id]
        for job_type, group, limit, job_id in entries:
            keys += [k.concurrency_slots(job_type, group), k.concurrency_waiting(job_type, group)]
            args += [f"{job_type}\n{group}", limit, job_id]
        return int(await self._scripts["release_slots"].call(keys, args))

    async def reconcile_slots(self, *, batch: int = 100) -> int:
        """`release_slots` for every group with waiting jobs (up to ``batch`` groups), at the
        limit each was listed with: frees slots held by crashed workers' runs and moves their
        waiters back. One read, and one script call only if some group has waiters."""
        listed: dict[bytes, bytes] = await self.redis.hgetall(self.keys.concurrency_groups)  # type: ignore[misc]
        groups: list[tuple[str, str, int, str]] = []
        for field, limit in itertools.islice(listed.items(), batch):
            job_type, _, group = field.decode().partition("\n")
            groups.append((job_type, group, int(limit), ""))
        return await self.release_slots(groups)

    async def slot_waiters(self) -> int:
        """How many jobs wait for a concurrency slot (`acquire_slots`), in all groups."""
        return sum(size for _, _, size in await self.slot_waiting_sets())

    async def slot_waiting_sets(self) -> list[tuple[str, str, int]]:
        """The sets of jobs waiting for a concurrency slot: ``(job type, key, size)`` of each
        group with waiters."""
        k = self.keys
        listed: dict[bytes, bytes] = await self.redis.hgetall(k.concurrency_groups)  # type: ignore[misc]
        if not listed:
            return []
        groups = [field.decode().partition("\n") for field in listed]
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_type, _, group in groups:
                pipe.zcard(k.concurrency_waiting(job_type, group))
            sizes = await pipe.execute()
        return [
            (job_type, k.concurrency_waiting(job_type, group), int(n))
            for (job_type, _, group), n in zip(groups, sizes, strict=True)
            if n
        ]

    async def unpark(self, functions: Sequence[str], *, limit: int) -> list[str]:
        """Move up to ``limit`` parked jobs of ``functions`` back to the queue at their due
        times, waking no worker: the caller claims them next. Returns their ids."""
        if not functions or limit <= 0:
            return []
        k = self.keys
        moved = await self._scripts["unpark"].call(
            [k.waiting, k.parked_functions, *(k.parked(f) for f in functions)],
            [limit, *functions],
        )
        return [m.decode() if isinstance(m, bytes) else str(m) for m in moved]

    async def parked_counts(self) -> dict[str, int]:
        """How many jobs are parked, by function."""
        k = self.keys
        members: set[bytes] = await self.redis.smembers(k.parked_functions)  # type: ignore[misc]
        functions = sorted(f.decode() for f in members)
        if not functions:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for function in functions:
                pipe.zcard(k.parked(function))
            sizes = await pipe.execute()
        return {f: int(n) for f, n in zip(functions, sizes, strict=True) if n}

    async def claims(self, worker_id: str) -> set[str]:
        """The ids of the jobs ``worker_id`` holds (claimed, outcome not committed)."""
        members: set[bytes] = await self.redis.smembers(self.keys.claims(worker_id))  # type: ignore[misc]
        return {m.decode() for m in members}

    async def release(self, worker_id: str, ids: Sequence[str], *, now_ms: int) -> int:
        """Give back to the queue, due at ``now_ms`` and with their try uncounted, those of
        ``ids`` that ``worker_id`` holds but does not run (a claim whose reply was lost).
        Returns how many went back."""
        if not ids:
            return 0
        k = self.keys
        return int(
            await self._scripts["release"].call(
                [k.waiting, k.claimed, k.tries, k.claims(worker_id), k.wake],
                [now_ms, WAKE_TOKENS_KEPT, *ids],
            )
        )

    async def recover(self, worker_ids: Sequence[str], *, now_ms: int) -> int:
        """Give back to the queue, due at ``now_ms``, the jobs of those of ``worker_ids``
        whose lease has lapsed (checked again here), each lost try kept in its job's try
        history. Returns how many jobs went back."""
        k = self.keys
        if not worker_ids:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in worker_ids:
                pipe.smembers(k.claims(worker_id))
            claims: list[set[bytes]] = await pipe.execute()
        held = [
            (job_id.decode(), position)
            for position, members in enumerate(claims, start=1)
            for job_id in sorted(members)
        ]
        return int(
            await self._scripts["recover"].call(
                [
                    k.waiting,
                    k.claimed,
                    k.leases,
                    k.wake,
                    k.tries,
                    *(k.claims(w) for w in worker_ids),
                    *(k.meta(job_id) for job_id, _ in held),
                ],
                [
                    now_ms,
                    WAKE_TOKENS_KEPT,
                    k.events,
                    self.meta_ttl_s,
                    TRIES_KEPT,
                    len(worker_ids),
                    *worker_ids,
                    *(value for job_id, position in held for value in (job_id, position)),
                ],
            )
        )

    async def commit(
        self,
        outcomes: Sequence[Finished | Requeued],
        *,
        worker_id: str,
        now_ms: int,
        max_age_ms: int,
        held: bool = False,
    ) -> list[str]:
        """Store a batch of ``worker_id``'s outcomes in one atomic step.

        Each job leaves the claimed set and the worker's claims. A finished job's result is
        stored (and indexed under its status, the indexes trimmed to `FINISHED_KEPT` entries
        and ``max_age_ms``), its record and try count removed, and its abort request if it
        had one; a requeued job is due again at its time (a failed try's error kept in its
        meta hash, or a shutdown's try uncounted).

        Only jobs the worker still holds are committed (commit.lua checks its claims): if its
        lease lapsed, its jobs went back to the queue and their outcomes here would double
        them. A caller that knows it ``held`` its lease moments ago (so it cannot have lapsed
        yet) gets a plain MULTI/EXEC instead, which costs Redis about a third less per job;
        if Redis refuses that (it is out of memory), the script runs, as it may then. A
        connection lost during that transaction is not tried again here (Redis may have
        applied it): `RedisUnavailableError`, and the caller sends the outcomes again
        without ``held`` (the checked script drops those already stored).
        Returns the ids not committed because the worker no longer held them.
        """
        if held and not self.replicas:
            try:
                # Not sent again by a reconnect: applied twice, it would queue again a job
                # that another worker claimed meanwhile. The caller sends the script next.
                with sent_once():
                    await self._commit_transaction(outcomes, worker_id, now_ms, max_age_ms)
            except (OutOfMemoryError, ExecAbortError):
                pass
            else:
                return []
        return await self._commit_checked(outcomes, worker_id, now_ms, max_age_ms)

    async def _commit_checked(
        self,
        outcomes: Sequence[Finished | Requeued],
        worker_id: str,
        now_ms: int,
        max_age_ms: int,
    ) -> list[str]:
        k = self.keys
        keys = [
            k.claimed,
            k.tries,
            k.abort,
            k.waiting,
            k.wake,
            k.claims(worker_id),
            k.finished(JobStatus.SUCCEEDED),
            k.finished(JobStatus.FAILED),
            k.finished(JobStatus.CANCELLED),
            *(k.finished_by_worker(status, worker_id) for status in _FINISHED),
            k.history(now_ms // MINUTE_MS),
        ]
        args: list[Any] = [
            now_ms,
            max_age_ms,
            FINISHED_KEPT,
            WAKE_TOKENS_KEPT,
            k.events,
            self.meta_ttl_s,
            WORKER_INDEX_TTL_MS,
            TRIES_KEPT,
            self.history_ttl_s,
        ]
        history: list[str] = []
        for outcome in outcomes:
            job_id = outcome.job_id
            keys += (k.job(job_id), k.result(job_id), k.meta(job_id))
            if isinstance(outcome, Finished):
                keys.append(k.finished_by_type(outcome.status, outcome.job_type))
                keep_ms = 0 if not outcome.result else max(outcome.keep_ms, -1)
                extra = outcome.status.value + ("!" if outcome.aborted else "")
                listed = "" if not outcome.indexed else "t" if outcome.job_type else "i"
                args += (job_id, "f", keep_ms, outcome.result or b"", extra, listed)
            else:
                keys.append(k.finished_by_type(JobStatus.FAILED, ""))  # unused
                extra = "" if outcome.counted else f"{outcome.tries - 1} 0"
                entry = _try_entry(outcome, now_ms) if outcome.counted and outcome.error else ""
                args += (job_id, "r", outcome.due_ms, outcome.error or "", extra, entry)
            bucket = "-" if outcome.duration_s is None else duration_bucket(outcome.duration_s)
            history.append(f"{bucket} {outcome.job_type}")
        args += history
        dropped = await self._write("commit", keys, args)
        return [i.decode() for i in dropped]

    async def _commit_transaction(
        self,
        outcomes: Sequence[Finished | Requeued],
        worker_id: str,
        now_ms: int,
        max_age_ms: int,
    ) -> None:
        """What commit.lua does, as plain commands in MULTI/EXEC, without the claims check."""
        k = self.keys
        ids: list[str] = []
        finished: list[str] = []
        records: list[str] = []
        aborted: list[str] = []
        indexed: dict[str, dict[str, int]] = {}
        requeued: dict[str, int] = {}
        uncounted: dict[str, str] = {}
        async with self.redis.pipeline(transaction=True) as pipe:
            for outcome in outcomes:
                job_id = outcome.job_id
                ids.append(job_id)
                if isinstance(outcome, Finished):
                    finished.append(job_id)
                    records.append(k.job(job_id))
                    if outcome.aborted:
                        aborted.append(job_id)
                    if outcome.result and outcome.keep_ms:
                        keep_ms = outcome.keep_ms if outcome.keep_ms > 0 else None
                        pipe.set(k.result(job_id), outcome.result, px=keep_ms)
                        if outcome.indexed:
                            status = outcome.status
                            for index in (
                                k.finished(status),
                                k.finished_by_worker(status, worker_id),
                                *(
                                    (k.finished_by_type(status, outcome.job_type),)
                                    if outcome.job_type
                                    else ()
                                ),
                            ):
                                indexed.setdefault(index, {})[job_id] = now_ms
                    continue
                requeued[job_id] = outcome.due_ms
                if not outcome.counted:
                    uncounted[job_id] = f"{outcome.tries - 1} 0"
                elif outcome.error:
                    meta = k.meta(job_id)
                    pipe.hset(
                        meta,
                        mapping={
                            "error": outcome.error,
                            "traceback": outcome.traceback or "",
                            f"try:{outcome.tries}": _try_entry(outcome, now_ms),
                        },
                    )
                    if outcome.tries > TRIES_KEPT:
                        pipe.hdel(meta, f"try:{outcome.tries - TRIES_KEPT}")
                    pipe.expire(meta, self.meta_ttl_s)
            if finished:
                pipe.publish(k.events, "finished " + " ".join(finished))
            if requeued:
                pipe.publish(k.events, "requeued " + " ".join(requeued))
            pipe.zrem(k.claimed, *ids)
            pipe.srem(k.claims(worker_id), *ids)
            if finished:
                pipe.delete(*records)
                pipe.hdel(k.tries, *finished)
                if aborted:
                    pipe.zrem(k.abort, *aborted)
            status_indexes = {k.finished(status) for status in _FINISHED}
            worker_indexes = {k.finished_by_worker(status, worker_id) for status in _FINISHED}
            for index, members in indexed.items():
                pipe.zadd(index, members)
                pipe.zremrangebyrank(index, 0, -FINISHED_KEPT - 1)
                if max_age_ms > 0:
                    pipe.zremrangebyscore(index, "-inf", now_ms - max_age_ms)
                if index in worker_indexes:
                    pipe.pexpire(index, WORKER_INDEX_TTL_MS)
                elif index not in status_indexes and max_age_ms > 0:
                    pipe.pexpire(index, max_age_ms)
            if uncounted:
                pipe.hset(k.tries, mapping=uncounted)
            if requeued:
                pipe.zadd(k.waiting, requeued)
                pipe.lpush(k.wake, b"1")
                pipe.ltrim(k.wake, 0, WAKE_TOKENS_KEPT - 1)
            counted = _history_counts(outcomes)
            if counted and self.history_ttl_s:
                history = k.history(now_ms // MINUTE_MS)
                for field, increment in counted.items():
                    pipe.hincrby(history, field, increment)
                pipe.expire(history, self.history_ttl_s)
            await pipe.execute()

    async def aborted(self, ids: Sequence[str]) -> list[str]:
        """Which of ``ids`` are in arq's abort set (asked to stop)."""
        if not ids:
            return []
        scores = await self.redis.zmscore(self.keys.abort, list(ids))
        return [job_id for job_id, score in zip(ids, scores, strict=True) if score is not None]

    async def progress(self, job_id: str, values: dict[str, str]) -> None:
        """Store a running job's progress fields and tell watchers."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(k.meta(job_id), mapping=values)
            pipe.expire(k.meta(job_id), self.meta_ttl_s)
            pipe.publish(k.events, f"progress {job_id}")
            await pipe.execute()

    # -- the scheduler's side -------------------------------------------------------------------

    async def delete(
        self,
        job_id: str,
        *,
        tombstone: bytes | None = None,
        keep_ms: int = 0,
        now_ms: int = 0,
        job_type: str = "",
    ) -> bool:
        """Remove a queued or deferred job that is not running; False if it is not one.

        With a ``tombstone`` (the job's record as cancelled), it is kept ``keep_ms`` (-1: for
        ever) under `KeyLayout.deleted` and listed as cancelled (its ``job_type``'s index
        too), while the id is free for a new job at once."""
        k = self.keys
        deleted = await self._write(
            "delete",
            [
                k.waiting,
                k.job(job_id),
                k.lock(job_id),
                k.tries,
                k.meta(job_id),
                k.deleted(job_id),
                k.finished(JobStatus.CANCELLED),
                k.finished_by_type(JobStatus.CANCELLED, job_type),
                await self._parked_set(job_id),
            ],
            [job_id, k.events, tombstone or b"", keep_ms, now_ms, FINISHED_KEPT],
        )
        return bool(deleted)

    async def _parked_set(self, job_id: str) -> str:
        """The parked set ``job_id`` is in, if a worker parked it (paused job type, or no
        code for it), for delete and cancel to find it there; a key that holds nothing else."""
        function, reason, waiting = await self.redis.hmget(  # type: ignore[misc]
            self.keys.meta(job_id), ["parked", "parked_reason", "parked_key"]
        )
        if waiting and reason and reason.decode().startswith(WAITING_REASON):
            return str(waiting.decode())  # waiting for a concurrency slot (acquire_slots)
        return self.keys.parked(function.decode() if function else "")

    async def cancel(
        self,
        job_id: str,
        record: bytes,
        result: bytes | None,
        *,
        keep_ms: int,
        now_ms: int,
        job_type: str = "",
    ) -> int:
        """Cancel a job: 2 if it runs (its worker is asked to stop), 1 if it was queued (and
        is now stored cancelled, ``result`` kept ``keep_ms``, and counted in the run history
        under ``job_type``), 0 if neither (or ``record``, the job as the caller read it,
        changed meanwhile)."""
        k = self.keys
        return int(
            await self._write(
                "cancel",
                [
                    k.waiting,
                    k.job(job_id),
                    k.lock(job_id),
                    k.tries,
                    k.meta(job_id),
                    k.result(job_id),
                    k.finished(JobStatus.CANCELLED),
                    k.abort,
                    k.claimed,
                    k.finished_by_type(JobStatus.CANCELLED, job_type),
                    k.history(now_ms // MINUTE_MS),
                    await self._parked_set(job_id),
                ],
                [
                    job_id,
                    record,
                    result or b"",
                    keep_ms if result else 0,
                    now_ms,
                    k.events,
                    FINISHED_KEPT,
                    self.history_ttl_s,
                    f"c {job_type}" if job_type else "",
                ],
            )
        )

    async def retry(
        self,
        job_id: str,
        result_read: bytes,
        record: bytes,
        *,
        due_ms: int,
        ttl_ms: int,
        job_type: str = "",
        worker_id: str = "",
    ) -> bool:
        """Queue a failed job again under its id, if its result is still ``result_read``;
        it leaves the failed indexes (its ``job_type``'s and ``worker_id``'s too)."""
        k = self.keys
        also = [k.finished_by_type(JobStatus.FAILED, job_type)] if job_type else []
        if worker_id:
            also.append(k.finished_by_worker(JobStatus.FAILED, worker_id))
        retried = await self._write(
            "retry",
            [
                k.result(job_id),
                k.job(job_id),
                k.waiting,
                k.wake,
                k.tries,
                k.meta(job_id),
                k.finished(JobStatus.FAILED),
                *also,
            ],
            [result_read, record, due_ms, ttl_ms, job_id, WAKE_TOKENS_KEPT, k.events],
        )
        return bool(retried)

    async def result(self, job_id: str) -> bytes | None:
        """A finished job's stored result record, if kept."""
        value: bytes | None = await self.redis.get(self.keys.result(job_id))
        return value

    async def read_jobs(self, ids: Sequence[str]) -> list[StoredJob]:
        """Everything stored about each job, in one round trip."""
        if not ids:
            return []
        k = self.keys
        try:
            replies = await self._read_jobs(ids, transaction=True)
        except OutOfMemoryError:
            # Redis refuses even reads inside MULTI when it is full: read them one by one.
            replies = await self._read_jobs(ids, transaction=False)
        jobs = []
        for i, job_id in enumerate(ids):
            record, result, locked, score, tries, meta, claimed, deleted = replies[
                i * 8 : i * 8 + 8
            ]
            for reply in (locked, score, tries, claimed):
                if isinstance(reply, Exception):
                    raise reply
            wrong_record = _wrong_type(record, k.job(job_id))
            wrong_result = _wrong_type(result, k.result(job_id))
            count, _, started = (tries or b"0 0").decode(errors="replace").partition(" ")
            jobs.append(
                StoredJob(
                    None if wrong_record else record,
                    None if wrong_result else result,
                    bool(locked) or claimed is not None,
                    None if score is None else float(_score_ms(score)),
                    int(count) if count.isdigit() else 0,
                    {}
                    if isinstance(meta, Exception)
                    else {
                        key.decode(errors="replace"): value.decode(errors="replace")
                        for key, value in meta.items()
                    },
                    float(started)
                    if claimed is not None and started.isdigit() and started != "0"
                    else None,
                    wrong_record,
                    wrong_result,
                    deleted if isinstance(deleted, bytes) and deleted else None,
                )
            )
        claimed_ids = [job_id for job_id, job in zip(ids, jobs, strict=True) if job.locked]
        if claimed_ids:
            claimants = await self.claimants(claimed_ids)
            jobs = [
                dataclasses.replace(job, claimant=claimants[job_id]) if job_id in claimants else job
                for job_id, job in zip(ids, jobs, strict=True)
            ]
        return jobs

    async def claimants(self, ids: Sequence[str]) -> dict[str, str]:
        """The worker holding each of ``ids`` that a hostedjobs worker has claimed: each
        worker with a lease is asked whether its claims hold them (a job a stock arq worker
        runs, or one given back, has none)."""
        workers = [w.decode() for w in await self.redis.zrange(self.keys.leases, 0, -1)]
        if not workers:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in workers:
                pipe.smismember(self.keys.claims(worker_id), list(ids))
            replies: list[list[int]] = await pipe.execute()
        return {
            job_id: worker_id
            for worker_id, held in zip(workers, replies, strict=True)
            for job_id, member in zip(ids, held, strict=True)
            if member
        }

    async def _read_jobs(self, ids: Sequence[str], *, transaction: bool) -> list[Any]:
        k = self.keys
        async with self.redis.pipeline(transaction=transaction) as pipe:
            for job_id in ids:
                pipe.get(k.job(job_id))
                pipe.get(k.result(job_id))
                pipe.exists(k.lock(job_id))
                pipe.zscore(k.waiting, job_id)
                pipe.hget(k.tries, job_id)
                pipe.hgetall(k.meta(job_id))
                pipe.zscore(k.claimed, job_id)
                pipe.get(k.deleted(job_id))
            # A job's own keys may hold another type (written by something else): that job
            # reads as unreadable, the others as usual.
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        if transaction and replies and isinstance(replies[0], OutOfMemoryError):
            raise replies[0]
        return replies

    async def waiting_ids(self, *, due: bool, now_ms: int, offset: int, limit: int) -> list[str]:
        """A page of ids waiting in the queue: due now (``due``) or later, soonest first;
        after the due ones, the parked ones (`park`), by function.

        Jobs that hostedjobs workers run have left the queue (see ``lua/claim.lua``); those
        stock arq workers run are skipped by their locks: a bounded walk in pages, never a
        scan.
        """
        page = await self.waiting_entries(due=due, now_ms=now_ms, offset=offset, limit=limit)
        return [job_id for job_id, _, _ in page]

    async def waiting_entries(
        self,
        *,
        due: bool,
        now_ms: int,
        offset: int,
        limit: int,
        min_ms: int | None = None,
        max_ms: int | None = None,
        latest_first: bool = False,
    ) -> list[tuple[str, str | None, int]]:
        """`waiting_ids` with the order they are listed in: ``(id, parked function or None,
        due ms)``, sorted by ``(parked, function, due)`` (so pages of several queues merge).

        ``min_ms`` and ``max_ms`` keep the jobs due between them (inclusive); with
        ``latest_first`` the latest due come first (and the parked ones last, as always).
        Distributed cron runs waiting for a worker are left out: they are listed under their
        hosted job."""
        k = self.keys
        low: int | str = "-inf" if min_ms is None else min_ms
        high: int | str = "+inf" if max_ms is None else max_ms
        if due:
            high = now_ms if max_ms is None else min(max_ms, now_ms)
        else:
            low = f"({now_ms}" if min_ms is None or min_ms <= now_ms else min_ms
        cron = f"{k.namespace}:cron:"
        found: list[tuple[str, str | None, int]] = []
        skip, start = offset, 0
        while len(found) < limit and start < _LIST_SCAN_CAP:
            if latest_first:
                raw = await self.redis.zrevrangebyscore(
                    k.waiting, high, low, start=start, num=_LIST_PAGE, withscores=True
                )
            else:
                raw = await self.redis.zrangebyscore(
                    k.waiting, low, high, start=start, num=_LIST_PAGE, withscores=True
                )
            page = [(i.decode(), _score_ms(score)) for i, score in raw]
            if not page:
                break
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id, _ in page:
                    pipe.exists(k.lock(job_id))
                locked = await pipe.execute()
            for (job_id, score), is_locked in zip(page, locked, strict=True):
                if is_locked or job_id.startswith(cron):
                    continue
                if skip:
                    skip -= 1
                    continue
                found.append((job_id, None, score))
                if len(found) >= limit:
                    break
            if len(page) < _LIST_PAGE:
                break
            start += _LIST_PAGE
        if due and len(found) < limit:
            held = [(f, k.parked(f), n) for f, n in (await self.parked_counts()).items()]
            # Then those waiting for a concurrency slot, listed under their job type.
            held += sorted(await self.slot_waiting_sets())
            for function, key, size in held:
                if skip >= size:
                    skip -= size
                    continue
                if min_ms is not None or max_ms is not None:
                    parked = await self.redis.zrangebyscore(
                        key,
                        "-inf" if min_ms is None else min_ms,
                        "+inf" if max_ms is None else max_ms,
                        start=skip,
                        num=limit - len(found),
                        withscores=True,
                    )
                else:
                    parked = await self.redis.zrange(
                        key, skip, skip + limit - len(found) - 1, withscores=True
                    )
                skip = 0
                found += ((i.decode(), function, _score_ms(score)) for i, score in parked)
                if len(found) >= limit:
                    break
        return found

    async def indexed_ids(self, status: JobStatus, *, offset: int, limit: int) -> list[str]:
        """A page of running (latest claim first) or finished (newest first) job ids."""
        k = self.keys
        index = k.claimed if status is JobStatus.RUNNING else k.finished(status)
        return [i.decode() for i in await self.redis.zrevrange(index, offset, offset + limit - 1)]

    async def indexed_entries(
        self, status: JobStatus, *, offset: int, limit: int
    ) -> list[tuple[str, int]]:
        """`indexed_ids` with their scores (claim or finish time, ms), newest first."""
        k = self.keys
        index = k.claimed if status is JobStatus.RUNNING else k.finished(status)
        page = await self.redis.zrevrange(index, offset, offset + limit - 1, withscores=True)
        return [(i.decode(), _score_ms(score)) for i, score in page]

    def _finished_index(
        self, status: JobStatus, job_type: str | None, worker_id: str | None
    ) -> str:
        k = self.keys
        if job_type is not None:
            return k.finished_by_type(status, job_type)
        if worker_id is not None:
            return k.finished_by_worker(status, worker_id)
        return k.finished(status)

    async def finished_entries(
        self,
        status: JobStatus,
        *,
        job_type: str | None = None,
        worker_id: str | None = None,
        min_ms: int | None = None,
        max_ms: int | None = None,
        newest_first: bool = True,
        offset: int = 0,
        limit: int = 50,
    ) -> list[tuple[str, int]]:
        """A page of finished jobs ``(id, finish ms)`` in ``status``: of one job type (its
        name), one worker, or both, finished between ``min_ms`` and ``max_ms`` (inclusive),
        newest or oldest first. One index read (ZRANGE BYSCORE ... LIMIT), or for a job type
        and a worker together the intersection of their two indexes (ZINTER), bounded by
        `FINISHED_KEPT`."""
        low = "-inf" if min_ms is None else min_ms
        high = "+inf" if max_ms is None else max_ms
        if job_type is not None and worker_id is not None:
            both = await self._both(status, job_type, worker_id)
            chosen = [
                entry
                for entry in both
                if (min_ms is None or entry[1] >= min_ms) and (max_ms is None or entry[1] <= max_ms)
            ]
            if newest_first:
                chosen.reverse()
            return chosen[offset : offset + limit]
        index = self._finished_index(status, job_type, worker_id)
        if newest_first:
            page = await self.redis.zrevrangebyscore(
                index, high, low, start=offset, num=limit, withscores=True
            )
        else:
            page = await self.redis.zrangebyscore(
                index, low, high, start=offset, num=limit, withscores=True
            )
        return [(i.decode(), _score_ms(score)) for i, score in page]

    async def _both(
        self, status: JobStatus, job_type: str, worker_id: str
    ) -> list[tuple[str, int]]:
        """The jobs in both a job type's and a worker's index of ``status``, oldest first."""
        k = self.keys
        both = await self.redis.zinter(
            {k.finished_by_worker(status, worker_id): 1, k.finished_by_type(status, job_type): 0},
            withscores=True,
        )
        return [(i.decode(), _score_ms(score)) for i, score in both]

    async def finished_count(
        self,
        status: JobStatus,
        *,
        job_type: str | None = None,
        worker_id: str | None = None,
        min_ms: int | None = None,
        max_ms: int | None = None,
    ) -> int:
        """How many jobs `finished_entries` lists with these filters (ZCOUNT, or the size of
        the intersection for a job type and a worker together)."""
        if job_type is not None and worker_id is not None:
            return len(
                await self.finished_entries(
                    status,
                    job_type=job_type,
                    worker_id=worker_id,
                    min_ms=min_ms,
                    max_ms=max_ms,
                    limit=FINISHED_KEPT,
                )
            )
        index = self._finished_index(status, job_type, worker_id)
        low = "-inf" if min_ms is None else min_ms
        high = "+inf" if max_ms is None else max_ms
        return int(await self.redis.zcount(index, low, high))

    async def running_entries(
        self, *, worker_id: str | None = None, min_ms: int | None = None, max_ms: int | None = None
    ) -> list[tuple[str, int]]:
        """The jobs hostedjobs workers run ``(id, claim ms)``, latest claim first: all of
        them, or one worker's (its claims); claimed between ``min_ms`` and ``max_ms``; at most
        a bounded number (their count is the fleet's concurrency). Distributed cron runs are
        left out (they are listed under their hosted job)."""
        k = self.keys
        low = "-inf" if min_ms is None else min_ms
        high = "+inf" if max_ms is None else max_ms
        if worker_id is None:
            page = await self.redis.zrevrangebyscore(
                k.claimed, high, low, start=0, num=_LIST_SCAN_CAP, withscores=True
            )
            entries = [(i.decode(), _score_ms(score)) for i, score in page]
        else:
            members: set[bytes] = await self.redis.smembers(k.claims(worker_id))  # type: ignore[misc]
            ids = sorted(m.decode() for m in members)[:_LIST_SCAN_CAP]
            scores = await self.redis.zmscore(k.claimed, ids) if ids else []
            entries = sorted(
                (
                    (job_id, _score_ms(score))
                    for job_id, score in zip(ids, scores, strict=True)
                    if score is not None
                    and (min_ms is None or score >= min_ms)
                    and (max_ms is None or score <= max_ms)
                ),
                key=lambda entry: -entry[1],
            )
        cron = f"{k.namespace}:cron:"
        return [entry for entry in entries if not entry[0].startswith(cron)]

    async def records(self, ids: Sequence[str]) -> list[bytes | None]:
        """The stored records of ``ids`` (None where there is none, or another type)."""
        if not ids:
            return []
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.get(k.job(job_id))
            replies = await pipe.execute(raise_on_error=False)
        return [reply if isinstance(reply, bytes) else None for reply in replies]

    async def try_history(self, job_id: str) -> list[dict[str, Any]]:
        """The failed tries' entries kept in a live job's meta hash (``try``, ``at`` ms,
        ``error``, ``traceback``), oldest first; entries that cannot be read are skipped."""
        meta = await self.redis.hgetall(self.keys.meta(job_id))  # type: ignore[misc]
        return try_entries(
            {
                key.decode(errors="replace"): value.decode(errors="replace")
                for key, value in meta.items()
            }
        )

    async def counts(self, *, now_ms: int, since_ms: int | None) -> dict[JobStatus, int]:
        """How many jobs are in each state (finished ones since ``since_ms``)."""
        k = self.keys
        low = "-inf" if since_ms is None else since_ms
        finished = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcount(k.waiting, "-inf", now_ms)
            pipe.zcount(k.waiting, f"({now_ms}", "+inf")
            pipe.zcard(k.claimed)
            for status in finished:
                pipe.zcount(k.finished(status), low, "+inf")
            due, later, running, *done = await pipe.execute()
        parked = sum((await self.parked_counts()).values()) + await self.slot_waiters()
        counts = {
            JobStatus.QUEUED: int(due) + parked,
            JobStatus.SCHEDULED: int(later),
            JobStatus.RUNNING: int(running),
        }
        counts.update(zip(finished, (int(d) for d in done), strict=True))
        return counts

    async def history(
        self, first_minute: int, last_minute: int, *, fields: Sequence[str] | None = None
    ) -> list[dict[str, int]]:
        """The run history hashes of the minutes ``first_minute..last_minute`` (ms // 60,000,
        both included), in order, in one pipelined round trip: every field, or only
        ``fields`` (missing ones left out). A minute with nothing counted is ``{}``."""
        k = self.keys
        minutes = range(first_minute, last_minute + 1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for minute in minutes:
                if fields is None:
                    pipe.hgetall(k.history(minute))
                else:
                    pipe.hmget(k.history(minute), list(fields))
            replies = await pipe.execute()
        found: list[dict[str, int]] = []
        for reply in replies:
            if fields is None:
                found.append({f.decode(): int(v) for f, v in reply.items()})
            else:
                found.append({f: int(v) for f, v in zip(fields, reply, strict=True) if v})
        return found

    async def history_totals(self, first_minute: int, last_minute: int) -> dict[str, int]:
        """Every run history field summed over the minutes ``first_minute..last_minute``
        (both included), in one pipelined round trip."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for minute in range(first_minute, last_minute + 1):
                pipe.hgetall(k.history(minute))
            replies: list[dict[bytes, bytes]] = await pipe.execute()
        total: dict[bytes, int] = {}
        get = total.get
        for reply in replies:
            for field, value in reply.items():
                total[field] = get(field, 0) + int(value)
        return {field.decode(): value for field, value in total.items()}

    async def queue_depth(self, *, now_ms: int) -> tuple[int, int]:
        """``(all ids in the queue, those due now)``: two O(log n) reads."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.waiting)
            pipe.zcount(self.keys.waiting, "-inf", now_ms)
            total, due = await pipe.execute()
        return int(total), int(due)

    async def queue_size(self) -> int:
        """How many jobs wait in the queue (due or deferred) or run on hostedjobs workers."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.waiting)
            pipe.zcard(self.keys.claimed)
            waiting, running = await pipe.execute()
        return int(waiting) + int(running)

    def events(self) -> PubSub:
        """A pub/sub connection for the queue's job events (subscribe to `KeyLayout.events`)."""
        return self.redis.pubsub()

    # -- worker heartbeats ----------------------------------------------------------------------

    async def write_beat(
        self, worker_id: str, beat: str, *, now_ms: int, ttl_ms: int, index_kept_ms: int
    ) -> None:
        """Store a worker's heartbeat (expiring after ``ttl_ms``) and index it by time; also
        when Redis is out of memory (beat.lua)."""
        k = self.keys
        await self._scripts["beat"].call(
            [k.worker(worker_id), k.workers], [worker_id, beat, now_ms, ttl_ms, index_kept_ms]
        )

    async def remove_beat(self, worker_id: str, *, release: bool) -> None:
        """Forget a worker that stopped cleanly: its heartbeat, and with ``release`` its lease
        and claims (only once it has committed or given back every job it claimed; otherwise
        the lease lapses and other workers give its jobs back)."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(k.worker(worker_id))
            pipe.zrem(k.workers, worker_id)
            if release:
                pipe.zrem(k.leases, worker_id)
                pipe.delete(k.claims(worker_id))
            await pipe.execute()

    async def read_beats(self, *, since_ms: int) -> list[bytes]:
        """Heartbeats written since ``since_ms``, newest first."""
        k = self.keys
        ids = await self.redis.zrevrangebyscore(k.workers, "+inf", since_ms)
        if not ids:
            return []
        raw = await self.redis.mget([k.worker(i.decode()) for i in ids])
        return [item for item in raw if item is not None]

    async def read_workers(self, *, since_ms: int) -> tuple[int, list[StoredWorker]]:
        """Redis's clock (ms) and the workers that beat since ``since_ms``, newest first:
        with their heartbeat if it has not expired, and their lease. Two round trips,
        whatever the number of workers; the index keeps ids for 10 minutes."""
        k = self.keys
        indexed = await self.redis.zrevrangebyscore(k.workers, "+inf", since_ms, withscores=True)
        if not indexed:
            seconds, micros = await self.redis.time()
            return int(seconds) * 1000 + int(micros) // 1000, []
        ids = [raw.decode() for raw, _ in indexed]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.mget([k.worker(i) for i in ids])
            pipe.zmscore(k.leases, ids)
            (seconds, micros), beats, leases = await pipe.execute()
        return int(seconds) * 1000 + int(micros) // 1000, [
            StoredWorker(i, int(score), beat, None if lease is None else int(lease))
            for i, (_, score), beat, lease in zip(ids, indexed, beats, leases, strict=True)
        ]

    # -- distributed cron -----------------------------------------------------------------------

    async def fire_tick(
        self,
        name: str,
        *,
        tick_ms: int,
        claim_ttl_ms: int,
        owner: str,
        run_id: str,
        record: bytes,
        record_ttl_ms: int,
        skip_if_running: bool,
        skipped_entry: str,
        skipped_while_queued_entry: str,
        next_run: str,
        history_length: int,
        now_ms: int,
        paused_entry: str = "",
    ) -> int:
        """Fire one tick (see ``lua/fire.lua`` for what the answer means); a paused job's
        tick is claimed but not enqueued, ``paused_entry`` recorded once per pause."""
        k = self.keys
        c = k.cron(name)
        return int(
            await self._write(
                "fire",
                [
                    c.claim(tick_ms),
                    c.last_tick,
                    c.lease,
                    c.pending,
                    c.state,
                    c.history,
                    k.job(run_id),
                    k.result(run_id),
                    k.waiting,
                    k.wake,
                    k.tries,
                    k.paused("hosted"),
                ],
                [
                    tick_ms,
                    claim_ttl_ms,
                    owner,
                    run_id,
                    record,
                    record_ttl_ms,
                    "1" if skip_if_running else "0",
                    skipped_entry,
                    next_run,
                    WAKE_TOKENS_KEPT,
                    history_length,
                    skipped_while_queued_entry,
                    now_ms,
                    name,
                    paused_entry,
                ],
            )
        )

    async def start_run(
        self,
        name: str,
        run_id: str,
        *,
        lease_ms: int,
        skip_if_held: bool,
        scheduled_at: str,
        started_at: str,
        running_entry: str,
        retry: bool = False,
    ) -> int:
        """Take a distributed run's lease and record its start: 1 if it may go ahead, 0 if
        it is skipped (another run holds the lease), 2 if it must wait (a ``retry`` after a
        crash, while another run holds the lease)."""
        c = self.keys.cron(name)
        began = await self._scripts["start_run"].call(
            [c.lease, c.state],
            [
                run_id,
                lease_ms,
                "1" if skip_if_held else "0",
                scheduled_at,
                started_at,
                running_entry,
                "1" if retry else "0",
            ],
        )
        return int(began)

    async def renew_lease(self, name: str, run_id: str, *, lease_ms: int) -> bool:
        """Extend a run's lease; False if it lapsed (another run may have started)."""
        c = self.keys.cron(name)
        return bool(await self._scripts["renew_lease"].call([c.lease], [run_id, lease_ms]))

    async def release_lease(self, name: str, run_id: str) -> None:
        """Give up a run's lease, if it still holds it."""
        await self._scripts["release_lease"].call([self.keys.cron(name).lease], [run_id])

    # -- named locks (hostedjobs.locks) ----------------------------------------------------------

    async def acquire_lock(self, name: str, owner: str, *, ttl_ms: int) -> tuple[bool, int]:
        """Take the lock ``name`` for ``owner`` if it is free: ``(True, fencing token)``;
        else ``(False, ms until the holder's lock lapses)`` (-1: it has no TTL). An
        acknowledged write (see `replicas`): a failover cannot hand the lock, or its token,
        out twice."""
        k = self.keys.named_lock(name)
        taken, value = await self._write("acquire_lock", [k.owner, k.fence], [owner, ttl_ms])
        return bool(taken), int(value)

    async def renew_lock(self, name: str, owner: str, *, ttl_ms: int) -> bool:
        """Extend the lock ``name`` to ``ttl_ms`` from now; False if ``owner`` no longer
        holds it (it lapsed, and may be someone else's)."""
        owner_key = self.keys.named_lock(name).owner
        return bool(await self._scripts["renew_lease"].call([owner_key], [owner, ttl_ms]))

    async def release_lock(self, name: str, owner: str, *, wake_ms: int) -> bool:
        """Release the lock ``name`` if ``owner`` still holds it, waking one waiter (its
        wake token kept ``wake_ms``); False if it did not hold it."""
        k = self.keys.named_lock(name)
        return bool(
            await self._scripts["release_lock"].call([k.owner, k.released], [owner, wake_ms])
        )

    async def wait_for_lock_release(self, name: str, timeout_s: float) -> None:
        """Block until the lock ``name`` is released (or was, since the last wait), or for
        ``timeout_s`` (> 0)."""
        released = self.keys.named_lock(name).released
        # Redis >= 6 takes a fractional timeout; redis-py's annotation says int.
        await self.redis.blpop([released], timeout=timeout_s)  # type: ignore[arg-type,misc]

    async def record_run(
        self, name: str, entry: str, *, state: dict[str, str] | None, history_length: int
    ) -> None:
        """Add a run to a job's history; ``state`` (a finished run) updates its last run."""
        c = self.keys.cron(name)
        async with self.redis.pipeline(transaction=True) as pipe:
            if state is not None:
                pipe.hset(c.state, mapping=state)
                pipe.hdel(c.state, "running_run")
            pipe.lpush(c.history, entry)
            pipe.ltrim(c.history, 0, history_length - 1)
            await pipe.execute()

    async def last_fired_tick(self, name: str) -> int | None:
        """The newest tick (ms) any process fired for ``name``."""
        raw = await self.redis.get(self.keys.cron(name).last_tick)
        return None if raw is None else int(raw)

    async def cron_status(
        self, name: str, history_length: int
    ) -> tuple[dict[str, str], list[bytes], bool]:
        """A distributed job's state hash, its recent history and whether a run holds the lease."""
        c: CronKeys = self.keys.cron(name)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(c.state)
            pipe.lrange(c.history, 0, history_length - 1)
            pipe.exists(c.lease)
            raw_state, history, running = await pipe.execute()
        state = {key.decode(): value.decode() for key, value in raw_state.items()}
        return state, list(history), bool(running)

    # -- hosted jobs in every process -----------------------------------------------------------

    async def publish_hosted(
        self,
        process: str,
        snapshot: str,
        *,
        ttl_ms: int,
        now_ms: int,
        runs: dict[str, list[str]],
        last: dict[str, str],
        history_length: int,
    ) -> None:
        """Publish one process's hosted jobs in one transaction: its ``snapshot`` (JSON,
        expiring after ``ttl_ms`` unless published again), and per job name the finished
        ``runs`` (JSON, oldest first) added to the job's capped list and its ``last`` run."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(k.hosted_process(process), snapshot, px=ttl_ms)
            pipe.zadd(k.hosted_processes, {process: now_ms + ttl_ms})
            pipe.zremrangebyscore(k.hosted_processes, "-inf", now_ms)
            for name, entries in runs.items():
                if entries:
                    pipe.lpush(k.hosted(name).runs, *entries)
                    pipe.ltrim(k.hosted(name).runs, 0, history_length - 1)
            for name, entry in last.items():
                pipe.set(k.hosted(name).last, entry)
            await pipe.execute()

    async def forget_hosted_process(self, process: str) -> None:
        """Remove a stopping process's snapshot (its runs stay in the jobs' lists)."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(k.hosted_process(process))
            pipe.zrem(k.hosted_processes, process)
            await pipe.execute()

    async def read_hosted(
        self, names: Sequence[str], *, history_length: int, now_ms: int
    ) -> tuple[list[bytes], dict[str, tuple[list[bytes], bytes | None]], set[str]]:
        """The live processes' snapshots, each named job's recent runs (newest first) and
        last run, and the names of the paused hosted jobs."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(k.hosted_processes, now_ms, "+inf")
            pipe.smembers(k.paused("hosted"))
            for name in names:
                pipe.lrange(k.hosted(name).runs, 0, history_length - 1)
                pipe.get(k.hosted(name).last)
            replies = await pipe.execute()
        processes: list[bytes] = list(replies[0])
        snapshots: list[bytes] = []
        if processes:
            raw = await self.redis.mget([k.hosted_process(p.decode()) for p in processes])
            snapshots = [item for item in raw if item is not None]
        jobs = {
            name: (list(replies[2 + 2 * i]), replies[3 + 2 * i]) for i, name in enumerate(names)
        }
        return snapshots, jobs, {item.decode() for item in replies[1]}

    async def paused_names(self, what: str) -> set[str]:
        """The paused names of one kind (``"hosted"``: hosted jobs)."""
        members: set[bytes] = await self.redis.smembers(self.keys.paused(what))  # type: ignore[misc]
        return {item.decode() for item in members}

    async def set_paused(self, what: str, name: str, paused: bool) -> bool:
        """Pause (or resume) ``name`` of kind ``what`` and tell every process on the control
        channel; True if that changed anything. Resuming a hosted job also clears its
        distributed cron state's note of the pause (``lua/fire.lua``)."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            if paused:
                pipe.sadd(k.paused(what), name)
            else:
                pipe.srem(k.paused(what), name)
                if what == "hosted":
                    pipe.hdel(k.cron(name).state, "paused_noted")
            changed, *_ = await pipe.execute()
        with contextlib.suppress(NoPermissionError):  # an older ACL rule: processes poll
            await self.redis.publish(k.control, f"{'pause' if paused else 'resume'} {what} {name}")
        return bool(changed)

    async def job_pauses(self) -> dict[str, int]:
        """The pauses of on-demand job types (`KeyLayout.paused_jobs`): each one's field and
        when it began (ms)."""
        found: dict[bytes, bytes] = await self.redis.hgetall(self.keys.paused_jobs)  # type: ignore[misc]
        return {field.decode(): int(since) for field, since in found.items()}

    async def set_job_pauses(
        self, pause: Sequence[str], resume: Sequence[str], *, now_ms: int
    ) -> int:
        """Add the pauses ``pause`` and lift the pauses ``resume`` (fields of
        `KeyLayout.paused_jobs`), and tell every process on the control channel; the number
        of pauses that changed."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            for field in pause:
                pipe.hsetnx(k.paused_jobs, field, str(now_ms))
            if resume:
                pipe.hdel(k.paused_jobs, *resume)
            changed = sum(int(n) for n in await pipe.execute())
        if changed:
            with contextlib.suppress(NoPermissionError):  # an older ACL rule: processes poll
                await self.redis.publish(k.control, "pause jobs" if pause else "resume jobs")
        return changed

    async def parked_functions(self) -> list[str]:
        """The functions that have parked jobs (`park`)."""
        members: set[bytes] = await self.redis.smembers(self.keys.parked_functions)  # type: ignore[misc]
        return sorted(f.decode() for f in members)

    async def unpark_all(self, functions: Sequence[str], *, batch: int = 1000) -> int:
        """Move every parked job of ``functions`` back to the queue at its due time and wake
        the workers; how many moved."""
        moved = 0
        while chunk := await self.unpark(functions, limit=batch):
            moved += len(chunk)
        if moved:
            k = self.keys
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lpush(k.wake, *(["1"] * min(moved, WAKE_TOKENS_KEPT)))
                pipe.ltrim(k.wake, 0, WAKE_TOKENS_KEPT - 1)
                await pipe.execute()
        return moved

    def control(self) -> PubSub:
        """A pub/sub connection for operator notices (subscribe to `KeyLayout.control`)."""
        return self.redis.pubsub()


_KINDS = {JobStatus.SUCCEEDED: "s", JobStatus.FAILED: "f", JobStatus.CANCELLED: "c"}


def _history_counts(outcomes: Sequence[Finished | Requeued]) -> dict[str, int]:
    """What commit.lua adds to the minute's history hash for ``outcomes`` (all committed)."""
    return history_fields(
        (_KINDS[o.status] if isinstance(o, Finished) else "r", o.job_type, o.duration_s)
        for o in outcomes
        if (o.status in _KINDS if isinstance(o, Finished) else o.counted)
    )


_FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def _try_entry(outcome: Requeued, now_ms: int) -> str:
    """A failed try's entry in its job's history (JSON): its number, when, error, traceback."""
    return json.dumps(
        {
            "try": outcome.tries,
            "at": now_ms,
            "error": outcome.error or "",
            "traceback": outcome.traceback or "",
        }
    )


def try_entries(meta: dict[str, str]) -> list[dict[str, Any]]:
    """The try history entries of a meta hash (fields ``try:<n>``), oldest first."""
    entries = []
    for field, value in meta.items():
        if not field.startswith("try:"):
            continue
        try:
            entry = json.loads(value)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("try"), int):
            entries.append(entry)
    return sorted(entries, key=lambda entry: int(entry["try"]))


def _unreadable(key: str, found: str | None) -> str:
    """Why the job record in ``key`` cannot be read: it holds a ``found`` (a Redis type), or
    another type than a string (None)."""
    if found == "string":
        held = "an empty string"
    elif found is None:
        held = "a value of another Redis type"
    else:
        held = f"a Redis {found}"
    return (
        f"{key} holds {held}, not the string arq stores a record in; was it written by "
        "something other than hostedjobs or arq?"
    )


def _wrong_type(reply: object, key: str) -> str | None:
    """Why the reply to a GET of ``key`` is no record: an empty string, or (the GET failed)
    another type than a string."""
    if reply == b"":
        return _unreadable(key, "string")
    if not isinstance(reply, Exception):
        return None
    if isinstance(reply, ResponseError) and "WRONGTYPE" in str(reply):
        return _unreadable(key, None)
    raise reply
