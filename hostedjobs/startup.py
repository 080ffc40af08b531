"""Startup actions: work that must finish before gated jobs start and the app reports ready.

Actions run in ascending priority groups; actions of one group run concurrently, each in its
own scope. The first failure stops the rest: gated jobs never start, and readiness names the
failed action.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from .context import JobContext
from .exceptions import ConfigurationError
from .outcomes import JobKind, Outcome
from .runner import Runner
from .runs import JobCallable

__all__ = ["StartupAction", "StartupActions", "StartupState"]

logger = logging.getLogger("hostedjobs.startup")


class StartupState(enum.StrEnum):
    """Where startup is."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class StartupAction:
    """A registered action."""

    name: str
    priority: int
    code: JobCallable
    timeout_s: float | None


class StartupActions:
    """The registered actions and the outcome of running them (once per host run)."""

    def __init__(self) -> None:
        self._actions: list[StartupAction] = []
        self._done = asyncio.Event()
        self.state = StartupState.PENDING
        self.failed_action: str | None = None
        self.error: str | None = None
        self.running_now: set[str] = set()

    def add(self, action: StartupAction) -> None:
        """Register an action; names must be unique."""
        if any(a.name == action.name for a in self._actions):
            raise ConfigurationError(
                f"a startup action named {action.name!r} is already registered; pass name='...'"
            )
        self._actions.append(action)

    @property
    def actions(self) -> tuple[StartupAction, ...]:
        """Registered actions in the order they will run."""
        return tuple(sorted(self._actions, key=lambda a: a.priority))

    def reset(self) -> None:
        """Forget the last run's outcome (a host can be run again, e.g. in tests)."""
        self._done = asyncio.Event()
        self.state = StartupState.PENDING
        self.failed_action = self.error = None
        self.running_now = set()

    @property
    def finished(self) -> bool:
        """True once every action succeeded or one failed."""
        return self.state in (StartupState.SUCCEEDED, StartupState.FAILED)

    async def wait(self) -> bool:
        """Wait until startup has finished; True if every action succeeded."""
        await self._done.wait()
        return self.state is StartupState.SUCCEEDED

    async def run(self, runner: Runner) -> bool:
        """Run every action, group by group; True if all succeeded."""
        self.state = StartupState.RUNNING
        started = time.monotonic()
        try:
            for priority, group in itertools.groupby(self.actions, key=lambda a: a.priority):
                actions = list(group)
                names = ", ".join(a.name for a in actions)
                logger.info("running startup actions (priority %d): %s", priority, names)
                outcomes = await asyncio.gather(*(self._run_one(a, runner) for a in actions))
                failed = next((f for f in outcomes if f is not None), None)
                if failed is not None:
                    self.failed_action, self.error = failed
                    self.state = StartupState.FAILED
                    logger.error(
                        "startup action %r failed: %s; gated jobs will not start",
                        self.failed_action,
                        self.error,
                    )
                    return False
            self.state = StartupState.SUCCEEDED
            if self._actions:
                logger.info("startup actions finished in %.2fs", time.monotonic() - started)
            return True
        finally:
            if self.state is StartupState.RUNNING:  # cancelled
                self.state = StartupState.PENDING
            self._done.set()

    async def _run_one(self, action: StartupAction, runner: Runner) -> tuple[str, str] | None:
        ctx = JobContext(
            job_name=action.name,
            run_id=uuid.uuid4().hex,
            attempt=1,
            scheduled_at=None,
            started_at=datetime.now(UTC),
        )
        self.running_now.add(action.name)
        try:
            report = await runner.run(
                action.code, ctx, kind=JobKind.STARTUP, timeout_s=action.timeout_s
            )
        finally:
            self.running_now.discard(action.name)
        if report.outcome is Outcome.FAILED:
            return action.name, report.message or "failed"
        return None
