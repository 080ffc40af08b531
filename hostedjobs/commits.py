"""Group commit of job outcomes: many finished runs written to Redis in one script call.

Each run waits for its own outcome to be stored (so slot release and retries keep their
order), but while one batch is in flight the next one collects, so a busy worker pays one
round trip per batch instead of one per job.
"""

from __future__ import annotations

import asyncio
import time

from .storage import Finished, Requeued, Store

__all__ = ["OutcomeCommitter"]

_BATCH = 500
"""Outcomes per script call at most: each call holds Redis for a bounded time."""


class OutcomeCommitter:
    """Collects outcomes and writes each batch with one `Store.commit`."""

    def __init__(self, store: Store, *, index_max_age_s: float) -> None:
        """``index_max_age_s``: how long finished jobs stay in the state indexes (0: no limit)."""
        self._store = store
        self._max_age_ms = int(index_max_age_s * 1000)
        self._pending: list[tuple[Finished | Requeued, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0

    async def commit(self, outcome: Finished | Requeued) -> None:
        """Store ``outcome`` with the next batch; returns once it is stored (or raises)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((outcome, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        # Shielded: a run cancelled while waiting must not take its outcome with it.
        await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
            self.batches += 1
            try:
                await self._store.commit(
                    [outcome for outcome, _ in batch],
                    now_ms=int(time.time() * 1000),
                    max_age_ms=self._max_age_ms,
                )
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
