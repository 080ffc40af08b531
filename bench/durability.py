"""What ``durability="replicated"`` costs: the same work with and without WAIT, in one run.

Run ``python -m bench.durability``. It starts a primary and one replica of its own (the
embedded extra's valkey-server, or ``$HOSTEDJOBS_REDIS_SERVER``) on loopback, then for each
durability in turn, alternating for ``--rounds`` rounds, measures in this process:

- ``enqueue``: ``--jobs`` jobs enqueued one after another (jobs/s, each awaited);
- ``bulk``: ``--bulk-jobs`` jobs in one ``enqueue_many`` (jobs/s);
- ``drain``: those bulk jobs run by a worker of concurrency 16 (jobs/s; each outcome
  committed, with WAIT when replicated).

It prints the medians and the ratio replicated / primary. On loopback a replica acknowledges
in well under a millisecond; across hosts add one network round trip per write (per commit
batch for a worker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis

from hostedjobs import JobHost, job_type
from hostedjobs.storage.embedded import find_redis_server

__all__ = ["main"]

MODES = ("primary", "replicated")


@job_type("bench.durability.noop")
@dataclass
class Noop:
    n: int


@contextlib.contextmanager
def server(folder: Path, *options: str) -> Iterator[int]:
    """A server on a free port, with ``options``, stopped at the end; yields its port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    # fmt: off
    process = subprocess.Popen(
        [
            find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(folder), *options,
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    # fmt: on
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield port
    finally:
        process.terminate()
        process.wait()


def make_host(port: int, durability: str, queue: str, *, worker: bool) -> JobHost:
    host = JobHost(
        redis_url=f"redis://127.0.0.1:{port}/0",
        queue_name=queue,
        durability=durability,  # type: ignore[arg-type]
        run_worker=worker,
        accept_risks={"persistence"},
    )

    @host.handler(Noop)
    async def noop(job: Noop) -> None:
        return None

    return host


async def one_round(port: int, durability: str, jobs: int, bulk: int) -> dict[str, float]:
    queue = f"bench-durability-{durability}-{time.monotonic_ns()}"
    host = make_host(port, durability, queue, worker=False)
    async with host.run():
        started = time.perf_counter()
        for n in range(jobs):
            await host.scheduler.enqueue(Noop(n))
        enqueue = jobs / (time.perf_counter() - started)
        started = time.perf_counter()
        await host.scheduler.enqueue_many([Noop(n) for n in range(bulk)])
        bulk_rate = bulk / (time.perf_counter() - started)
    worker = make_host(port, durability, queue, worker=True)
    started = time.perf_counter()
    async with worker.run(burst=True):
        await worker.wait_until_idle()
    drain = (jobs + bulk) / (time.perf_counter() - started)
    return {"enqueue": enqueue, "bulk": bulk_rate, "drain": drain}


async def measure(
    port: int, rounds: int, jobs: int, bulk: int
) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {mode: {} for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            for metric, value in (await one_round(port, mode, jobs, bulk)).items():
                results[mode].setdefault(metric, []).append(value)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--bulk-jobs", type=int, default=10000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        primary_dir, replica_dir = Path(folder, "primary"), Path(folder, "replica")
        primary_dir.mkdir()
        replica_dir.mkdir()
        with (
            server(primary_dir) as primary,
            server(replica_dir, "--replicaof", "127.0.0.1", str(primary)),
        ):
            admin = redis.Redis(port=primary)
            while int(cast(dict[str, Any], admin.info("replication"))["connected_slaves"]) < 1:
                time.sleep(0.05)
            admin.close()
            results = asyncio.run(measure(primary, args.rounds, args.jobs, args.bulk_jobs))
    print(f"{args.rounds} round(s), medians, jobs/s; one primary + one replica on loopback")
    print("| metric | primary | replicated | replicated / primary |")
    print("|---|---:|---:|---:|")
    for metric in ("enqueue", "bulk", "drain"):
        base = statistics.median(results["primary"][metric])
        waited = statistics.median(results["replicated"][metric])
        print(f"| {metric} | {base:,.0f} | {waited:,.0f} | {waited / base:.2f}x |")


if __name__ == "__main__":
    main()
