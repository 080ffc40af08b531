"""The dashboard's pages and actions, as a Starlette app to mount anywhere."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping
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

from ..distributed import job_name
from ..exceptions import (
    ConfigurationError,
    HostNotRunningError,
    NotReplicatedError,
    UnknownJobError,
    UnknownJobTypeError,
)
from ..health import BEAT_INTERVAL_S, BEAT_TTL_S, STALE_AFTER_S, WorkerBeat, WorkerState
from ..outcomes import JobStatus
from ..pauses import JobPause
from ..scheduler import Scheduler
from ..schedules import Schedules
from ..serialization import registered_names
from ..starlette import Readiness
from ..status import HostedJobStatus
from .charts import history_chart
from .security import CSRF_FIELD, SECURITY_HEADERS, AuthCheck, Guard

if TYPE_CHECKING:
    import jinja2
    from markupsafe import Markup

__all__ = ["BULK_LIMIT", "PAGE_SIZE", "create_dashboard"]

PAGE_SIZE = 25
"""Jobs per page in the on-demand lists."""

_FORM_LIMIT = 256 * 1024
"""The most bytes a POST's form may hold (a bulk action on `BULK_LIMIT` long ids fits)."""

_PAGES = 1_000_000
"""The last page number a list takes (beyond it, an offset no list reaches)."""

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
    "queued": "A run is queued: the first free worker runs it.",
    "paused": "The job is paused in every process: no new runs start until it is resumed.",
    "resumed": "The job is resumed in every process.",
    "type-paused": "The job type is paused: its jobs stay queued until it is resumed.",
    "type-resumed": "The job type is resumed: its held jobs are back in the queue.",
    "cancelled": "The job was cancelled (a running one stops within about a second).",
    "not-cancelled": "The job could not be cancelled: it has finished or is gone.",
    "no-such-job": "No job has that id (never queued, or its result expired).",
    "schedule-paused": "The schedule is paused in every process: its ticks do not run.",
    "schedule-resumed": "The schedule is resumed from its next tick.",
    "schedule-removed": "The schedule was removed (runs already queued stay).",
    "schedule-added": "The schedule was added: every process runs it from its next tick.",
    "schedule-updated": "The schedule was changed in every process.",
    "no-such-schedule": "No schedule has that name (was it removed?).",
}
"""Messages an action can leave for the next page (by code, so no text is reflected)."""

_SCHEDULES_PAGE = 100
"""Schedules shown per page of the Schedules page."""

_SCAN_LIMIT = 1_000
"""How many waiting or running jobs a page's job type filter examines at most (a request
must stay cheap however long the queue); the page says when it stopped there."""

_BIDI = "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")
_CONTROL_IN_LINES = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")
"""Control characters and bidi overrides: shown as their escapes (``\\x1b``, ``\\u202e``), so
that stored text cannot hide itself, fake other text or reorder what follows it. Multi-line
text keeps its line breaks and tabs."""

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
        finalize=_finalize,
    )
    env.filters["when"] = _when
    env.filters["ago"] = _ago
    env.filters["pretty"] = _pretty
    env.filters["seconds"] = _seconds
    env.filters["epoch"] = _epoch
    env.filters["rate"] = _rate
    env.filters["beat_age"] = _beat_age
    # Distributed cron runs are on-demand jobs of type "hostedjobs.cron:<name>".
    env.filters["hosted_name"] = job_name
    env.filters["job_path"] = _job_path
    env.filters["lines"] = _lines
    env.filters["verbatim"] = _verbatim
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
    async def pause_jobs(self, job_type: str) -> bool: ...
    async def resume_jobs(self, job_type: str) -> bool: ...
    async def paused_jobs(self) -> list[JobPause]: ...
    async def workers(self) -> list[WorkerBeat]: ...
    async def worker_states(self) -> list[WorkerState]: ...
    @property
    def schedules(self) -> Schedules: ...


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
            raise HTTPException(400, f"unknown window: it is one of {', '.join(_WINDOWS)}")
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

    async def known_job_type(name: str) -> bool:
        """Whether a job type of that name is registered here, can be run by a live worker,
        or ran in the last 24 h."""
        if name in registered_names():
            return True
        beats = await host.workers()
        if any(f.partition("@")[0] == name for beat in beats for f in beat.functions):
            return True
        return any(t.name == name for t in await host.scheduler.job_types(since=86_400))

    async def overview(request: Request) -> Response:
        _query(request, "window")
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
        _query(request, "window")
        chart = await history(request)
        types = await host.scheduler.job_types(since=chart["window_s"])
        return await render(
            request, "types.html", page_id="types", types=types, **await pauses(), **chart
        )

    async def pauses() -> dict[str, Any]:
        """The pauses by job type, and the parked (held) jobs by job type, as template values."""
        by_type: dict[str, list[JobPause]] = {}
        for pause in await host.paused_jobs():
            by_type.setdefault(pause.job_type, []).append(pause)
        return {"pauses": by_type, "parked": await host.scheduler.parked()}

    async def job_type(request: Request) -> Response:
        _query(request, "window")
        name = request.path_params["name"]
        if not await known_job_type(name):
            raise HTTPException(
                404, "no job type of that name is registered, run by a live worker, or ran in 24 h"
            )
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
            **await pauses(),
            **chart,
        )

    async def workers(request: Request) -> Response:
        _query(request)
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

    def schedule_form(fields: Mapping[str, list[str]]) -> dict[str, str]:
        """The schedule form as typed (stripped, but for the payload)."""
        names = ("name", "cron", "timezone", "job_type", "misfire", "payload", "paused")
        form = {name: (fields.get(name) or [""])[0] for name in names}
        return {name: v if name == "payload" else v.strip() for name, v in form.items()}

    async def schedules(
        request: Request, form: dict[str, str] | None = None, error: str | None = None
    ) -> Response:
        params = _query(request, "page")
        page_given = params.get("page", "1")
        if not (page_given.isascii() and page_given.isdigit()) or not (
            1 <= int(page_given) <= _PAGES
        ):
            raise HTTPException(400, f"page is a whole number from 1 to {_PAGES}")
        page = int(page_given)
        total = await host.schedules.count()
        found = await host.schedules.list((page - 1) * _SCHEDULES_PAGE, _SCHEDULES_PAGE)
        return await render(
            request,
            "schedules.html",
            page_id="schedules",
            schedules=found,
            total=total,
            page=page,
            first=(page - 1) * _SCHEDULES_PAGE + 1,
            more=page * _SCHEDULES_PAGE < total,
            job_types=host.schedules.job_types(),
            form=form or schedule_form({"timezone": ["UTC"], "payload": ["{}"]}),
            error=error,
            **({"refresh_ms": 0} if error else {}),
        )

    async def add_schedule(request: Request) -> Response:
        base, fields = await act(request)
        form = schedule_form(fields)
        try:
            job = host.schedules.job(form["job_type"], form["payload"])
            await host.schedules.add(
                form["name"],
                form["cron"],
                job,
                timezone=form["timezone"] or "UTC",
                misfire=form["misfire"] or "skip",  # type: ignore[arg-type]  # checked there
                paused=bool(form["paused"]),
            )
        except ConfigurationError as exc:
            # Shown with what was typed, so nothing is lost to a typo.
            response = await schedules(request, form, str(exc))
            response.status_code = 400
            return response
        return RedirectResponse(f"{base}/schedules?notice=schedule-added", status_code=303)

    async def edit_schedule(request: Request) -> Response:
        params = _query(request, "name")
        name = params.get("name", "")
        found = await host.schedules.get(name) if name else None
        if found is None:
            raise HTTPException(404, f"no schedule named {name!r}")
        form = schedule_form(
            {
                "cron": [found.cron],
                "timezone": [found.timezone],
                "job_type": [found.job_type],
                "misfire": [found.misfire],
                "payload": [json.dumps(found.payload, indent=1, ensure_ascii=False)],
            }
        )
        return await edit_page(request, found, form, None)

    async def edit_page(
        request: Request, found: Any, form: dict[str, str], error: str | None
    ) -> Response:
        job_types = host.schedules.job_types()
        if found.job_type not in job_types:
            job_types = (found.job_type, *job_types)
        response = await render(
            request,
            "schedule_edit.html",
            page_id="schedules",
            name=found.name,
            schedule=found,
            form=form,
            job_types=job_types,
            error=error,
            refresh_ms=0,
        )
        if error:
            response.status_code = 400
        return response

    async def save_schedule(request: Request) -> Response:
        base, fields = await act(request, "name")
        name = request.query_params.get("name", "")
        form = schedule_form(fields)
        found = await host.schedules.get(name) if name else None
        if found is None:
            return RedirectResponse(f"{base}/schedules?notice=no-such-schedule", status_code=303)
        try:
            job = None
            if form["job_type"] != found.job_type or json.loads(form["payload"] or "{}") != (
                found.payload
            ):
                job = host.schedules.job(form["job_type"], form["payload"])
            await host.schedules.update(
                name,
                cron=form["cron"],
                job=job,
                timezone=form["timezone"] or "UTC",
                misfire=form["misfire"] or "skip",  # type: ignore[arg-type]  # checked there
            )
        except (ValueError, RecursionError) as exc:  # ConfigurationError, or not JSON
            # (RecursionError: nested too deep for json.loads)
            message = (
                str(exc)
                if isinstance(exc, ConfigurationError)
                else f"the payload is not JSON: {exc}"
            )
            return await edit_page(request, found, form, message)
        except UnknownJobError:
            return RedirectResponse(f"{base}/schedules?notice=no-such-schedule", status_code=303)
        return RedirectResponse(f"{base}/schedules?notice=schedule-updated", status_code=303)

    def change_schedule(change: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            base, _ = await act(request)
            name = request.path_params["name"]
            done = True
            if change == "remove":
                done = await host.schedules.remove(name)
            else:
                try:
                    await (
                        host.schedules.pause(name)
                        if change == "pause"
                        else host.schedules.resume(name)
                    )
                except UnknownJobError:
                    done = False
            notice = f"schedule-{change}d" if done else "no-such-schedule"
            return RedirectResponse(f"{base}/schedules?notice={notice}", status_code=303)

        return endpoint

    async def hosted(request: Request) -> Response:
        _query(request)
        return await render(request, "hosted.html", page_id="hosted", hosted=await host.status())

    async def hosted_job(request: Request) -> Response:
        _query(request)
        name = request.path_params["name"]
        found = [s for s in await host.status() if s.name == name]
        if not found:
            raise HTTPException(404, "no hosted job of that name")
        return await render(request, "hosted_job.html", page_id="hosted", job=found[0])

    async def jobs(request: Request) -> Response:
        params = _query(
            request,
            *("q", "page", "since", "until", "sort", "state", "type", "worker", "window"),
            *("done", "n", "skipped"),
        )
        scheduler = host.scheduler
        wanted = params.get("q", "").strip()
        if wanted and len(wanted) <= 1024 and await scheduler.get(wanted) is not None:
            return RedirectResponse(_base(request) + _job_path(wanted), 303)
        page_given = params.get("page", "1")
        if (
            not (page_given.isascii() and page_given.isdigit())
            or not 1 <= int(page_given) <= _PAGES
        ):
            raise HTTPException(400, f"page is a whole number from 1 to {_PAGES}")
        page = int(page_given)
        since = _form_time("since", params.get("since", ""))
        until = _form_time("until", params.get("until", ""))
        if since is not None and until is not None and since > until:
            raise HTTPException(400, "since is later than until: no job can match")
        sort = params.get("sort", "")
        if sort not in ("", "newest", "oldest"):
            raise HTTPException(400, "sort is newest or oldest (or empty, for the state's order)")
        state_given = params.get("state", "")
        if state_given and state_given not in _STATES:
            raise HTTPException(400, f"unknown state: it is one of {', '.join(_STATES)}")
        state = JobStatus(state_given) if state_given else None
        window = params.get("window", "")
        if window and window not in _WINDOWS:
            raise HTTPException(400, "unknown window (1h or 24h), or empty for any time")
        if window:
            # A preset range ("last hour"): from that long ago, or the form's later time.
            recent = datetime.now(UTC) - timedelta(seconds=_WINDOWS[window][0])
            since = recent if since is None or since < recent else since
        job_type = params.get("type", "").strip() or None
        if job_type is not None and not await known_job_type(job_type):
            raise HTTPException(
                400,
                "unknown job type: none of that name is registered here, run by a live worker, "
                "or ran in the last 24 h (the name is without its version)",
            )
        worker = params.get("worker", "").strip() or None
        counts = await scheduler.counts()
        if state is None:
            state = next((s for s in _OPENING if counts[s]), JobStatus.SUCCEEDED)
        filtered = any(value is not None for value in (job_type, worker, since, until))
        total = (
            await scheduler.count(
                state,
                job_type=job_type,
                worker=worker,
                since=since,
                until=until,
                scan_limit=_SCAN_LIMIT,
            )
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
            scan_limit=_SCAN_LIMIT,
        )
        scan_limited = listed.scan_limited or getattr(total, "scan_limited", False)
        pages = max(1, math.ceil(total / PAGE_SIZE))
        kept = {
            "type": job_type or "",
            "worker": worker or "",
            "since": params.get("since", "") if params.get("since", "").strip() else "",
            "until": params.get("until", "") if until else "",
            "window": window,
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
            bulk_done=_bulk_done(params),
            scan_limited=scan_limited,
            scan_limit=_SCAN_LIMIT,
        )

    async def job(request: Request) -> Response:
        info = await host.scheduler.get(_job_id(request))
        if info is None:
            raise HTTPException(404, "no such job (never queued, deleted, or its result expired)")
        worker_state = None
        if info.status is JobStatus.RUNNING and info.worker:
            # A running job whose worker stopped beating looks healthy until it is taken back.
            states = await host.worker_states()
            found = next((w for w in states if w.worker_id == info.worker), None)
            worker_state = found.state if found is not None else "gone"
        return await render(
            request, "job.html", page_id="jobs", job=info, worker_state=worker_state
        )

    async def act(request: Request, *takes: str) -> tuple[str, dict[str, list[str]]]:
        """Check auth, CSRF and the query (which takes ``takes``) for a POST; returns the
        dashboard's base path and the form."""
        _query(request, *takes)
        if guard.read_only:
            raise HTTPException(403, "the dashboard is read-only (no auth= was given)")
        if not await guard.may_act(request):
            raise HTTPException(403, "not allowed")
        fields = await _form(request)
        if not guard.csrf_ok(request, (fields.get(CSRF_FIELD) or [""])[0]):
            raise HTTPException(403, "missing or wrong CSRF token; reload the page and retry")
        return _base(request), fields

    async def delete_job(request: Request) -> Response:
        base, _ = await act(request, "id")
        job_id = _job_id(request)
        if await host.scheduler.delete(job_id):
            return RedirectResponse(f"{base}/jobs?notice=deleted", status_code=303)
        return RedirectResponse(f"{base}{_job_path(job_id)}&notice=not-deleted", status_code=303)

    async def retry_job(request: Request) -> Response:
        base, _ = await act(request, "id")
        job_id = _job_id(request)
        done = await host.scheduler.retry(job_id)
        notice = "retried" if done else "not-retried"
        return RedirectResponse(f"{base}{_job_path(job_id)}&notice={notice}", status_code=303)

    async def cancel_job(request: Request) -> Response:
        base, _ = await act(request, "id")
        job_id = _job_id(request)
        done = await host.scheduler.cancel(job_id)
        notice = "cancelled" if done else "not-cancelled"
        return RedirectResponse(f"{base}{_job_path(job_id)}&notice={notice}", status_code=303)

    async def bulk_form(request: Request) -> tuple[str, str, list[str], dict[str, list[str]]]:
        """A bulk POST's action, ids (bounded, deduplicated) and fields, after auth and CSRF."""
        base, fields = await act(request)
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
        acted = [info for _, info in rows if info is not None and info.status in states]
        # Why the others will be left: how many are in each state it does not apply to.
        left: dict[str, int] = {}
        for _, info in rows:
            if info is None or info.status not in states:
                why = "gone" if info is None else str(info.status)
                left[why] = left.get(why, 0) + 1
        shown = {info.status for info in acted}
        kind = f"{next(iter(shown))} " if len(shown) == 1 else ""
        noun = "job" if len(acted) == 1 else "jobs"
        question = f"{label} {len(acted)} {kind}{noun}?"
        if not acted:
            question = f"None of the {len(ids)} selected can be {_BULK[action][1].lower()}"
        back = (fields.get("back") or [""])[0]
        return await render(
            request,
            "jobs_bulk.html",
            page_id="jobs",
            # The operator is deciding: a refresh would throw their view away.
            refresh_ms=0,
            action=action,
            question=question,
            label=label,
            rows=rows,
            eligible=len(acted),
            skipped=sum(left.values()),
            skipped_by=sorted(left.items()),
            states=states,
            back=back if back.startswith("state=") else "",
        )

    async def bulk_run(request: Request) -> Response:
        base, action, ids, fields = await bulk_form(request)
        _, _, states = _BULK[action]
        scheduler = host.scheduler
        infos = await scheduler.get_many(ids)
        done = 0
        for job_id, info in zip(ids, infos, strict=True):
            if info is None or info.status not in states:
                continue
            if action == "retry":
                ok = await scheduler.retry(job_id)
            elif action == "delete":
                ok = await scheduler.delete(job_id)
            else:
                ok = await scheduler.cancel(job_id)
            done += ok
        back = (fields.get("back") or [""])[0]
        # Post/Redirect/Get: a refresh of the list shows the counts again, never re-acts.
        counts = urlencode({"done": action, "n": done, "skipped": len(ids) - done})
        query = f"{back}&{counts}" if back.startswith("state=") else counts
        return RedirectResponse(f"{base}/jobs?{query}", status_code=303)

    async def run_hosted(request: Request) -> Response:
        base, _ = await act(request)
        name = request.path_params["name"]
        try:
            await host.trigger(name)
        except UnknownJobError:
            raise HTTPException(404, "no hosted job of that name") from None
        # A distributed cron job's run now waits in the queue for a worker, as its ticks do.
        queued = any(s.name == name and s.kind == "distributed_cron" for s in await host.status())
        notice = "queued" if queued else "triggered"
        return RedirectResponse(f"{base}/hosted/{quote(name)}?notice={notice}", status_code=303)

    async def pause_hosted(request: Request) -> Response:
        return await pause_or_resume(request, paused=True)

    async def resume_hosted(request: Request) -> Response:
        return await pause_or_resume(request, paused=False)

    async def pause_or_resume(request: Request, *, paused: bool) -> Response:
        base, _ = await act(request)
        name = request.path_params["name"]
        try:
            await (host.pause(name) if paused else host.resume(name))
        except UnknownJobError:
            raise HTTPException(404, "no hosted job of that name") from None
        notice = "paused" if paused else "resumed"
        return RedirectResponse(f"{base}/hosted/{quote(name)}?notice={notice}", status_code=303)

    async def _may_act(request: Request) -> bool:
        # An error page says "read-only for you" only if it is so (auth may itself fail).
        try:
            return await guard.may_act(request)
        except Exception:
            return False

    async def pause_type(request: Request) -> Response:
        return await pause_or_resume_type(request, paused=True)

    async def resume_type(request: Request) -> Response:
        return await pause_or_resume_type(request, paused=False)

    async def pause_or_resume_type(request: Request, *, paused: bool) -> Response:
        base, _ = await act(request)
        name = request.path_params["name"]
        try:
            await (host.pause_jobs(name) if paused else host.resume_jobs(name))
        except UnknownJobTypeError as exc:
            raise HTTPException(404, str(exc)) from None
        notice = "type-paused" if paused else "type-resumed"
        return RedirectResponse(f"{base}/types/{quote(name)}?notice={notice}", status_code=303)

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
            may_act=await _may_act(request),
            notice=None,
            refresh_ms=0,
        )
        return HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)

    routes = [
        Route("/", overview, name="overview"),
        Route("/workers", workers),
        Route("/schedules", schedules),
        Route("/schedules/add", add_schedule, methods=["POST"]),
        Route("/schedules/edit", edit_schedule),
        Route("/schedules/edit", save_schedule, methods=["POST"]),
        *(
            Route(f"/schedules/{{name:path}}/{change}", change_schedule(change), methods=["POST"])
            for change in ("pause", "resume", "remove")
        ),
        Route("/hosted", hosted),
        Route("/hosted/{name:path}/run", run_hosted, methods=["POST"]),
        Route("/hosted/{name:path}/pause", pause_hosted, methods=["POST"]),
        Route("/hosted/{name:path}/resume", resume_hosted, methods=["POST"]),
        Route("/hosted/{name:path}", hosted_job),
        Route("/types", job_types),
        Route("/types/{name:path}/pause", pause_type, methods=["POST"]),
        Route("/types/{name:path}/resume", resume_type, methods=["POST"]),
        Route("/types/{name:path}", job_type),
        Route("/jobs", jobs),
        Route("/jobs/bulk", bulk_confirm, methods=["POST"]),
        Route("/jobs/bulk/run", bulk_run, methods=["POST"]),
        # Any id, in the query string (``?id=``): a path segment cannot hold "/", "?" or "#".
        Route("/jobs/view", job),
        Route("/jobs/cancel", cancel_job, methods=["POST"]),
        Route("/jobs/delete", delete_job, methods=["POST"]),
        Route("/jobs/retry", retry_job, methods=["POST"]),
        Route("/jobs/{job_id:path}/cancel", cancel_job, methods=["POST"]),
        Route("/jobs/{job_id:path}/delete", delete_job, methods=["POST"]),
        Route("/jobs/{job_id:path}/retry", retry_job, methods=["POST"]),
        Route("/jobs/{job_id:path}", job),
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


def _bulk_done(params: Mapping[str, str]) -> str | None:
    """What a bulk action did, from the counts its redirect carries (``?done=retry&n=12&
    skipped=3``), as a sentence; None without them. Raises 400 for counts no action left."""
    action = params.get("done")
    if action is None:
        return None
    try:
        done, skipped = int(params.get("n", "")), int(params.get("skipped", ""))
        _, done_label, states = _BULK[action]
    except (KeyError, ValueError):
        raise HTTPException(400, "unknown bulk action or counts (done=, n=, skipped=)") from None
    if done < 0 or skipped < 0 or not 0 < done + skipped <= BULK_LIMIT:
        raise HTTPException(400, f"bulk counts must be 0 or more, at most {BULK_LIMIT} in all")
    total = done + skipped
    said = f"{done_label} {done} of {total} {'job' if total == 1 else 'jobs'}"
    if skipped:
        said += f"; {skipped} skipped (not {' or '.join(states)}, gone, or changed meanwhile)"
    return said


async def _form(request: Request) -> dict[str, list[str]]:
    """A POST's form fields, read up to `_FORM_LIMIT` bytes: 413 beyond it."""
    too_large = HTTPException(
        413,
        f"the form is over {_FORM_LIMIT // 1024} KiB: send less at once (fewer jobs, or a "
        "smaller payload)",
    )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > _FORM_LIMIT:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _FORM_LIMIT:
            raise too_large
    return parse_qs(body.decode("utf-8", "replace"))


def _job_path(job_id: str, action: str = "view") -> str:
    """The path of a job's page (or of an action on it), below the dashboard's base: the id
    goes in the query string, so any id works."""
    return f"/jobs/{action}?id={quote(job_id, safe='')}"


def _job_id(request: Request) -> str:
    """The job a page or action is about: ``?id=``, or the path's plain id."""
    _query(request, *(() if "job_id" in request.path_params else ("id",)))
    job_id = request.path_params.get("job_id") or request.query_params.get("id", "")
    if not job_id:
        raise HTTPException(400, "which job? Give its id: /jobs/view?id=<the job id>")
    return str(job_id)


def _query(request: Request, *names: str) -> dict[str, str]:
    """The query parameters of a page that takes ``names`` (and ``notice``, which actions
    leave); 400 for any other, a repeated one, or an unknown notice, so that a typo never
    silently shows something else."""
    params = request.query_params
    for key in params:
        if key not in names and key != "notice":
            takes = ", ".join(names) if names else "none"
            raise HTTPException(400, f"unknown query parameter {key!r}: this page takes {takes}")
        if len(params.getlist(key)) > 1:
            raise HTTPException(400, f"the query parameter {key!r} is given more than once")
    if "notice" in params and params["notice"] not in _NOTICES:
        raise HTTPException(400, "unknown notice")
    return dict(params)


def _form_time(field: str, value: str) -> datetime | None:
    """A time from the filter form (``YYYY-MM-DDTHH:MM``, as a datetime-local input sends
    it), read as UTC; None if empty; 400 if it is not one."""
    value = value.strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(
            400, f"{field} is not a time: give it as YYYY-MM-DDTHH:MM[:SS] (UTC)"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _escape_control(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _finalize(value: Any) -> Any:
    """Every value a template prints: text with its control characters shown escaped; markup
    (already escaped, from `_lines`, `_verbatim` or the charts) as it is."""
    if isinstance(value, str) and not hasattr(value, "__html__"):
        return _CONTROL.sub(_escape_control, value)
    return value


def _lines(value: Any) -> Markup:
    """Multi-line text (errors, tracebacks, JSON): escaped for HTML, its control characters
    shown escaped, its line breaks and tabs kept."""
    from markupsafe import Markup

    return Markup.escape(_CONTROL_IN_LINES.sub(_escape_control, str(value)))


def _verbatim(value: Any) -> Markup:
    """A value a form sends back as it is (a job id in a hidden field): escaped for HTML
    only."""
    from markupsafe import Markup

    return Markup.escape(str(value))


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
