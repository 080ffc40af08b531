"""The dashboard's pages and actions, as a Starlette app to mount anywhere."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, quote, urlencode

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..exceptions import HostNotRunningError, NotReplicatedError, UnknownJobError
from ..health import BEAT_INTERVAL_S, BEAT_TTL_S, STALE_AFTER_S, WorkerBeat, WorkerState
from ..outcomes import JobStatus
from ..scheduler import Scheduler
from ..starlette import Readiness
from ..status import HostedJobStatus
from .charts import history_chart
from .security import CSRF_FIELD, SECURITY_HEADERS, AuthCheck, Guard

if TYPE_CHECKING:
    import jinja2

__all__ = ["BULK_LIMIT", "PAGE_SIZE", "create_dashboard"]

PAGE_SIZE = 25
"""Jobs per page in the on-demand lists."""

BULK_LIMIT = 100
"""The most job ids one bulk action takes (a page holds `PAGE_SIZE`)."""

_HERE = Path(__file__).parent
_STATES = tuple(JobStatus)
_OPENING = (
    JobStatus.RUNNING,
    JobStatus.FAILED,
    JobStatus.QUEUED,
    JobStatus.SCHEDULED,
    JobStatus.SUCCEEDED,
)
"""The list the jobs page opens on: the first of these that holds jobs (what runs now, then
what failed and needs a look, then what waits), else succeeded."""
_BULK = {
    "retry": ("Retry", "Retried", (JobStatus.FAILED,)),
    "delete": ("Delete", "Deleted", (JobStatus.QUEUED, JobStatus.SCHEDULED)),
    "cancel": ("Cancel", "Cancelled", (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RUNNING)),
}
"""Bulk actions: label, past tense, and the states a job must be in for it."""
_NOTICES = {
    "deleted": "The job was deleted; it will not run.",
    "not-deleted": "The job could not be deleted: it is running, finished or gone.",
    "retried": "The job is queued again.",
    "not-retried": "The job could not be retried: it is not failed, or its result expired.",
    "triggered": "The job was started.",
    "paused": "The job is paused in every process: no new runs start until it is resumed.",
    "resumed": "The job is resumed in every process.",
    "cancelled": "The job was cancelled (a running one stops within about a second).",
    "not-cancelled": "The job could not be cancelled: it has finished or is gone.",
    "no-such-job": "No job has that id (never queued, or its result expired).",
}
"""Messages an action can leave for the next page (by code, so no text is reflected)."""

_WINDOWS = {"1h": (3_600, 60, "the last hour, by minute"), "24h": (86_400, 900, "24 h, by 15 min")}
"""The history windows a page offers (``?window=``): (seconds, bin seconds, caption)."""


def _environment() -> jinja2.Environment:
    try:
        import jinja2
    except ImportError as exc:  # pragma: no cover - jinja2 is in the dev extra
        raise ImportError(
            "the dashboard needs Jinja2: pip install 'hostedjobs[dashboard]'"
        ) from exc
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = _when
    env.filters["ago"] = _ago
    env.filters["pretty"] = _pretty
    env.filters["seconds"] = _seconds
    env.filters["epoch"] = _epoch
    env.filters["rate"] = _rate
    env.filters["beat_age"] = _beat_age
    return env


class DashboardHost(Readiness, Protocol):
    """What the dashboard shows and acts on: a `JobHost`."""

    queue_name: str

    @property
    def scheduler(self) -> Scheduler: ...
    async def status(self) -> list[HostedJobStatus]: ...
    async def trigger(self, name: str) -> str: ...
    async def pause(self, name: str) -> bool: ...
    async def resume(self, name: str) -> bool: ...
    async def workers(self) -> list[WorkerBeat]: ...
    async def worker_states(self) -> list[WorkerState]: ...


def create_dashboard(
    host: DashboardHost,
    *,
    auth: AuthCheck | None = None,
    title: str = "hostedjobs",
    refresh_s: float = 3,
) -> Starlette:
    """Build the dashboard app for ``host``; see `JobHost.dashboard`."""
    env = _environment()
    guard = Guard(auth)

    async def render(request: Request, template: str, **context: Any) -> Response:
        may_act = await guard.may_act(request)
        notice = _NOTICES.get(request.query_params.get("notice", ""))
        page = env.get_template(template)
        values = {
            "title": title,
            "base": _base(request),
            "may_act": may_act,
            "read_only": guard.read_only,
            "csrf_field": CSRF_FIELD,
            "csrf_token": guard.token(request) if may_act else "",
            "notice": notice,
            "refresh_ms": int(refresh_s * 1000),
            **context,
        }
        if request.headers.get("x-dashboard-partial") == "1":
            html = "".join(page.blocks["main"](page.new_context(values)))
        else:
            html = page.render(values)
        # Stored JSON may hold a lone surrogate (no UTF-8 has one): shown as its escape.
        body = html.encode("utf-8", errors="backslashreplace")
        response = HTMLResponse(body, headers=SECURITY_HEADERS)
        guard.set_cookie(request, response)
        return response

    async def history(request: Request, job_type: str | None = None) -> dict[str, Any]:
        """The chart of the window the request asks for (``?window=1h``, the default, or
        ``24h``), as template values."""
        window = request.query_params.get("window", "1h")
        if window not in _WINDOWS:
            raise HTTPException(400, "unknown window (1h or 24h)")
        since, bin_s, caption = _WINDOWS[window]
        points = await host.scheduler.history(since=since, bin=bin_s, job_type=job_type)
        label = f"Runs{f' of {job_type}' if job_type else ''} in {caption}"
        return {
            "window": window,
            "windows": list(_WINDOWS),
            "window_caption": caption,
            "window_s": since,
            "chart": history_chart(points, chart_id="history", label=label),
        }

    async def overview(request: Request) -> Response:
        scheduler = host.scheduler
        # Waiting and running states are counted whatever ``since`` says; finished ones only
        # for the last hour, which is what the overview shows.
        counts = await scheduler.counts(since=timedelta(hours=1))
        workers = await host.workers()
        statuses = await host.status()
        return await render(
            request,
            "overview.html",
            page_id="overview",
            counts=counts,
            workers=workers,
            hosted=statuses,
            startup=str(host.startup_state),
            failed_action=host.failed_startup_action,
            running_actions=host.running_startup_actions,
            **await history(request),
        )

    async def job_types(request: Request) -> Response:
        chart = await history(request)
        types = await host.scheduler.job_types(since=chart["window_s"])
        return await render(request, "types.html", page_id="types", types=types, **chart)

    async def job_type(request: Request) -> Response:
        name = request.path_params["name"]
        chart = await history(request, job_type=name)
        found = [
            t for t in await host.scheduler.job_types(since=chart["window_s"]) if t.name == name
        ]
        return await render(
            request,
            "job_type.html",
            page_id="types",
            name=name,
            stats=found[0] if found else None,
            **chart,
        )

    async def workers(request: Request) -> Response:
        states = await host.worker_states()
        counts = dict.fromkeys(("alive", "stale", "gone"), 0)
        for worker in states:
            counts[worker.state] += 1
        return await render(
            request,
            "workers.html",
            page_id="workers",
            workers=states,
            counts=counts,
            beat_s=BEAT_INTERVAL_S,
            stale_s=STALE_AFTER_S,
            ttl_s=BEAT_TTL_S,
        )

    async def hosted(request: Request) -> Response:
        return await render(request, "hosted.html", page_id="hosted", hosted=await host.status())

    async def hosted_job(request: Request) -> Response:
        name = request.path_params["name"]
        found = [s for s in await host.status() if s.name == name]
        if not found:
            raise HTTPException(404, "no hosted job of that name")
        return await render(request, "hosted_job.html", page_id="hosted", job=found[0])

    async def jobs(request: Request) -> Response:
        params = request.query_params
        scheduler = host.scheduler
        wanted = params.get("q", "").strip()
        if wanted and len(wanted) <= 1024 and await scheduler.get(wanted) is not None:
            return RedirectResponse(f"{_base(request)}/jobs/{quote(wanted, safe='')}", 303)
        try:
            page = max(1, int(params.get("page", "1")))
            since = _form_time(params.get("since", ""))
            until = _form_time(params.get("until", ""))
            sort = params.get("sort", "")
            if sort not in ("", "newest", "oldest"):
                raise ValueError(sort)
            state_given = params.get("state", "")
            state = JobStatus(state_given) if state_given else None
        except ValueError:
            raise HTTPException(400, "unknown state, page, sort or time") from None
        job_type = params.get("type", "").strip() or None
        worker = params.get("worker", "").strip() or None
        counts = await scheduler.counts()
        if state is None:
            state = next((s for s in _OPENING if counts[s]), JobStatus.SUCCEEDED)
        filtered = any(value is not None for value in (job_type, worker, since, until))
        total = (
            await scheduler.count(state, job_type=job_type, worker=worker, since=since, until=until)
            if filtered
            else counts[state]
        )
        listed = await scheduler.jobs(
            state,
            offset=(page - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
            newest_first=None if not sort else sort == "newest",
            job_type=job_type,
            worker=worker,
            since=since,
            until=until,
        )
        pages = max(1, math.ceil(total / PAGE_SIZE))
        kept = {
            "type": job_type or "",
            "worker": worker or "",
            "since": params.get("since", "") if since else "",
            "until": params.get("until", "") if until else "",
            "sort": sort,
        }
        query = urlencode({"state": state.value, **{k: v for k, v in kept.items() if v}})
        workers = await host.workers()
        return await render(
            request,
            "jobs.html",
            page_id="jobs",
            states=_STATES,
            state=state,
            counts=counts,
            jobs=listed,
            page=page,
            pages=pages,
            total=total,
            filtered=filtered,
            form=kept,
            query=query,
            searched=wanted,
            worker_ids=[w.worker_id for w in workers],
            bulk_actions=[
                (name, label) for name, (label, _, states) in _BULK.items() if state in states
            ],
        )

    async def job(request: Request) -> Response:
        info = await host.scheduler.get(request.path_params["job_id"])
        if info is None:
            raise HTTPException(404, "no such job (never queued, deleted, or its result expired)")
        return await render(request, "job.html", page_id="jobs", job=info)

    async def act(request: Request) -> str:
        """Check auth and CSRF for a POST; returns the dashboard's base path."""
        if guard.read_only:
            raise HTTPException(403, "the dashboard is read-only (no auth= was given)")
        if not await guard.may_act(request):
            raise HTTPException(403, "not allowed")
        body = (await request.body()).decode("utf-8", "replace")
        fields = {k: v[0] for k, v in parse_qs(body).items()}
        if not guard.csrf_ok(request, fields.get(CSRF_FIELD, "")):
            raise HTTPException(403, "missing or wrong CSRF token; reload the page and retry")
        return _base(request)

    async def delete_job(request: Request) -> Response:
        base = await act(request)
        job_id = request.path_params["job_id"]
        if await host.scheduler.delete(job_id):
            return RedirectResponse(f"{base}/jobs?notice=deleted", status_code=303)
        return RedirectResponse(f"{base}/jobs/{quote(job_id)}?notice=not-deleted", status_code=303)

    async def retry_job(request: Request) -> Response:
        base = await act(request)
        job_id = request.path_params["job_id"]
        done = await host.scheduler.retry(job_id)
        notice = "retried" if done else "not-retried"
        return RedirectResponse(f"{base}/jobs/{quote(job_id)}?notice={notice}", status_code=303)

    async def cancel_job(request: Request) -> Response:
        base = await act(request)
        job_id = request.path_params["job_id"]
        done = await host.scheduler.cancel(job_id)
        notice = "cancelled" if done else "not-cancelled"
        return RedirectResponse(f"{base}/jobs/{quote(job_id)}?notice={notice}", status_code=303)

    async def bulk_form(request: Request) -> tuple[str, str, list[str], dict[str, list[str]]]:
        """A bulk POST's action, ids (bounded, deduplicated) and fields, after auth and CSRF."""
        base = await act(request)
        fields = parse_qs((await request.body()).decode("utf-8", "replace"))
        # "<action>" acts on the ticked jobs, "<action>-page" on every job of the page.
        action, _, scope = (fields.get("action") or [""])[0].partition("-")
        if action not in _BULK or scope not in ("", "page"):
            raise HTTPException(400, "unknown bulk action")
        chosen = fields.get("page_ids" if scope else "ids", [])
        ids = list(dict.fromkeys(i for i in chosen if i))
        if not ids:
            raise HTTPException(400, "no jobs were selected")
        if len(ids) > BULK_LIMIT:
            raise HTTPException(400, f"at most {BULK_LIMIT} jobs at once")
        return base, action, ids, fields

    async def bulk_confirm(request: Request) -> Response:
        _, action, ids, fields = await bulk_form(request)
        label, _, states = _BULK[action]
        infos = await host.scheduler.get_many(ids)
        rows = [(job_id, info) for job_id, info in zip(ids, infos, strict=True)]
        eligible = sum(1 for _, info in rows if info is not None and info.status in states)
        shown = {info.status for _, info in rows if info is not None}
        kind = f"{next(iter(shown))} " if len(shown) == 1 else ""
        noun = "job" if len(ids) == 1 else "jobs"
        back = (fields.get("back") or [""])[0]
        return await render(
            request,
            "jobs_bulk.html",
            page_id="jobs",
            stage="confirm",
            action=action,
            question=f"{label} {len(ids)} {kind}{noun}?",
            label=label,
            rows=rows,
            eligible=eligible,
            states=states,
            back=back if back.startswith("state=") else "",
        )

    async def bulk_run(request: Request) -> Response:
        _, action, ids, fields = await bulk_form(request)
        label, done_label, states = _BULK[action]
        scheduler = host.scheduler
        infos = await scheduler.get_many(ids)
        done: list[str] = []
        skipped: list[tuple[str, str]] = []
        for job_id, info in zip(ids, infos, strict=True):
            if info is None:
                skipped.append((job_id, "no such job (deleted, or its result expired)"))
                continue
            if info.status not in states:
                skipped.append((job_id, f"it is {info.status}, not {' or '.join(states)}"))
                continue
            if action == "retry":
                ok = await scheduler.retry(job_id)
            elif action == "delete":
                ok = await scheduler.delete(job_id)
            else:
                ok = await scheduler.cancel(job_id)
            if ok:
                done.append(job_id)
            else:
                skipped.append((job_id, "it changed meanwhile (it started or finished)"))
        back = (fields.get("back") or [""])[0]
        return await render(
            request,
            "jobs_bulk.html",
            page_id="jobs",
            stage="done",
            action=action,
            label=label,
            done_label=done_label,
            done=done,
            skipped=skipped,
            total=len(ids),
            back=back if back.startswith("state=") else "",
        )

    async def run_hosted(request: Request) -> Response:
        base = await act(request)
        name = request.path_params["name"]
        try:
            await host.trigger(name)
        except UnknownJobError:
            raise HTTPException(404, "no hosted job of that name") from None
        return RedirectResponse(f"{base}/hosted/{quote(name)}?notice=triggered", status_code=303)

    async def pause_hosted(request: Request) -> Response:
        return await pause_or_resume(request, paused=True)

    async def resume_hosted(request: Request) -> Response:
        return await pause_or_resume(request, paused=False)

    async def pause_or_resume(request: Request, *, paused: bool) -> Response:
        base = await act(request)
        name = request.path_params["name"]
        try:
            await (host.pause(name) if paused else host.resume(name))
        except UnknownJobError:
            raise HTTPException(404, "no hosted job of that name") from None
        notice = "paused" if paused else "resumed"
        return RedirectResponse(f"{base}/hosted/{quote(name)}?notice={notice}", status_code=303)

    async def failure(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            status, message = exc.status_code, exc.detail
        elif isinstance(exc, HostNotRunningError):
            status, message = 503, "the job host is not running"
        elif isinstance(exc, NotReplicatedError):
            status, message = 503, f"done on the primary, but not confirmed by a replica ({exc})"
        else:
            status, message = 503, f"Redis is unreachable ({exc})"
        page = env.get_template("error.html").render(
            title=title,
            base=_base(request),
            status=status,
            message=message,
            page_id="",
            read_only=guard.read_only,
            may_act=False,
            notice=None,
            refresh_ms=0,
        )
        return HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)

    routes = [
        Route("/", overview, name="overview"),
        Route("/workers", workers),
        Route("/hosted", hosted),
        Route("/hosted/{name:path}/run", run_hosted, methods=["POST"]),
        Route("/hosted/{name:path}/pause", pause_hosted, methods=["POST"]),
        Route("/hosted/{name:path}/resume", resume_hosted, methods=["POST"]),
        Route("/hosted/{name:path}", hosted_job),
        Route("/types", job_types),
        Route("/types/{name:path}", job_type),
        Route("/jobs", jobs),
        Route("/jobs/bulk", bulk_confirm, methods=["POST"]),
        Route("/jobs/bulk/run", bulk_run, methods=["POST"]),
        Route("/jobs/{job_id}", job),
        Route("/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route("/jobs/{job_id}/delete", delete_job, methods=["POST"]),
        Route("/jobs/{job_id}/retry", retry_job, methods=["POST"]),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: failure,
            HostNotRunningError: failure,
            RedisError: failure,
            OSError: failure,
        },
    )


def _base(request: Request) -> str:
    """Where the dashboard is mounted: the prefix of its links."""
    return (request.scope.get("root_path") or "").rstrip("/")


def _form_time(value: str) -> datetime | None:
    """A time from the filter form (``YYYY-MM-DDTHH:MM``, as a datetime-local input sends
    it), read as UTC; None if empty. Raises ValueError if it is not one."""
    value = value.strip()
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: datetime | None) -> str:
    if value is None:
        return "—"
    seconds = (datetime.now(UTC) - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 1:
        return "now"
    size, unit = next(
        u for u in ((86_400, "d"), (3_600, "h"), (60, "min"), (1, "s")) if seconds >= u[0]
    )
    text = f"{int(seconds // size)} {unit}"
    return f"in {text}" if future else f"{text} ago"


def _epoch(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _rate(per_s: float | None) -> str:
    """Jobs per second, or per minute below one a second."""
    if per_s is None:
        return "—"
    return f"{per_s:.1f}/s" if per_s >= 1 else f"{per_s * 60:.1f}/min"


def _beat_age(at: float) -> str:
    """How long ago an epoch time was, to a tenth of a second under a minute."""
    seconds = max(0.0, datetime.now(UTC).timestamp() - at)
    return f"{seconds:.1f} s ago" if seconds < 60 else _ago(_epoch(at))


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
