"""Named locks held across the whole fleet: ``async with host.lock("name", ttl=30):``.

The semantics are borrowed, not invented:

- **Foundatio's** ``ILockProvider``: a lock is named, has a time to live so a crashed
  holder's lock lapses by itself, and acquiring either waits up to a timeout and then fails
  (``AcquireAsync`` → `LockTimeoutError`) or only tries (``TryAcquireAsync`` →
  ``acquire(blocking=False)`` returning False).
- **redis-py's** ``redis.lock.Lock``: ``SET NX PX`` with a random owner id, released by a
  compare-and-delete in Lua so only the owner can release it, and an error
  (``LockNotOwnedError``, here `LockLostError`) when the owner finds at release that the
  lock had lapsed.
- **Kleppmann's fencing tokens** ("How to do distributed locking", 2016): each acquisition
  draws the next integer of a per-name counter in the same script that takes the lock, so a
  store written under the lock can refuse a write carrying an older token than one it saw.

Unlike Foundatio and redis-py, the lock renews itself while held (every third of its TTL),
so a body may run longer than the TTL; the TTL only bounds how long a crashed holder keeps
others waiting. A waiter does not poll: a release pushes a wake token that waiters block on
(``BLPOP``, one wakes per release), and a waiter never blocks longer than the holder's
remaining TTL, so a crashed holder's lapse is noticed when it happens. Pub/sub would need
a subscriber per process kept alive across failovers and cluster nodes, and misses a
release sent before it subscribed; a list token is kept until taken. Each blocked waiter
holds one connection of the pool while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from types import TracebackType

from .durations import Seconds, seconds
from .exceptions import (
    ConfigurationError,
    LockLostError,
    LockTimeoutError,
    RedisUnavailableError,
)
from .storage import Store

__all__ = ["RENEWALS_PER_TTL", "Lock"]

logger = logging.getLogger("hostedjobs")

RENEWALS_PER_TTL = 3
"""A held lock is renewed this many times per TTL, so two renewals in a row may fail (a
Redis blip, a busy event loop) before it lapses."""

_UNKNOWN_TTL_WAIT_S = 1.0
"""How long a waiter blocks when the holder's key has no TTL (set by something else)."""

_MIN_WAIT_S = 0.01
"""BLPOP's timeout 0 means for ever: a wait is never shorter than this."""

_LONGEST_TTL_S = 365 * 86400.0
"""The longest ``ttl`` a lock takes: a year."""


class Lock:
    """A named lock shared by every process on the host's Redis (see the module's docstring).

    Made by `JobHost.lock`; use it as ``async with host.lock("name") as lock:``, which waits
    up to the lock's ``timeout`` (for ever if None) and raises `LockTimeoutError` if not
    acquired by then, or call `acquire` and `release` yourself. Not re-entrant: acquiring a
    lock the same object holds raises ``RuntimeError``. A `Lock` object may be acquired
    again once released.
    """

    def __init__(self, store: Store, name: str, *, ttl: Seconds, timeout: Seconds | None) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"a lock's name must be a non-empty string, got {name!r}")
        self.name = name
        """The lock's name: every process using the same name (on the same queue) shares it."""
        self.ttl_s = seconds("ttl", ttl, positive=True)
        """How long (s) the lock outlives its holder's last renewal: a crashed holder's lock
        lapses within this."""
        if self.ttl_s < 0.001:
            raise ConfigurationError(f"ttl must be at least 1 ms, got {ttl!r}")
        if self.ttl_s > _LONGEST_TTL_S:
            # Far longer ones are expiries Redis refuses (it read as Redis being unavailable).
            raise ConfigurationError(
                f"ttl must be at most 365 days (timedelta(days=365)), got {ttl!r}: it only "
                "bounds how long a crashed holder keeps the lock (a live one renews it)"
            )
        self.timeout_s = None if timeout is None else seconds("timeout", timeout)
        """How long (s) ``async with`` waits for the lock; None: for ever."""
        self._store = store
        self._owner: str | None = None
        self._token = 0
        self._lost = False
        self._renewer: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        """True from a successful `acquire` until `release`, unless the lock was lost."""
        return self._owner is not None and not self._lost

    @property
    def lost(self) -> bool:
        """True once the lock lapsed while held (renewal found it gone or someone else's, or
        failed for a whole TTL): what the holder does from then on is not exclusive. The
        body is not cancelled; leaving ``async with`` then raises `LockLostError`."""
        return self._lost

    @property
    def token(self) -> int:
        """The fencing token of the current (or last) acquisition: it increases with every
        acquisition of this name, across all processes; 0 until first acquired. Pass it to
        what you write under the lock, which should refuse a token older than one it saw."""
        return self._token

    async def acquire(
        self,
        *,
        blocking: bool = True,
        timeout: Seconds | None = None,  # noqa: ASYNC109 - Foundatio's and redis-py's name
    ) -> bool:
        """Take the lock: True once held.

        With ``blocking=False``, one try: False if another holds it (Foundatio's
        ``TryAcquireAsync``). Otherwise wait up to ``timeout`` seconds (a `timedelta` or a
        number; None: the lock's own ``timeout``, for ever if that is None) and raise
        `LockTimeoutError` if still held by another then. Raises `ConfigurationError` for a
        negative timeout, `RedisUnavailableError` if Redis cannot be reached.
        """
        if self._owner is not None:
            raise RuntimeError(f"lock {self.name!r} is already held by this Lock object")
        limit_s = self.timeout_s if timeout is None else seconds("timeout", timeout)
        loop = asyncio.get_running_loop()
        deadline = math.inf if limit_s is None else loop.time() + limit_s
        owner = uuid.uuid4().hex
        ttl_ms = max(1, round(self.ttl_s * 1000))
        while True:
            taken, value = await self._store.acquire_lock(self.name, owner, ttl_ms=ttl_ms)
            if taken:
                self._owner, self._token, self._lost = owner, value, False
                self._renewer = loop.create_task(
                    self._renew(owner), name=f"hostedjobs:lock:{self.name}"
                )
                return True
            if not blocking:
                return False
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LockTimeoutError(
                    f"lock {self.name!r} was not acquired within {limit_s:g} s: another "
                    "holder kept it; raise the timeout, or use acquire(blocking=False) to "
                    "skip the work when it is held"
                )
            lapses_s = value / 1000 if value >= 0 else _UNKNOWN_TTL_WAIT_S
            await self._store.wait_for_lock_release(
                self.name, max(_MIN_WAIT_S, min(remaining, lapses_s))
            )

    async def release(self) -> None:
        """Give the lock up (only if this object still holds it: compare-and-delete), waking
        one waiter. Raises `LockLostError` if it had lapsed meanwhile, ``RuntimeError`` if
        it is not held, `RedisUnavailableError` if Redis cannot be reached (the lock then
        lapses within its TTL)."""
        owner = self._owner
        if owner is None:
            raise RuntimeError(f"lock {self.name!r} is not held by this Lock object")
        await self._stop_renewing()
        self._owner = None
        wake_ms = max(1_000, round(self.ttl_s * 1000))
        released = await self._store.release_lock(self.name, owner, wake_ms=wake_ms)
        if not released:
            self._lost = True
        if self._lost:
            raise LockLostError(
                f"lock {self.name!r} (token {self._token}) lapsed while held: another "
                "process may have held it meanwhile; raise its ttl, or guard what you write "
                "with its fencing token"
            )

    async def _stop_renewing(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _renew(self, owner: str) -> None:
        loop = asyncio.get_running_loop()
        ttl_ms = max(1, round(self.ttl_s * 1000))
        confirmed = loop.time()
        while True:
            await asyncio.sleep(self.ttl_s / RENEWALS_PER_TTL)
            sent = loop.time()
            try:
                renewed = await self._store.renew_lock(self.name, owner, ttl_ms=ttl_ms)
            except RedisUnavailableError as exc:
                if loop.time() - confirmed < self.ttl_s:
                    logger.warning("lock %r: renewal failed, trying again: %s", self.name, exc)
                    continue
                renewed = False
            if not renewed:
                self._lost = True
                logger.warning(
                    "lock %r (token %d) lapsed while held: another process may take it",
                    self.name,
                    self._token,
                )
                return
            confirmed = sent

    async def __aenter__(self) -> Lock:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Shielded: a cancelled body still releases, so waiters need not wait for the TTL.
        releasing = asyncio.ensure_future(self.release())
        try:
            await asyncio.shield(releasing)
        except asyncio.CancelledError:
            releasing.add_done_callback(_consume)
            raise
        except (LockLostError, RedisUnavailableError):
            if exc is None:
                raise
            # The body's own error matters more; `lost` still tells.
            logger.warning("lock %r: release failed after an error in its body", self.name)


def _consume(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
