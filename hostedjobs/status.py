"""What `host.status()` reports: one `HostedJobStatus` per hosted job, with recent runs."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from .outcomes import JobKind, Outcome
from .results import JobResult

__all__ = [
    "HISTORY_LENGTH",
    "PAUSED_MESSAGE",
    "HostedJobStatus",
    "JobKind",
    "ProcessRuns",
    "RunRecord",
    "RunTracker",
]

HISTORY_LENGTH = 20
"""How many recent runs each job keeps."""

PAUSED_MESSAGE = "paused"
"""The message of the skipped run a cron job records when a tick comes while it is paused
(once per pause)."""


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
    hostname: str | None = None
    """The host of the process that ran it (None for a skipped tick, or written by an older
    version)."""
    pid: int | None = None
    """That process's id."""

    @property
    def process(self) -> str | None:
        """``"<hostname>:<pid>"`` of the process that ran it, if known."""
        return None if self.hostname is None else f"{self.hostname}:{self.pid}"

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
            "hostname": self.hostname,
            "pid": self.pid,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        """The inverse of `to_json`."""
        started = parse_time(data.get("started_at"))
        return cls(
            run_id=str(data.get("run_id", "")),
            scheduled_at=parse_time(data.get("scheduled_at")),
            started_at=started or datetime.fromtimestamp(0, UTC),
            finished_at=parse_time(data.get("finished_at")),
            outcome=data.get("outcome"),
            message=data.get("message"),
            manual=bool(data.get("manual", False)),
            hostname=_text(data.get("hostname")),
            pid=data["pid"] if type(data.get("pid")) is int else None,
        )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time as `RunRecord.to_json` writes it; None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class ProcessRuns:
    """One process's share of a continuous or per-process cron job, as it last published it."""

    hostname: str
    pid: int
    running: int
    """Runs in progress in that process."""
    next_run: datetime | None
    """That process's next run (None: not known, paused there, or the job is not scheduled
    there)."""
    seen_at: datetime
    """When the process last published (every few seconds while it lives)."""
    paused: bool = False
    """The process knew the job was paused when it published (it obeys the pause)."""

    @property
    def process(self) -> str:
        """``"<hostname>:<pid>"``."""
        return f"{self.hostname}:{self.pid}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (ISO datetimes)."""
        return {
            "hostname": self.hostname,
            "pid": self.pid,
            "running": self.running,
            "next_run": _iso(self.next_run),
            "seen_at": _iso(self.seen_at),
            "paused": self.paused,
        }


@dataclass(frozen=True, slots=True)
class HostedJobStatus:
    """A hosted job's schedule, last run, and recent history."""

    name: str
    kind: JobKind
    schedule: str | None
    """The cron expression, or a description of a continuous job's interval."""
    timezone: str | None
    next_run: datetime | None
    """When the next run starts; None while the job is paused (see ``paused``), or if not
    known."""
    last_scheduled_at: datetime | None
    last_started_at: datetime | None
    last_finished_at: datetime | None
    last_outcome: str | None
    last_message: str | None
    running: int
    """Runs in progress (for distributed cron: 1 while a live run holds the lease)."""
    history: tuple[RunRecord, ...] = ()
    """Recent runs, newest first (the running ones first), from every process."""
    paused: bool = False
    """Paused (`JobHost.pause`): no new runs start until it is resumed."""
    processes: tuple[ProcessRuns, ...] = ()
    """For continuous and per-process cron jobs: each live process that runs it, with its
    running count and next run (empty for distributed cron jobs)."""

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
            "paused": self.paused,
            "processes": [process.to_json() for process in self.processes],
        }


@dataclass
class RunTracker:
    """In-memory bookkeeping of one per-process job's runs."""

    running: dict[str, RunRecord] = field(default_factory=dict)
    history: deque[RunRecord] = field(default_factory=lambda: deque(maxlen=HISTORY_LENGTH))
    next_run: datetime | None = None
    unpublished: deque[RunRecord] = field(default_factory=lambda: deque(maxlen=HISTORY_LENGTH))
    """Ended runs not yet published to Redis, newest first (only the newest are kept: a
    fast loop's older runs are dropped, not queued up)."""
    paused_noted: bool = False
    """A skipped tick has been recorded for the current pause."""

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
        self.unpublished.appendleft(record)
        return record

    def skipped(
        self,
        scheduled_at: datetime,
        message: str,
        *,
        hostname: str | None = None,
        pid: int | None = None,
    ) -> None:
        """Note a tick that did not run (e.g. the previous run was still going) in the
        process ``hostname``/``pid``."""
        now = datetime.now(UTC)
        record = RunRecord(
            "",
            scheduled_at,
            now,
            now,
            outcome=Outcome.SKIPPED.value,
            message=message,
            hostname=hostname,
            pid=pid,
        )
        self.history.appendleft(record)
        self.unpublished.appendleft(record)

    def last(self) -> RunRecord | None:
        """The newest run that actually ran (started), finished or not."""
        if self.running:
            return max(self.running.values(), key=lambda r: r.started_at)
        return next((r for r in self.history if r.outcome != Outcome.SKIPPED), None)
