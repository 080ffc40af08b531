"""The wall clock that schedules read, injectable so tests can skew or fix it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

__all__ = ["LAST_MS", "Clock", "SystemClock"]

LAST_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z, the last instant a datetime holds, in ms since the epoch: a
stored time past it (or below 0) is not one."""


class Clock(Protocol):
    """Tells the current time as an aware UTC datetime."""

    def now(self) -> datetime:
        """The current instant."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> datetime:
        """``datetime.now(UTC)``."""
        return datetime.now(UTC)
