"""Faults a newcomer found trying the console (issue 13), over HTTP: bulk actions end in a
redirect (a refresh never re-acts), the confirmation counts what it acts on, and more.

What a browser does is in `test_dashboard_trial_c_browser.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from hostedjobs import JobHost, JobStatus
from hostedjobs.dashboard import PAGE_SIZE
from hostedjobs.exceptions import ConfigurationError
from hostedjobs.scheduler import SCAN_LIMIT
from hostedjobs.testing import wait_for_job
from tests.test_dashboard import allow_all, client_for, csrf_token
from tests.test_find import Alpha, Beta, make_host


async def test_a_bulk_action_redirects_to_the_list_with_its_counts(
    redis_url: str, queue_name: str
) -> None:
    """The bulk POST answers 303 to the list carrying only counts (Post/Redirect/Get): the
    list says what was done, and loading it again acts on nothing."""
    host = make_host(redis_url, queue_name)
    async with host.run():
        s = host.scheduler
        later = [await s.schedule(Beta(n=i), delay=timedelta(hours=1)) for i in range(3)]
        finished = await s.enqueue(Beta(n=9))
        await wait_for_job(host, finished, timeout=30)
        async with client_for(host, auth=allow_all) as client:
            token = await csrf_token(client, "/jobs?state=scheduled")
            form = {
                "csrf_token": token,
                "action": "cancel",
                "ids": [*later[:2], finished],
                "back": "state=scheduled&page=1",
            }
            ran = await client.post("/jobs/bulk/run", data=form)
            assert ran.status_code == 303
            location = ran.headers["location"]
            assert location == ("/ops/jobs/jobs?state=scheduled&page=1&done=cancel&n=2&skipped=1")
            for _ in range(2):  # a refresh shows the same, and cancels nothing more
                shown = await client.get(location.removeprefix("/ops/jobs"))
                assert shown.status_code == 200
                assert 'id="bulk-result">Cancelled 2 of 3 jobs; 1 skipped' in shown.text
            assert (await s.get(later[2])).status is JobStatus.SCHEDULED  # type: ignore[union-attr]

            for bad in (
                "done=nuke&n=1&skipped=0",
                "done=retry&n=-1&skipped=2",
                "done=retry&n=x&skipped=0",
                "done=retry&n=1",
                "done=retry&n=0&skipped=0",
                "done=retry&n=101&skipped=0",
            ):
                answer = await client.get(f"/jobs?state=failed&{bad}")
                assert answer.status_code == 400, bad
                assert "bulk" in answer.text


async def test_the_confirmation_counts_only_the_jobs_the_action_applies_to(
    redis_url: str, queue_name: str
) -> None:
    """Cancel on a finished job and a gone one: the question counts the one it cancels and
    says how many are skipped and why; the page does not refresh itself."""
    host = make_host(redis_url, queue_name)
    async with host.run():
        s = host.scheduler
        waiting = await s.schedule(Beta(n=1), delay=timedelta(hours=1))
        finished = await s.enqueue(Beta(n=2))
        await wait_for_job(host, finished, timeout=30)
        async with client_for(host, auth=allow_all) as client:
            token = await csrf_token(client, "/jobs?state=scheduled")
            form = {"csrf_token": token, "action": "cancel", "ids": [waiting, finished, "gone"]}
            page = (await client.post("/jobs/bulk", data=form)).text
            assert '<h1 id="bulk-question">Cancel 1 scheduled job?</h1>' in page
            assert "2 are not queued or scheduled or running and will be skipped" in page
            assert "(1 gone, 1 succeeded)" in page
            assert 'id="bulk-go">Cancel 1 job</button>' in page
            assert 'data-refresh="0"' in page

            only_finished = {**form, "ids": [finished]}
            page = (await client.post("/jobs/bulk", data=only_finished)).text
            assert "None of the 1 selected can be cancelled" in page
            assert 'id="bulk-go"' not in page
        assert (await s.get(waiting)).status is JobStatus.SCHEDULED  # type: ignore[union-attr]


async def test_a_type_filter_on_waiting_jobs_examines_at_most_scan_limit(
    redis_url: str, queue_name: str
) -> None:
    """`jobs` and `count` filtering waiting or running jobs by type look at ``scan_limit``
    entries at most and say when they stopped with more left; a bad limit is refused."""
    host = make_host(redis_url, queue_name)
    async with host.run():
        s = host.scheduler
        for i in range(10):
            await s.schedule(Beta(n=i), delay=timedelta(hours=1))
        wanted = [await s.schedule(Alpha(n=i), delay=timedelta(hours=2)) for i in range(2)]
        page = await s.jobs(JobStatus.SCHEDULED, job_type="tests.find.alpha", scan_limit=5)
        count = await s.count(JobStatus.SCHEDULED, job_type="tests.find.alpha", scan_limit=5)
        assert (page, page.scan_limited) == ([], True)
        assert (count, count.scan_limited) == (0, True)
        for limit in (12, 13, SCAN_LIMIT):  # 12 examines every one: nothing left over
            page = await s.jobs(JobStatus.SCHEDULED, job_type="tests.find.alpha", scan_limit=limit)
            count = await s.count(
                JobStatus.SCHEDULED, job_type="tests.find.alpha", scan_limit=limit
            )
            # Sorted: two jobs due in the same millisecond have no order between them.
            assert (sorted(i.id for i in page), page.scan_limited) == (sorted(wanted), False)
            assert (count, count.scan_limited) == (2, False)
        # All ten it examined matched, but two more wait: the count says it stopped.
        beta = await s.count(JobStatus.SCHEDULED, job_type="tests.find.beta", scan_limit=10)
        assert (beta, beta.scan_limited) == (10, True)
        # Without a type there is no scan: the limit does not apply.
        unfiltered = await s.count(JobStatus.SCHEDULED, scan_limit=1, since=datetime.now(UTC))
        assert (unfiltered, unfiltered.scan_limited) == (12, False)
        for bad in (0, -1, 1.5, True):
            with pytest.raises(ConfigurationError, match="scan_limit"):
                await s.jobs(JobStatus.QUEUED, job_type="x", scan_limit=bad)  # type: ignore[arg-type]
            with pytest.raises(ConfigurationError, match="scan_limit"):
                await s.count(JobStatus.QUEUED, job_type="x", scan_limit=bad)  # type: ignore[arg-type]


async def test_the_jobs_list_says_when_its_type_filter_stopped_early(
    redis_url: str, queue_name: str
) -> None:
    """Past 1,000 waiting jobs the dashboard's type filter stops and says so (the count is
    then a lower bound), still without KEYS or SCAN."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    async with host.run():
        await host.scheduler.enqueue_many(Beta(n=i) for i in range(1_000))
        await host.scheduler.enqueue(Alpha(n=1))
        probe = aioredis.Redis.from_url(redis_url)
        try:
            before = await probe.info("commandstats")
            async with client_for(host) as client:
                limited = await client.get("/jobs?state=queued&type=tests.find.alpha")
                beta = await client.get("/jobs?state=queued&type=tests.find.beta")
            after = await probe.info("commandstats")
        finally:
            await probe.aclose()
    assert limited.status_code == 200
    assert 'id="scan-limited"' in limited.text
    assert "stopped after the first 1,000 queued jobs" in limited.text
    assert "(at least 0 match)" in limited.text
    # A full page of them is listed, but the count stopped at the limit with one left over.
    assert beta.text.count('data-label="Job"') == PAGE_SIZE
    assert "(at least 1000 match)" in beta.text
    for command in ("cmdstat_keys", "cmdstat_scan"):
        calls = after.get(command, {}).get("calls", 0) - before.get(command, {}).get("calls", 0)
        assert calls == 0, command


async def test_cron_runs_link_to_their_hosted_job(redis_url: str, queue_name: str) -> None:
    """A distributed cron job's runs, recorded under ``hostedjobs.cron:<name>``, link to the
    hosted job's page from the job types list, their type's page and each run's page."""
    host = make_host(redis_url, queue_name)

    @host.distributed_cron("0 0 1 1 *", name="year-end")
    async def year_end() -> None:
        return None

    async with host.run():
        job_id = await host.trigger("year-end")
        await wait_for_job(host, job_id, timeout=30)
        async with client_for(host) as client:
            types = (await client.get("/types")).text
            kind = (await client.get("/types/hostedjobs.cron:year-end")).text
            run = (await client.get(f"/jobs/{job_id}")).text
            hosted = await client.get("/hosted/year-end")
    link = 'href="/ops/jobs/hosted/year-end"'
    assert 'data-name="hostedjobs.cron:year-end"' in types
    assert f'<a class="hosted-link" {link}>year-end</a>' in types
    assert link in kind
    assert f"A run of the distributed cron job <a {link}>year-end</a>" in run
    assert hosted.status_code == 200


async def test_the_overview_says_what_its_cards_count_and_shows_pauses(
    redis_url: str, queue_name: str
) -> None:
    """A paused hosted job has its badge on the overview; each card says what it counts
    and over which window, and a finished state's card opens the list over that window,
    which holds as many jobs as the card says."""
    host = make_host(redis_url, queue_name)

    @host.cron("0 0 1 1 *", name="yearly")
    async def yearly() -> None:
        return None

    async with host.run():
        failed = await host.scheduler.enqueue(Alpha(n=1, fail=True))
        await wait_for_job(host, failed, timeout=30)
        await host.pause("yearly")
        async with client_for(host) as client:
            overview = (await client.get("/")).text
            listed = await client.get("/jobs?state=failed&window=1h")
            day = await client.get("/jobs?state=failed&window=24h&since=2999-01-01T00:00")
            bad = await client.get("/jobs?state=failed&window=2h")
    assert '>yearly</a> <span class="pill paused">paused</span>' in overview
    for label in ("jobs queued now", "jobs running now", "jobs failed, last hour"):
        assert f"<span>{label}</span>" in overview
    card = '<a class="card bad" href="/ops/jobs/jobs?state=failed&amp;window=1h">'
    assert f'{card}<span class="n" id="count-failed-hour">1</span>' in overview
    assert listed.status_code == 200
    assert "(1 match)" in listed.text and failed in listed.text
    assert '<option value="1h" selected>the last hour</option>' in listed.text
    # The later of the preset and the form's own time wins.
    assert "No failed jobs match the filters" in day.text
    assert bad.status_code == 400 and "unknown window (1h or 24h)" in bad.text
