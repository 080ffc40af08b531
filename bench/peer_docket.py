"""docket as a benchmark peer; runs under ``bench/.peers/docket`` (``pydocket``), not our venv.

Configuration: docket's defaults except the concurrency: a `docket.Docket` named after the
bench queue on the private Redis (cloudpickled arguments, Redis streams with a consumer group
for due work, a sorted set for future work, an execution-state hash per task kept for its
default ``execution_ttl`` of 15 minutes), and a `docket.Worker` with ``concurrency=32`` and
the settings of docket's own ``docket worker`` command otherwise. The one that differs from
the `Worker` constructor's defaults is ``minimum_check_interval``: 100 ms (the constructor's
is 250 ms). It is the ``XREADGROUP`` block time, and also how long the worker loop sleeps
whenever all 32 slots are taken, so a full worker takes its next batch only after that
sleep: a backlog of no-op jobs drains at about 32 jobs per interval. ``message_batch`` is
1000 and ``scheduling_resolution`` 250 ms (both the defaults). Single enqueues are
``await docket.add(noop)(seq, sent_at, sleep_s)`` (a fresh ``add`` per job: ``add`` draws
the task key when it is called, so reusing its result would deduplicate the jobs); the bulk
API is ``Docket.add_many`` of ``Docket.call(noop)(...)`` specs (pipelined chunks of 1,000),
also used for the preload. Jobs scheduled for now go straight onto the stream.

docket has a burst mode (``Worker.run_until_finished``), but drains run
``Worker.run_forever`` and stop once the expected number of jobs has finished, like the other
peers.

Run by `bench.engine` as ``<venv>/bin/python -m bench.peer_docket MODE --redis-url ...`` with
the repository root on ``PYTHONPATH``; imports only the stdlib, docket and `bench.common`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from docket import Docket, Worker

from bench.common import PeerClient, Recorder, peer_main

MINIMUM_CHECK_INTERVAL = timedelta(milliseconds=100)
"""``docket worker``'s default (``Worker.run``, the CLI); `Worker`'s own is 250 ms."""

_recorder = Recorder()


async def noop(seq: int, sent_at: float = 0.0, sleep_s: float = 0.0) -> None:
    """The benchmark job (registered under its ``__name__``, "noop")."""
    _recorder.started(sent_at)
    if sleep_s:
        await asyncio.sleep(sleep_s)
    _recorder.finished()


class DocketClient(PeerClient):
    """docket driven by the harness in `bench.common`."""

    has_bulk = True

    def __init__(self, redis_url: str, queue: str, recorder: Recorder) -> None:
        global _recorder
        super().__init__(redis_url, queue, recorder)
        _recorder = recorder
        self.docket = Docket(name=queue, url=redis_url)
        self.docket.register(noop)
        self.stack = contextlib.AsyncExitStack()

    async def open(self) -> None:
        await self.stack.enter_async_context(self.docket)

    async def close(self) -> None:
        await self.stack.aclose()

    async def enqueue(self, seq: int, sent_at: float = 0.0, sleep_s: float = 0.0) -> None:
        await self.docket.add(noop)(seq, sent_at, sleep_s)

    async def enqueue_many(self, seqs: range, sleep_s: float = 0.0) -> None:
        await self.docket.add_many(self.docket.call(noop)(i, 0.0, sleep_s) for i in seqs)

    @contextlib.asynccontextmanager
    async def worker(self, concurrency: int) -> AsyncIterator[None]:
        worker = Worker(
            self.docket,
            concurrency=concurrency,
            minimum_check_interval=MINIMUM_CHECK_INTERVAL,
        )
        async with worker:
            running = asyncio.create_task(worker.run_forever())
            try:
                yield
            finally:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running


if __name__ == "__main__":
    peer_main(__doc__ or "", DocketClient)
