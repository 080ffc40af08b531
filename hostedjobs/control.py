"""Following operator changes made in Redis: pauses, runtime schedules.

An operator's change (a pause, a resume, a schedule added) is stored in Redis and announced
on the queue's control channel (`KeyLayout.control`). Each process keeps its in-memory view
of that state by `follow`: it reads the state at once, again at each notice, and again after
at most a re-check period in any case, since a notice is missed across a reconnect or a
failover, or never heard by a Redis user without pub/sub rights.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import NoPermissionError

from .storage import Store

logger = logging.getLogger("hostedjobs.control")

FALLBACK_RECHECK_S = 1.0
"""How often the state is read without notices: when the Redis user may not subscribe, and
after a failed read."""


async def follow(
    store: Store,
    read: Callable[[], Awaitable[float]],
    *,
    what: str,
    stopping: asyncio.Event,
    wake: asyncio.Event | None = None,
    failed: Callable[[], None] | None = None,
) -> None:
    """Call ``read`` until ``stopping`` is set: at once, at each notice on the control
    channel, when ``wake`` is set (a change made in this process), and at the latest after the
    number of seconds ``read`` returned (at most `FALLBACK_RECHECK_S` without notices).

    A failing ``read`` (Redis down, failing over) is logged once, as "cannot read ``what``",
    until a read succeeds again; ``failed`` is called at each failure (e.g. to let waiters go
    on with the last known state), and the next read comes `FALLBACK_RECHECK_S` later.
    Cancelling the task stops it too; the pub/sub connection is closed either way.
    """
    pubsub: Any = None
    notices = True
    failing = False
    try:
        while not stopping.is_set():
            try:
                if pubsub is None and notices:
                    pubsub = store.control()
                    try:
                        await pubsub.subscribe(store.keys.control)
                    except NoPermissionError:
                        logger.info(
                            "the Redis user may not subscribe to %s (an older ACL rule): "
                            "re-reading %s every %gs instead",
                            store.keys.control,
                            what,
                            FALLBACK_RECHECK_S,
                        )
                        notices = False
                        await _close(pubsub)
                        pubsub = None
                if wake is not None:
                    wake.clear()
                recheck_s = await read()
                if failing:
                    logger.info("reading %s again", what)
                    failing = False
                if pubsub is None:
                    recheck_s = min(recheck_s, FALLBACK_RECHECK_S)
                await _wait(stopping, wake, pubsub, recheck_s)
            except Exception as exc:
                if failed is not None:
                    failed()
                if not failing:
                    logger.warning(
                        "cannot read %s (%r); keeping the last known state until Redis answers",
                        what,
                        exc,
                    )
                    failing = True
                if pubsub is not None:
                    await _close(pubsub)
                    pubsub = None
                await _wait(stopping, None, None, FALLBACK_RECHECK_S)
    finally:
        if pubsub is not None:
            await _close(pubsub)


async def _wait(
    stopping: asyncio.Event, wake: asyncio.Event | None, pubsub: Any, timeout_s: float
) -> None:
    """Until ``timeout_s`` passes, a notice comes, ``wake`` or ``stopping`` is set."""
    if timeout_s <= 0:
        return
    waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(stopping.wait())]
    if wake is not None:
        waits.append(asyncio.ensure_future(wake.wait()))
    notice = None
    if pubsub is not None:
        notice = asyncio.ensure_future(
            pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout_s)
        )
        waits.append(notice)
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    if notice is not None and not notice.cancelled() and (error := notice.exception()):
        raise error  # a lost connection: subscribe again


async def _close(pubsub: Any) -> None:
    with contextlib.suppress(Exception):
        await pubsub.aclose()
