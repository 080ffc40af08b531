"""Throughput through one Redis primary against three: queues sharded over a Redis Cluster.

Run with ``python -m bench.scaling`` (``--jobs``, ``--queues``, ``--rounds``). For each cluster
size (1 and 3 primaries, started here from ``find_redis_server()``'s binary on private ports,
see `tests.redis_servers.ClusterServers`), ``--queues`` queues are named so that their hash
tags land on distinct primaries (round robin over the primaries), the same total of no-op
`bench.hosted_worker.BenchJob` jobs is preloaded with ``enqueue_many`` spread evenly over the
queues, then one ``bench.hosted_worker`` process per queue (``serve`` mode, concurrency 32,
``redis+cluster://``) drains its queue; `bench.fleet.run_fleet` times from the go line until
every queue is empty.

Reported per cluster size: jobs/s (median and range over rounds), the workers' CPU (s of CPU
per s of wall: this machine's cores bound it), and each primary's Redis CPU per job it served
(``used_cpu_sys + used_cpu_user`` from ``INFO cpu`` before and after, divided by the jobs of
the queues it serves; also less the node's idle CPU, its cron and cluster bus, measured for
2 s before), with the ceiling one primary would reach if the clients kept up:
1e6 / (Redis µs per job).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from hostedjobs.storage.cluster import queue_slot
from tests.redis_servers import ClusterServers, RedisServer

from .fleet import run_fleet
from .hosted_client import hosted_preload

CONCURRENCY = 32


@dataclass(frozen=True)
class Round:
    """One drain through one cluster."""

    rate: float
    """jobs/s, all workers together."""
    worker_cpu: float
    """The workers' CPU seconds per second of wall (2.0: two cores busy)."""
    redis_us_per_job: dict[int, float]
    """Per primary (its port): Redis CPU µs per job of the queues it serves."""
    net_us_per_job: dict[int, float]
    """The same less the node's idle CPU (its cron, the cluster bus) over the drain."""
    redis_cpu: dict[int, float]
    """Per primary: its CPU seconds per second of wall."""
    ran: int
    publishes_per_job: float
    """PUBLISH calls per job, all primaries: a cluster relays each to every other node."""


def queues_on(cluster: ClusterServers, count: int, prefix: str) -> list[tuple[str, RedisServer]]:
    """``count`` queue names, the i-th served by primary i mod the cluster's size."""
    found: list[tuple[str, RedisServer]] = []
    index = 0
    while len(found) < count:
        node = cluster.nodes[len(found) % len(cluster.nodes)]
        name = f"{prefix}-{index}"
        index += 1
        if cluster.owner(queue_slot(name)) is node:
            found.append((name, node))
    return found


async def cpu_s(client: aioredis.Redis) -> float:
    """The server's ``used_cpu_sys + used_cpu_user``, seconds."""
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def publishes(client: aioredis.Redis) -> int:
    """``PUBLISH`` calls the server ran (scripts' included)."""
    info = await client.info("commandstats")
    return int(info.get("cmdstat_publish", {}).get("calls", 0))


async def left(client: aioredis.Redis, queue: str) -> int:
    """Jobs of ``queue`` waiting or running."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.zcard(f"{{hostedjobs:{queue}}}:queue")
        pipe.zcard(f"{{hostedjobs:{queue}}}:claimed")
        waiting, running = await pipe.execute()
    return int(waiting) + int(running)


IDLE_S = 2.0


async def one_round(
    cluster: ClusterServers, queues: int, jobs: int, round_no: int, log_dir: Path
) -> Round:
    placed = queues_on(cluster, queues, f"bench-{len(cluster.nodes)}p-r{round_no}")
    per_queue = jobs // queues
    for name, _ in placed:
        await hosted_preload(cluster.url, per_queue, queue=name)
    worker = [sys.executable, "-m", "bench.hosted_worker", "serve", "--redis-url", cluster.url]
    worker += ["--jobs", str(per_queue), "--concurrency", str(CONCURRENCY), "--timeout", "600"]
    commands = [[*worker, "--queue", name] for name, _ in placed]
    clients = {node.port: aioredis.Redis(port=node.port) for node in cluster.nodes}

    async def drained() -> None:
        while True:
            remaining = [await left(clients[node.port], name) for name, node in placed]
            if sum(remaining) == 0:
                return
            await asyncio.sleep(0.02)

    try:
        # Each node's own background work (its cron, the cluster bus), measured idle.
        idle0 = {port: await cpu_s(client) for port, client in clients.items()}
        await asyncio.sleep(IDLE_S)
        idle = {
            port: (await cpu_s(client) - idle0[port]) / IDLE_S for port, client in clients.items()
        }
        published0 = sum([await publishes(client) for client in clients.values()])
        before = {port: await cpu_s(client) for port, client in clients.items()}
        run = await run_fleet(commands, log_dir, drained, timeout_s=600)
        after = {port: await cpu_s(client) for port, client in clients.items()}
        published = sum([await publishes(client) for client in clients.values()]) - published0
    finally:
        for client in clients.values():
            await client.aclose()
    if not run.finished:
        raise RuntimeError("the queues did not drain within 600 s")
    served: dict[int, int] = {}
    for _, node in placed:
        served[node.port] = served.get(node.port, 0) + per_queue
    ran = sum(int(worker["jobs"]) for worker in run.workers)
    return Round(
        rate=per_queue * queues / run.wall_s,
        worker_cpu=sum(float(worker["cpu_s"]) for worker in run.workers) / run.wall_s,
        redis_us_per_job={
            port: (after[port] - before[port]) * 1e6 / count for port, count in served.items()
        },
        net_us_per_job={
            port: (after[port] - before[port] - idle[port] * run.wall_s) * 1e6 / count
            for port, count in served.items()
        },
        redis_cpu={port: (after[port] - before[port]) / run.wall_s for port in served},
        ran=ran,
        publishes_per_job=published / (per_queue * queues),
    )


def _spread(values: list[float], digits: int = 0) -> str:
    middle = statistics.median(values)
    return f"{middle:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


async def measure(primaries: int, queues: int, jobs: int, rounds: int, folder: Path) -> list[str]:
    cluster = ClusterServers(folder / f"cluster-{primaries}", primaries)
    try:
        cluster.start()
        results = [await one_round(cluster, queues, jobs, r, folder) for r in range(rounds)]
    finally:
        cluster.stop()
    per_job = [us for result in results for us in result.redis_us_per_job.values()]
    net = [us for result in results for us in result.net_us_per_job.values()]
    busiest = [max(result.redis_cpu.values()) for result in results]
    total = [sum(result.redis_cpu.values()) for result in results]
    ceiling = [1e6 / us for us in per_job]
    return [
        f"| {primaries} | {queues} | {_spread([r.rate for r in results])} "
        f"| {_spread([r.worker_cpu for r in results], 2)} "
        f"| {_spread(total, 2)} | {_spread(busiest, 2)} "
        f"| {_spread(per_job, 1)} | {_spread(net, 1)} | {_spread(ceiling)} "
        f"| {_spread([r.publishes_per_job for r in results], 2)} "
        f"| {min(r.ran for r in results):,} |"
    ]


async def main_async(args: argparse.Namespace) -> None:
    lines = [
        f"# bench.scaling: {args.jobs:,} no-op jobs per round, {args.rounds} rounds, "
        f"{os.cpu_count()} CPUs, concurrency {CONCURRENCY} per worker",
        "",
        "| primaries | queues (1 worker each) | jobs/s | workers' CPU (cores) "
        "| Redis CPU, all primaries (cores) | busiest primary (cores) "
        "| Redis µs/job per primary | the same less idle | one primary's ceiling, jobs/s "
        "(1e6 / µs) | PUBLISH per job | jobs run (min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as temp:
        for primaries in (1, 3):
            started = time.monotonic()
            lines += await measure(primaries, args.queues, args.jobs, args.rounds, Path(temp))
            print(f"{primaries} primaries: {time.monotonic() - started:.0f} s", file=sys.stderr)
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=30_000, help="jobs per round, all queues")
    parser.add_argument("--queues", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the preloading hosts' start-up lines
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
