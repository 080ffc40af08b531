"""The demo: sign-ups stored in SQLite, a welcome email and a reminder sent as background jobs.

    POST /signups {"email": "ada@example.com"}   store it, enqueue the welcome email,
                                                 schedule a reminder (REMINDER_DELAY s later)
    GET  /signups                                every sign-up and the emails "sent" so far
    GET  /jobs/{id}                              a job's status, tries, times, result
    DELETE /jobs/{id}                            cancel a job that has not started
    GET  /reports                                what the distributed cron jobs wrote
    GET  /status                                 every hosted job: schedule, last and next run
    GET  /ready                                  200 once the startup action has run (until
                                                 then every other route answers 503 too)
    POST /status/{name}/run                      run a hosted job now
    POST /exports {"steps": 20, "fail": false}   a long job reporting its progress (one step
                                                 a second); "fail": true fails at the end
    GET  /metrics                                Prometheus metrics (hostedjobs[prometheus])
    GET  /                                       redirects to the dashboard
    GET  /dashboard/                             the dashboard: workers, hosted jobs, jobs by
                                                 state, a live progress bar; actions are
                                                 allowed from this machine only

Hosted jobs: a startup action creates the schema (the jobs and the worker wait for it), a
continuous job sweeps stale sign-ups, a per-process cron job refreshes cached stats, and two
distributed cron jobs run once per tick across all processes: a nightly report, and a fast
one (every 10 s, DEMO_FAST_CRON) so you can watch it fire.

Each run gets its own SQLite connection from the scope: committed if the run succeeds,
rolled back if it raises, closed either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Mount, Route

from hostedjobs import Inject, JobContext, JobHost, JobResult, RetryPolicy, Services, job_type
from hostedjobs.metrics import PrometheusMetrics
from hostedjobs.starlette import StartupGateMiddleware

DB_PATH = Path(os.environ.get("DEMO_DB", ".hostedjobs/demo.sqlite3"))
REMINDER_DELAY = timedelta(seconds=float(os.environ.get("REMINDER_DELAY", "60")))
FAST_CRON = os.environ.get("DEMO_FAST_CRON", "*/10 * * * * *")

SCHEMA = """
CREATE TABLE IF NOT EXISTS signups (
    id INTEGER PRIMARY KEY, email TEXT NOT NULL, created_at TEXT DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, signup_id INTEGER NOT NULL, kind TEXT NOT NULL,
    sent_at TEXT DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, tick TEXT NOT NULL, signups INTEGER NOT NULL
);
"""


def connect() -> sqlite3.Connection:
    """A connection to the demo database."""
    DB_PATH.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(DB_PATH)
    connection.row_factory = sqlite3.Row
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


class StatsCache:
    """A per-process cache the cron job refreshes (a singleton)."""

    def __init__(self) -> None:
        self.signups = 0


services = Services()
services.add_scoped(sqlite3.Connection, open_db)
services.add_singleton(StatsCache, StatsCache())
metrics = PrometheusMetrics()
host = JobHost(services=services, queue_name="demo", instrumentation=[metrics])


@host.startup_action(priority=0)
async def create_schema(db: sqlite3.Connection = Inject()) -> None:
    """Runs before any job and before /ready answers 200."""
    db.executescript(SCHEMA)


@host.job(interval=timedelta(seconds=30), initial_delay=timedelta(seconds=5))
async def sweep_outbox(ctx: JobContext, db: sqlite3.Connection = Inject()) -> JobResult:
    """Continuous, in every process: a delay of 30 s after each run."""
    (pending,) = db.execute(
        "SELECT COUNT(*) FROM signups WHERE id NOT IN (SELECT signup_id FROM outbox)"
    ).fetchone()
    return JobResult.success(f"{pending} sign-up(s) still waiting for their welcome email")


@host.cron("*/30 * * * * *", name="refresh-stats")
async def refresh_stats(
    db: sqlite3.Connection = Inject(), cache: StatsCache = Inject()
) -> JobResult:
    """Per-process cron: every process refreshes its own cache every 30 s."""
    (cache.signups,) = db.execute("SELECT COUNT(*) FROM signups").fetchone()
    return JobResult.success(f"{cache.signups} sign-up(s)")


async def write_report(kind: str, ctx: JobContext, db: sqlite3.Connection) -> JobResult:
    assert ctx.scheduled_at is not None
    (signups,) = db.execute("SELECT COUNT(*) FROM signups").fetchone()
    db.execute(
        "INSERT INTO reports (kind, tick, signups) VALUES (?, ?, ?)",
        (kind, ctx.scheduled_at.isoformat(), signups),
    )
    return JobResult.success(f"{kind} report for {ctx.scheduled_at:%H:%M:%S}: {signups} sign-up(s)")


@host.distributed_cron("0 2 * * *", name="nightly-report", timezone="Europe/Prague")
async def nightly_report(ctx: JobContext, db: sqlite3.Connection = Inject()) -> JobResult:
    """Distributed cron: once per night across every process, at 02:00 Prague time."""
    return await write_report("nightly", ctx, db)


@host.distributed_cron(FAST_CRON, name="fast-report")
async def fast_report(ctx: JobContext, db: sqlite3.Connection = Inject()) -> JobResult:
    """Distributed cron: once per tick across every process (run several to see it)."""
    return await write_report("fast", ctx, db)


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


@job_type("export-signups", version=1)
@dataclass
class ExportSignups:
    """A long job: exports sign-ups in steps, reporting its progress."""

    steps: int = 20
    fail: bool = False


EXPORT_TIMEOUT = timedelta(seconds=660)
"""Beyond the longest export /exports accepts (600 one-second steps), which the default
five-minute time limit would cut."""


@host.handler(ExportSignups, retry=RetryPolicy(max_tries=1), timeout=EXPORT_TIMEOUT)
async def export_signups(job: ExportSignups, ctx: JobContext) -> JobResult:
    """Reports progress after each step; watch it on the dashboard's job page."""
    for step in range(1, job.steps + 1):
        await asyncio.sleep(1)
        await ctx.report_progress(100 * step / job.steps, f"step {step} of {job.steps}")
    if job.fail:
        raise RuntimeError("the export target refused the file (asked for with fail=true)")
    return JobResult.success(f"exported in {job.steps} steps")


async def create_export(request: Request) -> JSONResponse:
    body = await request.json() if await request.body() else {}
    steps = body.get("steps", 20) if isinstance(body, dict) else 20
    if not isinstance(steps, int) or not 1 <= steps <= 600:
        return JSONResponse({"error": '"steps" is a whole number from 1 to 600'}, status_code=400)
    job_id = await host.scheduler.enqueue(ExportSignups(steps=steps, fail=bool(body.get("fail"))))
    return JSONResponse({"job_id": job_id, "dashboard": f"/dashboard/jobs/{job_id}"}, 202)


def from_this_machine(request: Request) -> bool:
    """The demo's dashboard ``auth``: actions only from loopback (use real auth in an app)."""
    return request.client is not None and request.client.host in {"127.0.0.1", "::1"}


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
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return value.isoformat() if hasattr(value, "isoformat") else value


async def get_job(request: Request) -> JSONResponse:
    info = await host.scheduler.get(request.path_params["job_id"])
    if info is None:
        return JSONResponse({"error": "no such job"}, status_code=404)
    return JSONResponse({key: _jsonable(value) for key, value in asdict(info).items()})


async def status(request: Request) -> JSONResponse:
    return JSONResponse([job.to_json() for job in await host.status()])


async def run_now(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    if name not in host.hosted_jobs:
        return JSONResponse({"error": f"no hosted job named {name!r}"}, status_code=404)
    return JSONResponse({"run_id": await host.trigger(name)}, status_code=202)


async def reports(request: Request) -> JSONResponse:
    with contextlib.closing(connect()) as db:
        rows = db.execute("SELECT kind, tick, signups FROM reports ORDER BY id DESC LIMIT 20")
        return JSONResponse([dict(row) for row in rows])


async def delete_job(request: Request) -> JSONResponse:
    deleted = await host.scheduler.delete(request.path_params["job_id"])
    return JSONResponse({"deleted": deleted}, status_code=200 if deleted else 409)


async def home(request: Request) -> RedirectResponse:
    """The address uvicorn prints leads to the console."""
    return RedirectResponse("/dashboard/")


app = Starlette(
    middleware=[
        Middleware(StartupGateMiddleware, host=host, allow_paths=("/ready", "/status", "/metrics"))
    ],
    routes=[
        Route("/", home, methods=["GET"]),
        Route("/signups", create_signup, methods=["POST"]),
        Route("/signups", list_signups, methods=["GET"]),
        Route("/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/jobs/{job_id}", delete_job, methods=["DELETE"]),
        Route("/status", status, methods=["GET"]),
        Route("/status/{name}/run", run_now, methods=["POST"]),
        Route("/reports", reports, methods=["GET"]),
        Route("/exports", create_export, methods=["POST"]),
        Route("/ready", host.readiness),
        Route("/metrics", metrics.endpoint),
        Mount("/dashboard", app=host.dashboard(auth=from_this_machine, title="hostedjobs demo")),
    ],
    lifespan=host.lifespan,
)
