"""`RetryPolicy`: how often and how late a failed run is tried again."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from .durations import Seconds, as_timedelta, seconds
from .exceptions import ConfigurationError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped.

    The delay before try ``n + 1`` is ``backoff * 2 ** (n - 1)``, capped at ``max_backoff``,
    then scaled by a random factor in ``[1 - jitter, 1]`` so that a burst of failures does not
    come back as a burst of retries. ``backoff`` and ``max_backoff`` take a `timedelta` or
    seconds, and are kept as timedeltas.
    """

    max_tries: int = 5
    backoff: Seconds = timedelta(seconds=1)
    max_backoff: Seconds = timedelta(minutes=5)
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.max_tries, bool) or not isinstance(self.max_tries, int):
            raise ConfigurationError(f"max_tries must be an int >= 1, got {self.max_tries!r}")
        if self.max_tries < 1:
            raise ConfigurationError(f"max_tries must be >= 1, got {self.max_tries}")
        # Frozen: normalised in place, once.
        object.__setattr__(self, "backoff", as_timedelta("backoff", self.backoff))
        object.__setattr__(self, "max_backoff", as_timedelta("max_backoff", self.max_backoff))
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"jitter must be between 0 and 1, got {self.jitter!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        exponent = min(max(attempt - 1, 0), 62)
        cap = seconds("max_backoff", self.max_backoff)
        base = min(seconds("backoff", self.backoff) * 2**exponent, cap)
        return float(base) * random.uniform(1 - self.jitter, 1)
