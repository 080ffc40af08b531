"""A host for the fleet-wide rate limit test: `hostedjobs worker tests.rates_app:host`.

Environment: RATES_APP_QUEUE (queue name). Each run appends ``key start_ms pid try`` to the
job's file, ``start_ms`` read from Redis's clock (TIME) as the handler starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from hostedjobs import JobContext, JobHost, RateLimit, job_type

RATE_LIMIT = 3
WINDOW = timedelta(seconds=1)

host = JobHost(queue_name=os.environ.get("RATES_APP_QUEUE", "rates-app"), concurrency=20)


@job_type("tests.rates-app.stamp")
@dataclass
class Stamp:
    """Write the Redis time at which this run started."""

    key: str
    path: str


@host.handler(Stamp, rate_limit=RateLimit(RATE_LIMIT, per=WINDOW, key=lambda job: job.key))
async def stamp(job: Stamp, ctx: JobContext) -> None:
    seconds, micros = await host.scheduler.pool.time()
    start_ms = seconds * 1000 + micros // 1000
    with Path(job.path).open("a") as file:
        file.write(f"{job.key} {start_ms} {os.getpid()} {ctx.attempt}\n")
