"""Concurrency limits: at most ``limit`` runs of a job type at once across the whole fleet,
or per value of a key taken from each job's payload.

A worker that claims a limited job asks Redis for a slot in the same step that would park it
(``lua/acquire_slot.lua``): with a slot it runs the job, without one the job is set aside,
off the queue and off the worker's slots, until a run of its group ends and moves the oldest
waiter back to the queue (``lua/release_slots.lua``). A slot whose holder's worker died is
free once that worker's lease lapses. Pure: no Redis here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .exceptions import ConfigurationError

__all__ = ["WAITING_REASON", "ConcurrencyLimit", "SlotRule", "waiting_reason"]

J = TypeVar("J")

WAITING_REASON = "waiting for a concurrency slot"
"""How a job set aside for a slot's reason begins (shown with it as queued)."""


@dataclass(frozen=True, slots=True, init=False)
class ConcurrencyLimit(Generic[J]):
    """At most ``limit`` runs of a job type at once, fleet-wide: one limit for the whole
    type, or with ``key`` one per value of ``str(key(job))`` (``job`` is the decoded
    payload, e.g. ``key=lambda job: job.customer_id``).

    Pass it as ``concurrency=`` to `JobHost.add_handler`, `JobHost.handler` or
    `JobHost.task` (whose payload has the function's parameters as attributes). A job that
    finds every slot taken waits, off the queue and holding no worker slot, until a run of
    its type (and key) ends. Raises `ConfigurationError` for a ``limit`` below 1 or a
    ``key`` that is not callable.
    """

    limit: int
    key: Callable[[J], object] | None

    def __init__(self, limit: int, key: Callable[[J], object] | None = None) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(
                f"ConcurrencyLimit(limit={limit!r}): the limit must be an int of at least 1 "
                "(how many runs may go on at once), e.g. ConcurrencyLimit(2)"
            )
        if key is not None and not callable(key):
            raise ConfigurationError(
                f"ConcurrencyLimit(key={key!r}): the key must be a function of the job, e.g. "
                "ConcurrencyLimit(2, key=lambda job: job.customer_id), or left out for one "
                "limit for the whole job type"
            )
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "key", key)

    def group(self, job: Any) -> str:
        """The group ``job`` (a decoded payload) counts under: ``str(key(job))``, or ``""``
        without a key. Raises `ValueError` (with the key's error as its cause) if the key
        raises."""
        if self.key is None:
            return ""
        try:
            return str(self.key(job))
        except Exception as exc:
            raise ValueError(f"its concurrency key raised {type(exc).__name__}: {exc}") from exc


def waiting_reason(limit: int, group: str) -> str:
    """The reason shown with a job waiting for a slot of ``group`` (all ``limit`` in use)."""
    where = f" for key {group!r}" if group else ""
    return f"{WAITING_REASON} ({limit} of {limit} in use{where})"


@dataclass(frozen=True, slots=True)
class SlotRule:
    """A job type's limit as its worker applies it: the limit, the job type it counts
    under, and how to decode a queued payload for the key (unused without one)."""

    limit: ConcurrencyLimit[Any]
    job_type: str
    decode: Callable[[object], object]

    def group_of(self, args: list[Any]) -> tuple[str, object | None]:
        """The group of a job queued with ``args``, and its payload decoded for the key
        (None without a key: nothing is decoded). Raises the decoder's errors, and
        `ValueError` if the key raises."""
        if self.limit.key is None:
            return "", None
        decoded = self.decode(args[0] if args else None)
        return self.limit.group(decoded), decoded
