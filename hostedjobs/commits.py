"""Group commit of job outcomes: many finished runs written to Redis in one script call.

Each run waits for its own outcome to be stored (so slot release and retries keep their
order), but while one batch is in flight the next one collects, so a busy worker pays one
round trip per batch instead of one per job.

An outcome that cannot be stored (Redis is down) is kept and stored once Redis is back: the
job stays its worker's (its lease is renewed as soon as Redis answers, and other workers
wait a whole lease after an outage before they take back anyone's jobs), so it is not run
twice. Only a worker whose lease lapsed has its outcomes refused (its jobs were given back).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from .storage import Finished, Requeued, Store

__all__ = ["OutcomeCommitter"]

logger = logging.getLogger("hostedjobs.worker")

_BATCH = 500
"""Outcomes per script call at most: each call holds Redis for a bounded time."""
_RETRY_MAX_S = 2.0


class OutcomeCommitter:
    """Collects outcomes and writes each batch with one `Store.commit`, retrying until stored."""

    def __init__(
        self,
        store: Store,
        worker_id: str,
        *,
        index_max_age_s: float,
        on_error: Callable[[BaseException], None] | None = None,
        lease_held: Callable[[], bool] = lambda: False,
    ) -> None:
        """``index_max_age_s``: how long finished jobs stay in the state indexes (0: no
        limit). ``on_error`` hears every failed attempt (the worker's view of Redis).
        ``lease_held`` says whether the worker's lease surely lives (see `Store.commit`)."""
        self._store = store
        self._worker_id = worker_id
        self._max_age_ms = int(index_max_age_s * 1000)
        self._on_error = on_error
        self._lease_held = lease_held
        self._pending: list[tuple[Finished | Requeued, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0

    @property
    def pending(self) -> int:
        """Outcomes not stored yet."""
        return len(self._pending) + (0 if self._flusher is None or self._flusher.done() else 1)

    async def commit(self, outcome: Finished | Requeued) -> bool:
        """Store ``outcome`` with the next batch; returns once it is stored (True) or refused
        because the worker no longer holds the job (False). Waits through Redis outages."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._pending.append((outcome, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        # Shielded: a run cancelled while waiting must not take its outcome with it.
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        failures = 0
        while self._pending:
            batch = self._pending[:_BATCH]
            try:
                dropped = await self._store.commit(
                    [outcome for outcome, _ in batch],
                    worker_id=self._worker_id,
                    now_ms=int(time.time() * 1000),
                    max_age_ms=self._max_age_ms,
                    # After a failure the last call may have run without its reply reaching
                    # us: only the checking script is safe to send again.
                    held=self._lease_held() and failures == 0,
                )
            except (RedisError, OSError) as exc:
                failures += 1
                if self._on_error is not None:
                    self._on_error(exc)
                if failures == 1:
                    logger.warning(
                        "could not store %d outcome(s) (%s); keeping them until Redis answers",
                        len(self._pending),
                        exc,
                    )
                await asyncio.sleep(min(0.05 * 2**failures, _RETRY_MAX_S))
                continue
            except Exception as exc:  # not Redis: a fault of these outcomes, not worth a retry
                del self._pending[: len(batch)]
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            if failures:
                logger.info("stored the outcomes kept while Redis was unavailable")
                failures = 0
            del self._pending[: len(batch)]
            self.batches += 1
            refused = set(dropped)
            for outcome, future in batch:
                if not future.done():
                    future.set_result(outcome.job_id not in refused)
