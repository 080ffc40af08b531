"""`RetryPolicy`: how often and how late a failed run is tried again."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from .exceptions import ConfigurationError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped.

    The delay before try ``n + 1`` is ``backoff * 2 ** (n - 1)``, capped at ``max_backoff``,
    then scaled by a random factor in ``[1 - jitter, 1]`` so that a burst of failures does not
    come back as a burst of retries.
    """

    max_tries: int = 5
    backoff: timedelta = timedelta(seconds=1)
    max_backoff: timedelta = timedelta(minutes=5)
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.max_tries, bool) or not isinstance(self.max_tries, int):
            raise ConfigurationError(f"max_tries must be an int >= 1, got {self.max_tries!r}")
        if self.max_tries < 1:
            raise ConfigurationError(f"max_tries must be >= 1, got {self.max_tries}")
        if self.backoff < timedelta(0) or self.max_backoff < timedelta(0):
            raise ConfigurationError("backoff and max_backoff must not be negative")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"jitter must be between 0 and 1, got {self.jitter!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        exponent = min(max(attempt - 1, 0), 62)
        base = min(self.backoff.total_seconds() * 2**exponent, self.max_backoff.total_seconds())
        return float(base) * random.uniform(1 - self.jitter, 1)
