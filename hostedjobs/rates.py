"""Rate limits, debounce and cooldown of on-demand job types, fleet-wide (pure: no Redis).

What a handler registration takes (``rate_limit=``, ``debounce=``, ``cooldown=`` on
`JobHost.add_handler`, ``@host.handler``, ``@host.task``), checked here at registration, and
`Rates`, what a worker (and, for debounce, the scheduler) asks of a job: which limits hold
it, under which key. The state lives in Redis (`Store.admit_rates`), so every process of
the fleet counts against the same limits; a worker checks a job of such a type in one Lua
script just before running it, and a job of a type with none of them costs nothing extra.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, Literal

from .durations import Seconds, seconds
from .exceptions import ConfigurationError, JobFailedError

__all__ = ["Cooldown", "Debounce", "RateKey", "RateKeys", "RateLimit", "Rates"]

RateKey = Callable[[Any], object]
"""A key function: takes the job (the decoded payload: a ``@job_type`` instance, or a
task's arguments as its payload object) and returns what it is limited by; ``str()`` of the
value is the key, so ``42`` and ``"42"`` are the same key."""

_EXCESS: Final = ("wait", "drop")


_LONGEST_WINDOW = timedelta(days=365)
"""The longest ``per``, ``quiet`` or ``window`` taken: a year. Far longer ones would not fit
Redis's expiry times and the scripts' integer milliseconds (the job would never start)."""


def _window_ms(what: str, value: Seconds) -> int:
    window_s = seconds(what, value, positive=True)
    if window_s > _LONGEST_WINDOW.total_seconds():
        raise ConfigurationError(
            f"{what} must be at most 365 days (timedelta(days=365)), got {value!r}"
        )
    window_ms = math.ceil(window_s * 1000)
    return max(window_ms, 1)


def _check_key(what: str, key: object) -> None:
    if key is not None and not callable(key):
        raise ConfigurationError(
            f"{what}(key=...) must be a function of the job, e.g. key=lambda job: "
            f"job.customer_id, got {key!r}"
        )


@dataclass(frozen=True, slots=True, init=False)
class RateLimit:
    """At most ``limit`` runs of a job type *started* per ``per`` window, fleet-wide.

    With ``key``, the limit holds per key (``key(job)``), each key independently; without,
    per job type (all versions). The window slides: a run may start if fewer than ``limit``
    runs of the key started in the ``per`` just before it (a sliding-window log: the start
    times of the window, kept in a sorted set, as in Figma's "An alternative approach to
    rate limiting" and redis.io's rate-limiting pattern; exact, unlike a fixed window that
    lets ``2 * limit`` through around a boundary). Only runs that start count: waiting,
    dropped or superseded jobs do not.

    ``excess``: what becomes of a job over the limit: ``"wait"`` puts it back in the queue
    due when the window admits it (the try is not counted, no worker slot is held while it
    waits); ``"drop"`` ends it without running, cancelled, its message saying so.

    Raises `ConfigurationError` for a ``limit`` under 1, a ``per`` that is not a positive
    duration, an ``excess`` other than ``"wait"``/``"drop"``, or a ``key`` that is not
    callable.
    """

    limit: int
    per_ms: int
    """The window (ms)."""
    key: RateKey | None
    excess: Literal["wait", "drop"]

    def __init__(
        self,
        limit: int,
        *,
        per: Seconds,
        key: RateKey | None = None,
        excess: Literal["wait", "drop"] = "wait",
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(
                f"RateLimit(limit) must be an int >= 1 (runs started per window), got {limit!r}"
            )
        if excess not in _EXCESS:
            raise ConfigurationError(
                f"RateLimit(excess=...) must be 'wait' (queue it until the window admits it) "
                f"or 'drop' (end it without running), got {excess!r}"
            )
        _check_key("RateLimit", key)
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "per_ms", _window_ms("RateLimit(per=...)", per))
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "excess", excess)


@dataclass(frozen=True, slots=True, init=False)
class Debounce:
    """Of a burst of jobs with the same key, only the last runs, once, after ``quiet`` with
    no newer one (a trailing debounce), fleet-wide.

    Enqueueing such a job defers it by ``quiet`` and records it as its key's latest, in the
    same Redis call; when a worker takes a job that is no longer its key's latest, the job
    ends cancelled, superseded by the newer one. Only a process that registered the handler
    (with ``debounce=``) knows to do this: a job enqueued elsewhere, or by stock arq, is not
    debounced. Raises `ConfigurationError` for a ``quiet`` that is not a positive duration
    or a ``key`` that is not callable.
    """

    quiet_ms: int
    """The quiet period (ms)."""
    key: RateKey | None

    def __init__(self, quiet: Seconds, *, key: RateKey | None = None) -> None:
        _check_key("Debounce", key)
        object.__setattr__(self, "quiet_ms", _window_ms("Debounce(quiet)", quiet))
        object.__setattr__(self, "key", key)


@dataclass(frozen=True, slots=True, init=False)
class Cooldown:
    """The first job of a key runs; others that would start within ``window`` after it are
    dropped (ended cancelled): a leading-edge throttle, fleet-wide.

    Raises `ConfigurationError` for a ``window`` that is not a positive duration or a
    ``key`` that is not callable.
    """

    window_ms: int
    """The window (ms)."""
    key: RateKey | None

    def __init__(self, window: Seconds, *, key: RateKey | None = None) -> None:
        _check_key("Cooldown", key)
        object.__setattr__(self, "window_ms", _window_ms("Cooldown(window)", window))
        object.__setattr__(self, "key", key)


def _key(what: str, key: RateKey | None, job: object) -> str | None:
    if key is None:
        return None
    try:
        return str(key(job))
    except Exception as exc:
        raise JobFailedError(f"the {what} key function raised on this job: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class Rates:
    """A job type's rate limit, debounce and cooldown (at least one of them), as the worker
    and the scheduler apply them. ``job_type``: the type's name (without version): the limits
    hold across its versions."""

    job_type: str
    decode: Callable[[Any], object]
    """Decodes a stored payload into the job the key functions take."""
    rate_limit: RateLimit | None = None
    debounce: Debounce | None = None
    cooldown: Cooldown | None = None

    @classmethod
    def create(
        cls,
        job_type: str,
        decode: Callable[[Any], object],
        *,
        rate_limit: object = None,
        debounce: object = None,
        cooldown: object = None,
    ) -> Rates | None:
        """Check a registration's settings; None if none is set (the type costs nothing).
        Raises `ConfigurationError` for a setting of the wrong kind."""
        for name, value, kind in (
            ("rate_limit", rate_limit, RateLimit),
            ("debounce", debounce, Debounce),
            ("cooldown", cooldown, Cooldown),
        ):
            if value is not None and not isinstance(value, kind):
                raise ConfigurationError(
                    f"{name}= takes a hostedjobs.{kind.__name__}(...), got {value!r}"
                )
        if rate_limit is None and debounce is None and cooldown is None:
            return None
        assert rate_limit is None or isinstance(rate_limit, RateLimit)
        assert debounce is None or isinstance(debounce, Debounce)
        assert cooldown is None or isinstance(cooldown, Cooldown)
        return cls(job_type, decode, rate_limit, debounce, cooldown)

    @property
    def needs_job(self) -> bool:
        """True if a key function needs the decoded job."""
        return any(
            limit is not None and limit.key is not None
            for limit in (self.rate_limit, self.debounce, self.cooldown)
        )

    def keys_of(self, args: list[Any]) -> RateKeys:
        """The keys a queued job (its stored arguments: ``[payload]``) is limited by; decodes
        the payload only if a key function needs it. Raises `JobFailedError` if a key
        function raises, `PayloadDecodeError` if the payload does not decode."""
        job = self.decode(args[0] if args else None) if self.needs_job else None
        return self.keys(job)

    def keys(self, job: object) -> RateKeys:
        """The keys ``job`` is limited by. Raises `JobFailedError` if a key function raises."""
        rate, debounce, cooldown = self.rate_limit, self.debounce, self.cooldown
        return RateKeys(
            None if rate is None else _key("rate limit", rate.key, job),
            None if debounce is None else _key("debounce", debounce.key, job),
            None if cooldown is None else _key("cooldown", cooldown.key, job),
        )

    def debounce_key(self, job: object) -> str | None:
        """``job``'s debounce key (None: keyed by type only), at enqueue: raises what the key
        function raises."""
        assert self.debounce is not None
        key = self.debounce.key
        return None if key is None else str(key(job))

    def rate_message(self, key: str | None) -> str:
        """Why a job over the rate limit was dropped."""
        rate = self.rate_limit
        assert rate is not None
        where = f" for key {key}" if key is not None else ""
        return f"dropped: rate limit {rate.limit} per {_seconds(rate.per_ms)}{where} reached"

    def cooldown_message(self, key: str | None, left_ms: int) -> str:
        """Why a job in its key's cooldown was dropped."""
        cooldown = self.cooldown
        assert cooldown is not None
        where = f" for key {key}" if key is not None else ""
        return (
            f"dropped: cooldown of {_seconds(cooldown.window_ms)}{where} "
            f"({_seconds(max(left_ms, 0))} left)"
        )


@dataclass(frozen=True, slots=True)
class RateKeys:
    """The keys one job is limited by (None: the job type's single key)."""

    rate: str | None
    debounce: str | None
    cooldown: str | None


def _seconds(ms: int) -> str:
    return f"{ms / 1000:g}s"
