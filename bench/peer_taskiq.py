"""taskiq as a benchmark peer; runs under ``bench/.peers/taskiq`` (taskiq + taskiq-redis).

Configuration, as in streaq's published benchmark of taskiq: taskiq-redis'
`RedisStreamBroker` (Redis streams with a consumer group and acks, so at-least-once like the
other systems; ``xread_count=32``), no result backend (taskiq's default), and taskiq's own
`Receiver` run in-process (what ``taskiq worker`` runs in each worker process) with
``max_async_tasks=32`` and ``max_prefetch=32``. Jobs are enqueued with ``task.kiq(...)``.

taskiq has no bulk enqueue API, so bulk enqueue is "-" and the preload uses gathered
``kiq`` calls; it has no burst mode, so drains stop once the expected number of jobs has
finished.

Run by `bench.engine` as ``<venv>/bin/python -m bench.peer_taskiq MODE --redis-url ...`` with
the repository root on ``PYTHONPATH``; imports only the stdlib, taskiq and `bench.common`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from taskiq.receiver import Receiver
from taskiq_redis import RedisStreamBroker

from bench.common import PeerClient, Recorder, peer_main


class TaskiqClient(PeerClient):
    """taskiq driven by the harness in `bench.common`."""

    def __init__(self, redis_url: str, queue: str, recorder: Recorder) -> None:
        super().__init__(redis_url, queue, recorder)
        self.broker = RedisStreamBroker(redis_url, queue_name=queue, xread_count=32)

        @self.broker.task(task_name="noop")
        async def noop(seq: int, sent_at: float = 0.0, sleep_s: float = 0.0) -> None:
            recorder.started(sent_at)
            if sleep_s:
                await asyncio.sleep(sleep_s)
            recorder.finished()

        self.noop = noop
        self.started = False

    async def open(self) -> None:
        pass

    async def _startup(self) -> None:
        if not self.started:
            await self.broker.startup()
            self.started = True

    async def close(self) -> None:
        if self.started:
            await self.broker.shutdown()

    async def enqueue(self, seq: int, sent_at: float = 0.0, sleep_s: float = 0.0) -> None:
        await self._startup()
        await self.noop.kiq(seq, sent_at, sleep_s)

    @contextlib.asynccontextmanager
    async def worker(self, concurrency: int) -> AsyncIterator[None]:
        self.broker.is_worker_process = True
        await self._startup()
        with ThreadPoolExecutor() as executor:
            receiver = Receiver(
                self.broker,
                executor=executor,
                max_async_tasks=concurrency,
                max_prefetch=concurrency,
                run_startup=False,
            )
            finish = asyncio.Event()
            running = asyncio.create_task(receiver.listen(finish))
            try:
                yield
            finally:
                finish.set()
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(running, 10)


if __name__ == "__main__":
    peer_main(__doc__ or "", TaskiqClient)
