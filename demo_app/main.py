"""The demo: sign-ups stored in SQLite, a welcome email and a reminder sent as background jobs.

    POST /signups {"email": "ada@example.com"}   store it, enqueue the welcome email,
                                                 schedule a reminder (REMINDER_DELAY s later)
    GET  /signups                                every sign-up and the emails "sent" so far
    GET  /jobs/{id}                              a job's status, tries, times, result
    DELETE /jobs/{id}                            cancel a job that has not started
    GET  /ready                                  200 once the job host runs

Each job run gets its own SQLite connection from the scope: committed if the run succeeds,
rolled back if it raises, closed either way.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hostedjobs import Inject, JobContext, JobHost, JobResult, Services, job_type

DB_PATH = Path(os.environ.get("DEMO_DB", ".hostedjobs/demo.sqlite3"))
REMINDER_DELAY = timedelta(seconds=float(os.environ.get("REMINDER_DELAY", "60")))

SCHEMA = """
CREATE TABLE IF NOT EXISTS signups (
    id INTEGER PRIMARY KEY, email TEXT NOT NULL, created_at TEXT DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, signup_id INTEGER NOT NULL, kind TEXT NOT NULL,
    sent_at TEXT DEFAULT CURRENT_TIMESTAMP
);
"""


def connect() -> sqlite3.Connection:
    """A connection to the demo database (created with its schema on first use)."""
    DB_PATH.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(DB_PATH)
    connection.row_factory = sqlite3.Row
    connection.executescript(SCHEMA)
    return connection


def open_db() -> Iterator[sqlite3.Connection]:
    """Scoped: one connection per job run, committed on success, rolled back on error."""
    connection = connect()
    try:
        yield connection
    except BaseException:
        connection.rollback()
        raise
    else:
        connection.commit()
    finally:
        connection.close()


services = Services()
services.add_scoped(sqlite3.Connection, open_db)
host = JobHost(services=services, queue_name="demo")


@job_type("welcome-email", version=1)
@dataclass
class WelcomeEmail:
    """Send the welcome email for a sign-up."""

    signup_id: int
    email: str


@job_type("signup-reminder", version=1)
@dataclass
class SignupReminder:
    """Remind a sign-up to finish setting up their account."""

    signup_id: int


@host.handler(WelcomeEmail)
class SendWelcomeEmail:
    """A class handler: its constructor gets the run's connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    async def handle(self, job: WelcomeEmail, ctx: JobContext) -> JobResult:
        await ctx.report_progress(50, "rendering")
        self.db.execute(
            "INSERT INTO outbox (signup_id, kind) VALUES (?, 'welcome')", (job.signup_id,)
        )
        ctx.logger.info("welcome email sent to %s", job.email)
        return JobResult.success(f"welcome email sent to {job.email}")


@host.handler(SignupReminder)
async def send_reminder(
    job: SignupReminder, ctx: JobContext, db: sqlite3.Connection = Inject()
) -> JobResult:
    """A function handler: the connection comes from an Inject() default."""
    db.execute("INSERT INTO outbox (signup_id, kind) VALUES (?, 'reminder')", (job.signup_id,))
    return JobResult.success("reminder sent")


async def create_signup(request: Request) -> JSONResponse:
    body = await request.json()
    email = body.get("email") if isinstance(body, dict) else None
    if not isinstance(email, str) or "@" not in email:
        return JSONResponse({"error": 'send {"email": "someone@example.com"}'}, status_code=400)
    with contextlib.closing(connect()) as db, db:
        signup_id = db.execute("INSERT INTO signups (email) VALUES (?)", (email,)).lastrowid
    assert signup_id is not None
    welcome = await host.scheduler.enqueue(WelcomeEmail(signup_id=signup_id, email=email))
    reminder = await host.scheduler.schedule(
        SignupReminder(signup_id=signup_id), delay=REMINDER_DELAY
    )
    return JSONResponse(
        {"signup_id": signup_id, "welcome_job": welcome, "reminder_job": reminder},
        status_code=202,
    )


async def list_signups(request: Request) -> JSONResponse:
    with contextlib.closing(connect()) as db:
        signups = [dict(row) for row in db.execute("SELECT * FROM signups ORDER BY id")]
        for signup in signups:
            signup["emails"] = [
                row["kind"]
                for row in db.execute(
                    "SELECT kind FROM outbox WHERE signup_id = ? ORDER BY id", (signup["id"],)
                )
            ]
    return JSONResponse(signups)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


async def get_job(request: Request) -> JSONResponse:
    info = await host.scheduler.get(request.path_params["job_id"])
    if info is None:
        return JSONResponse({"error": "no such job"}, status_code=404)
    return JSONResponse({key: _jsonable(value) for key, value in asdict(info).items()})


async def delete_job(request: Request) -> JSONResponse:
    deleted = await host.scheduler.delete(request.path_params["job_id"])
    return JSONResponse({"deleted": deleted}, status_code=200 if deleted else 409)


app = Starlette(
    routes=[
        Route("/signups", create_signup, methods=["POST"]),
        Route("/signups", list_signups, methods=["GET"]),
        Route("/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/jobs/{job_id}", delete_job, methods=["DELETE"]),
        Route("/ready", host.readiness),
    ],
    lifespan=host.lifespan,
)
