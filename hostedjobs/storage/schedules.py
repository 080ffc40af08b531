"""Runtime schedules' storage (`hostedjobs.schedules`): a hash of definitions by name, a zset
of the unpaused ones scored by their next tick (ms), and a zset of every name for paging.

A process sleeps until the earliest score (one ``ZRANGE ... 0 0 WITHSCORES``), so an idle
host costs the same whatever the number of schedules; ``lua/schedule_fire.lua`` moves a
score from tick T to T' only if it is still T, enqueuing T's run in the same step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoPermissionError

from .layout import WAKE_TOKENS_KEPT
from .scripts import script
from .store import Store

__all__ = ["ScheduleStore"]

NOTICE = "schedules"
"""The control channel's message telling every process that a schedule changed."""


class ScheduleStore:
    """The schedules of one queue (on shard 0 of a sharded one)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys = store.keys
        for name in ("schedule_set", "schedule_fire"):
            if name not in store._scripts:
                store._scripts[name] = script(store.redis, name)

    async def read(self, name: str) -> tuple[bytes | None, int | None]:
        """One schedule's stored definition and its next tick (None: absent, or paused)."""
        k = self.keys
        async with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.hget(k.schedules, name)
            pipe.zscore(k.schedules_due, name)
            raw, score = await pipe.execute()
        return raw, None if score is None else int(score)

    async def write(
        self, name: str, *, expected: bytes | None, definition: str, next_ms: int | None
    ) -> bool:
        """Store ``definition`` if the stored one is still ``expected`` (None: the name must
        be free), due at ``next_ms`` (None: paused); False if it was not, nothing written."""
        k = self.keys
        written = await self.store._write(
            "schedule_set",
            [k.schedules, k.schedules_due, k.schedule_names],
            [name, expected or b"", definition, "" if next_ms is None else next_ms],
        )
        return bool(written)

    async def remove(self, name: str) -> bool:
        """Delete a schedule; False if there was none."""
        k = self.keys
        async with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(k.schedules, name)
            pipe.zrem(k.schedules_due, name)
            pipe.zrem(k.schedule_names, name)
            removed, *_ = await pipe.execute()
        return bool(removed)

    async def notify(self) -> None:
        """Tell every process (on the control channel) that a schedule changed."""
        with contextlib.suppress(NoPermissionError):  # an ACL without it: processes poll
            await self.store.redis.publish(self.keys.control, NOTICE)

    async def count(self) -> int:
        return int(await self.store.redis.zcard(self.keys.schedule_names))

    async def page(self, offset: int, limit: int) -> list[tuple[str, bytes | None, int | None]]:
        """``(name, definition, next tick)`` of schedules in name order."""
        if limit <= 0:
            return []
        k = self.keys
        raw_names: list[bytes] = await self.store.redis.zrange(
            k.schedule_names, offset, offset + limit - 1
        )
        names = [item.decode() for item in raw_names]
        if not names:
            return []
        async with self.store.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(k.schedules, names)
            pipe.zmscore(k.schedules_due, names)
            definitions, scores = await pipe.execute()
        return [
            (name, raw, None if score is None else int(score))
            for name, raw, score in zip(names, definitions, scores, strict=True)
        ]

    async def earliest(self) -> int | None:
        """The earliest next tick of any unpaused schedule (ms), None if there is none."""
        found = await self.store.redis.zrange(self.keys.schedules_due, 0, 0, withscores=True)
        return int(found[0][1]) if found else None

    async def due(self, now_ms: int, limit: int) -> list[tuple[str, int, bytes | None]]:
        """Up to ``limit`` schedules due by ``now_ms``: ``(name, tick_ms, definition)``."""
        k = self.keys
        found = await self.store.redis.zrangebyscore(
            k.schedules_due, "-inf", now_ms, start=0, num=limit, withscores=True
        )
        if not found:
            return []
        names = [item.decode() for item, _ in found]
        definitions: list[bytes | None] = await self.store.redis.hmget(k.schedules, names)  # type: ignore[misc]
        return [
            (name, int(score), raw)
            for name, (_, score), raw in zip(names, found, definitions, strict=True)
        ]

    async def fire(
        self,
        name: str,
        *,
        tick_ms: int,
        definition: bytes,
        next_ms: int | None,
        run: tuple[str, bytes, int, int] | None,
    ) -> int:
        """Move ``name`` from ``tick_ms`` to ``next_ms`` if it is still due at ``tick_ms``
        with ``definition``, enqueuing ``run`` = ``(id, record, ttl_ms, score_ms)`` if given.
        0: not due as read (another process fired it), 1: enqueued, 2: moved on, no run."""
        k = self.keys
        run_id, record, ttl_ms, score_ms = run if run is not None else ("", b"", 0, 0)
        args: list[Any] = [
            name,
            tick_ms,
            definition,
            "" if next_ms is None else next_ms,
            "1" if run is not None else "0",
            record,
            ttl_ms,
            run_id,
            score_ms,
            WAKE_TOKENS_KEPT,
        ]
        keys: Sequence[str] = [
            k.schedules,
            k.schedules_due,
            k.job(run_id),
            k.result(run_id),
            k.waiting,
            k.wake,
        ]
        return int(await self.store._write("schedule_fire", list(keys), args))
