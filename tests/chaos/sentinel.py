"""``python -m tests.chaos.sentinel``: a Sentinel failover under load, measured.

It starts a primary, ``--replicas`` replicas and three sentinels of its own on loopback
(tests/redis_servers.py; quick timings: ``down-after-milliseconds 1000``), runs a host on the
``redis+sentinel://`` URL that enqueues one job after another while its worker drains them,
injects the fault (``failover``: ``SENTINEL FAILOVER``; ``kill``: ``kill -9`` of the
primary), keeps the load on for ``--after`` seconds, then waits for every job to finish and
counts, on the new primary:

- gap: the longest time without a successful enqueue (seconds);
- failed: enqueues that raised (not acknowledged: the caller knows; not lost);
- lost: acknowledged jobs the new primary does not hold (neither waiting nor finished);
- duplicated: runs of a job beyond its first;
- outcomes lost: jobs that ran before the host's notice of the failover and ran again after
  it (the outcome of the first run did not survive, or was never recorded), plus jobs that
  ran and have no result at the end.

``--durability replicated`` runs the host with ``JobHost(durability="replicated")`` (each
acknowledged write waits for a replica: use ``--replicas 2`` so the new primary keeps one
after a ``kill -9``). Prints one line per round and a table of the sums.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import redis

from hostedjobs import JobContext, JobHost, RetryPolicy, job_type
from hostedjobs.exceptions import RedisUnavailableError
from hostedjobs.storage import KeyLayout
from tests.redis_servers import RedisServer, SentinelSetup, sentinel_setup

QUEUE = "chaos-sentinel"


@job_type("tests.chaos.sentinel.tick")
@dataclass
class Tick:
    number: int


@dataclass
class Round:
    """What one round saw."""

    fault: str
    durability: str
    acked: dict[str, float] = field(default_factory=dict)
    """Acknowledged job id -> when (monotonic)."""
    failed: int = 0
    runs: dict[str, list[float]] = field(default_factory=dict)
    """Job id -> when each of its runs started (monotonic)."""
    fault_at: float = 0.0
    noticed_at: float | None = None
    lost: int = 0
    duplicated: int = 0
    outcomes_lost: int = 0
    unfinished: int = 0

    @property
    def gap(self) -> float:
        times = sorted(self.acked.values())
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def line(self) -> str:
        notice = (
            f"{self.noticed_at - self.fault_at:.2f}s" if self.noticed_at is not None else "none"
        )
        return (
            f"{self.fault:8} {self.durability:10} acked {len(self.acked):5}  "
            f"gap {self.gap:5.2f}s  failed {self.failed:3}  lost {self.lost:3}  "
            f"duplicated {self.duplicated:3}  outcomes lost {self.outcomes_lost:3}  "
            f"unfinished {self.unfinished:3}  notice after {notice}"
        )


class _Notices(logging.Handler):
    """Notes when the host's client first reacts to the failover."""

    def __init__(self, round_: Round) -> None:
        super().__init__(logging.WARNING)
        self.round = round_

    def emit(self, record: logging.LogRecord) -> None:
        if "Redis Sentinel" in record.getMessage() and self.round.noticed_at is None:
            self.round.noticed_at = time.monotonic()


def make_host(url: str, round_: Round) -> JobHost:
    host = JobHost(
        redis_url=url,
        queue_name=QUEUE,
        durability=round_.durability,  # type: ignore[arg-type]
        accept_risks={"persistence"},
        shutdown_grace=timedelta(seconds=1),
        retry=RetryPolicy(max_tries=3, backoff=timedelta(seconds=0.05), jitter=0),
    )

    @host.handler(Tick)
    async def tick(job: Tick, ctx: JobContext) -> int:
        round_.runs.setdefault(ctx.run_id, []).append(time.monotonic())
        return job.number

    return host


def _held(server: RedisServer, job_ids: list[str]) -> tuple[set[str], set[str]]:
    """(jobs ``server`` holds in any state, jobs it has a result for)."""
    keys = KeyLayout(QUEUE)
    for attempt in range(5):
        admin = server.admin()
        try:
            with admin.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.exists(keys.job(job_id))
                    pipe.exists(keys.result(job_id))
                found = pipe.execute()
            break
        except redis.ConnectionError:
            # Sentinel kills the clients of a server it reconfigures (CLIENT KILL TYPE normal).
            if attempt == 4:
                raise
            time.sleep(0.5)
        finally:
            admin.close()
    held, finished = set(), set()
    for index, job_id in enumerate(job_ids):
        if found[2 * index] or found[2 * index + 1]:
            held.add(job_id)
        if found[2 * index + 1]:
            finished.add(job_id)
    return held, finished


def _primary(setup: SentinelSetup) -> RedisServer | None:
    """The server all three sentinels name as the primary, if they agree."""
    try:
        ports = {int(sentinel.master()["port"]) for sentinel in setup.sentinels}
    except Exception:
        return None
    return setup.server_at(ports.pop()) if len(ports) == 1 else None


async def one_round(
    mktemp: Callable[[str], Path], fault: str, durability: str, replicas: int, after: float
) -> Round:
    round_ = Round(fault, durability)
    notices = _Notices(round_)
    logging.getLogger("hostedjobs.redis").addHandler(notices)
    try:
        with sentinel_setup(mktemp, replicas=replicas) as setup:
            old = setup.primary
            host = make_host(setup.url(), round_)
            stop = asyncio.Event()

            async def load() -> None:
                number = 0
                while not stop.is_set():
                    number += 1
                    try:
                        job_id = await host.scheduler.enqueue(Tick(number))
                    except RedisUnavailableError:
                        round_.failed += 1
                        await asyncio.sleep(0.01)
                    else:
                        round_.acked[job_id] = time.monotonic()
                    await asyncio.sleep(0.001)

            async with host.run():
                producer = asyncio.create_task(load())
                while len(round_.acked) < 300:
                    await asyncio.sleep(0.05)
                round_.fault_at = time.monotonic()
                if fault == "failover":
                    await asyncio.to_thread(setup.failover)
                else:
                    await asyncio.to_thread(old.kill)
                while (new := await asyncio.to_thread(_primary, setup)) in (None, old):
                    await asyncio.sleep(0.05)
                await asyncio.sleep(after)
                stop.set()
                await producer
                acked = list(round_.acked)
                deadline = time.monotonic() + 90
                while True:
                    held, finished = await asyncio.to_thread(_held, new, acked)
                    if held <= finished or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                ran = list(round_.runs)
                _, results = await asyncio.to_thread(_held, new, ran)
            round_.lost = len(acked) - len(held)
            round_.unfinished = len(held - finished)
            round_.duplicated = sum(len(times) - 1 for times in round_.runs.values())
            notice = round_.noticed_at or round_.fault_at
            rerun = {
                job_id
                for job_id, times in round_.runs.items()
                if len(times) > 1 and times[0] < notice < times[-1]
            }
            # A run of a job whose enqueue failed counts too (it was stored; its reply lost).
            gone = {job_id for job_id in ran if job_id not in results}
            round_.outcomes_lost = len(rerun | gone)
    finally:
        logging.getLogger("hostedjobs.redis").removeHandler(notices)
    return round_


async def measure(
    faults: list[str], durability: str, rounds: int, replicas: int, after: float, folder: Path
) -> list[Round]:
    made = 0

    def mktemp(name: str) -> Path:
        nonlocal made
        made += 1
        path = folder / f"{made:03}-{name}"
        path.mkdir()
        return path

    results = []
    for number in range(rounds):
        for fault in faults:
            round_ = await one_round(mktemp, fault, durability, replicas, after)
            print(f"round {number + 1}: {round_.line()}", file=sys.stderr, flush=True)
            results.append(round_)
    return results


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.sentinel", description=__doc__)
    parser.add_argument("--fault", choices=("failover", "kill", "both"), default="both")
    parser.add_argument("--durability", choices=("primary", "replicated"), default="primary")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--after", type=float, default=5.0, help="load kept on after the switch")
    args = parser.parse_args(argv)
    faults = ["failover", "kill"] if args.fault == "both" else [args.fault]
    with tempfile.TemporaryDirectory(prefix="hostedjobs-sentinel-") as folder:
        results = asyncio.run(
            measure(faults, args.durability, args.rounds, args.replicas, args.after, Path(folder))
        )
    print(
        f"durability={args.durability}, {args.replicas} replica(s), {args.rounds} round(s) each; "
        "gap: max over rounds, others: sums"
    )
    print("| fault | acked | gap (s) | failed | lost | duplicated | outcomes lost | unfinished |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for fault in faults:
        mine = [r for r in results if r.fault == fault]
        print(
            f"| {fault} | {sum(len(r.acked) for r in mine)} | {max(r.gap for r in mine):.2f} | "
            f"{sum(r.failed for r in mine)} | {sum(r.lost for r in mine)} | "
            f"{sum(r.duplicated for r in mine)} | {sum(r.outcomes_lost for r in mine)} | "
            f"{sum(r.unfinished for r in mine)} |"
        )


if __name__ == "__main__":
    main()
