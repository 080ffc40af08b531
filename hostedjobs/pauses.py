"""Pausing on-demand job types, whole or for the payloads that match a key (docket's "strikes").

A pause lives in Redis (`KeyLayout.paused_jobs`), so it outlives restarts; every worker
process follows it in memory (`PausedJobs`), re-reading it at each notice on the control
channel and every `PAUSE_RECHECK_S` in any case. A worker that claims a job of a paused type
(or whose payload matches a keyed pause) does not run it: it parks it (``lua/park.lua``) with
the reason ``paused``, so the job stays queued and visible and holds no slot. Lifting the
pause moves the type's parked jobs back to the queue (``lua/unpark.lua``), atomically, so
none is lost or queued twice. Workers do not take back parked jobs of a type with a pause in
force. A job claimed just before a pause reached its worker runs to the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .control import follow
from .exceptions import ConfigurationError
from .history import job_type_of
from .storage import Store

logger = logging.getLogger("hostedjobs.pauses")

PAUSE_RECHECK_S = 1.0
"""Every worker process re-reads the pauses this often, even without a notice."""
PAUSED_REASON = "paused"
"""A paused job's reason for being parked (shown with it as queued)."""
_REDIS_TIMEOUT_S = 5.0

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class JobPause:
    """One pause: of every job of ``job_type`` (``where`` empty), or of those whose payload's
    top-level fields equal every value of ``where``."""

    job_type: str
    where: Mapping[str, Scalar]
    since: datetime
    """When the pause began."""


def checked_where(where: Mapping[str, Any] | None) -> dict[str, Scalar]:
    """``where`` as a pause holds it; `ConfigurationError` for an empty one or a value that is
    not a str, int, float, bool or None (payload fields are compared for equality)."""
    if where is None:
        return {}
    if not isinstance(where, Mapping) or not where:
        raise ConfigurationError(
            "where= must name at least one payload field and its value, e.g. "
            "where={'customer_id': 42}; leave it out to pause every job of the type"
        )
    for field, value in where.items():
        if not isinstance(field, str) or not field:
            raise ConfigurationError(f"where=: field names are non-empty strings, not {field!r}")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ConfigurationError(
                f"where=: the value of {field!r} must be a str, int, float, bool or None "
                f"(compared for equality with the payload's top-level field), not "
                f"{type(value).__name__}"
            )
    return dict(where)


def pause_field(job_type: str, where: Mapping[str, Scalar]) -> str:
    """The stored form of a pause (one field of `KeyLayout.paused_jobs`)."""
    return json.dumps({"type": job_type, "where": dict(where)}, sort_keys=True)


def read_pauses(stored: Mapping[str, int]) -> list[JobPause]:
    """The pauses stored in Redis, by job type, the whole type's first (unreadable fields
    skipped)."""
    pauses = []
    for field, since_ms in stored.items():
        try:
            item = json.loads(field)
            job_type, where = str(item["type"]), dict(item["where"])
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring an unreadable job pause %r", field)
            continue
        pauses.append(JobPause(job_type, where, datetime.fromtimestamp(since_ms / 1000, UTC)))
    return sorted(
        pauses, key=lambda p: (p.job_type, bool(p.where), pause_field(p.job_type, p.where))
    )


async def set_paused(
    stores: Sequence[Store], job_type: str, where: Mapping[str, Scalar] | None, paused: bool
) -> bool:
    """Pause, or lift pauses of, ``job_type`` (see `JobHost.pause_jobs`); True if a pause
    began or ended. Lifting moves the type's parked jobs back to the queue on every shard."""
    store = stores[0]
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    if paused:
        return bool(
            await store.set_job_pauses([pause_field(job_type, where or {})], [], now_ms=now_ms)
        )
    if where is None:
        lifted = [
            pause_field(p.job_type, p.where)
            for p in read_pauses(await store.job_pauses())
            if p.job_type == job_type
        ]
    else:
        lifted = [pause_field(job_type, where)]
    changed = bool(lifted) and bool(await store.set_job_pauses([], lifted, now_ms=now_ms))
    # Also when nothing changed: a worker that had not heard of an earlier lift may have
    # parked a job after it.
    for shard in stores:
        functions = [f for f in await shard.parked_functions() if job_type_of(f) == job_type]
        if functions:
            moved = await shard.unpark_all(functions)
            if moved:
                logger.info("%s: %d parked job(s) back in the queue", job_type, moved)
    return changed


_MISSING = object()


def _equal(found: object, wanted: Scalar) -> bool:
    """JSON equality: ``true`` is not ``1`` (as Python's ``True == 1`` would have it)."""
    return found == wanted and isinstance(found, bool) == isinstance(wanted, bool)


class PausedJobs:
    """The pauses as one process last read them, for its workers' checks."""

    def __init__(self) -> None:
        self.types: frozenset[str] = frozenset()
        """The job types with at least one pause (a set lookup on the hot path)."""
        self._whole: frozenset[str] = frozenset()
        self._keyed: dict[str, list[dict[str, Scalar]]] = {}
        self.known = asyncio.Event()
        """Set once the pauses were read (or reading failed): workers claim after this."""
        self._stopping = asyncio.Event()

    def apply(self, pauses: Sequence[JobPause]) -> None:
        whole = frozenset(p.job_type for p in pauses if not p.where)
        keyed: dict[str, list[dict[str, Scalar]]] = {}
        for pause in pauses:
            if pause.where and pause.job_type not in whole:
                keyed.setdefault(pause.job_type, []).append(dict(pause.where))
        types = whole | keyed.keys()
        for job_type in sorted(types ^ self.types):
            logger.info("job type %s: %s", job_type, "paused" if job_type in types else "resumed")
        self._whole, self._keyed, self.types = whole, keyed, frozenset(types)

    def holds(self, job_type: str, args: Sequence[Any]) -> bool:
        """Whether a job of ``job_type`` (in `types`) with call arguments ``args`` (its
        payload first) is paused."""
        if job_type in self._whole:
            return True
        payload = args[0] if args else None
        if not isinstance(payload, dict):
            return False
        return any(
            all(_equal(payload.get(field, _MISSING), value) for field, value in where.items())
            for where in self._keyed.get(job_type, ())
        )

    def stop(self) -> None:
        self._stopping.set()

    async def follow(self, store: Store) -> None:
        """Follow the pauses until `stop` (`hostedjobs.control.follow`)."""
        self._stopping = asyncio.Event()

        async def read() -> float:
            async with asyncio.timeout(_REDIS_TIMEOUT_S):
                self.apply(read_pauses(await store.job_pauses()))
            self.known.set()
            return PAUSE_RECHECK_S

        await follow(
            store,
            read,
            what="the paused job types",
            stopping=self._stopping,
            failed=self.known.set,  # work with the last known pauses rather than not at all
        )
