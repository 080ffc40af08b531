"""A host for the worker-process tests: `hostedjobs worker tests.worker_app:host`."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import hostedjobs.worker
from hostedjobs import JobContext, JobHost, job_type

if "WORKER_APP_LEASE_TTL" in os.environ:
    # A short lease, so that a test of its renewal need not wait long.
    hostedjobs.worker.LEASE_TTL_S = float(os.environ["WORKER_APP_LEASE_TTL"])
    hostedjobs.worker.LEASE_RENEW_S = hostedjobs.worker.LEASE_TTL_S / 4

host = JobHost(queue_name=os.environ.get("WORKER_APP_QUEUE", "worker-app"))


@job_type("tests.worker-app.note")
@dataclass
class Note:
    """Append a line to a file, after an optional pause."""

    path: str
    text: str
    pause: float = 0.0
    pause_on_retry: float | None = None
    """The pause of the second and later tries, if not ``pause``."""


@host.handler(Note)
async def write_note(job: Note, ctx: JobContext) -> None:
    with Path(job.path + ".starts").open("a") as file:
        file.write(f"{job.text} pid={os.getpid()} try={ctx.attempt}\n")
    retry_pause = job.pause_on_retry if ctx.attempt > 1 else None
    await asyncio.sleep(job.pause if retry_pause is None else retry_pause)
    with Path(job.path).open("a") as file:
        file.write(f"{job.text} pid={os.getpid()} try={ctx.attempt}\n")
