"""`JobResult`: what a run reports back, beyond "it returned" or "it raised"."""

from __future__ import annotations

from dataclasses import dataclass

from .outcomes import Outcome

__all__ = ["JobResult", "Outcome"]


@dataclass(frozen=True, slots=True)
class JobResult:
    """The outcome of one run, with an optional human-readable message.

    Returning ``None`` from a job is the same as ``JobResult.success()``; raising is the same
    as ``JobResult.from_exception(exc)`` (and, for on-demand jobs, may be retried).
    """

    outcome: Outcome
    message: str | None = None
    error: BaseException | None = None

    @classmethod
    def success(cls, message: str | None = None) -> JobResult:
        """The run did its work."""
        return cls(Outcome.SUCCEEDED, message)

    @classmethod
    def failed(cls, message: str) -> JobResult:
        """The run could not do its work; on-demand jobs are not retried after this."""
        return cls(Outcome.FAILED, message)

    @classmethod
    def cancelled(cls, message: str | None = None) -> JobResult:
        """The run decided there was nothing to do (or was told to stop)."""
        return cls(Outcome.CANCELLED, message)

    @classmethod
    def from_exception(cls, exc: BaseException) -> JobResult:
        """A failed result carrying ``exc``; the message is ``"ExcType: text"``."""
        return cls(Outcome.FAILED, f"{type(exc).__name__}: {exc}", exc)

    @property
    def is_success(self) -> bool:
        """True when the outcome is `Outcome.SUCCEEDED`."""
        return self.outcome is Outcome.SUCCEEDED
