"""The dashboard over HTTP (an in-process ASGI client) against a running host on a real Redis.

What a browser does is in `test_dashboard_browser.py`; here: auth, CSRF, escaping, paging,
the pages' reads (no KEYS or SCAN), and Redis going away.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx2
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from hostedjobs import JobContext, JobHost, JobResult, JobStatus, RetryPolicy, job_type
from hostedjobs.dashboard import PAGE_SIZE
from hostedjobs.testing import wait_for_job

MARKUP = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@job_type("tests.dashboard.note")
@dataclass
class Note:
    text: str
    fail: bool = False


def make_host(redis_url: str, queue_name: str, **options: Any) -> JobHost:
    host = JobHost(
        redis_url=redis_url, queue_name=queue_name, retry=RetryPolicy(max_tries=1), **options
    )

    @host.handler(Note)
    async def note(job: Note, ctx: JobContext) -> JobResult:
        if job.fail:
            raise RuntimeError(f"refused {job.text}")
        return JobResult.success(f"noted {job.text}")

    @host.cron("0 0 1 1 *", name="yearly")
    async def yearly() -> None:
        return None

    return host


def client_for(host: JobHost, auth: Any = None, prefix: str = "/ops/jobs") -> httpx2.AsyncClient:
    app = Starlette(routes=[Mount(prefix, app=host.dashboard(auth=auth))])
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://testserver" + prefix
    )


def allow_all(request: Request) -> bool:
    return True


async def csrf_token(client: httpx2.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
    assert match, "no action form on the page"
    return match.group(1)


@pytest.fixture
async def running(redis_url: str, queue_name: str) -> AsyncIterator[JobHost]:
    host = make_host(redis_url, queue_name)
    async with host.run():
        yield host


async def test_every_page_renders_with_real_jobs(running: JobHost) -> None:
    """Overview, hosted jobs, each state's list and a job's page show what Redis holds."""
    done = await running.scheduler.enqueue(Note(text="first"))
    failed = await running.scheduler.enqueue(Note(text="second", fail=True))
    later = await running.scheduler.schedule(Note(text="later"), delay=timedelta(hours=1))
    await wait_for_job(running, done)
    await wait_for_job(running, failed)
    async with client_for(running) as client:
        overview = await client.get("/")
        assert overview.status_code == 200
        assert 'id="count-succeeded-hour">1<' in overview.text
        assert 'id="count-failed-hour">1<' in overview.text
        assert "1 alive" in overview.text
        assert "yearly" in overview.text
        assert 'href="/ops/jobs/static/dashboard.css"' in overview.text
        assert overview.headers["content-security-policy"].startswith("default-src 'none'")

        hosted = await client.get("/hosted")
        assert "0 0 1 1 *" in hosted.text
        assert (await client.get("/hosted/yearly")).status_code == 200
        assert (await client.get("/hosted/nope")).status_code == 404

        lists = {s: (await client.get(f"/jobs?state={s}")).text for s in JobStatus}
        assert done in lists[JobStatus.SUCCEEDED]
        assert failed in lists[JobStatus.FAILED]
        assert "RuntimeError: refused second" in lists[JobStatus.FAILED]
        assert later in lists[JobStatus.SCHEDULED]
        assert "No running jobs" in lists[JobStatus.RUNNING]
        assert (await client.get("/jobs?state=bogus")).status_code == 400

        page = await client.get(f"/jobs/{done}")
        assert "noted first" in page.text
        assert "&#34;text&#34;: &#34;first&#34;" in page.text
        assert (await client.get("/jobs/unknown")).status_code == 404

        partial = await client.get("/", headers={"X-Dashboard-Partial": "1"})
        assert "<html" not in partial.text
        assert "Overview" in partial.text

        static = await client.get("/static/dashboard.js")
        assert static.status_code == 200


async def test_markup_in_payloads_and_errors_renders_inert(running: JobHost) -> None:
    """A payload and an error carrying <script> and an onerror handler come out escaped."""
    job_id = await running.scheduler.enqueue(Note(text=MARKUP, fail=True))
    await wait_for_job(running, job_id)
    async with client_for(running) as client:
        for path in (f"/jobs/{job_id}", "/jobs?state=failed"):
            html = (await client.get(path)).text
            assert "<script>alert" not in html
            assert "<img src=x" not in html
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
            # The only scripts are the dashboard's own file.
            assert re.findall(r"<script[^>]*>", html) == [
                '<script src="/ops/jobs/static/dashboard.js" defer>'
            ]


async def test_without_auth_the_dashboard_is_read_only(running: JobHost) -> None:
    """No auth=: no action buttons, a banner saying so, and every POST refused."""
    job_id = await running.scheduler.schedule(Note(text="keep"), delay=timedelta(hours=1))
    async with client_for(running, auth=None) as client:
        page = await client.get(f"/jobs/{job_id}")
        assert "Read-only" in page.text
        assert "<form" not in page.text
        refused = await client.post(f"/jobs/{job_id}/delete", data={"csrf_token": "x" * 64})
        assert refused.status_code == 403
        assert "read-only" in refused.text
        assert (await client.post("/hosted/yearly/run")).status_code == 403
    assert (await running.scheduler.get(job_id)) is not None


async def test_auth_refusing_a_request_blocks_its_actions(running: JobHost) -> None:
    """auth() False (sync or async): no buttons and 403; the job stays."""

    async def deny(request: Request) -> bool:
        return False

    job_id = await running.scheduler.schedule(Note(text="keep"), delay=timedelta(hours=1))
    async with client_for(running, auth=deny) as client:
        page = await client.get(f"/jobs/{job_id}")
        assert "Read-only for you" in page.text
        assert "<form" not in page.text
        assert (await client.post(f"/jobs/{job_id}/delete")).status_code == 403
    assert (await running.scheduler.get(job_id)) is not None


async def test_actions_need_the_csrf_token_and_same_origin(running: JobHost) -> None:
    """Without the token, with a wrong one, or from another origin: 403 and nothing changes."""
    job_id = await running.scheduler.schedule(Note(text="keep"), delay=timedelta(hours=1))
    async with client_for(running, auth=allow_all) as client:
        token = await csrf_token(client, f"/jobs/{job_id}")
        path = f"/jobs/{job_id}/delete"
        assert (await client.post(path)).status_code == 403
        assert (await client.post(path, data={"csrf_token": "0" * 64})).status_code == 403
        cross = await client.post(
            path, data={"csrf_token": token}, headers={"Origin": "https://evil.example"}
        )
        assert cross.status_code == 403
        assert (await running.scheduler.get(job_id)) is not None
        # Another browser (no cookie) replaying the token is refused too.
        async with client_for(running, auth=allow_all) as other:
            assert (await other.post(path, data={"csrf_token": token})).status_code == 403
        assert (await running.scheduler.get(job_id)) is not None

        deleted = await client.post(
            path, data={"csrf_token": token}, headers={"Origin": "http://testserver"}
        )
        assert deleted.status_code == 303
        assert deleted.headers["location"] == "/ops/jobs/jobs?notice=deleted"
        gone = await running.scheduler.get(job_id)
        assert gone is not None and (gone.status, gone.message) == (JobStatus.CANCELLED, "deleted")
        notice = await client.get("/jobs?notice=deleted")
        assert "The job was deleted" in notice.text
        # Notices are picked by code: a made-up one shows nothing, markup is never reflected.
        assert "<b>hi" not in (await client.get("/jobs?notice=<b>hi</b>")).text


async def test_retry_and_run_now_actions(running: JobHost) -> None:
    """Retry re-queues a failed job; run now starts a hosted job; both redirect with a notice."""
    job_id = await running.scheduler.enqueue(Note(text="flaky", fail=True))
    await wait_for_job(running, job_id)
    async with client_for(running, auth=allow_all) as client:
        token = await csrf_token(client, f"/jobs/{job_id}")
        retried = await client.post(f"/jobs/{job_id}/retry", data={"csrf_token": token})
        assert retried.status_code == 303
        assert retried.headers["location"].endswith("notice=retried")
        await wait_for_job(running, job_id, statuses={JobStatus.FAILED})
        twice = await client.post(f"/jobs/{job_id}/delete", data={"csrf_token": token})
        assert twice.headers["location"].endswith("notice=not-deleted")

        ran = await client.post("/hosted/yearly/run", data={"csrf_token": token})
        assert ran.status_code == 303
        assert ran.headers["location"] == "/ops/jobs/hosted/yearly?notice=triggered"
        status = {s.name: s for s in await running.status()}["yearly"]
        assert status.history or status.running
        missing = await client.post("/hosted/nope/run", data={"csrf_token": token})
        assert missing.status_code == 404


async def test_lists_page_through_many_jobs(running: JobHost) -> None:
    """Queued jobs are paged PAGE_SIZE at a time with links both ways."""
    ids = await running.scheduler.enqueue_many(Note(text=str(i)) for i in range(PAGE_SIZE * 2 + 3))
    await running.scheduler.schedule(Note(text="x"), delay=timedelta(hours=2))
    for job_id in ids:
        await wait_for_job(running, job_id)
    async with client_for(running) as client:
        first = (await client.get("/jobs?state=succeeded")).text
        third = (await client.get("/jobs?state=succeeded&page=3")).text
    assert "page 1 of 3" in first
    assert 'rel="next"' in first
    assert 'rel="prev"' not in first
    assert third.count('data-label="Job"') == 3
    assert 'rel="next"' not in third


async def test_reading_the_pages_never_scans_the_keyspace(running: JobHost, redis_url: str) -> None:
    """Every page is served from indexes: no KEYS or SCAN reaches Redis."""
    await wait_for_job(running, await running.scheduler.enqueue(Note(text="a")))
    probe = aioredis.Redis.from_url(redis_url)
    try:
        before = await probe.info("commandstats")
        pages = ["/", "/hosted", "/hosted/yearly", *(f"/jobs?state={s}" for s in JobStatus)]
        pages.append("/workers")
        # Finding jobs too: the opening list, filters on every kind of list, a search.
        pages += [
            "/jobs",
            "/jobs?state=succeeded&type=tests.dashboard.note&sort=oldest&page=2",
            "/jobs?state=succeeded&type=tests.dashboard.note&worker=w1",
            "/jobs?state=failed&worker=w1&since=2020-01-01T00:00&until=2999-01-01T00:00",
            "/jobs?state=queued&type=tests.dashboard.note&since=2020-01-01T00:00",
            "/jobs?state=scheduled&type=tests.dashboard.note&sort=newest",
            "/jobs?state=running&type=tests.dashboard.note&worker=w1",
            "/jobs?q=no-such-id",
        ]
        async with client_for(running) as client:
            for path in pages:
                assert (await client.get(path)).status_code == 200
        after = await probe.info("commandstats")
    finally:
        await probe.aclose()
    for command in ("cmdstat_keys", "cmdstat_scan"):
        calls = after.get(command, {}).get("calls", 0) - before.get(command, {}).get("calls", 0)
        assert calls == 0, command


async def test_redis_down_gives_a_clear_page(restartable_redis: Any, queue_name: str) -> None:
    """With Redis gone the dashboard answers 503 naming the problem, then recovers."""
    host = make_host(restartable_redis.url, queue_name)
    async with host.run(), client_for(host) as client:
        assert (await client.get("/")).status_code == 200
        restartable_redis.stop()
        try:
            down = await client.get("/jobs?state=queued")
            assert down.status_code == 503
            assert "Redis is unreachable" in down.text
        finally:
            restartable_redis.start()
        assert (await client.get("/jobs?state=queued")).status_code == 200


async def test_dashboard_of_a_stopped_host_says_so(redis_url: str, queue_name: str) -> None:
    host = make_host(redis_url, queue_name)
    async with client_for(host) as client:
        page = await client.get("/")
    assert page.status_code == 503
    assert "the job host is not running" in page.text


async def test_a_newcomers_second_trial_run_now_wording_error_banner_and_sort(
    redis_url: str, queue_name: str
) -> None:
    """Run now on a distributed cron job says its run is queued (it waits for a worker, it
    has not started); an error page does not call an operator who may act read-only; the
    order menu offers each order once."""
    host = make_host(redis_url, queue_name, run_worker=False)

    @host.distributed_cron("0 0 1 1 *", name="year-end")
    async def year_end() -> None:
        return None

    async with host.run(), client_for(host, auth=allow_all) as client:
        token = await csrf_token(client, "/hosted/year-end")
        ran = await client.post("/hosted/year-end/run", data={"csrf_token": token})
        assert ran.headers["location"] == "/ops/jobs/hosted/year-end?notice=queued"
        page = await client.get(ran.headers["location"].removeprefix("/ops/jobs"))
        assert "A run is queued: the first free worker runs it." in page.text

        bad = await client.get("/jobs?page=abc")
        assert bad.status_code == 400
        assert "Read-only for you" not in bad.text
        for state in ("queued", "scheduled", "succeeded", "failed"):
            form = (await client.get(f"/jobs?state={state}")).text
            menu = form[form.index('<select name="sort">') :]
            labels = re.findall(r"<option[^>]*>([^<]+)</option>", menu[: menu.index("</select>")])
            assert len(labels) == len(set(labels)) == 2, (state, labels)
    async with client_for(host, auth=lambda request: False) as client:
        assert "Read-only for you" in (await client.get("/jobs?page=abc")).text


async def test_a_running_job_whose_worker_is_gone_says_so(redis_url: str, queue_name: str) -> None:
    """A job held by a worker that sends no heartbeat (killed: its lease not lapsed yet) is
    shown running, with a warning that its worker is gone, not as if all were well."""
    from redis.asyncio import Redis

    from hostedjobs.storage.store import Store

    host = make_host(redis_url, queue_name, run_worker=False)
    store = Store(Redis.from_url(redis_url), queue_name)
    try:
        async with host.run(), client_for(host) as client:
            job_id = await host.scheduler.enqueue(Note(text="held"))
            assert (await store.lease_worker("ghost:1", lease_ms=600_000, take=True))[0]
            now_ms = int(time.time() * 1000)
            claimed, _, _ = await store.claim([job_id], worker_id="ghost:1", now_ms=now_ms, limit=1)
            assert [c.id for c in claimed] == [job_id]
            page = await client.get(f"/jobs/view?id={job_id}")
            assert "ghost:1" in page.text
            assert 'id="worker-lost">Its worker is gone' in page.text
    finally:
        await store.close()
