"""A web app for the shared embedded server tests: ``uvicorn tests.embedded_web:app`` beside
``hostedjobs worker tests.worker_app:host``, both on the embedded default (no Redis URL).

It serves `tests.worker_app`'s host (so it also runs queued notes itself) and adds what a web
process does: enqueue, look a job up, answer health.
"""

from __future__ import annotations

from datetime import timedelta

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.worker_app import Note, host


async def enqueue(request: Request) -> JSONResponse:
    """POST a Note's fields, plus ``delay`` in seconds to schedule it for later."""
    body = await request.json()
    delay = body.pop("delay", None)
    note = Note(**body)
    if delay is None:
        job_id = await host.scheduler.enqueue(note)
    else:
        job_id = await host.scheduler.schedule(note, delay=timedelta(seconds=delay))
    return JSONResponse({"id": job_id})


async def job(request: Request) -> JSONResponse:
    """The job's status, or 404."""
    info = await host.scheduler.get(request.path_params["job_id"])
    if info is None:
        return JSONResponse(None, status_code=404)
    return JSONResponse({"status": info.status.value})


app = Starlette(
    routes=[
        Route("/notes", enqueue, methods=["POST"]),
        Route("/jobs/{job_id}", job),
        Route("/health", host.health),
    ],
    lifespan=host.lifespan,
)
