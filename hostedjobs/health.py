"""Worker heartbeats: every worker process writes its own, so probes can tell who is alive.

arq keeps one health key per queue that every worker overwrites (and only hourly by default);
here each worker process has a key of its own, renewed every couple of seconds with a short
expiry, plus a sorted-set index so readers never scan the keyspace.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from arq.connections import ArqRedis

__all__ = [
    "BEAT_INTERVAL_S",
    "BEAT_TTL_S",
    "WorkerBeat",
    "new_worker_id",
    "read_beats",
    "remove_beat",
    "write_beat",
]

BEAT_INTERVAL_S = 2.0
"""How often a worker writes its heartbeat."""
BEAT_TTL_S = 10.0
"""A heartbeat older than this means the worker is gone (or its loop is stuck)."""
_INDEX_KEPT_S = 600


def new_worker_id() -> str:
    """``host:pid:random``: unique per worker process, readable in a list."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    """What a worker says about itself at each heartbeat."""

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

    @property
    def age_s(self) -> float:
        """Seconds since this heartbeat was written."""
        return time.time() - self.beat_at


def _index(queue: str) -> str:
    return f"hostedjobs:{queue}:workers"


def _key(queue: str, worker_id: str) -> str:
    return f"hostedjobs:{queue}:worker:{worker_id}"


async def write_beat(pool: ArqRedis, beat: WorkerBeat) -> None:
    """Store ``beat`` (expiring after `BEAT_TTL_S`) and index it by time."""
    now_ms = int(beat.beat_at * 1000)
    async with pool.pipeline(transaction=False) as pipe:
        pipe.set(
            _key(beat.queue, beat.worker_id), json.dumps(asdict(beat)), px=int(BEAT_TTL_S * 1000)
        )
        pipe.zadd(_index(beat.queue), {beat.worker_id: now_ms})
        pipe.zremrangebyscore(_index(beat.queue), "-inf", now_ms - _INDEX_KEPT_S * 1000)
        await pipe.execute()


async def remove_beat(pool: ArqRedis, queue: str, worker_id: str) -> None:
    """Forget a worker that stopped cleanly, so probes see it gone at once."""
    async with pool.pipeline(transaction=False) as pipe:
        pipe.delete(_key(queue, worker_id))
        pipe.zrem(_index(queue), worker_id)
        await pipe.execute()


async def read_beats(
    pool: ArqRedis, queue: str, *, max_age_s: float = BEAT_TTL_S
) -> list[WorkerBeat]:
    """Workers of ``queue`` whose last heartbeat is at most ``max_age_s`` old, newest first."""
    since_ms = int((time.time() - max_age_s) * 1000)
    async with pool.pipeline(transaction=False) as pipe:
        pipe.zrevrangebyscore(_index(queue), "+inf", since_ms)
        (ids,) = await pipe.execute()
    if not ids:
        return []
    async with pool.pipeline(transaction=False) as pipe:
        pipe.mget([_key(queue, worker_id.decode()) for worker_id in ids])
        (raw,) = await pipe.execute()
    beats: list[WorkerBeat] = []
    for item in raw:
        if item is not None:
            data: dict[str, Any] = json.loads(item)
            beats.append(WorkerBeat(**data))
    return [beat for beat in beats if beat.age_s <= max_age_s]
