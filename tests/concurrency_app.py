"""A host for the concurrency-limit tests' worker processes:
`hostedjobs worker tests.concurrency_app:host`.

Environment: CONCURRENCY_APP_QUEUE (queue name), CONCURRENCY_APP_SHARDS (how many shards,
default 1), HOSTEDJOBS_REDIS_URL (also where runs
count themselves). Each run of `Limited` counts itself in ``<tag>:running:<customer>``
while it runs, and appends the count it saw to ``<tag>:seen:<customer>``: the most runs of
one customer seen at once, across processes.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from redis.asyncio import Redis

from hostedjobs import ConcurrencyLimit, JobHost, RetryPolicy, job_type

host = JobHost(
    queue_name=os.environ.get("CONCURRENCY_APP_QUEUE", "concurrency-app"),
    concurrency=6,
    shards=int(os.environ.get("CONCURRENCY_APP_SHARDS", "1")),
)
_redis: Redis | None = None


def _client() -> Redis:
    global _redis
    if _redis is None:
        _redis = Redis.from_url(os.environ["HOSTEDJOBS_REDIS_URL"])
    return _redis


@job_type("tests.concurrency-app.limited")
@dataclass
class Limited:
    """Count itself as running for ``hold`` seconds (one try: a lost run is not rerun)."""

    tag: str
    customer: int
    hold: float = 0.2


@host.handler(
    Limited,
    retry=RetryPolicy(max_tries=1),
    concurrency=ConcurrencyLimit(2, key=lambda job: job.customer),
)
async def limited(job: Limited) -> None:
    await run_counted(_client(), job.tag, str(job.customer), job.hold)


async def run_counted(redis: Redis, tag: str, group: str, hold: float) -> None:
    """Count one run of ``group`` while it sleeps ``hold`` seconds (see the module)."""
    seen = await redis.incr(f"{tag}:running:{group}")
    await redis.rpush(f"{tag}:seen:{group}", seen)  # type: ignore[misc]
    await redis.rpush(f"{tag}:pids", os.getpid())  # type: ignore[misc]
    try:
        await asyncio.sleep(hold)
    finally:
        await redis.decr(f"{tag}:running:{group}")


@job_type("tests.concurrency-app.solo")
@dataclass
class Solo:
    """Like `Limited`, one run at a time across the fleet (and one try)."""

    tag: str
    hold: float = 0.05


@host.handler(Solo, retry=RetryPolicy(max_tries=1), concurrency=ConcurrencyLimit(1))
async def solo(job: Solo) -> None:
    await run_counted(_client(), job.tag, "solo", job.hold)
