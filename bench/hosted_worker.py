"""The hostedjobs side of the benchmark: its job type, its handler, and a worker process.

The job is what a product would run: a ``@job_type`` dataclass with a JSON payload, and a
handler that gets a scoped service (a stand-in for a DB session, opened and closed per run)
from `Services`. Run as ``python -m bench.hosted_worker {drain,latency,serve} --redis-url ...
[--loop uvloop]``; the result is one JSON line on stdout (see `bench.common`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from hostedjobs import Inject, JobHost, Services, job_type

from .common import Recorder, announce_ready, emit, wait_for_go, wait_for_stop, worker_arguments

__all__ = ["BenchJob", "Session", "build_host", "loop_factory", "main"]


@job_type("bench.noop")
@dataclass
class BenchJob:
    """The benchmark's job: a sequence number and, for latency runs, when it was enqueued."""

    seq: int
    sent_at: float = 0.0
    """The enqueuer's ``time.time()`` just before the enqueue call; 0 for throughput runs."""
    sleep_s: float = 0.0
    """The sleep-drain test: seconds the handler sleeps (``asyncio.sleep``); 0 for a no-op."""


class Session:
    """A stand-in for a per-run database session."""

    def __init__(self) -> None:
        self.statements = 0
        self.closed = False


async def open_session() -> AsyncIterator[Session]:
    """The scoped factory: one `Session` per run, closed when the run ends."""
    session = Session()
    try:
        yield session
    finally:
        session.closed = True


def build_host(redis_url: str, queue: str, recorder: Recorder, *, run_worker: bool) -> JobHost:
    """A `JobHost` on ``redis_url`` whose `BenchJob` handler reports to ``recorder``."""
    services = Services()
    services.add_scoped(Session, open_session)
    host = JobHost(services=services, redis_url=redis_url, queue_name=queue, run_worker=run_worker)

    @host.handler(BenchJob)
    async def handle(job: BenchJob, session: Session = Inject()) -> None:
        recorder.started(job.sent_at, job.seq)
        session.statements += 1
        if job.sleep_s:
            await asyncio.sleep(job.sleep_s)

    return host


async def _drain(redis_url: str, queue: str, jobs: int, concurrency: int) -> dict[str, Any]:
    recorder = Recorder(expected=jobs)
    host = build_host(redis_url, queue, recorder, run_worker=True)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    async with host.run(concurrency=concurrency, burst=True):
        await host.wait_until_idle()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"jobs": recorder.count, "wall_s": wall, "cpu_s": cpu}


async def _latency(
    redis_url: str, queue: str, jobs: int, concurrency: int, give_up_s: float
) -> dict[str, Any]:
    recorder = Recorder(expected=jobs)
    host = build_host(redis_url, queue, recorder, run_worker=True)
    async with host.run(concurrency=concurrency):
        announce_ready()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(recorder.done.wait(), give_up_s)
    return {"jobs": recorder.count, "latencies_ms": recorder.latencies_ms}


async def _serve(redis_url: str, queue: str, concurrency: int) -> dict[str, Any]:
    recorder = Recorder(track_seqs=True)
    host = build_host(redis_url, queue, recorder, run_worker=True)
    cpu0 = await wait_for_go()
    async with host.run(concurrency=concurrency):
        await wait_for_stop()
    return {"jobs": recorder.count, "seqs": recorder.seqs, "cpu_s": time.process_time() - cpu0}


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``--loop`` names: None for asyncio's own, or uvloop's."""
    if name == "asyncio":
        return None
    import uvloop

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main() -> None:
    """Run one hostedjobs worker process in the mode given on the command line."""
    parser = worker_arguments(__doc__ or "")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        if args.mode == "drain":
            result = runner.run(_drain(args.redis_url, args.queue, args.jobs, args.concurrency))
        elif args.mode == "serve":
            result = runner.run(_serve(args.redis_url, args.queue, args.concurrency))
        else:
            result = runner.run(
                _latency(args.redis_url, args.queue, args.jobs, args.concurrency, args.timeout)
            )
    emit(result)


if __name__ == "__main__":
    main()
