"""SAQ as a benchmark peer; runs under ``bench/.peers/saq`` (``saq[hiredis]``), not our venv.

Configuration: SAQ's defaults, which are its fast settings: a `RedisQueue` from
``Queue.from_url`` (JSON serialisation, hiredis parser), a `saq.Worker` with
``concurrency=32`` and the default ``dequeue_timeout=0`` (each of the 32 slots blocks on its
own ``BLMOVE``, so pickup is push-based, no polling). Jobs are enqueued with
``Queue.enqueue("noop", seq=..., ...)``; SAQ keeps job state and results for its default TTL.

SAQ has no bulk enqueue API (``Queue.map`` enqueues with ``asyncio.gather`` and then waits for
the results), so bulk enqueue is reported as "-" and the preload uses gathered single
enqueues. Its burst mode needs a positive ``dequeue_timeout``, which would add an idle tail, so
drains run the normal worker and stop once the expected number of jobs has finished.

Run by `bench.engine` as ``<venv>/bin/python -m bench.peer_saq MODE --redis-url ...`` with
the repository root on ``PYTHONPATH``; imports only the stdlib, SAQ and `bench.common`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from saq import Queue, Worker

from bench.common import PeerClient, Recorder, peer_main

_recorder = Recorder()


async def noop(
    ctx: dict[str, Any], *, seq: int, sent_at: float = 0.0, sleep_s: float = 0.0
) -> None:
    """The benchmark job."""
    _recorder.started(sent_at)
    if sleep_s:
        await asyncio.sleep(sleep_s)
    _recorder.finished()


class SaqClient(PeerClient):
    """SAQ driven by the harness in `bench.common`."""

    def __init__(self, redis_url: str, queue: str, recorder: Recorder) -> None:
        global _recorder
        super().__init__(redis_url, queue, recorder)
        _recorder = recorder
        self.saq_queue = Queue.from_url(redis_url, name=queue)

    async def open(self) -> None:
        await self.saq_queue.connect()

    async def close(self) -> None:
        await self.saq_queue.disconnect()

    async def enqueue(self, seq: int, sent_at: float = 0.0, sleep_s: float = 0.0) -> None:
        await self.saq_queue.enqueue("noop", seq=seq, sent_at=sent_at, sleep_s=sleep_s)

    @contextlib.asynccontextmanager
    async def worker(self, concurrency: int) -> AsyncIterator[None]:
        worker = Worker(self.saq_queue, functions=[noop], concurrency=concurrency)
        running = asyncio.create_task(worker.start())
        try:
            yield
        finally:
            await worker.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await running


if __name__ == "__main__":
    peer_main(__doc__ or "", SaqClient)
