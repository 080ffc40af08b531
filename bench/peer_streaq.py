"""streaq as a benchmark peer; runs under ``bench/.peers/streaq``, not our venv.

Configuration: streaq's defaults, which are its recommended settings: a `streaq.Worker` on
the asyncio backend (no uvloop, like every other system here), pickle serialisation, Redis
streams with a consumer group, prefetch = concurrency, with ``concurrency=32`` and
``handle_signals=False``. Single enqueues are ``await noop.enqueue(...)``; the bulk API is
``Worker.enqueue_many`` (one pipeline), also used for the preload.

streaq has a burst mode, but only through its CLI flag; drains run ``Worker.run_async`` and
stop once the expected number of jobs has finished, like the other peers.

Run by `bench.engine` as ``<venv>/bin/python -m bench.peer_streaq MODE --redis-url ...`` with
the repository root on ``PYTHONPATH``; imports only the stdlib, streaq and `bench.common`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from streaq import Worker

from bench.common import PeerClient, Recorder, peer_main


class StreaqClient(PeerClient):
    """streaq driven by the harness in `bench.common`."""

    has_bulk = True

    def __init__(self, redis_url: str, queue: str, recorder: Recorder) -> None:
        super().__init__(redis_url, queue, recorder)
        self.streaq = Worker(
            redis_url=redis_url, queue_name=queue, concurrency=32, handle_signals=False
        )

        @self.streaq.task(name="noop")
        async def noop(seq: int, sent_at: float = 0.0, sleep_s: float = 0.0) -> None:
            recorder.started(sent_at)
            if sleep_s:
                await asyncio.sleep(sleep_s)
            recorder.finished()

        self.noop = noop
        self.stack = contextlib.AsyncExitStack()
        self.connected = False

    async def open(self) -> None:
        pass

    async def _connect(self) -> None:
        if not self.connected:
            await self.stack.enter_async_context(self.streaq)
            self.connected = True

    async def close(self) -> None:
        await self.stack.aclose()

    async def enqueue(self, seq: int, sent_at: float = 0.0, sleep_s: float = 0.0) -> None:
        await self._connect()
        await self.noop.enqueue(seq, sent_at, sleep_s)

    async def enqueue_many(self, seqs: range, sleep_s: float = 0.0) -> None:
        await self._connect()
        await self.streaq.enqueue_many([self.noop.enqueue(i, 0.0, sleep_s) for i in seqs])

    @contextlib.asynccontextmanager
    async def worker(self, concurrency: int) -> AsyncIterator[None]:
        self.streaq.concurrency = concurrency
        running = asyncio.create_task(self.streaq.run_async())
        try:
            yield
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running


if __name__ == "__main__":
    peer_main(__doc__ or "", StreaqClient)
