"""The hot-path cost of pausing job types: one worker drains N preloaded no-op jobs of
`bench.hosted_worker.BenchJob`, with no pause in force and with a pause of an unrelated job
type (every claimed job is then looked up in the set of paused types), rounds alternating.

``python -m bench.pauses [--redis-url URL] [--jobs N] [--rounds R]``; without a URL it
starts its own redis-server (no persistence). Prints jobs/s and worker CPU µs per job, per
round and as medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from hostedjobs import job_type
from hostedjobs.storage.embedded import EmbeddedRedis

from .common import Recorder
from .hosted_worker import BenchJob, build_host


@job_type("bench.unrelated")
@dataclass
class Unrelated:
    """A job type the drain never sees, paused in the second case."""

    n: int


async def drain(url: str, jobs: int, *, paused: bool, concurrency: int) -> tuple[float, float]:
    """One drain; (jobs/s, worker CPU µs per job)."""
    queue = f"bench-pauses-{uuid.uuid4().hex[:8]}"
    recorder = Recorder(expected=jobs)
    host = build_host(url, queue, recorder, run_worker=True)

    @host.handler(Unrelated)
    async def unrelated(job: Unrelated) -> None:
        raise AssertionError("the bench never enqueues it")

    async with host.connected():
        for start in range(0, jobs, 1000):
            await host.scheduler.enqueue_many(
                BenchJob(seq=i) for i in range(start, min(start + 1000, jobs))
            )
        if paused:
            await host.pause_jobs("bench.unrelated")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    async with host.run(concurrency=concurrency, burst=True):
        await host.wait_until_idle()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    assert recorder.count == jobs, (recorder.count, jobs)
    return jobs / wall, cpu / jobs * 1e6


async def main(url: str, jobs: int, rounds: int, concurrency: int) -> None:
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for r in range(rounds):
        for paused in (False, True) if r % 2 == 0 else (True, False):
            rate, cpu_us = await drain(url, jobs, paused=paused, concurrency=concurrency)
            results[paused].append((rate, cpu_us))
            label = "unrelated type paused" if paused else "no pause"
            print(f"round {r + 1}: {label:<22} {rate:>8,.0f} jobs/s {cpu_us:7.1f} µs/job")
    for paused, label in ((False, "no pause"), (True, "unrelated type paused")):
        rates = [rate for rate, _ in results[paused]]
        cpus = [cpu for _, cpu in results[paused]]
        print(
            f"median: {label:<22} {statistics.median(rates):>8,.0f} jobs/s "
            f"{statistics.median(cpus):7.1f} µs/job"
        )


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pauses", description=__doc__)
    parser.add_argument("--redis-url", help="default: a redis-server of its own")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    if args.redis_url:
        asyncio.run(main(args.redis_url, args.jobs, args.rounds, args.concurrency))
        return
    with tempfile.TemporaryDirectory() as data:
        server = EmbeddedRedis(Path(data), persistent=False)
        url = server.start()
        try:
            asyncio.run(main(url, args.jobs, args.rounds, args.concurrency))
        finally:
            server.shutdown()


if __name__ == "__main__":
    cli()
