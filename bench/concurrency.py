"""The per-job cost of a concurrency limit, off and on: one worker drains N preloaded no-op
jobs with no limit, with a limit that never binds (at least the worker's concurrency; one
for the type, and one per payload key, which decodes the payload for the key), and with a
binding limit (a quarter of the concurrency: jobs wait, off the queue, for slots), rounds
alternating their order.

``python -m bench.concurrency [--redis-url URL] [--jobs N] [--rounds R] [--concurrency C]``;
without a URL it starts its own redis-server (no persistence). Prints jobs/s, worker CPU
µs per job and the limit's wall µs per job against no limit, per round and as medians.
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

from hostedjobs import ConcurrencyLimit, JobHost, job_type
from hostedjobs.storage.embedded import EmbeddedRedis


@job_type("bench.limited")
@dataclass
class Limited:
    """A no-op job, of one of 4 customers."""

    seq: int
    customer: int


CASES = ("no limit", "limit never binds", "keyed, never binds", "binding limit")


def _limit(case: str, concurrency: int) -> ConcurrencyLimit[Limited] | None:
    if case == "limit never binds":
        return ConcurrencyLimit(concurrency)
    if case == "keyed, never binds":
        return ConcurrencyLimit(concurrency, key=lambda job: job.customer)
    if case == "binding limit":
        return ConcurrencyLimit(max(concurrency // 4, 1))
    return None


async def drain(url: str, jobs: int, *, case: str, concurrency: int) -> tuple[float, float]:
    """One drain; (jobs/s, worker CPU µs per job)."""
    queue = f"bench-concurrency-{uuid.uuid4().hex[:8]}"
    host = JobHost(redis_url=url, queue_name=queue, accept_risks={"persistence"})
    done = 0

    async def handle(job: Limited) -> None:
        nonlocal done
        done += 1

    host.add_handler(Limited, handle, concurrency=_limit(case, concurrency))
    async with host.connected():
        for start in range(0, jobs, 1000):
            await host.scheduler.enqueue_many(
                Limited(seq=i, customer=i % 4) for i in range(start, min(start + 1000, jobs))
            )
    wall0, cpu0 = time.perf_counter(), time.process_time()
    async with host.run(concurrency=concurrency, burst=True):
        await host.wait_until_idle()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    assert done == jobs, (done, jobs)
    return jobs / wall, cpu / jobs * 1e6


async def main(url: str, jobs: int, rounds: int, concurrency: int) -> None:
    results: dict[str, list[tuple[float, float]]] = {case: [] for case in CASES}
    for r in range(rounds):
        for case in CASES if r % 2 == 0 else CASES[::-1]:
            rate, cpu_us = await drain(url, jobs, case=case, concurrency=concurrency)
            results[case].append((rate, cpu_us))
            print(f"round {r + 1}: {case:<20} {rate:>8,.0f} jobs/s {cpu_us:7.1f} µs/job")
    base = statistics.median(rate for rate, _ in results["no limit"])
    for case in CASES:
        rate = statistics.median(r for r, _ in results[case])
        cpu = statistics.median(c for _, c in results[case])
        extra = 1e6 / rate - 1e6 / base
        print(
            f"median: {case:<20} {rate:>8,.0f} jobs/s {cpu:7.1f} µs/job CPU "
            f"{rate / base:6.2f}x  {extra:+7.1f} µs/job wall vs no limit"
        )


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.concurrency", description=__doc__)
    parser.add_argument("--redis-url", help="default: a redis-server of its own")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
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
