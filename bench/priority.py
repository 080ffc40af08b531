"""Priorities: how soon a job with a priority starts behind a backlog, and what it costs.

Queues a backlog of no-op jobs without a priority (``enqueue_many`` in batches), starts a
worker, and once it drains at a steady rate enqueues, one at a time, jobs with a priority
(a head start of an hour): for each, the time from just before its enqueue call to its start
(pickup latency) and how many jobs started in between (pickup position). A job enqueued
without a priority behind the same backlog would wait for all of it: its wait is estimated
from the worker's drain rate. Also times enqueues with and without a priority (single
``enqueue`` calls and ``enqueue_many``), rounds alternating, on queues no worker reads.

``python -m bench.priority [--redis-url URL] [--backlog N] [--concurrency C] [--urgent K]``;
without a URL it starts its own redis-server (no persistence). Prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from hostedjobs import JobHost, job_type
from hostedjobs.storage.embedded import EmbeddedRedis

HEAD_START = timedelta(hours=1)
BATCH = 5000


@job_type("bench.priority")
@dataclass
class Job:
    seq: int
    """From 0 for the backlog; -1, -2, ... for the jobs with a priority."""


class Starts:
    """Every job start, in order: (``time.perf_counter()``, seq)."""

    def __init__(self, warm_up: int) -> None:
        self.log: list[tuple[float, int]] = []
        self.seen: dict[int, int] = {}
        """seq of a job with a priority -> its index in ``log``."""
        self.warm_up = warm_up
        self.warm = asyncio.Event()
        """Set once ``warm_up`` jobs started."""
        self.urgent = asyncio.Event()
        """Set when a job with a priority starts."""

    def started(self, seq: int) -> None:
        self.log.append((time.perf_counter(), seq))
        if seq < 0:
            self.seen[seq] = len(self.log) - 1
            self.urgent.set()
        if len(self.log) == self.warm_up:
            self.warm.set()


async def enqueue_costs(url: str, rounds: int, single: int, many: int) -> None:
    """Enqueue timings with and without a priority, rounds alternating."""
    host = JobHost(
        redis_url=url,
        queue_name=f"bench-prio-cost-{uuid.uuid4().hex[:8]}",
        accept_risks={"persistence"},
    )
    host.handler(Job)(_noop)
    singles: dict[bool, list[float]] = {False: [], True: []}
    batches: dict[bool, list[float]] = {False: [], True: []}
    async with host.connected():
        scheduler = host.scheduler
        for r in range(rounds):
            for with_priority in (False, True) if r % 2 == 0 else (True, False):
                priority = HEAD_START if with_priority else None
                began = time.perf_counter()
                for i in range(single):
                    await scheduler.enqueue(Job(seq=i), priority=priority)
                singles[with_priority].append((time.perf_counter() - began) / single * 1e6)
                began = time.perf_counter()
                for start in range(0, many, BATCH):
                    await scheduler.enqueue_many(
                        (Job(seq=i) for i in range(start, min(start + BATCH, many))),
                        priority=priority,
                    )
                batches[with_priority].append(many / (time.perf_counter() - began))
    for with_priority, label in ((False, "without priority"), (True, "with priority")):
        print(
            f"enqueue {label:<17} {statistics.median(singles[with_priority]):7.1f} µs/call "
            f"(one at a time)   enqueue_many {statistics.median(batches[with_priority]):>9,.0f} "
            "jobs/s"
        )


async def _noop(job: Job) -> None:
    return None


async def pickup(url: str, backlog: int, concurrency: int, urgent: int) -> None:
    queue = f"bench-prio-{uuid.uuid4().hex[:8]}"
    starts = Starts(warm_up=min(2000, backlog // 10))
    host = JobHost(
        redis_url=url, queue_name=queue, concurrency=concurrency, accept_risks={"persistence"}
    )

    @host.handler(Job)
    async def run(job: Job) -> None:
        starts.started(job.seq)

    producer = JobHost(
        redis_url=url, queue_name=queue, run_worker=False, accept_risks={"persistence"}
    )
    async with producer.connected():
        began = time.perf_counter()
        for start in range(0, backlog, BATCH):
            await producer.scheduler.enqueue_many(
                Job(seq=i) for i in range(start, min(start + BATCH, backlog))
            )
        took = time.perf_counter() - began
        print(f"backlog: {backlog:,} jobs enqueued in {took:.2f} s ({backlog / took:,.0f} jobs/s)")
    latencies: list[float] = []
    positions: list[int] = []
    async with host.run():
        # Steady state first: the drain rate over a second, after a warm-up.
        await starts.warm.wait()
        count0, t0 = len(starts.log), time.perf_counter()
        await asyncio.sleep(1.0)
        rate = (len(starts.log) - count0) / (time.perf_counter() - t0)
        left = await host.scheduler.count("queued")
        print(
            f"worker (concurrency {concurrency}): drains {rate:,.0f} jobs/s; {left:,} jobs "
            f"queued: a job enqueued now without a priority would wait ~{left / rate:.1f} s "
            f"(pickup position ~{left:,})"
        )
        for k in range(urgent):
            seq = -(k + 1)
            starts.urgent.clear()
            sent, before = time.perf_counter(), len(starts.log)
            await host.scheduler.enqueue(Job(seq=seq), priority=HEAD_START)
            await starts.urgent.wait()
            index = starts.seen[seq]
            latencies.append((starts.log[index][0] - sent) * 1000)
            positions.append(index - before + 1)
            await asyncio.sleep(0.05)
        left = await host.scheduler.count("queued")
    print(
        f"with priority ({urgent} jobs, head start {HEAD_START}): pickup latency "
        f"median {statistics.median(latencies):.1f} ms, max {max(latencies):.1f} ms; "
        f"position median {statistics.median(positions):g}, max {max(positions)} "
        f"(1 = the next job started)"
    )
    print(f"backlog still queued at the end: {left:,} jobs")


async def main(url: str, backlog: int, concurrency: int, urgent: int) -> None:
    await enqueue_costs(url, rounds=4, single=1000, many=20_000)
    await pickup(url, backlog, concurrency, urgent)


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.priority", description=__doc__)
    parser.add_argument("--redis-url", help="default: a redis-server of its own")
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--urgent", type=int, default=20)
    args = parser.parse_args()
    if args.redis_url:
        asyncio.run(main(args.redis_url, args.backlog, args.concurrency, args.urgent))
        return
    with tempfile.TemporaryDirectory() as data:
        server = EmbeddedRedis(Path(data), persistent=False)
        url = server.start()
        try:
            asyncio.run(main(url, args.backlog, args.concurrency, args.urgent))
        finally:
            server.shutdown()


if __name__ == "__main__":
    cli()
