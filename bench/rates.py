"""The per-job cost of a rate limit, off and on: one worker drains N preloaded no-op jobs of
one type with no rate limit, with a rate limit that never binds (a huge N per second, one
key for the type), and with one keyed by a payload field (the payload is then decoded for
the key function), rounds alternating.

``python -m bench.rates [--redis-url URL] [--jobs N] [--rounds R]``; without a URL it starts
its own redis-server (no persistence). Prints jobs/s and worker CPU µs per job, per round
and as medians, and the rate limit's per-job cost against no limit: wall µs (1/rate on −
1/rate off; the extra round trip, overlapped across concurrent runs) and CPU µs.
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

from hostedjobs import JobHost, RateLimit, job_type
from hostedjobs.storage.embedded import EmbeddedRedis

CASES = ("off", "on", "on, keyed")


@job_type("bench.rated")
@dataclass
class Rated:
    """The drained job: a no-op with a customer to be keyed by."""

    seq: int
    customer: int


async def drain(url: str, jobs: int, *, case: str, concurrency: int) -> tuple[float, float]:
    """One drain; (jobs/s, worker CPU µs per job)."""
    queue = f"bench-rates-{uuid.uuid4().hex[:8]}"
    host = JobHost(redis_url=url, queue_name=queue, accept_risks={"persistence"})
    done = 0
    never_binds = 10**9  # starts per second: far above any drain's rate
    limit = {
        "off": None,
        "on": RateLimit(never_binds, per=timedelta(seconds=1)),
        "on, keyed": RateLimit(never_binds, per=timedelta(seconds=1), key=lambda j: j.customer),
    }[case]

    @host.handler(Rated, rate_limit=limit)
    async def handle(job: Rated) -> None:
        nonlocal done
        done += 1

    async with host.connected():
        for start in range(0, jobs, 1000):
            await host.scheduler.enqueue_many(
                Rated(seq=i, customer=i % 100) for i in range(start, min(start + 1000, jobs))
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
        for case in CASES if r % 2 == 0 else tuple(reversed(CASES)):
            rate, cpu_us = await drain(url, jobs, case=case, concurrency=concurrency)
            results[case].append((rate, cpu_us))
            print(f"round {r + 1}: {case:<10} {rate:>8,.0f} jobs/s {cpu_us:7.1f} µs CPU/job")
    medians = {
        case: (
            statistics.median(rate for rate, _ in results[case]),
            statistics.median(cpu for _, cpu in results[case]),
        )
        for case in CASES
    }
    off_rate, off_cpu = medians["off"]
    for case, (rate, cpu) in medians.items():
        extra = (
            ""
            if case == "off"
            else f"  cost: {(1 / rate - 1 / off_rate) * 1e6:+6.1f} µs wall/job, "
            f"{cpu - off_cpu:+6.1f} µs CPU/job"
        )
        print(f"median: {case:<10} {rate:>8,.0f} jobs/s {cpu:7.1f} µs CPU/job{extra}")


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rates", description=__doc__)
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
