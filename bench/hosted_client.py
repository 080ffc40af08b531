"""The enqueuing side of hostedjobs in the benchmark: enqueue rates, preload, pickup feed.

`bench.engine` calls these coroutines in its own process for the current tree. For
``--baseline REV`` it runs this file as a script, ``python -c "import runpy; ..."`` with the
working directory and ``PYTHONPATH`` at REV's checkout, so that ``hostedjobs``,
``bench.hosted_worker`` and ``bench.common`` are REV's: the jobs are written the way REV's
engine reads them, through REV's `BenchJob` and `build_host`. Hence absolute imports, and
nothing from ``bench.common`` beyond what REV's may be expected to have.

Script modes (``bench.common.worker_arguments``' command line): ``enqueue`` (``WARM_UP_JOBS``
untimed, then ``--jobs`` timed single enqueues unless it is 0; then, if ``--bulk-jobs`` is not
0, one timed bulk call), ``preload`` (``--jobs`` jobs each sleeping ``--sleep``) and ``feed``
(the pickup test's enqueuer). Each prints one JSON line with the ``hostedjobs`` it imported.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import hostedjobs
from bench.common import LATENCY_INTERVAL_S, Recorder, emit, worker_arguments
from bench.hosted_worker import BenchJob, build_host

__all__ = [
    "WARM_UP_JOBS",
    "hosted_bulk_rate",
    "hosted_enqueue_rate",
    "hosted_latency_feed",
    "hosted_preload",
    "latency_feed",
    "main",
]

WARM_UP_JOBS = 100
"""Untimed enqueues before the timed ones (connection, script load): the number
``bench.common.WARM_UP_JOBS`` has, not imported from it, since REV's may predate it."""


async def hosted_enqueue_rate(url: str, n: int, *, queue: str) -> float:
    """Sequential `Scheduler.enqueue` calls from one client; jobs/s."""
    host = build_host(url, queue, Recorder(), run_worker=False)
    async with host.run():
        scheduler = host.scheduler
        for i in range(WARM_UP_JOBS):  # warm-up: connection, script load
            await scheduler.enqueue(BenchJob(seq=-i))
        start = time.perf_counter()
        for i in range(n):
            await scheduler.enqueue(BenchJob(seq=i))
        return n / (time.perf_counter() - start)


async def hosted_bulk_rate(url: str, n: int, *, queue: str) -> float:
    """One `Scheduler.enqueue_many` call for ``n`` jobs (building them included); jobs/s."""
    host = build_host(url, queue, Recorder(), run_worker=False)
    async with host.run():
        scheduler = host.scheduler
        await scheduler.enqueue_many(BenchJob(seq=-i) for i in range(WARM_UP_JOBS))  # warm-up
        start = time.perf_counter()
        await scheduler.enqueue_many([BenchJob(seq=i) for i in range(n)])
        return n / (time.perf_counter() - start)


async def hosted_preload(url: str, n: int, sleep_s: float = 0.0, *, queue: str) -> None:
    """Queue ``n`` jobs through `Scheduler.enqueue_many`."""
    host = build_host(url, queue, Recorder(), run_worker=False)
    async with host.run():
        await host.scheduler.enqueue_many(BenchJob(seq=i, sleep_s=sleep_s) for i in range(n))


async def latency_feed(enqueue: Callable[[int, float], Awaitable[object]], n: int) -> None:
    """Call ``enqueue(seq, sent_at)`` ``n`` times, one every ``LATENCY_INTERVAL_S``."""
    start = time.perf_counter()
    for i in range(n):
        delay = start + i * LATENCY_INTERVAL_S - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at = time.time()
        await enqueue(i, sent_at)


async def hosted_latency_feed(url: str, n: int, *, queue: str) -> None:
    """Feed the latency jobs through `Scheduler.enqueue`."""
    host = build_host(url, queue, Recorder(), run_worker=False)
    async with host.run():
        scheduler = host.scheduler

        async def enqueue(seq: int, sent_at: float) -> None:
            await scheduler.enqueue(BenchJob(seq=seq, sent_at=sent_at))

        await latency_feed(enqueue, n)


async def _enqueue(url: str, queue: str, n: int, bulk_n: int) -> dict[str, Any]:
    single = await hosted_enqueue_rate(url, n, queue=queue) if n else None
    bulk = await hosted_bulk_rate(url, bulk_n, queue=queue) if bulk_n else None
    return {"single": single, "bulk": bulk, "has_bulk": True}


def main() -> None:
    """Run one enqueuing mode against the ``hostedjobs`` on the path; print its JSON line."""
    args = worker_arguments(__doc__ or "").parse_args()
    url, queue, n = args.redis_url, args.queue, args.jobs
    result: dict[str, Any]
    if args.mode == "enqueue":
        result = asyncio.run(_enqueue(url, queue, n, args.bulk_jobs))
    elif args.mode == "preload":
        asyncio.run(hosted_preload(url, n, args.sleep, queue=queue))
        result = {"jobs": n}
    elif args.mode == "feed":
        asyncio.run(hosted_latency_feed(url, n, queue=queue))
        result = {"jobs": n}
    else:
        raise SystemExit(f"{args.mode!r} is a worker mode: run bench.hosted_worker")
    emit({**result, "hostedjobs": hostedjobs.__file__})


if __name__ == "__main__":
    main()
