"""Worker heartbeats: every worker process writes its own, so probes can tell who is alive.

arq keeps one health key per queue that every worker overwrites (and only hourly by default);
here each worker process has a key of its own, renewed every couple of seconds with a short
expiry, plus a sorted-set index so readers never scan the keyspace.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, NamedTuple

from .storage import Store

__all__ = [
    "BEAT_INTERVAL_S",
    "BEAT_TTL_S",
    "RATE_WINDOW_S",
    "RUNNING_LISTED",
    "STALE_AFTER_S",
    "RunningJob",
    "WorkerBeat",
    "WorkerState",
    "new_worker_id",
    "read_beats",
    "read_worker_states",
    "write_beat",
]

BEAT_INTERVAL_S = 2.0
"""How often a worker writes its heartbeat."""
BEAT_TTL_S = 10.0
"""A heartbeat older than this means the worker is gone (or its loop is stuck)."""
STALE_AFTER_S = 3 * BEAT_INTERVAL_S
"""A heartbeat older than this (two beats missed in a row) marks its worker stale: still
listed (its key lives until `BEAT_TTL_S`), but flagged. One late beat is common on a busy
host (a beat is skipped while the previous write is still out), two in a row are not."""
RUNNING_LISTED = 50
"""A heartbeat lists at most this many of its worker's running jobs (it counts them all)."""
RATE_WINDOW_S = 60.0
"""The worker's rate is measured over the heartbeats of about this many seconds."""
_INDEX_KEPT_S = 600

logger = logging.getLogger("hostedjobs.health")


def new_worker_id() -> str:
    """``host:pid:random``: unique per worker process, readable in a list."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class RunningJob(NamedTuple):
    """One job a worker is running: its id and its function (``"type@version"``, or ``""``
    while the worker is still reading its record)."""

    job_id: str
    function: str


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    """What a worker says about itself at each heartbeat.

    Fields after ``functions`` were added later: a beat written by an older hostedjobs reads
    with their defaults (``concurrency`` 0 and ``rate_per_s`` None mean unknown).
    """

    worker_id: str
    hostname: str
    pid: int
    queue: str
    started_at: float
    beat_at: float
    running: int
    completed: int
    failed: int
    retried: int
    functions: tuple[str, ...] = ()
    """The job functions the worker can run (``"type@version"``, distributed cron jobs)."""
    concurrency: int = 0
    """How many jobs the worker's process runs at once (shared by the workers of all shards
    of a sharded queue in one process); 0: unknown (an older beat)."""
    running_jobs: tuple[RunningJob, ...] = ()
    """The first `RUNNING_LISTED` of its running jobs, by id (``running`` counts them all)."""
    shard: int | None = None
    """Which shard of a sharded queue this worker serves (0-based), None if unsharded."""
    shards: int = 1
    """How many shards the queue has."""
    recent_finished: int = 0
    """Jobs finished (succeeded, failed or cancelled) in the last ``recent_s`` seconds."""
    recent_s: float = 0.0
    """The span, in seconds, between the beat ``recent_finished`` counts from and this one
    (up to about `RATE_WINDOW_S`); 0 for the first beat."""

    @property
    def age_s(self) -> float:
        """Seconds since this heartbeat was written."""
        return time.time() - self.beat_at

    @property
    def stale(self) -> bool:
        """True once this heartbeat is older than `STALE_AFTER_S`."""
        return self.age_s > STALE_AFTER_S

    @property
    def rate_per_s(self) -> float | None:
        """Jobs finished per second over the last ``recent_s`` seconds (about a minute of
        heartbeats); None before the worker's second beat, or for an older beat."""
        if self.recent_s <= 0:
            return None
        return self.recent_finished / self.recent_s


async def write_beat(store: Store, beat: WorkerBeat) -> None:
    """Store ``beat`` (expiring after `BEAT_TTL_S`) and index it by time."""
    await store.write_beat(
        beat.worker_id,
        json.dumps(asdict(beat)),
        now_ms=int(beat.beat_at * 1000),
        ttl_ms=int(BEAT_TTL_S * 1000),
        index_kept_ms=_INDEX_KEPT_S * 1000,
    )


async def read_beats(store: Store, *, max_age_s: float = BEAT_TTL_S) -> list[WorkerBeat]:
    """Workers of the store's queue whose last heartbeat is at most ``max_age_s`` old,
    newest first."""
    raw = await store.read_beats(since_ms=int((time.time() - max_age_s) * 1000))
    beats = [beat for item in raw if (beat := _parse(item)) is not None]
    return [beat for beat in beats if beat.age_s <= max_age_s]


@dataclass(frozen=True, slots=True)
class WorkerState:
    """A worker as the dashboard's workers page shows it: its last heartbeat, if it has not
    expired, and its lease.

    ``lease``: ``"held"`` (its claims are its own), ``"lapsed"`` (it stopped renewing it, and
    no other worker has given its jobs back yet) or ``"none"`` (released at a clean stop, or
    taken back by another worker once it lapsed; a live worker without one lost it).
    """

    worker_id: str
    last_beat_at: float
    """When it last beat (epoch seconds, by its own clock)."""
    beat: WorkerBeat | None
    """Its last heartbeat; None once it expired (after `BEAT_TTL_S`)."""
    lease: Literal["held", "lapsed", "none"]

    @property
    def state(self) -> Literal["alive", "stale", "gone"]:
        """``"alive"``; ``"stale"`` once its heartbeat is older than `STALE_AFTER_S`;
        ``"gone"`` once it expired (the worker stopped without a clean shutdown, or its loop
        has been stuck for `BEAT_TTL_S`)."""
        if self.beat is None or time.time() - self.last_beat_at > BEAT_TTL_S:
            return "gone"
        return "stale" if self.beat.stale else "alive"


async def read_worker_states(
    stores: Sequence[Store], *, gone_within_s: float = _INDEX_KEPT_S
) -> list[WorkerState]:
    """Every worker of the stores' queues (the shards of one queue) that beat in the last
    ``gone_within_s`` seconds (at most 10 minutes, how long the index keeps them), newest
    first: two round trips per store, no keyspace scan. A worker that stopped cleanly is
    not listed; one whose heartbeat expired is, as ``"gone"``."""
    since_ms = int((time.time() - gone_within_s) * 1000)
    states: list[WorkerState] = []
    read = await asyncio.gather(*(store.read_workers(since_ms=since_ms) for store in stores))
    for redis_ms, stored in read:
        for worker in stored:
            beat = None if worker.beat is None else _parse(worker.beat)
            lease: Literal["held", "lapsed", "none"] = (
                "none"
                if worker.lease_ms is None
                else "held"
                if worker.lease_ms > redis_ms
                else "lapsed"
            )
            states.append(WorkerState(worker.worker_id, worker.beat_ms / 1000, beat, lease))
    return sorted(states, key=lambda state: -state.last_beat_at)


def _parse(item: bytes) -> WorkerBeat | None:
    """A stored heartbeat, or None (logged) if hostedjobs cannot read it."""
    # Beats of other hostedjobs versions may lack fields or carry new ones; one not
    # written by hostedjobs at all is skipped, not a reason to fail every reader.
    try:
        data: dict[str, Any] = json.loads(item)
        data = {key: value for key, value in data.items() if key in _KNOWN}
        functions = data.get("functions") or ()
        data["functions"] = tuple(str(f) for f in functions) if isinstance(functions, list) else ()
        running = data.get("running_jobs") or ()
        data["running_jobs"] = (
            tuple(RunningJob(str(job_id), str(function)) for job_id, function in running)
            if isinstance(running, list)
            else ()
        )
        beat = WorkerBeat(**data)
        if isinstance(beat.beat_at, bool) or not isinstance(beat.beat_at, int | float):
            raise TypeError(f"beat_at is {beat.beat_at!r}, not a time")
    except (ValueError, TypeError, AttributeError) as exc:
        logger.warning("skipped a worker heartbeat hostedjobs cannot read: %s", exc)
        return None
    return beat


_KNOWN = frozenset(f.name for f in fields(WorkerBeat))
