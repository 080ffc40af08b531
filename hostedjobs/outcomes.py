"""The one vocabulary of how runs end, where on-demand jobs are, and what kind of job ran.

Storage, status, the dashboard, metrics and logs all speak these three enums; their values
are the strings stored in Redis and shown to people.
"""

from __future__ import annotations

import enum

__all__ = ["JobKind", "JobStatus", "Outcome"]


class Outcome(enum.StrEnum):
    """How a run (one try of a job, or one tick) ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """Raised or returned `JobResult.failed`, with no try left (or not retryable)."""
    CANCELLED = "cancelled"
    """Returned `JobResult.cancelled`, was cancelled (``scheduler.cancel``), or a hosted run
    was stopped by a shutdown."""
    RETRIED = "retried"
    """The try failed, or a shutdown interrupted it, and the job went back to the queue."""
    SKIPPED = "skipped"
    """A tick that did not run: the previous run was still running (or still queued)."""

    @property
    def finished(self) -> bool:
        """True for the outcomes that end a job: succeeded, failed, cancelled, skipped."""
        return self is not Outcome.RETRIED


class JobStatus(enum.StrEnum):
    """Where an on-demand job is in its life."""

    QUEUED = "queued"
    """Due now, waiting for a free worker."""
    SCHEDULED = "scheduled"
    """Due later: scheduled with a delay or time, or waiting to be retried."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    """Cancelled before or while it ran, or the handler returned `JobResult.cancelled`."""

    @classmethod
    def of(cls, outcome: Outcome) -> JobStatus:
        """The status a job that finished with ``outcome`` is in (a skipped tick: cancelled)."""
        if outcome is Outcome.SUCCEEDED:
            return cls.SUCCEEDED
        if outcome is Outcome.FAILED:
            return cls.FAILED
        return cls.CANCELLED

    @property
    def finished(self) -> bool:
        """True for succeeded, failed and cancelled."""
        return self in _FINISHED


_FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class JobKind(enum.StrEnum):
    """What kind of job a run belongs to."""

    ON_DEMAND = "on_demand"
    """A queued job of a ``@job_type``, run by a handler."""
    CONTINUOUS = "continuous"
    """`add_job`: runs again after each run (plus its interval), in every process."""
    CRON = "cron"
    """`add_cron_job`: on a cron schedule, in every process."""
    DISTRIBUTED_CRON = "distributed_cron"
    """`add_distributed_cron_job`: on a cron schedule, once per tick across the cluster."""
    STARTUP = "startup"
    """A startup action."""
