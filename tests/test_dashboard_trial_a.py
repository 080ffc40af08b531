"""Faults a newcomer found in the console (issue 13, trial A): odd job ids in links, actions
and logs; query parameters and POST bodies validated; control characters shown; the worker
of a running job named. Over HTTP (an in-process ASGI client) against a real Redis."""

from __future__ import annotations

import asyncio
import html
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest

from hostedjobs import JobContext, JobHost, JobResult, JobStatus, RetryPolicy, job_type
from hostedjobs.testing import wait_for_job
from tests.test_dashboard import Note, allow_all, client_for, csrf_token, running
from tests.waiting import eventually

__all__ = ["running"]  # a fixture, used by name

ODD_IDS = (
    "a/b",
    "x?y=1&z",
    "frag#ment",
    "50%off",
    "%2F",
    "with space",
    "ünïcödé ✓ 日本",
    "-leading-dash",
    "..",
    "long-" + "x" * 1500,
)
"""Job ids a path segment cannot carry as they are (docs/scheduler.md: any non-empty string)."""


def href_of(page: str, job_id: str) -> str:
    """The dashboard link to ``job_id`` on ``page`` (unescaped), failing if there is none."""
    for match in re.finditer(r'<a[^>]* href="([^"]+)"[^>]*>([^<]*)</a>', page):
        if html.unescape(match.group(2)) == job_id:
            return html.unescape(match.group(1))
    raise AssertionError(f"no link to {job_id!r} on the page")


@job_type("tests.trial_a.logged")
@dataclass
class Logged:
    fail: bool = False


PERCENT_IDS = ("100%done", "%s", "%(x)s", "%d %%")


@pytest.mark.parametrize("fail", [False, True], ids=["succeeds", "fails"])
async def test_ids_with_percent_signs_log_and_record_their_outcome(
    redis_url: str, queue_name: str, caplog: pytest.LogCaptureFixture, fail: bool
) -> None:
    """A run whose id holds %-format directives logs its lines (with and without args) and
    its outcome, run by a real worker; the id shows as it is in every line."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, retry=RetryPolicy(max_tries=1))

    @host.handler(Logged)
    async def logged(job: Logged, ctx: JobContext) -> None:
        ctx.logger.info("step %d of %s", 1, "two")
        ctx.logger.info("50% there, no args")
        ctx.logger.info("mapping %(n)s", {"n": "value"})
        if job.fail:
            raise RuntimeError("refused %s")

    # Job ids are the Redis's, whatever the queue: each case has its own.
    ids = [job_id + (" failing" if fail else "") for job_id in PERCENT_IDS]
    caplog.set_level(logging.DEBUG, logger="hostedjobs")
    async with host.run():
        for job_id in ids:
            await host.scheduler.enqueue(Logged(fail=fail), job_id=job_id)
        for job_id in ids:
            info = await wait_for_job(host, job_id, timeout=60)
            assert info.status is (JobStatus.FAILED if fail else JobStatus.SUCCEEDED), info
            if fail:
                assert info.error == "RuntimeError: refused %s"
    for job_id in ids:
        lines = [r.getMessage() for r in caplog.records if getattr(r, "run_id", None) == job_id]
        prefix = f"[tests.trial_a.logged {job_id}] "
        assert prefix + "step 1 of two" in lines
        assert prefix + "50% there, no args" in lines
        assert prefix + "mapping value" in lines
        ending = "failed: RuntimeError: refused %s" if fail else "succeeded in "
        assert any(line.startswith(prefix + ending) for line in lines), lines


async def test_odd_job_ids_open_their_page_and_every_action_works(running: JobHost) -> None:
    """Ids with "/", "?", "#", "%", "%2F", spaces, unicode, a leading dash or 1500 characters:
    the lists link to their page, which opens, and delete, cancel and retry act on them."""
    scheduler = running.scheduler
    for job_id in ODD_IDS:
        await scheduler.schedule(Note(text="d"), delay=timedelta(hours=1), job_id=job_id)
        await scheduler.schedule(Note(text="c"), delay=timedelta(hours=1), job_id=job_id + "·c")
        await scheduler.enqueue(Note(text="r", fail=True), job_id=job_id + "·r")
    for job_id in ODD_IDS:
        await wait_for_job(running, job_id + "·r", timeout=60)
    prefix = "/ops/jobs"
    async with client_for(running, auth=allow_all) as client:
        scheduled = (await client.get("/jobs?state=scheduled")).text
        failed = (await client.get("/jobs?state=failed")).text
        for job_id in ODD_IDS:
            for listed, suffix, action, notice in (
                (scheduled, "", "delete", "deleted"),
                (scheduled, "·c", "cancel", "cancelled"),
                (failed, "·r", "retry", "retried"),
            ):
                target = job_id + suffix
                link = href_of(listed, target)
                assert link == f"{prefix}/jobs/view?id={quote(target, safe='')}"
                page = await client.get(link.removeprefix(prefix))
                assert page.status_code == 200, (target, page.text)
                assert f'<h1 class="mono wrap">{html.escape(target, quote=False)}</h1>' in page.text
                match = re.search(rf'action="([^"]*/jobs/{action}\?id=[^"]*)"', page.text)
                assert match, f"no {action} form for {target!r}"
                token = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
                assert token
                before = await scheduler.get(target)
                assert before is not None
                done = await client.post(
                    html.unescape(match.group(1)).removeprefix(prefix),
                    data={"csrf_token": token.group(1)},
                )
                assert done.status_code == 303, (target, done.text)
                assert done.headers["location"].endswith(f"notice={notice}")
                shown = await client.get(done.headers["location"].removeprefix(prefix))
                assert shown.status_code in (200, 404)  # a deleted job is gone
                if action == "delete":
                    info = await scheduler.get(target)
                    assert info is None or info.message == "deleted", info
                elif action == "cancel":
                    info = await scheduler.get(target)
                    assert info is not None and info.status is JobStatus.CANCELLED, info
                else:
                    # Run again (it fails again): a later finish than before the retry.
                    async def ran_again(target: str = target, at: Any = before.finished_at) -> bool:
                        info = await scheduler.get(target)
                        return bool(info and info.finished_at and info.finished_at > at)

                    await eventually(ran_again, what=f"{target!r} run again")
        missing = await client.get("/jobs/view")
        assert missing.status_code == 400
        assert "which job?" in missing.text
        searched = await client.get("/jobs", params={"q": ODD_IDS[0]})
        assert searched.headers["location"] == f"{prefix}/jobs/view?id=a%2Fb"


@job_type("tests.trial_a.shouty")
@dataclass
class Shouty:
    text: str
    fail: bool = False


CONTROLS = "\x00\x07\x1b[2J\r\x7f\u202eevil\u2066"
"""NUL, bell, an ANSI escape, a carriage return, DEL and bidi overrides."""
BIDI = "\u202a-\u202e\u2066-\u2069"
SHOWN = "\\x00\\x07\\x1b[2J\\x0d\\x7f\\u202eevil\\u2066"


async def test_control_characters_are_shown_escaped(redis_url: str, queue_name: str) -> None:
    """Control characters and bidi overrides in ids, messages, errors, tracebacks and results
    show as visible escapes (line breaks kept in tracebacks); markup stays inert; a bulk
    action still gets the id as it is."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, retry=RetryPolicy(max_tries=1))

    @host.handler(Shouty)
    async def shouty(job: Shouty, ctx: JobContext) -> JobResult:
        if job.fail:
            raise RuntimeError(job.text + "\n<b>second line</b>")
        return JobResult.success(job.text)

    ok_id, bad_id = f"ok{CONTROLS}<i>", f"bad{CONTROLS}<i>"
    async with host.run():
        await host.scheduler.enqueue(Shouty(text=CONTROLS), job_id=ok_id)
        await host.scheduler.enqueue(Shouty(text=CONTROLS, fail=True), job_id=bad_id)
        await wait_for_job(host, ok_id, timeout=60)
        await wait_for_job(host, bad_id, timeout=60)
        async with client_for(host, auth=allow_all) as client:
            pages = [
                (await client.get("/jobs?state=succeeded")).text,
                (await client.get("/jobs?state=failed")).text,
                (await client.get("/jobs/view", params={"id": ok_id})).text,
                (await client.get("/jobs/view", params={"id": bad_id})).text,
            ]
            for page in pages:
                assert not re.search(f"[\x00-\x08\x0b-\x1f\x7f{BIDI}]", page.split("<form")[0]), (
                    page
                )
            listed_ok, listed_bad, ok_page, bad_page = pages
            assert f"ok{SHOWN}&lt;i&gt;" in listed_ok
            assert SHOWN in listed_ok  # the message
            assert f"bad{SHOWN}&lt;i&gt;" in listed_bad
            assert f'<h1 class="mono wrap">ok{SHOWN}&lt;i&gt;</h1>' in ok_page
            assert f"RuntimeError: {SHOWN}\n&lt;b&gt;second line&lt;/b&gt;" in bad_page
            traceback = bad_page.split('id="traceback-text">')[1].split("</pre>")[0]
            assert "\n" in traceback and SHOWN in traceback
            assert "<b>" not in bad_page and "<i>" not in bad_page
            # JSON writes C0 controls as \\u00XX; DEL and the bidi ones show escaped too.
            assert "\\x7f\\u202eevil\\u2066" in ok_page.split('id="payload">')[1]

            token = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', listed_bad)
            assert token
            confirm = await client.post(
                "/jobs/bulk",
                data={"csrf_token": token.group(1), "action": "retry", "ids": bad_id},
            )
            assert confirm.status_code == 200
            hidden = re.search(r'name="ids" value="([^"]*)"', confirm.text)
            assert hidden and html.unescape(hidden.group(1)) == bad_id


BAD_QUERIES = [
    ("/", "window=7d", "unknown window"),
    ("/", "page=2", "unknown query parameter 'page': this page takes window"),
    ("/", "notice=%3Cb%3Ehi", "unknown notice"),
    ("/workers", "page=abc", "unknown query parameter 'page': this page takes none"),
    ("/hosted", "status=bogus", "unknown query parameter 'status'"),
    ("/hosted/yearly", "window=1h", "unknown query parameter 'window'"),
    ("/types", "window=garbage", "unknown window"),
    ("/types", "sort=whatever", "unknown query parameter 'sort'"),
    ("/types/tests.dashboard.note", "window=1d", "unknown window"),
    ("/jobs", "page=abc", "page is a whole number"),
    ("/jobs", "page=-1", "page is a whole number"),
    ("/jobs", "page=0", "page is a whole number"),
    ("/jobs", "page=1.5", "page is a whole number"),
    ("/jobs", "page=%EF%BC%92", "page is a whole number"),  # a full-width digit
    ("/jobs", "page=99999999999999999999", "page is a whole number"),
    ("/jobs", "state=bogus", "unknown state"),
    ("/jobs", "status=failed", "unknown query parameter 'status'"),
    ("/jobs", "since=garbage", "since is not a time"),
    ("/jobs", "until=2024-13-01", "until is not a time"),
    ("/jobs", "since=2024-02-01T00:00&until=2024-01-01T00:00", "since is later than until"),
    ("/jobs", "sort=whatever", "sort is newest or oldest"),
    ("/jobs", "type=tests.dashboard.nope", "unknown job type"),
    ("/jobs", "state=failed&state=queued", "'state' is given more than once"),
    ("/jobs", "notice=deleted&notice=retried", "'notice' is given more than once"),
    ("/jobs/view", "", "which job?"),
    ("/jobs/view", "id=x&page=2", "unknown query parameter 'page': this page takes id"),
]


@pytest.mark.parametrize(("path", "query", "message"), BAD_QUERIES)
async def test_every_bad_query_parameter_gets_a_400_saying_what_is_wrong(
    running: JobHost, path: str, query: str, message: str
) -> None:
    """Each page refuses a query parameter it does not take, or a value it cannot use, with
    a 400 page naming it (never a 500, nor a default that hides the typo)."""
    async with client_for(running) as client:
        answer = await client.get(f"{path}?{query}" if query else path)
    assert answer.status_code == 400, answer.text
    failure = re.search(r'id="failure">([^<]*)<', answer.text)
    assert failure and message in html.unescape(failure.group(1)), answer.text
    assert "<b>hi" not in answer.text


async def test_the_pages_take_their_good_query_parameters(running: JobHost) -> None:
    """What the pages' own links and forms send is accepted; an unknown job type's page is a
    404 saying so."""
    await wait_for_job(running, await running.scheduler.enqueue(Note(text="x")), timeout=60)
    async with client_for(running) as client:
        for url in (
            "/?window=24h",
            "/?notice=deleted",
            "/types?window=1h",
            "/types/tests.dashboard.note?window=24h",
            "/jobs?state=succeeded&type=tests.dashboard.note&worker=&since=&until=&sort=",
            "/jobs?state=failed&since=2024-01-01T00:00&until=2024-01-02T00:00:30&sort=oldest",
            "/jobs?state=queued&page=3",
            "/jobs?q=&state=running",
        ):
            answer = await client.get(url)
            assert answer.status_code == 200, (url, answer.text)
        unknown = await client.get("/types/tests.dashboard.nope")
        assert unknown.status_code == 404
        assert "no job type of that name" in unknown.text


async def test_a_form_over_256_kib_is_refused_with_413(running: JobHost) -> None:
    """A POST whose form is over 256 KiB (with a Content-Length, or streamed without one) is
    a 413 saying so, on every action; a bulk form of 100 long ids, under the limit, works."""
    async with client_for(running, auth=allow_all) as client:
        token = await csrf_token(client, "/hosted")
        big = {"csrf_token": token, "action": "delete", "ids": ["x" * 1024] * 300}
        for path in ("/jobs/bulk", "/jobs/bulk/run", "/jobs/delete?id=a", "/hosted/yearly/run"):
            answer = await client.post(path, data=big)
            assert answer.status_code == 413, (path, answer.text)
            assert "the form is over 256 KiB" in answer.text

        async def chunks() -> AsyncIterator[bytes]:
            yield f"csrf_token={token}&action=delete".encode()
            for _ in range(300):
                yield b"&ids=" + b"y" * 1024

        streamed = await client.post(
            "/jobs/bulk",
            content=chunks(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert streamed.status_code == 413
        assert "the form is over 256 KiB" in streamed.text

        fits = {
            "csrf_token": token,
            "action": "delete",
            "ids": [f"{i}-" + "z" * 1000 for i in range(100)],
        }
        answer = await client.post("/jobs/bulk", data=fits)
        assert answer.status_code == 200, answer.text
        # Read whole: the confirmation lists all 100 (none exists, so none would be deleted).
        assert "None of the 100 selected can be deleted" in answer.text
        assert answer.text.count('name="ids"') == 100


@job_type("tests.trial_a.held")
@dataclass
class Held:
    pass


async def test_a_running_job_names_its_worker(redis_url: str, queue_name: str) -> None:
    """While a job runs, `JobInfo.worker` is the worker that claimed it (read from its
    claims), and the running list and the job's page show it, linked to the workers page."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name)
    release = asyncio.Event()

    @host.handler(Held)
    async def held(job: Held, ctx: JobContext) -> None:
        await release.wait()

    async with host.run():
        job_id = await host.scheduler.enqueue(Held(), job_id="held/one?")

        async def running() -> Any:
            info = await host.scheduler.get(job_id)
            return info if info is not None and info.status is JobStatus.RUNNING else None

        info = await eventually(running, what="the job running")
        (beat,) = await host.workers()
        assert info.worker == beat.worker_id
        (listed,) = await host.scheduler.jobs(JobStatus.RUNNING)
        assert listed.worker == beat.worker_id
        shown = html.escape(beat.worker_id, quote=False)
        link = f'href="/ops/jobs/workers#worker-{quote(beat.worker_id)}">{shown}</a>'
        async with client_for(host) as client:
            rows = (await client.get("/jobs?state=running")).text
            assert link in rows.split('id="jobs"')[1]
            page = (await client.get("/jobs/view", params={"id": job_id})).text
            assert link in page.split('id="job-worker"')[1]
            workers = (await client.get("/workers")).text
            assert f'id="worker-{shown}"' in workers
        release.set()
        done = await wait_for_job(host, job_id, timeout=60)
        assert done.worker == beat.worker_id


async def test_actions_refuse_query_parameters_they_do_not_take(running: JobHost) -> None:
    """A POST action with a query parameter it does not take is a 400 naming it, and does
    nothing."""
    job_id = await running.scheduler.schedule(Note(text="kept"), delay=timedelta(hours=1))
    async with client_for(running, auth=allow_all) as client:
        token = await csrf_token(client, "/hosted")
        for path in (
            f"/jobs/delete?id={job_id}&confirm=1",
            f"/jobs/{job_id}/delete?id=other",
            "/jobs/bulk?state=queued",
            "/hosted/yearly/run?now=1",
        ):
            answer = await client.post(path, data={"csrf_token": token, "ids": job_id})
            assert answer.status_code == 400, (path, answer.text)
            assert "unknown query parameter" in answer.text
    info = await running.scheduler.get(job_id)
    assert info is not None and info.status is JobStatus.SCHEDULED
