"""Sharded queues: one logical queue split into shards whose keys live on different primaries.

One Redis primary runs every script of a queue on its single thread, so one queue cannot go
faster than one primary. A sharded queue is N queues (shards), each with every key under its
own hash tag (`KeyLayout` with ``hash_tag=True``), so each shard's scripts run on the one
node that owns its slot.

Shard names are chosen so that shard ``i``'s slot lies in the ``i``-th of N equal ranges of
the 16384 slots. ``redis-cli --cluster create`` (and the managed services that follow it)
give each of M primaries one contiguous, equal range of slots, so N shards over N primaries
(or over a divisor of N) land one per primary (or N/M per primary) instead of wherever
their names happen to hash. The name is deterministic (``Q~i``, else ``Q~i.1``, ``Q~i.2``…,
the first whose slot falls in the range), so every process finds the same shards. The
ranges are cut as redis-cli cuts them, and a name's slot is kept a few slots away from the
edges of its range, so a tool that rounds the split one slot differently changes nothing.

An on-demand job lives on the shard ``crc32(id) % N``: any process finds it from its id
alone. Ids that carry a shard's hash tag (the runs of distributed cron jobs, which live on
shard 0) live on that shard.

Changing N strands the jobs queued under the old N (their ids route elsewhere), so the shard
count is recorded in Redis (`settle_shard_count`) and a different one is refused while jobs
wait under the old one.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from ..exceptions import ConfigurationError
from .layout import KeyLayout

__all__ = [
    "MAX_SHARDS",
    "ClientFor",
    "ShardLayout",
    "settle_shard_count",
    "shard_count_key",
    "shard_name",
    "slot_of_queue",
    "slot_ranges",
]

MAX_SHARDS = 256
"""At most this many shards: more primaries than clusters run, and the names are found in
well under a second (each takes about ``count`` tries)."""

_EDGE = 4
"""Slots kept clear at each edge of a shard's range (see the module's docstring)."""


def slot_ranges(count: int) -> list[range]:
    """The 16384 slots cut into ``count`` contiguous ranges as ``redis-cli --cluster create``
    cuts them among ``count`` primaries (its float cursor, rounded)."""
    per = REDIS_CLUSTER_HASH_SLOTS / count
    ranges: list[range] = []
    first = 0
    for i in range(count):
        last = int(i * per + per - 1 + 0.5)
        if i == count - 1 or last >= REDIS_CLUSTER_HASH_SLOTS:
            last = REDIS_CLUSTER_HASH_SLOTS - 1
        last = max(last, first)
        ranges.append(range(first, last + 1))
        first = last + 1
    return ranges


def slot_of_queue(name: str) -> int:
    """The cluster slot every key of the hash-tagged queue ``name`` hashes to."""
    return int(key_slot(KeyLayout(name, hash_tag=True).namespace.encode()))


def shard_name(queue: str, index: int, count: int) -> str:
    """The queue name of shard ``index`` of ``count`` of ``queue``: ``queue~index``, or
    ``queue~index.k`` for the first ``k`` whose slot falls inside the shard's slot range."""
    slots = slot_ranges(count)[index]
    edge = min(_EDGE, (len(slots) - 1) // 2)
    low, high = slots.start + edge, slots.stop - edge
    candidate = f"{queue}~{index}"
    k = 0
    while not low <= slot_of_queue(candidate) < high:
        k += 1
        candidate = f"{queue}~{index}.{k}"
    return candidate


@dataclass(frozen=True, slots=True)
class ShardLayout:
    """The shards of one queue: their names, and which shard holds a job id."""

    queue: str
    count: int
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = (
            (self.queue,)
            if self.count == 1
            else tuple(shard_name(self.queue, i, self.count) for i in range(self.count))
        )
        object.__setattr__(self, "names", names)

    def of(self, job_id: str) -> int:
        """The index of the shard holding the job ``job_id``: the shard named in the id's
        hash tag (distributed cron runs), else ``crc32(id) % count``."""
        if self.count == 1:
            return 0
        if job_id.startswith("{hostedjobs:"):
            tag = job_id[len("{hostedjobs:") : job_id.find("}")]
            if tag in self.names:
                return self.names.index(tag)
        return zlib.crc32(job_id.encode()) % self.count

    def group(self, job_ids: Sequence[str]) -> dict[int, list[int]]:
        """The positions in ``job_ids`` of the ids each shard holds, by shard index."""
        groups: dict[int, list[int]] = {}
        for position, job_id in enumerate(job_ids):
            groups.setdefault(self.of(job_id), []).append(position)
        return groups


def shard_count_key(queue: str, *, hash_tag: bool = False) -> str:
    """The key recording how many shards ``queue`` has (absent: never sharded), in the
    queue's own namespace (``hostedjobs:<queue>:shards``, which an ACL user of the queue may
    already reach). With ``hash_tag`` (a cluster) it carries the queue's hash tag, so it
    lives on one known node whatever the count."""
    return f"{KeyLayout(queue, hash_tag=hash_tag).namespace}:shards"


ClientFor = Callable[[str], Redis]
"""Given a shard's queue name, the client that reaches the node holding its keys."""


async def _holds_jobs(client_for: ClientFor, queue: str, count: int, hash_tag: bool) -> bool:
    """Whether any shard of ``queue`` split ``count`` ways holds waiting or running jobs."""

    async def size(name: str) -> int:
        keys = KeyLayout(name, hash_tag=hash_tag or count > 1)
        async with client_for(name).pipeline(transaction=False) as pipe:
            pipe.zcard(keys.waiting)
            pipe.zcard(keys.claimed)
            waiting, running = await pipe.execute()
        return int(waiting) + int(running)

    sizes = await asyncio.gather(*(size(name) for name in ShardLayout(queue, count).names))
    return any(sizes)


async def settle_shard_count(
    client_for: ClientFor, queue: str, count: int, *, hash_tag: bool = False
) -> None:
    """Record that ``queue`` has ``count`` shards, or refuse a count that strands jobs.

    A queue recorded (or, unrecorded, used unsharded) with another count may change only once
    no job waits or runs under the old count; otherwise `ConfigurationError` names both
    counts and the fix. An unsharded queue that was never sharded writes nothing (one GET).
    ``client_for`` gives each shard's client (by its queue name; the record is read through
    ``client_for(queue)``); ``hash_tag``: the unsharded queue is hash-tagged too (a cluster).
    """
    key = shard_count_key(queue, hash_tag=hash_tag)
    redis = client_for(queue)
    raw = await redis.get(key)
    recorded = 1 if raw is None else int(raw)
    if recorded == count:
        return
    if await _holds_jobs(client_for, queue, recorded, hash_tag):
        raise ConfigurationError(
            f"queue {queue!r} holds jobs queued with shards={recorded}; starting it with "
            f"shards={count} would strand them (their ids route to other shards). Run with "
            f"shards={recorded} until the queue is drained (no job queued, scheduled or "
            f"running), then change it; or use a new queue_name for shards={count}"
        )
    if count == 1:
        await redis.delete(key)
    else:
        await redis.set(key, count)
