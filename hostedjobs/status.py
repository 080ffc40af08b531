"""What `host.status()` reports: one `HostedJobStatus` per hosted job, with recent runs."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from .outcomes import JobKind, Outcome
from .results import JobResult

__all__ = ["HISTORY_LENGTH", "HostedJobStatus", "JobKind", "RunRecord", "RunTracker"]

HISTORY_LENGTH = 20
"""How many recent runs each job keeps."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of a hosted job (or one skipped tick)."""

    run_id: str
    scheduled_at: datetime | None
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str | None = None
    """An `Outcome` value (``succeeded``, ``failed``, ``cancelled``, ``skipped``); None while
    it runs."""
    message: str | None = None
    manual: bool = False

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish, once finished."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (ISO datetimes)."""
        return {
            "run_id": self.run_id,
            "scheduled_at": _iso(self.scheduled_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "outcome": self.outcome,
            "message": self.message,
            "manual": self.manual,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        """The inverse of `to_json`."""
        started = _parse(data.get("started_at"))
        return cls(
            run_id=str(data.get("run_id", "")),
            scheduled_at=_parse(data.get("scheduled_at")),
            started_at=started or datetime.fromtimestamp(0, UTC),
            finished_at=_parse(data.get("finished_at")),
            outcome=data.get("outcome"),
            message=data.get("message"),
            manual=bool(data.get("manual", False)),
        )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class HostedJobStatus:
    """A hosted job's schedule, last run, and recent history."""

    name: str
    kind: JobKind
    schedule: str | None
    """The cron expression, or a description of a continuous job's interval."""
    timezone: str | None
    next_run: datetime | None
    last_scheduled_at: datetime | None
    last_started_at: datetime | None
    last_finished_at: datetime | None
    last_outcome: str | None
    last_message: str | None
    running: int
    """Runs in progress (for distributed cron: 1 while a live run holds the lease)."""
    history: tuple[RunRecord, ...] = ()
    """Recent runs, newest first."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, e.g. for a ``/status`` endpoint."""
        return {
            "name": self.name,
            "kind": str(self.kind),
            "schedule": self.schedule,
            "timezone": self.timezone,
            "next_run": _iso(self.next_run),
            "last_scheduled_at": _iso(self.last_scheduled_at),
            "last_started_at": _iso(self.last_started_at),
            "last_finished_at": _iso(self.last_finished_at),
            "last_outcome": self.last_outcome,
            "last_message": self.last_message,
            "running": self.running,
            "history": [run.to_json() for run in self.history],
        }


@dataclass
class RunTracker:
    """In-memory bookkeeping of one per-process job's runs."""

    running: dict[str, RunRecord] = field(default_factory=dict)
    history: deque[RunRecord] = field(default_factory=lambda: deque(maxlen=HISTORY_LENGTH))
    next_run: datetime | None = None

    def started(self, record: RunRecord) -> None:
        """Note a run that has just started."""
        self.running[record.run_id] = record

    def finished(self, run_id: str, result: JobResult) -> RunRecord:
        """Note how a run ended; returns its completed record."""
        record = replace(
            self.running.pop(run_id),
            finished_at=datetime.now(UTC),
            outcome=str(result.outcome),
            message=result.message,
        )
        self.history.appendleft(record)
        return record

    def skipped(self, scheduled_at: datetime, message: str) -> None:
        """Note a tick that did not run (e.g. the previous run was still going)."""
        now = datetime.now(UTC)
        self.history.appendleft(
            RunRecord("", scheduled_at, now, now, outcome=Outcome.SKIPPED.value, message=message)
        )

    def last(self) -> RunRecord | None:
        """The newest run that actually ran (started), finished or not."""
        if self.running:
            return max(self.running.values(), key=lambda r: r.started_at)
        return next((r for r in self.history if r.outcome != Outcome.SKIPPED), None)
