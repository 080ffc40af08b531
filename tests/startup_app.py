"""An app for the startup-gating tests under a real uvicorn, and the CLI tests.

``STARTUP_FAIL=1`` makes the startup action fail; ``STARTUP_STAY=1`` keeps the process up
after that; ``OUT_DIR`` is where the action and the gated job write when they ran. With
``STARTUP_UNTIL_RELEASED=1`` the action also waits until a file ``release`` appears there.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hostedjobs import JobHost, JobResult

OUT = Path(os.environ.get("OUT_DIR", "."))
host = JobHost(
    queue_name=os.environ.get("STARTUP_APP_QUEUE", "startup-app"),
    on_startup_failure="stay" if os.environ.get("STARTUP_STAY") else "exit",
)


@host.startup_action()
async def migrate() -> None:
    await asyncio.sleep(float(os.environ.get("STARTUP_SECONDS", "1.0")))
    while os.environ.get("STARTUP_UNTIL_RELEASED") and not (OUT / "release").exists():
        await asyncio.sleep(0.02)
    if os.environ.get("STARTUP_FAIL"):
        raise RuntimeError("the database is not reachable")
    (OUT / "migrated").write_text(repr(time.time()))


@host.job(iteration_limit=1)
async def gated() -> None:
    (OUT / "gated").write_text(repr(time.time()))


@host.cron("0 3 * * *", name="report")
async def report() -> JobResult:
    return JobResult.success("report written")


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "alive"})


app = Starlette(
    routes=[Route("/ready", host.readiness), Route("/health", health)],
    lifespan=host.lifespan,
)
