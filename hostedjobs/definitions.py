"""What a registered hosted job is: its code, its kind, and its options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .cron import CronSchedule
from .outcomes import JobKind
from .retries import RetryPolicy
from .runs import JobCallable

__all__ = ["HostedJob", "Misfire", "Overlap"]

Overlap = Literal["skip", "allow"]
Misfire = Literal["skip", "run_once"]


@dataclass(frozen=True, slots=True)
class HostedJob:
    """A registered hosted job and its options."""

    name: str
    kind: JobKind
    code: JobCallable
    timeout_s: float | None = None
    wait_for_startup: bool = True
    interval_s: float = 0.0
    initial_delay_s: float = 0.0
    instance_count: int = 1
    iteration_limit: int | None = None
    failure_backoff: RetryPolicy = field(default_factory=RetryPolicy)
    schedule: CronSchedule | None = None
    overlap: Overlap = "skip"
    misfire: Misfire = "skip"
    misfire_grace_s: float = 300.0

    def describe_schedule(self) -> str:
        """The cron expression, or how often a continuous job runs."""
        if self.schedule is not None:
            return self.schedule.expression
        if self.interval_s:
            return f"every {self.interval_s:g}s after each run"
        return "back to back"
