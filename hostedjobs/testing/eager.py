"""Eager mode: a host that runs its jobs in the test's process at once, with no Redis."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Generic, TypeVar, overload

from ..clock import Clock
from ..durations import Seconds
from ..eager import EagerScheduler
from ..exceptions import ConfigurationError
from ..host import JobHost
from .clocks import FrozenClock

__all__ = ["EagerJobs", "eager", "run_due"]

C = TypeVar("C", bound=Clock)


class EagerJobs(Generic[C]):
    """A host in eager mode, as `eager` hands it over: its clock, and running what is due."""

    def __init__(self, host: JobHost, clock: C, scheduler: EagerScheduler) -> None:
        self.host = host
        self.clock = clock
        """The host's clock while in eager mode (a `FrozenClock` unless another was given)."""
        self.scheduler = scheduler
        """The in-process scheduler, also ``host.scheduler`` while in eager mode."""

    async def run_due(self) -> int:
        """Run what the clock has made due, here and in time order: cron and distributed
        cron ticks passed since the last call, then due on-demand jobs (scheduled ones whose
        time has come); returns how many runs that made. See `run_due`."""
        return await run_due(self.host)

    async def advance(self, by: Seconds | None = None, *, to: datetime | None = None) -> int:
        """Move the `FrozenClock` forward ``by`` a duration or ``to`` an aware datetime, then
        `run_due`; returns how many runs that made.

        Raises `ConfigurationError` unless exactly one of ``by`` and ``to`` is given, or if
        the clock is not a `FrozenClock`; and, leaving the clock where it was, if the move
        makes a job more than 10,000 ticks due.
        """
        if not isinstance(self.clock, FrozenClock):
            raise ConfigurationError(
                f"advance() moves a FrozenClock, and this host's clock is {self.clock!r}: "
                "pass eager(host, clock=FrozenClock(...)), or leave clock out"
            )
        if (by is None) == (to is None):
            raise ConfigurationError("advance() takes exactly one of by= or to=")
        before = self.clock.now()
        if by is not None:
            self.clock.advance(by)
        else:
            assert to is not None
            self.clock.move_to(to)
        try:
            return await self.run_due()
        except ConfigurationError:
            # Too many ticks: nothing ran, so the clock goes back and smaller steps can follow.
            self.clock._rewind(before)
            raise


@overload
def eager(
    host: JobHost, *, wait_for_startup: bool = True
) -> contextlib.AbstractContextManager[EagerJobs[FrozenClock]]: ...


@overload
def eager(
    host: JobHost, *, clock: C, wait_for_startup: bool = True
) -> contextlib.AbstractContextManager[EagerJobs[C]]: ...


def eager(
    host: JobHost, *, clock: Clock | None = None, wait_for_startup: bool = True
) -> contextlib.AbstractContextManager[EagerJobs[Any]]:
    """Put ``host`` in eager mode for the block: for unit tests, no Redis at all.

    While it is in eager mode, starting the host (the app's lifespan under ``TestClient``,
    or ``host.run()``) connects to nothing; startup actions still run, and the start waits
    for them (as ``startup_mode="blocking"``: a failed one raises `StartupActionError`
    there), so every job enqueued in the block runs at once. With ``wait_for_startup=False``
    they run in the background as in production, gating readiness and jobs, to test that.
    ``host.scheduler`` keeps jobs in the process: ``enqueue`` runs a due job through the
    worker's run path (payload encoded and decoded, a scope per run, retries at once,
    timeouts, result recorded) before it returns; scheduled jobs and cron ticks run when a
    test moves ``clock`` (default: a `FrozenClock` at the current time) and calls
    ``run_due``. Hosted loops (``add_job``) do not start: run one with ``host.run_once``.

    Enter it before the host starts (`ConfigurationError` otherwise); on exit the host goes
    back to Redis and its own clock.
    """
    return _eager(host, FrozenClock() if clock is None else clock, wait_for_startup)


@contextlib.contextmanager
def _eager(host: JobHost, clock: C, wait_for_startup: bool) -> Iterator[EagerJobs[C]]:
    previous = host.clock
    scheduler = host._enter_eager(clock)
    scheduler.wait_for_startup = wait_for_startup
    try:
        yield EagerJobs(host, clock, scheduler)
    finally:
        host._leave_eager(previous)


async def run_due(host: JobHost) -> int:
    """Run what the clock has made due on a running host in eager mode; returns how many
    runs that made.

    Every cron and distributed cron tick that the clock passed since the host started (or
    since the last call) runs once, in tick order, with the tick as ``ctx.scheduled_at``
    (gated jobs skip ticks passed before the startup actions succeeded); then every
    on-demand job due by the clock runs. Raises `ConfigurationError` if the host is not
    running in eager mode, or if one job has more than 10,000 ticks due (move the clock in
    smaller steps); then nothing runs.
    """
    return await host._run_due()
