"""A host for the hosted-runs process tests: `hostedjobs worker tests.hosted_app:host`.

Each run of the continuous job ``tick-tock`` and of the per-process cron job ``every-second``
appends ``"<name> <pid>"`` to the Redis list ``<queue>:runs``. With ``HOSTED_APP_SLEEPER`` set,
the continuous job ``sleeper`` runs once for an hour (to be killed in the middle).
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from hostedjobs import JobContext, JobHost


def make_host(queue_name: str, *, sleeper: bool = False) -> JobHost:
    """The host, on ``queue_name``; the test process builds its own to read the status."""
    host = JobHost(queue_name=queue_name, shutdown_grace=timedelta(seconds=1))

    async def note(ctx: JobContext) -> None:
        await host.scheduler.pool.rpush(f"{queue_name}:runs", f"{ctx.job_name} {os.getpid()}")  # type: ignore[misc]

    host.add_job(note, name="tick-tock", interval=timedelta(seconds=0.1))
    host.add_cron_job(note, "* * * * * *", name="every-second")
    if sleeper:

        @host.job(name="sleeper", iteration_limit=1)
        async def sleep(ctx: JobContext) -> None:
            await asyncio.sleep(3600)

    return host


host = make_host(
    os.environ.get("HOSTED_APP_QUEUE", "hosted-app"), sleeper="HOSTED_APP_SLEEPER" in os.environ
)
