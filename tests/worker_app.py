"""A host for the worker-process tests: `hostedjobs worker tests.worker_app:host`, and the
same host under uvicorn: `uvicorn tests.worker_app:app`.

Environment: WORKER_APP_QUEUE (queue name), WORKER_APP_LOCK_TTL (short job locks),
WORKER_APP_GRACE (shutdown grace, seconds), WORKER_APP_STARTUP_MARKER (a blocking startup
action that writes this file, then runs until cancelled), WORKER_APP_SHARDS (shard count).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from starlette.applications import Starlette

import hostedjobs.worker
from hostedjobs import JobContext, JobHost, RetryPolicy, job_type

if "WORKER_APP_LEASE_TTL" in os.environ:
    # A short lease, so that a test of its renewal need not wait long.
    hostedjobs.worker.LEASE_TTL_S = float(os.environ["WORKER_APP_LEASE_TTL"])
    hostedjobs.worker.LEASE_RENEW_S = hostedjobs.worker.LEASE_TTL_S / 4

_STARTUP_MARKER = os.environ.get("WORKER_APP_STARTUP_MARKER")

host = JobHost(
    queue_name=os.environ.get("WORKER_APP_QUEUE", "worker-app"),
    shards=int(os.environ.get("WORKER_APP_SHARDS", "1")),
    shutdown_grace=timedelta(seconds=float(os.environ.get("WORKER_APP_GRACE", "20"))),
    startup_mode="blocking" if _STARTUP_MARKER else "background",
)
app = Starlette(lifespan=host.lifespan)


if _STARTUP_MARKER:
    marker = Path(_STARTUP_MARKER)

    @host.startup_action()
    async def migrate() -> None:
        marker.write_text("started")
        await asyncio.sleep(3600)


@job_type("tests.worker-app.note")
@dataclass
class Note:
    """Append a line to a file, after an optional pause."""

    path: str
    text: str
    pause: float = 0.0
    pause_on_retry: float | None = None
    """The pause of the second and later tries, if not ``pause``."""
    in_thread: bool = False
    """Pause in a thread (``asyncio.to_thread``), as blocking code does, not on the loop."""


@host.handler(Note)
async def write_note(job: Note, ctx: JobContext) -> None:
    with Path(job.path + ".starts").open("a") as file:
        file.write(f"{job.text} pid={os.getpid()} try={ctx.attempt}\n")
    retry_pause = job.pause_on_retry if ctx.attempt > 1 else None
    pause = job.pause if retry_pause is None else retry_pause
    if job.in_thread:
        await asyncio.to_thread(time.sleep, pause)
    else:
        await asyncio.sleep(pause)
    with Path(job.path).open("a") as file:
        file.write(f"{job.text} pid={os.getpid()} try={ctx.attempt}\n")


@job_type("tests.worker-app.one-try")
@dataclass
class OneTry:
    """Append a line to a file when it starts, then pause; it has one try only."""

    path: str
    pause: float


@host.handler(OneTry, retry=RetryPolicy(max_tries=1))
async def one_try(job: OneTry, ctx: JobContext) -> None:
    with Path(job.path).open("a") as file:
        file.write(f"pid={os.getpid()} try={ctx.attempt}\n")
    await asyncio.sleep(job.pause)
