"""The public surface is deliberate: pinned here so a change to it is a visible decision."""

from __future__ import annotations

import hostedjobs
import hostedjobs.exceptions


def test_top_level_exports_are_pinned() -> None:
    """`hostedjobs.__all__` lists exactly the public names, and each one exists."""
    assert sorted(hostedjobs.__all__) == [
        "ConcurrencyLimit",
        "Cooldown",
        "Debounce",
        "HostedJobsError",
        "Inject",
        "JobContext",
        "JobHost",
        "JobId",
        "JobInfo",
        "JobKind",
        "JobResult",
        "JobStatus",
        "Outcome",
        "RateLimit",
        "RetryPolicy",
        "Scheduler",
        "Services",
        "Task",
        "job_type",
    ]
    for name in hostedjobs.__all__:
        assert getattr(hostedjobs, name).__doc__, f"{name} has no docstring"


def test_every_error_is_a_hostedjobs_error_and_a_builtin() -> None:
    """Each exception subclasses HostedJobsError and the builtin it semantically is."""
    builtins = (ValueError, TypeError, LookupError, RuntimeError, ConnectionError, OSError)
    for name in hostedjobs.exceptions.__all__:
        error = getattr(hostedjobs.exceptions, name)
        assert issubclass(error, hostedjobs.HostedJobsError)
        if error is not hostedjobs.HostedJobsError:
            assert issubclass(error, builtins), name
