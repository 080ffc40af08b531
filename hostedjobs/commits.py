"""Group commit of job outcomes: many finished runs written to Redis in one script call.

Each run waits for its own outcome to be stored (so slot release and retries keep their
order), but while one batch is in flight the next one collects, so a busy worker pays one
round trip per batch instead of one per job. The writes are arq's: the result key, and the
job, retry, in-progress and queue entries removed (or the job put back in the queue); plus
hostedjobs' own indexes of running and finished jobs, which the dashboard pages through.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from arq.connections import ArqRedis

from . import keys

__all__ = ["KEEP_FOREVER", "FinishedState", "OutcomeCommitter"]

KEEP_FOREVER = -1
"""``keep_ms`` for a result that never expires."""

FinishedState = Literal["succeeded", "failed", "cancelled"]
_KINDS: dict[FinishedState, str] = {"succeeded": "S", "failed": "X", "cancelled": "C"}

# ARGV: queue, wake, wake_kept, in-progress, job, retry and result prefixes, abort key, events
# prefix, running index, finished index prefix, now (ms), finished entries kept, their maximum
# age (ms, 0: no limit); then per outcome: kind ('S' succeeded, 'X' failed, 'C' cancelled,
# 'R' back in the queue), id, result data, number (the result's lifetime in ms, -1 for ever,
# for a finished job; for 'R' the score it is due at, in ms).
_COMMIT = """
local queue, wake = ARGV[1], ARGV[2]
local lock, job, retry, result, abort = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local events, running, finished = ARGV[9], ARGV[10], ARGV[11]
local now, kept, max_age = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local states = {S = 'succeeded', X = 'failed', C = 'cancelled'}
local touched = {}
local requeued = false
for i = 15, #ARGV, 4 do
  local kind, id, data, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  redis.call('DEL', lock .. id)
  redis.call('ZREM', running, id)
  if kind == 'R' then
    redis.call('ZADD', queue, n, id)
    requeued = true
    redis.call('PUBLISH', events .. id, 'requeued')
  else
    if data ~= '' then
      if n > 0 then
        redis.call('SET', result .. id, data, 'PX', n)
      elseif n < 0 then
        redis.call('SET', result .. id, data)
      end
      local index = finished .. states[kind]
      redis.call('ZADD', index, now, id)
      touched[index] = true
    end
    redis.call('DEL', retry .. id, job .. id)
    redis.call('ZREM', abort, id)
    redis.call('ZREM', queue, id)
    redis.call('PUBLISH', events .. id, 'finished')
  end
end
for index in pairs(touched) do
  redis.call('ZREMRANGEBYRANK', index, 0, -kept - 1)
  if max_age > 0 then redis.call('ZREMRANGEBYSCORE', index, '-inf', now - max_age) end
end
if requeued then
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, tonumber(ARGV[3]) - 1)
end
return 1
"""


class OutcomeCommitter:
    """Collects outcomes and writes each batch with one script call."""

    def __init__(self, pool: ArqRedis, queue_name: str, *, index_max_age_s: float) -> None:
        """``index_max_age_s``: how long finished jobs stay in the state indexes (0: no limit)."""
        self._script = pool.register_script(_COMMIT)
        self._header: list[Any] = [
            queue_name,
            keys.wake_key(queue_name),
            keys.WAKE_TOKENS_KEPT,
            keys.IN_PROGRESS_PREFIX,
            keys.JOB_PREFIX,
            keys.RETRY_PREFIX,
            keys.RESULT_PREFIX,
            keys.ABORT_KEY,
            keys.EVENTS_PREFIX,
            keys.running_index(queue_name),
            keys.finished_index(queue_name, ""),
        ]
        self._index_limits = [keys.FINISHED_KEPT, int(index_max_age_s * 1000)]
        self._pending: list[tuple[tuple[str, str, bytes, int], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0

    async def finished(
        self, job_id: str, state: FinishedState, result: bytes | None, keep_ms: int
    ) -> None:
        """Store a finished job's result (kept ``keep_ms``; 0: not kept) and remove the job.

        A kept result is also indexed under ``state`` for the dashboard.
        """
        kind = _KINDS[state]
        await self._commit((kind, job_id, result or b"", keep_ms if result else 0))

    async def requeued(self, job_id: str, due_ms: int) -> None:
        """Put a job back in the queue, due at ``due_ms`` (ms since the epoch)."""
        await self._commit(("R", job_id, b"", due_ms))

    async def _commit(self, outcome: tuple[str, str, bytes, int]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        # Shielded: a run cancelled while waiting must not take its outcome with it.
        await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            args = [*self._header, int(time.time() * 1000), *self._index_limits]
            for outcome, _ in batch:
                args.extend(outcome)
            self.batches += 1
            try:
                await self._script(keys=[], args=args)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
