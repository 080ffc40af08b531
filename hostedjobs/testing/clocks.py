"""Clocks for tests: one that is off by a fixed offset, one that moves only when told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ..durations import Seconds, as_timedelta
from ..exceptions import ConfigurationError

__all__ = ["FrozenClock", "SkewedClock"]


class SkewedClock:
    """A clock that runs ``offset`` ahead of (or, if negative, behind) the machine's.

    ``JobHost(clock=SkewedClock(timedelta(seconds=-0.4)))`` simulates a replica whose clock
    is off, to check that schedules still run once per tick across the cluster.
    """

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        """The machine's time plus the offset."""
        return datetime.now(UTC) + self.offset


def _aware(name: str, value: datetime) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(
            f"{name} must be an aware datetime, e.g. datetime(2030, 1, 7, 9, tzinfo=UTC), "
            f"got {value!r}"
        )
    return value.astimezone(UTC)


class FrozenClock:
    """A clock that stands still until a test moves it forward: time in tests without sleeping.

    ``FrozenClock(datetime(2030, 1, 7, 9, tzinfo=UTC))`` starts at that instant (default: the
    machine's time when it is made). `advance` and `move_to` move it forward; it never goes
    back, since schedules (cron ticks, scheduled jobs) only look forward. Hand it to
    `hostedjobs.testing.eager` (or ``JobHost(clock=...)``), then run what became due with
    ``await jobs.run_due()``. Raises `ConfigurationError` for a naive datetime or a move back.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = datetime.now(UTC) if start is None else _aware("start", start)

    def now(self) -> datetime:
        """The instant the clock stands at (aware, UTC)."""
        return self._now

    def advance(self, by: Seconds) -> datetime:
        """Move the clock ``by`` (a `timedelta` or seconds, not negative) forward; returns the
        new time."""
        self._now += as_timedelta("advance(by=...)", by)
        return self._now

    def move_to(self, at: datetime) -> datetime:
        """Move the clock forward to ``at`` (an aware datetime, not before the clock's time);
        returns it in UTC."""
        target = _aware("move_to(at=...)", at)
        if target < self._now:
            raise ConfigurationError(
                f"a FrozenClock only moves forward: it is at {self._now.isoformat()}, "
                f"move_to({target.isoformat()}) is earlier"
            )
        self._now = target
        return self._now

    def _rewind(self, at: datetime) -> None:
        """Put the clock back to ``at``, for a move that `EagerJobs.advance` undoes."""
        self._now = at

    def __repr__(self) -> str:
        return f"FrozenClock({self._now.isoformat()})"
