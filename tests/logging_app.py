"""An app that configures no logging, for the tests of what uvicorn shows of hostedjobs.

At start a hosted job enqueues one job; its handler says so through ``ctx.logger`` and
writes ``OUT_DIR/welcomed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette

from hostedjobs import JobContext, JobHost, job_type

OUT = Path(os.environ.get("OUT_DIR", "."))
host = JobHost(queue_name=os.environ.get("LOGGING_APP_QUEUE", "logging-app"))


@job_type("tests.logging_app.welcome")
@dataclass
class Welcome:
    email: str


@host.handler(Welcome)
async def welcome(job: Welcome, ctx: JobContext) -> None:
    ctx.logger.info("welcomed %s", job.email)
    (OUT / "welcomed").write_text(job.email)


@host.job(iteration_limit=1)
async def sign_up() -> None:
    await host.scheduler.enqueue(Welcome(email="ada@example.com"))


app = Starlette(lifespan=host.lifespan)
