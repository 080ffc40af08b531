"""pytest fixtures for apps that use hostedjobs; opt in from your ``conftest.py``::

    pytest_plugins = ["hostedjobs.testing.pytest"]

    @pytest.fixture
    def hostedjobs_host() -> JobHost:
        return app_module.host          # the JobHost your app uses

Then a test asks for ``eager_jobs`` (the host in eager mode: no Redis, jobs run at once; see
`hostedjobs.testing.eager`) and ``frozen_clock`` (the `FrozenClock` it runs on). The plugin
is not loaded for anyone who does not list it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..host import JobHost
from .clocks import FrozenClock
from .eager import EagerJobs, eager

__all__ = ["eager_jobs", "frozen_clock", "hostedjobs_host"]


@pytest.fixture
def hostedjobs_host() -> JobHost:
    """The app's `JobHost`: override this fixture in your ``conftest.py`` to return it."""
    raise pytest.UsageError(
        "the hostedjobs fixtures need your JobHost: define a fixture named `hostedjobs_host` "
        "in your conftest.py that returns it"
    )


@pytest.fixture
def frozen_clock() -> FrozenClock:
    """A `FrozenClock` at the current time; move it with ``advance`` or ``move_to``.

    Override it to start elsewhere, e.g. ``return FrozenClock(datetime(2030, 1, 7, tzinfo=UTC))``.
    """
    return FrozenClock()


@pytest.fixture
def eager_jobs(
    hostedjobs_host: JobHost, frozen_clock: FrozenClock
) -> Iterator[EagerJobs[FrozenClock]]:
    """``hostedjobs_host`` in eager mode on ``frozen_clock`` for the test: start the app
    (``with TestClient(app):``) or ``async with host.run():`` inside the test."""
    with eager(hostedjobs_host, clock=frozen_clock) as jobs:
        yield jobs
