"""Helpers for testing code that uses hostedjobs (and for hostedjobs' own tests).

- `eager`: run a host's jobs in the test's process at once, with no Redis.
- `FrozenClock`, `run_due`: move time by hand and run what became due.
- `wait_for_job`: wait until an on-demand job reaches a state.
- `SkewedClock`: a replica whose clock is off.
- ``hostedjobs.testing.pytest``: pytest fixtures (opt in with ``pytest_plugins``).
"""

from __future__ import annotations

from .clocks import FrozenClock, SkewedClock
from .eager import EagerJobs, eager, run_due
from .waiting import wait_for_job

__all__ = ["EagerJobs", "FrozenClock", "SkewedClock", "eager", "run_due", "wait_for_job"]
