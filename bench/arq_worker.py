"""The raw arq side of the benchmark: a no-op coroutine and a stock `arq.worker.Worker`.

Everything is arq's default (pickle serializer, keep_result, result logging) except
``max_jobs``, ``poll_delay``, ``handle_signals=False`` and burst mode for drains. Run as
``python -m bench.arq_worker {drain,latency,serve} --poll-delay 0.5 --redis-url ...``; the result is
one JSON line on stdout (see `bench.common`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import Worker, func

from .common import Recorder, announce_ready, emit, wait_for_go, wait_for_stop, worker_arguments

__all__ = ["FUNCTION_NAME", "main", "noop"]

FUNCTION_NAME = "noop"
"""The name arq jobs are enqueued under."""

_recorder = Recorder()


async def noop(ctx: dict[str, Any], seq: int, sent_at: float = 0.0, sleep_s: float = 0.0) -> None:
    """The benchmark's arq job: records its start and does nothing else (or sleeps ``sleep_s``)."""
    _recorder.started(sent_at, seq)
    if sleep_s:
        await asyncio.sleep(sleep_s)


def _worker(pool: ArqRedis, queue: str, concurrency: int, poll_delay: float, burst: bool) -> Worker:
    return Worker(
        functions=[func(noop, name=FUNCTION_NAME)],
        queue_name=queue,
        redis_pool=pool,
        burst=burst,
        handle_signals=False,
        max_jobs=concurrency,
        poll_delay=poll_delay,
    )


async def _drain(
    redis_url: str, queue: str, jobs: int, concurrency: int, poll_delay: float
) -> dict[str, Any]:
    _recorder.expected = jobs
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    worker = _worker(pool, queue, concurrency, poll_delay, burst=True)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await worker.async_run()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await worker.close()
    return {"jobs": _recorder.count, "wall_s": wall, "cpu_s": cpu}


async def _latency(
    redis_url: str, queue: str, jobs: int, concurrency: int, poll_delay: float, give_up_s: float
) -> dict[str, Any]:
    _recorder.expected = jobs
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    worker = _worker(pool, queue, concurrency, poll_delay, burst=False)
    running = asyncio.create_task(worker.async_run())
    announce_ready()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_recorder.done.wait(), give_up_s)
    await _stop(worker, running)
    return {"jobs": _recorder.count, "latencies_ms": _recorder.latencies_ms}


async def _serve(redis_url: str, queue: str, concurrency: int, poll_delay: float) -> dict[str, Any]:
    _recorder.track_seqs = True
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    worker = _worker(pool, queue, concurrency, poll_delay, burst=False)
    cpu0 = await wait_for_go()
    running = asyncio.create_task(worker.async_run())
    await wait_for_stop()
    await _stop(worker, running)
    return {"jobs": _recorder.count, "seqs": _recorder.seqs, "cpu_s": time.process_time() - cpu0}


async def _stop(worker: Worker, running: asyncio.Task[None]) -> None:
    """Stop polling, let the runs in flight finish, then close as arq does."""
    running.cancel()  # cancels the worker's main task it awaits
    with contextlib.suppress(asyncio.CancelledError):
        await running
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    await worker.close()


def main() -> None:
    """Run one stock arq worker process in the mode given on the command line."""
    parser = worker_arguments(__doc__ or "")
    parser.add_argument("--poll-delay", type=float, required=True)
    args = parser.parse_args()
    if args.mode == "drain":
        result = asyncio.run(
            _drain(args.redis_url, args.queue, args.jobs, args.concurrency, args.poll_delay)
        )
    elif args.mode == "serve":
        result = asyncio.run(_serve(args.redis_url, args.queue, args.concurrency, args.poll_delay))
    else:
        result = asyncio.run(
            _latency(
                args.redis_url,
                args.queue,
                args.jobs,
                args.concurrency,
                args.poll_delay,
                args.timeout,
            )
        )
    emit(result)


if __name__ == "__main__":
    main()
