"""Runtime schedules: distributed cron schedules added, changed, paused and removed while the
app runs (``host.schedules``), stored in Redis, each tick enqueued once cluster-wide.

A schedule enqueues an on-demand job (a ``@job_type`` payload, as ``scheduler.enqueue``
takes) at each tick of a cron expression. Every process running the host sleeps until the
earliest next tick of any schedule (one Redis read, however many schedules there are), woken
early by a notice on the control channel when a schedule changes. At a due tick T it computes
the next tick T' and asks Redis to move the schedule's score from T to T' and enqueue T's run,
in one script that does nothing unless the score is still T and the definition the one it
read: of the processes that race for T exactly one wins, and the run's id is derived from
(schedule, T) so not even a retried call can enqueue it twice.

A tick found more than `MISSED_AFTER_S` late (every process was down, or Redis was) is missed,
with every tick after it up to now: ``misfire="skip"`` (the default) runs none of them;
``"run_once"`` runs the latest of them once. Either way the schedule goes on with its next
tick after now. A tick found less late runs, late (a busy or restarting process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from .control import follow
from .cron import CronSchedule
from .exceptions import (
    ConfigurationError,
    HostNotRunningError,
    PayloadDecodeError,
    PayloadError,
    UnknownJobError,
)
from .records import job_record
from .serialization import decode_payload, encode_payload, job_type_info, lookup_job_type
from .storage.schedules import ScheduleStore
from .storage.store import Store

__all__ = ["MISSED_AFTER_S", "Schedule", "Schedules"]

logger = logging.getLogger("hostedjobs.schedules")

Misfire = Literal["skip", "run_once"]
MISSED_AFTER_S = 60.0
"""A tick no process fired within this long after its time is missed (see `Misfire`)."""
RECHECK_S = 30.0
"""An idle process reads the earliest tick this often even without a notice (a missed
notice, a reconnect), and every second when it may not subscribe to the control channel."""
_BATCH = 200
_RUN_TTL_MS = 86_400_000
_MAX_NAME = 200
_MAX_PAGE = 10_000
_MAX_OFFSET = 10**12


@dataclass(frozen=True, slots=True)
class Schedule:
    """One runtime schedule as stored in Redis."""

    name: str
    cron: str
    timezone: str
    job_type: str
    """The payload's wire name, ``"type@version"``."""
    payload: dict[str, Any]
    """The payload's JSON form, enqueued at each tick."""
    paused: bool
    misfire: Misfire
    next_tick: datetime | None
    """The next tick to fire (aware UTC); None while paused."""


@lru_cache(maxsize=4096)
def _cron(expression: str, timezone: str) -> CronSchedule:
    return CronSchedule.parse(expression, timezone)


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _definition(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _schedule(name: str, raw: bytes, score: int | None) -> Schedule:
    found = _definition(raw)
    return Schedule(
        name=name,
        cron=str(found["cron"]),
        timezone=str(found["timezone"]),
        job_type=str(found["function"]),
        payload=dict(found["payload"]),
        paused=bool(found.get("paused")),
        misfire="run_once" if found.get("misfire") == "run_once" else "skip",
        next_tick=None if score is None else _at(score),
    )


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"a schedule's name must be a non-empty string, got {name!r}")
    if len(name) > _MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigurationError(
            f"a schedule's name must be at most {_MAX_NAME} characters without control "
            f"characters, got {name!r:.80}"
        )
    return name


def _check_misfire(misfire: object) -> Misfire:
    if misfire not in ("skip", "run_once"):
        raise ConfigurationError(f"misfire must be 'skip' or 'run_once', got {misfire!r}")
    return "run_once" if misfire == "run_once" else "skip"


class Schedules:
    """The runtime schedules of a host's queue: ``host.schedules``.

    Changes are stored in Redis and obeyed by every process running the host within a
    second. Methods raise `HostNotRunningError` unless the host runs (or is `connected`),
    and `RedisUnavailableError` if Redis does not answer (then nothing was written: each
    change is one atomic step).
    """

    def __init__(self, handled: Callable[[], set[str]]) -> None:
        self._handled = handled
        self._store: ScheduleStore | None = None
        self._wake: asyncio.Event | None = None
        """Set when this process changes a schedule; made per run (an event is bound to the
        loop that first waits on it, and a host may run in one loop after another)."""
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.fired = 0
        """Runs this process enqueued (for tests and the bench)."""

    def _attach(self, store: Store | None) -> None:
        self._store = None if store is None else ScheduleStore(store)

    def _schedules(self) -> ScheduleStore:
        if self._store is None:
            raise HostNotRunningError(
                "the host is not running: start it (lifespan, host.run() or host.connected()) "
                "before using host.schedules"
            )
        return self._store

    # -- the API --------------------------------------------------------------------------

    async def add(
        self,
        name: str,
        cron: str,
        job: object,
        *,
        timezone: str = "UTC",
        misfire: Misfire = "skip",
        paused: bool = False,
    ) -> Schedule:
        """Add the schedule ``name``: enqueue ``job`` (an instance of a ``@job_type`` class
        with a handler on this host) at each tick of ``cron`` read on ``timezone``'s wall
        clock. Raises `ConfigurationError` for an empty name, a name already taken (change
        it with `update`), an invalid expression or zone, or a payload that is not a job."""
        store = self._schedules()
        _check_name(name)
        if not isinstance(paused, bool):
            raise ConfigurationError(f"paused must be True or False, got {paused!r}")
        definition = self._new_definition(cron, job, timezone, _check_misfire(misfire), paused)
        next_ms = None if paused else self._first_tick(definition)
        text = json.dumps(definition, sort_keys=True)
        if not await store.write(name, expected=None, definition=text, next_ms=next_ms):
            raise ConfigurationError(
                f"a schedule named {name!r} already exists: change it with "
                "host.schedules.update(), or remove it first"
            )
        await self._changed()
        return _schedule(name, text.encode(), next_ms)

    async def update(
        self,
        name: str,
        *,
        cron: str | None = None,
        job: object | None = None,
        timezone: str | None = None,
        misfire: Misfire | None = None,
    ) -> Schedule:
        """Change the expression, zone, payload or misfire policy of the schedule ``name``
        (what is not given stays). A new expression or zone starts from the next tick after
        now; a new payload is enqueued from the next tick on. Raises `UnknownJobError` if
        there is no such schedule, and `ConfigurationError` as `add`."""
        store = self._schedules()

        def change(current: dict[str, Any]) -> dict[str, Any]:
            new = self._new_definition(
                cron if cron is not None else current["cron"],
                job,
                timezone if timezone is not None else current["timezone"],
                _check_misfire(misfire if misfire is not None else current.get("misfire")),
                bool(current.get("paused")),
            )
            if job is None:
                new["function"], new["payload"] = current["function"], current["payload"]
            return new

        return await self._change(store, name, change)

    async def pause(self, name: str) -> bool:
        """Stop enqueuing the schedule's runs, in every process; True if it was running.
        Ticks passing while paused never run (resuming starts from the next tick)."""
        return await self._set_paused(name, True)

    async def resume(self, name: str) -> bool:
        """Resume a paused schedule from its next tick after now; True if it was paused."""
        return await self._set_paused(name, False)

    async def remove(self, name: str) -> bool:
        """Delete the schedule ``name``; False if there was none. Runs already enqueued stay."""
        removed = await self._schedules().remove(name)
        if removed:
            await self._changed()
        return removed

    async def get(self, name: str) -> Schedule | None:
        """The schedule ``name``, or None."""
        raw, score = await self._schedules().read(name)
        return None if raw is None else _schedule(name, raw, score)

    async def list(self, offset: int = 0, limit: int = 100) -> list[Schedule]:
        """A page of the schedules, in name order."""
        if (
            not isinstance(offset, int)
            or not isinstance(limit, int)
            or not 0 <= offset <= _MAX_OFFSET
            or not 0 <= limit <= _MAX_PAGE
        ):
            raise ConfigurationError(
                f"offset must be an int from 0 to {_MAX_OFFSET:,} and limit one from 0 to "
                f"{_MAX_PAGE:,} (a page), got offset={offset!r}, limit={limit!r}"
            )
        page = await self._schedules().page(offset, limit)
        return [_schedule(name, raw, score) for name, raw, score in page if raw is not None]

    async def count(self) -> int:
        """How many schedules there are, paused ones included."""
        return await self._schedules().count()

    def job_types(self) -> tuple[str, ...]:
        """The job types a schedule of this host may enqueue (those with a handler here), as
        wire names (``"type@version"``), sorted."""
        return tuple(sorted(self._handled()))

    def job(self, job_type: str, payload: str | Mapping[str, Any]) -> object:
        """A job of ``job_type`` built from ``payload`` (a JSON object, or its text), for a
        schedule given as text (the CLI, the console). ``job_type`` is a wire name
        (``"send-email@2"``) or a bare name (its highest version with a handler here).
        Raises `ConfigurationError` for a type without a handler here, text that is not a
        JSON object, or a payload that does not decode as the type (naming the field)."""
        handled = self.job_types()
        if not isinstance(job_type, str) or not job_type.strip():
            raise ConfigurationError(f"a job type is needed; types here: {', '.join(handled)}")
        wanted = job_type.strip()
        versions = [
            (int(version), key)
            for key in handled
            for name, _, version in [key.rpartition("@")]
            if key == wanted or (name == wanted and version.isdigit())
        ]
        if not versions:
            raise ConfigurationError(
                f"no handler for job type {wanted!r} on this host; types here: "
                f"{', '.join(handled) or 'none'}"
            )
        key = max(versions)[1]
        name, _, version = key.rpartition("@")
        info = lookup_job_type(name, int(version))
        if info is None:  # a handler is registered for every handled type's class
            raise ConfigurationError(f"job type {key!r} is not defined in this process")
        if isinstance(payload, str):
            try:
                payload = json.loads(payload or "{}")
            except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
                raise ConfigurationError(f"the payload is not JSON: {exc}") from None
        if not isinstance(payload, Mapping):
            raise ConfigurationError(
                f"the payload must be a JSON object of {key}'s fields, got {payload!r:.80}"
            )
        try:
            return decode_payload(info.cls, dict(payload))
        except (PayloadError, PayloadDecodeError) as exc:
            text = str(exc) if str(exc).startswith(f"{key}:") else f"{key}: {exc}"
            raise ConfigurationError(f"the payload does not fit {text}") from None

    # -- changes --------------------------------------------------------------------------

    def _new_definition(
        self, cron: str, job: object | None, timezone: str, misfire: Misfire, paused: bool
    ) -> dict[str, Any]:
        if not isinstance(cron, str):
            raise ConfigurationError(f"cron must be a string expression, got {cron!r}")
        _cron(cron, timezone)  # ConfigurationError for a bad expression or zone
        definition: dict[str, Any] = {
            "cron": cron,
            "timezone": timezone,
            "misfire": misfire,
            "paused": paused,
        }
        if job is not None:
            try:
                info = job_type_info(job)
                payload = encode_payload(job)
            except PayloadError as exc:
                raise ConfigurationError(f"a schedule's job: {exc}") from None
            if info.key not in self._handled():
                raise ConfigurationError(
                    f"no handler for job type {info.key!r} on this host: register one with "
                    f"@host.handler({info.cls.__name__}) so workers can run the schedule's jobs"
                )
            definition["function"], definition["payload"] = info.key, payload
        return definition

    @staticmethod
    def _first_tick(definition: dict[str, Any]) -> int:
        schedule = _cron(definition["cron"], definition["timezone"])
        return _ms(schedule.next_tick(datetime.now(UTC)))

    async def _set_paused(self, name: str, paused: bool) -> bool:
        store = self._schedules()
        was: list[bool] = []

        def change(current: dict[str, Any]) -> dict[str, Any]:
            was.append(bool(current.get("paused")))
            return {**current, "paused": paused}

        await self._change(store, name, change)
        return was[-1] != paused

    async def _change(
        self, store: ScheduleStore, name: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Schedule:
        while True:  # compare-and-set: again if another process changed it in between
            raw, score = await store.read(name)
            if raw is None:
                raise UnknownJobError(f"no schedule named {name!r}; add one first")
            current = _definition(raw)
            new = change(current)
            if new == current:
                return _schedule(name, raw, score)
            if new["paused"]:
                next_ms = None
            elif (
                score is not None
                and new["cron"] == current["cron"]
                and new["timezone"] == current["timezone"]
            ):
                next_ms = score  # the payload changed: the due tick stays
            else:
                next_ms = self._first_tick(new)
            text = json.dumps(new, sort_keys=True)
            if await store.write(name, expected=raw, definition=text, next_ms=next_ms):
                await self._changed()
                return _schedule(name, text.encode(), next_ms)

    async def _changed(self) -> None:
        if self._wake is not None:
            self._wake.set()
        await self._schedules().notify()

    # -- firing ---------------------------------------------------------------------------

    def _start(self) -> None:
        store = self._schedules()
        self._stopping = False
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._loop(store), name="hostedjobs:schedules"
        )

    async def _stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._wake = None

    async def _loop(self, store: ScheduleStore) -> None:
        async def read() -> float:
            await self.fire_due(store)
            earliest = await store.earliest()
            if earliest is None:
                return RECHECK_S
            return min(RECHECK_S, max(earliest / 1000 - time.time(), 0.0))

        # Stopped by cancelling this task (`_stop`).
        await follow(
            store.store,
            read,
            what="the runtime schedules",
            stopping=asyncio.Event(),
            wake=self._wake,
        )

    async def fire_due(self, store: ScheduleStore | None = None) -> int:
        """Fire every tick due now; returns how many runs this process enqueued."""
        store = store or self._schedules()
        enqueued = 0
        seen: set[tuple[str, int]] = set()
        while True:
            now_ms = int(time.time() * 1000)
            # A tick read again was not moved by anyone (a definition gone or changed under
            # us): it waits for the next pass rather than spinning here.
            due = [item for item in await store.due(now_ms, _BATCH) if item[:2] not in seen]
            if not due:
                return enqueued
            seen.update(item[:2] for item in due)
            results = await asyncio.gather(
                *(self._fire(store, name, tick, raw, now_ms) for name, tick, raw in due)
            )
            enqueued += sum(1 for result in results if result == 1)
            self.fired += sum(1 for result in results if result == 1)

    async def _fire(
        self, store: ScheduleStore, name: str, tick_ms: int, raw: bytes | None, now_ms: int
    ) -> int:
        if raw is None:  # removed between the two reads: the next read will not see it
            return 0
        try:
            definition = _definition(raw)
            schedule = _cron(str(definition["cron"]), str(definition["timezone"]))
            function, payload = str(definition["function"]), definition["payload"]
        except (ValueError, KeyError, TypeError, ConfigurationError) as exc:
            logger.error("schedule %r has an unreadable definition (%r): taken out", name, exc)
            return await store.fire(name, tick_ms=tick_ms, definition=raw, next_ms=None, run=None)
        now = _at(now_ms)
        run_tick: int | None = tick_ms
        if now_ms - tick_ms > MISSED_AFTER_S * 1000:
            following = schedule.next_tick(now)
            if definition.get("misfire") == "run_once":
                previous = schedule.previous_tick(now)
                run_tick = _ms(previous) if previous is not None else None
                logger.warning("schedule %r missed ticks; running the latest once", name)
            else:
                run_tick = None
                logger.warning("schedule %r missed ticks since %s: skipped", name, _at(tick_ms))
        else:
            following = schedule.next_tick(_at(tick_ms))
        run = None
        if run_tick is not None:
            run_id = store.keys.schedule_run_id(name, run_tick)
            run = (run_id, job_record(function, payload, now_ms), _RUN_TTL_MS, now_ms)
        return await store.fire(
            name, tick_ms=tick_ms, definition=raw, next_ms=_ms(following), run=run
        )
