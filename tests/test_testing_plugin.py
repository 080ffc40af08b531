"""hostedjobs.testing.pytest: the fixtures, as a user's test suite sees them (pytester).

Each suite runs in a subprocess, with this checkout's hostedjobs first on its path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = """
import pytest
from dataclasses import dataclass
from hostedjobs import JobContext, JobHost, job_type

pytest_plugins = ["hostedjobs.testing.pytest"]

host = JobHost(redis_url="redis://127.0.0.1:9/0")  # the discard port: nothing to connect to
runs = []

@job_type("plugin-ping")
@dataclass
class Ping:
    n: int

@host.handler(Ping)
async def ping(job: Ping, ctx: JobContext) -> int:
    runs.append((job.n, ctx.scheduled_at))
    return job.n * 2

@pytest.fixture
def hostedjobs_host():
    return host
"""

TESTS = """
import asyncio
from datetime import timedelta
from conftest import Ping, host, runs
from hostedjobs.testing import EagerJobs, FrozenClock

def test_eager_jobs_run_at_once(eager_jobs: EagerJobs, frozen_clock: FrozenClock) -> None:
    assert eager_jobs.clock is frozen_clock

    async def main() -> None:
        async with host.run():
            job_id = await host.scheduler.enqueue(Ping(2))
            info = await host.scheduler.get(job_id)
            assert info is not None and info.result == 4
            later = await host.scheduler.schedule(Ping(3), delay=timedelta(minutes=5))
            assert await eager_jobs.advance(by=timedelta(minutes=4)) == 0
            assert await eager_jobs.advance(by=timedelta(minutes=1)) == 1
            info = await host.scheduler.get(later)
            assert info is not None and info.status == "succeeded"

    asyncio.run(main())
    assert [n for n, _ in runs] == [2, 3]

def test_the_host_is_back_on_redis_after_the_test() -> None:
    from hostedjobs.eager import EagerScheduler
    assert not isinstance(host.scheduler, EagerScheduler)
"""


@pytest.fixture(autouse=True)
def _this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def test_the_plugin_fixtures_put_the_users_host_in_eager_mode(pytester: pytest.Pytester) -> None:
    """A suite that lists the plugin gets ``eager_jobs`` and ``frozen_clock`` for its host."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_app=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_without_a_host_fixture_the_error_says_what_to_define(pytester: pytest.Pytester) -> None:
    """Asking for ``eager_jobs`` without a ``hostedjobs_host`` fixture names the fix."""
    pytester.makeconftest('pytest_plugins = ["hostedjobs.testing.pytest"]')
    pytester.makepyfile(test_app="def test_it(eager_jobs):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*define a fixture named `hostedjobs_host`*"])
    assert result.ret != 0


def test_the_plugin_is_not_loaded_unless_listed(pytester: pytest.Pytester) -> None:
    """A suite that does not list the plugin has none of its fixtures."""
    pytester.makepyfile(test_app="def test_it(eager_jobs):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*fixture 'eager_jobs' not found*"])
