"""A host for the distributed-cron process tests: `hostedjobs worker tests.cron_app:host`.

Each run of the every-second distributed job appends "tick pid" to a Redis list, so the test
can check that every tick ran exactly once across all processes. ``CLOCK_SKEW_S`` gives this
process a clock that is off by that many seconds.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from hostedjobs import JobContext, JobHost
from hostedjobs.testing import SkewedClock

host = JobHost(
    queue_name=os.environ.get("CRON_APP_QUEUE", "cron-app"),
    clock=SkewedClock(timedelta(seconds=float(os.environ.get("CLOCK_SKEW_S", "0")))),
    shutdown_grace=timedelta(seconds=1),
)


@host.distributed_cron(os.environ.get("CRON_APP_SCHEDULE", "* * * * * *"), name="every-second")
async def every_second(ctx: JobContext) -> None:
    assert ctx.scheduled_at is not None
    pool = host.scheduler.pool
    tick = f"{int(ctx.scheduled_at.timestamp())} {os.getpid()}"
    await pool.rpush(f"{host.queue_name}:ticks", tick)  # type: ignore[misc]
    await asyncio.sleep(float(os.environ.get("CRON_APP_RUN_S", "0")))
