"""`JobContext`: what a run knows about itself, injectable into every job and handler."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["JobContext", "ProgressReporter"]

ProgressReporter = Callable[[float, str | None], Awaitable[None]]
"""Stores a run's progress: ``(percent, message)``."""

_logger = logging.getLogger("hostedjobs.run")


class _RunLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds the run's fields to every record (as ``extra``) and to the message prefix."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        assert self.extra is not None
        kwargs["extra"] = {**self.extra, **kwargs.get("extra", {})}
        return msg, kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        assert self.extra is not None
        msg, fields = self.process(msg, kwargs)
        prefix = f"[{self.extra['job_name']} {self.extra['run_id']}] "
        # The message is %-formatted with args only when there are args: a run id or name
        # holding "%s" or "%(x)s" must then not be read as part of the template.
        if args:
            prefix = prefix.replace("%", "%%")
        # This frame is not logging's own: skip it so records name the caller's line.
        fields["stacklevel"] = fields.get("stacklevel", 1) + 1
        self.logger.log(level, prefix + str(msg), *args, **fields)


async def _ignore_progress(percent: float, message: str | None) -> None:
    return None


@dataclass(slots=True)
class JobContext:
    """One run of a job: its identity, timing, progress reporting and a logger bound to it.

    Ask for it by annotation (``ctx: JobContext``) in a job function, a handler, a handler's
    constructor or a scoped factory.
    """

    job_name: str
    """The hosted job's name, or the job type's name for on-demand jobs."""
    run_id: str
    """Unique per run; for on-demand jobs, the job id returned by `enqueue`."""
    attempt: int
    """1 for the first try, 2 for the first retry, and so on."""
    scheduled_at: datetime | None
    """When the run was due: the cron tick, or the time an on-demand job was scheduled for."""
    started_at: datetime
    """When this attempt started (UTC)."""
    _progress: ProgressReporter = field(default=_ignore_progress, repr=False)
    _logger: logging.LoggerAdapter[logging.Logger] | None = field(
        default=None, init=False, repr=False
    )

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry ``job_name``, ``run_id`` and ``attempt``."""
        if self._logger is None:
            self._logger = _RunLogger(
                _logger, {"job_name": self.job_name, "run_id": self.run_id, "attempt": self.attempt}
            )
        return self._logger

    async def report_progress(self, percent: float, message: str | None = None) -> None:
        """Record how far the run has got (0-100), with an optional message.

        The latest value is stored with the job and shown by `Scheduler.get`.
        """
        if not 0 <= percent <= 100:
            raise ValueError(f"progress must be between 0 and 100, got {percent!r}")
        await self._progress(float(percent), message)
