"""Failures you can act on and finding jobs: tracebacks and each try's error, the filters of
`Scheduler.jobs` (job type, worker, time range, order) and their indexes, deleted jobs kept
as cancelled, and distributed cron runs kept out of the on-demand lists; on a real Redis."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from arq.jobs import Job

from hostedjobs import JobContext, JobHost, JobStatus, RetryPolicy, job_type
from hostedjobs.dashboard import PAGE_SIZE
from hostedjobs.dashboard.app import BULK_LIMIT
from hostedjobs.exceptions import ConfigurationError
from hostedjobs.runner import TRACEBACK_LIMIT, error_traceback
from hostedjobs.serialization import dumps, loads
from hostedjobs.storage import Finished, Store
from hostedjobs.storage.layout import KeyLayout
from hostedjobs.testing import wait_for_job
from tests.test_dashboard import allow_all, client_for, csrf_token
from tests.waiting import eventually


@job_type("tests.find.alpha")
@dataclass
class Alpha:
    n: int
    fail: bool = False
    pause: float = 0.0


@job_type("tests.find.beta")
@dataclass
class Beta:
    n: int


def make_host(redis_url: str, queue_name: str, max_tries: int = 1) -> JobHost:
    host = JobHost(
        redis_url=redis_url,
        queue_name=queue_name,
        retry=RetryPolicy(max_tries=max_tries, backoff=0.01, jitter=False),
    )

    def innermost_frame(n: int) -> None:
        raise ValueError(f"alpha {n} refused")

    @host.handler(Alpha)
    async def alpha(job: Alpha, ctx: JobContext) -> int:
        await asyncio.sleep(job.pause)
        if job.fail:
            innermost_frame(job.n)
        return job.n

    @host.handler(Beta)
    async def beta(job: Beta) -> int:
        return job.n

    return host


# -- tracebacks and try history ----------------------------------------------------------


async def test_a_retried_then_failed_job_keeps_each_trys_error_and_traceback(
    redis_url: str, queue_name: str
) -> None:
    """While it waits for its next try, the job shows the last try's traceback and the
    history so far; once it fails for good, its result holds the traceback and every try's
    error, and stock arq still reads that result."""
    host = make_host(redis_url, queue_name, max_tries=3)
    async with host.run():
        job_id = await host.scheduler.enqueue(Alpha(n=7, fail=True))
        info = await wait_for_job(host, job_id, timeout=30)
        assert info.status is JobStatus.FAILED
        assert info.error == "ValueError: alpha 7 refused"
        assert info.traceback is not None
        assert info.traceback.startswith("Traceback (most recent call last):")
        assert "in innermost_frame" in info.traceback
        assert info.traceback.endswith("ValueError: alpha 7 refused")
        assert [e.attempt for e in info.errors] == [1, 2, 3]
        assert all(e.error == "ValueError: alpha 7 refused" for e in info.errors)
        assert all(e.traceback and "innermost_frame" in e.traceback for e in info.errors)
        assert all(e.at is not None and e.at <= datetime.now(UTC) for e in info.errors)
        assert info.worker is not None

        stock = Job(job_id, host.scheduler.pool, _queue_name=queue_name, _deserializer=loads)
        result = await stock.result_info()
        assert result is not None
        assert result.success is False
        assert result.job_try == 3


async def test_a_try_waiting_to_be_retried_shows_its_traceback(
    redis_url: str, queue_name: str
) -> None:
    """Between tries the job's meta hash holds the failed try's traceback and history."""
    host = JobHost(
        redis_url=redis_url,
        queue_name=queue_name,
        retry=RetryPolicy(max_tries=2, backoff=3600, jitter=False),
    )

    @host.handler(Alpha)
    async def alpha(job: Alpha) -> None:
        raise KeyError("missing")

    async with host.run():
        job_id = await host.scheduler.enqueue(Alpha(n=1))
        info = await wait_for_job(host, job_id, statuses={JobStatus.SCHEDULED}, timeout=30)
        assert info.error == "KeyError: 'missing'"
        assert info.traceback is not None and info.traceback.endswith("KeyError: 'missing'")
        assert [(e.attempt, e.error) for e in info.errors] == [(1, "KeyError: 'missing'")]


def test_a_long_traceback_keeps_its_end_and_says_it_was_cut() -> None:
    """Deep recursion: the stored text is bounded, keeps the innermost frames and the error,
    and starts by saying how much was cut."""

    # Two functions in turn: Python would fold one function's repeated frames into a line.
    def down(n: int) -> None:
        if n == 0:
            raise RuntimeError("at the bottom")
        across(n - 1)

    def across(n: int) -> None:
        down(n)

    try:
        down(300)
    except RuntimeError as exc:
        text = error_traceback(exc)
    assert text is not None
    assert len(text) <= TRACEBACK_LIMIT + 80
    first, _, rest = text.partition("\n")
    assert first.startswith("[") and "characters of the traceback cut" in first
    assert rest.lstrip().startswith("File ")
    assert text.endswith("RuntimeError: at the bottom")
    assert error_traceback(None) is None


async def test_results_stored_before_tracebacks_still_read(redis_url: str, queue_name: str) -> None:
    """A failed job's result without the new fields reads with no traceback and no history."""
    host = make_host(redis_url, queue_name)
    async with host.run():
        keys = KeyLayout(queue_name)
        old = dumps(
            {
                "t": 1,
                "f": "tests.find.alpha@1",
                "a": [{"n": 1}],
                "k": {},
                "et": 1,
                "s": False,
                "r": None,
                "st": 1,
                "ft": 2,
                "q": queue_name,
                "id": "old",
                "o": "failed",
                "m": "ValueError: old",
            }
        )
        await host.scheduler.pool.set(keys.result("old"), old)
        info = await host.scheduler.get("old")
        assert info is not None
        assert (info.status, info.error, info.traceback, info.errors, info.worker) == (
            JobStatus.FAILED,
            "ValueError: old",
            None,
            (),
            None,
        )


# -- filters -------------------------------------------------------------------------------


async def test_finished_jobs_filter_by_type_worker_time_and_order(
    redis_url: str, queue_name: str
) -> None:
    """Each filter narrows the list and its count; the order turns around on request."""
    host = make_host(redis_url, queue_name)
    async with host.run():
        alphas = [await host.scheduler.enqueue(Alpha(n=i)) for i in range(3)]
        betas = [await host.scheduler.enqueue(Beta(n=i)) for i in range(2)]
        failed = await host.scheduler.enqueue(Alpha(n=9, fail=True))
        for job_id in [*alphas, *betas, failed]:
            await wait_for_job(host, job_id, timeout=30)
        s = host.scheduler
        succeeded = JobStatus.SUCCEEDED
        assert {j.id for j in await s.jobs(succeeded, job_type="tests.find.alpha")} == set(alphas)
        assert {j.id for j in await s.jobs(succeeded, job_type="tests.find.beta")} == set(betas)
        assert await s.count(succeeded, job_type="tests.find.alpha") == 3
        assert await s.count(JobStatus.FAILED, job_type="tests.find.alpha") == 1
        assert await s.count(JobStatus.FAILED, job_type="tests.find.beta") == 0
        assert await s.jobs(succeeded, job_type="no.such.type") == []

        worker = (await s.get(alphas[0])).worker  # type: ignore[union-attr]
        assert worker is not None
        assert await s.count(succeeded, worker=worker) == 5
        assert await s.count(succeeded, worker="another-worker") == 0
        both = await s.jobs(succeeded, job_type="tests.find.beta", worker=worker)
        assert {j.id for j in both} == set(betas)
        assert await s.count(succeeded, job_type="tests.find.beta", worker=worker) == 2

        newest = await s.jobs(succeeded)
        oldest = await s.jobs(succeeded, newest_first=False)
        assert len(newest) == 5
        assert [j.id for j in oldest] == [j.id for j in reversed(newest)]
        future = datetime.now(UTC) + timedelta(hours=1)
        assert await s.jobs(succeeded, since=future) == []
        assert await s.count(succeeded, since=future) == 0
        past = datetime.now(UTC) - timedelta(hours=1)
        assert await s.count(succeeded, since=past, until=future) == 5
        assert await s.count(succeeded, until=past) == 0

        with pytest.raises(ConfigurationError, match="aware datetime"):
            await s.jobs(succeeded, since=datetime(2030, 1, 1))
        with pytest.raises(ConfigurationError, match="non-empty string"):
            await s.jobs(succeeded, job_type="")


async def test_waiting_jobs_filter_by_type_and_due_time(redis_url: str, queue_name: str) -> None:
    """Scheduled jobs: by job type (read from their records) and by due time, either way."""
    host = make_host(redis_url, queue_name)
    async with host.run():
        s = host.scheduler
        now = datetime.now(UTC)
        a1 = await s.schedule(Alpha(n=1), at=now + timedelta(hours=1))
        b1 = await s.schedule(Beta(n=1), at=now + timedelta(hours=2))
        a2 = await s.schedule(Alpha(n=2), at=now + timedelta(hours=3))
        scheduled = JobStatus.SCHEDULED
        assert [j.id for j in await s.jobs(scheduled)] == [a1, b1, a2]
        assert [j.id for j in await s.jobs(scheduled, newest_first=True)] == [a2, b1, a1]
        assert [j.id for j in await s.jobs(scheduled, job_type="tests.find.alpha")] == [a1, a2]
        assert await s.count(scheduled, job_type="tests.find.alpha") == 2
        since, until = now + timedelta(minutes=90), now + timedelta(minutes=150)
        assert [j.id for j in await s.jobs(scheduled, since=since, until=until)] == [b1]
        assert await s.count(scheduled, since=since, until=until) == 1
        assert await s.jobs(scheduled, worker="w") == []
        assert [j.id for j in await s.jobs(scheduled, offset=1, limit=1)] == [b1]


async def test_running_jobs_filter_by_worker_and_type(redis_url: str, queue_name: str) -> None:
    """Running jobs: a worker's are its claims; a type's are found from their records."""
    host = make_host(redis_url, queue_name)
    async with host.run():
        s = host.scheduler
        job_id = await s.enqueue(Alpha(n=1, pause=60))
        await wait_for_job(host, job_id, statuses={JobStatus.RUNNING}, timeout=30)
        running = JobStatus.RUNNING
        assert [j.id for j in await s.jobs(running, job_type="tests.find.alpha")] == [job_id]
        assert await s.jobs(running, job_type="tests.find.beta") == []
        beats = await host.workers()
        assert [j.id for j in await s.jobs(running, worker=beats[0].worker_id)] == [job_id]
        assert await s.count(running, worker="nobody") == 0
        assert await s.cancel(job_id)
        await wait_for_job(host, job_id, timeout=30)


async def test_a_deep_page_of_100k_finished_jobs_is_a_few_index_reads(
    redis_url: str, queue_name: str
) -> None:
    """With 100,000 finished jobs indexed (half of one type), a deep filtered page and its
    count cost a handful of commands, none of them KEYS or SCAN."""
    host = make_host(redis_url, queue_name)
    async with host.run():
        keys = KeyLayout(queue_name)
        redis = host.scheduler.pool
        total = 100_000
        base_ms = int(time.time() * 1000) - total
        async with redis.pipeline(transaction=False) as pipe:
            for start in range(0, total, 5000):
                batch = range(start, start + 5000)
                kinds = {i: "tests.find.alpha" if i % 2 else "tests.find.beta" for i in batch}
                for i in batch:
                    job_type_name = kinds[i]
                    pipe.set(
                        keys.result(f"job-{i}"),
                        dumps(
                            {
                                "t": 1,
                                "f": f"{job_type_name}@1",
                                "a": [{"n": i}],
                                "k": {},
                                "et": base_ms,
                                "s": True,
                                "r": i,
                                "st": base_ms + i,
                                "ft": base_ms + i,
                                "q": queue_name,
                                "id": f"job-{i}",
                                "o": "succeeded",
                                "m": None,
                            }
                        ),
                        px=3_600_000,
                    )
                pipe.zadd(
                    keys.finished(JobStatus.SUCCEEDED), {f"job-{i}": base_ms + i for i in batch}
                )
                pipe.zadd(
                    keys.finished_by_type(JobStatus.SUCCEEDED, "tests.find.alpha"),
                    {f"job-{i}": base_ms + i for i in batch if i % 2},
                )
                await pipe.execute()
        probe = aioredis.Redis.from_url(redis_url)
        try:
            before = await probe.info("commandstats")
            page = await host.scheduler.jobs(
                JobStatus.SUCCEEDED, job_type="tests.find.alpha", offset=40_000, limit=25
            )
            count = await host.scheduler.count(JobStatus.SUCCEEDED, job_type="tests.find.alpha")
            after = await probe.info("commandstats")
        finally:
            await probe.aclose()
        assert count == 50_000
        # Newest first: the 40,000th newest odd job and the 24 after it.
        assert [j.id for j in page] == [f"job-{total - 1 - 2 * (40_000 + k)}" for k in range(25)]
        calls = {
            name: after[name]["calls"] - before.get(name, {}).get("calls", 0)
            for name in after
            if name.startswith("cmdstat_")
        }
        assert calls.get("cmdstat_keys", 0) == calls.get("cmdstat_scan", 0) == 0
        assert calls.get("cmdstat_zrangebyscore", 0) + calls.get("cmdstat_zrevrangebyscore", 0) == 1
        assert calls.get("cmdstat_zcount", 0) == 1


# -- what is listed ------------------------------------------------------------------------


async def test_distributed_cron_runs_stay_out_of_the_on_demand_lists(
    redis_url: str, queue_name: str
) -> None:
    """A run with a distributed cron run's id (``<namespace>:cron:<name>:<tick>``) is kept
    (its hosted job reads it) but indexed nowhere on-demand; other jobs are."""
    host = make_host(redis_url, queue_name)
    async with host.run():
        cron_id = KeyLayout(queue_name).cron_run_id("report", 1_700_000_000_000)
        run = await host.scheduler.enqueue(Beta(n=1), job_id=cron_id)
        plain = await host.scheduler.enqueue(Beta(n=2))
        await wait_for_job(host, run, timeout=30)
        await wait_for_job(host, plain, timeout=30)
        listed = [j.id for j in await host.scheduler.jobs(JobStatus.SUCCEEDED)]
        assert listed == [plain]
        assert await host.scheduler.count(JobStatus.SUCCEEDED) == 1
        assert await host.scheduler.count(JobStatus.SUCCEEDED, job_type="tests.find.beta") == 1
        info = await host.scheduler.get(run)
        assert info is not None and info.status is JobStatus.SUCCEEDED


async def test_a_commit_not_indexed_lists_the_job_nowhere(redis_url: str, queue_name: str) -> None:
    """`Finished(indexed=False)` stores the result and touches no index."""
    store = Store(aioredis.Redis.from_url(redis_url), queue_name)
    try:
        await store.lease_worker("w1", lease_ms=60_000, take=True)
        await store.enqueue("j1", b"{}", due_ms=0, ttl_ms=60_000)
        claimed, _, _ = await store.claim(["j1"], worker_id="w1", now_ms=1, limit=1)
        assert [c.id for c in claimed] == ["j1"]
        await store.commit(
            [Finished("j1", JobStatus.SUCCEEDED, b'{"x":1}', 60_000, indexed=False)],
            worker_id="w1",
            now_ms=1000,
            max_age_ms=60_000,
        )
        assert await store.result("j1") == b'{"x":1}'
        assert await store.finished_count(JobStatus.SUCCEEDED) == 0
        assert await store.finished_count(JobStatus.SUCCEEDED, worker_id="w1") == 0
    finally:
        await store.close()


async def test_a_deleted_job_is_kept_as_cancelled_and_its_id_is_free(
    redis_url: str, queue_name: str
) -> None:
    """delete() lists the job as cancelled ("deleted") for the retention period, under its
    type too, while a new job can take its id at once (and then shows instead)."""
    host = make_host(redis_url, queue_name)
    async with host.run():
        s = host.scheduler
        job_id = await s.schedule(Alpha(n=1), delay=timedelta(hours=1), job_id="del-" + queue_name)
        assert await s.delete(job_id)
        info = await s.get(job_id)
        assert info is not None
        assert (info.status, info.message, info.job_type) == (
            JobStatus.CANCELLED,
            "deleted",
            "tests.find.alpha",
        )
        assert info.payload == {"n": 1, "fail": False, "pause": 0.0}
        assert (await s.counts())[JobStatus.CANCELLED] == 1
        assert [j.id for j in await s.jobs(JobStatus.CANCELLED, job_type="tests.find.alpha")] == [
            job_id
        ]
        ttl = await s.pool.pttl(KeyLayout(queue_name).deleted(job_id))
        assert 0 < ttl <= s.keep_result_s * 1000
        again = await s.enqueue(Beta(n=5), job_id=job_id)
        done = await wait_for_job(host, again, timeout=30)
        assert (done.status, done.result) == (JobStatus.SUCCEEDED, 5)
        await eventually(
            lambda: _listed(host, JobStatus.CANCELLED, job_id, False), what="the id re-used"
        )


async def _listed(host: JobHost, status: JobStatus, job_id: str, expected: bool) -> bool:
    return (job_id in [j.id for j in await host.scheduler.jobs(status)]) is expected


async def test_retry_takes_a_job_out_of_its_type_and_worker_indexes(
    redis_url: str, queue_name: str
) -> None:
    """A retried job leaves every failed index it was in, not only the state's."""
    host = make_host(redis_url, queue_name)
    async with host.run():
        job_id = await host.scheduler.enqueue(Alpha(n=1, fail=True))
        info = await wait_for_job(host, job_id, timeout=30)
    assert info.worker is not None
    keys = KeyLayout(queue_name)
    indexes = [
        keys.finished(JobStatus.FAILED),
        keys.finished_by_type(JobStatus.FAILED, "tests.find.alpha"),
        keys.finished_by_worker(JobStatus.FAILED, info.worker),
    ]
    enqueuer = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    async with enqueuer.run():
        pool = enqueuer.scheduler.pool
        assert [await pool.zscore(index, job_id) is not None for index in indexes] == [True] * 3
        assert await enqueuer.scheduler.retry(job_id)
        assert [await pool.zscore(index, job_id) for index in indexes] == [None] * 3


# -- the dashboard's jobs pages ------------------------------------------------------------


async def test_search_goes_to_the_job_or_says_there_is_none(
    redis_url: str, queue_name: str
) -> None:
    """An exact id goes straight to the job's page; an unknown one is named in a notice."""
    host = make_host(redis_url, queue_name)
    async with host.run():
        job_id = await host.scheduler.enqueue(Beta(n=1))
        await wait_for_job(host, job_id, timeout=30)
        async with client_for(host) as client:
            found = await client.get("/jobs", params={"q": f"  {job_id} "})
            assert found.status_code == 303
            assert found.headers["location"] == f"/ops/jobs/jobs/view?id={job_id}"
            missing = await client.get("/jobs", params={"q": "<b>nope</b>"})
            assert missing.status_code == 200
            assert 'id="no-such-job"' in missing.text
            assert "&lt;b&gt;nope&lt;/b&gt;" in missing.text


async def test_the_list_opens_on_the_first_state_that_holds_jobs(
    redis_url: str, queue_name: str
) -> None:
    """Nothing running: a failed job makes the list open on "failed", not "queued"."""
    host = make_host(redis_url, queue_name)
    async with host.run(), client_for(host) as client:
        empty = (await client.get("/jobs")).text
        assert 'href="/ops/jobs/jobs?state=succeeded" aria-current="page"' in empty
        failed = await host.scheduler.enqueue(Alpha(n=1, fail=True))
        await wait_for_job(host, failed, timeout=30)
        await host.scheduler.enqueue(Beta(n=1))
        opened = (await client.get("/jobs")).text
        assert 'href="/ops/jobs/jobs?state=failed" aria-current="page"' in opened
        assert failed in opened


async def test_filters_sort_and_paging_links_keep_the_filters(
    redis_url: str, queue_name: str
) -> None:
    """A GET form filters by type (and worker, time, order); the pager keeps the filters."""
    host = make_host(redis_url, queue_name)
    async with host.run():
        betas = await host.scheduler.enqueue_many(Beta(n=i) for i in range(PAGE_SIZE + 2))
        alpha = await host.scheduler.enqueue(Alpha(n=1))
        for job_id in [*betas, alpha]:
            await wait_for_job(host, job_id, timeout=30)
        worker = (await host.scheduler.get(alpha)).worker  # type: ignore[union-attr]
        async with client_for(host) as client:
            query = {"state": "succeeded", "type": "tests.find.beta", "sort": "oldest"}
            first = (await client.get("/jobs", params=query)).text
            assert alpha not in first
            assert "page 1 of 2" in first
            assert "(27 match)" in first
            assert (
                'href="/ops/jobs/jobs?state=succeeded&amp;type=tests.find.beta&amp;sort=oldest'
                '&amp;page=2" rel="next"' in first
            )
            second = (await client.get("/jobs", params={**query, "page": "2"})).text
            assert second.count('data-label="Job"') == 2
            by_worker = await client.get(
                "/jobs", params={"state": "succeeded", "type": "tests.find.alpha", "worker": worker}
            )
            assert alpha in by_worker.text
            later = await client.get(
                "/jobs", params={"state": "succeeded", "since": "2999-01-01T00:00"}
            )
            assert "No succeeded jobs match the filters" in later.text
            bad = await client.get("/jobs", params={"state": "succeeded", "since": "yesterday"})
            assert bad.status_code == 400


async def test_bulk_retry_confirms_the_count_then_reports_what_was_done(
    redis_url: str, queue_name: str
) -> None:
    """Selected ids lead to a confirmation naming how many it acts on and why it skips the
    others; the final POST retries those it can and redirects to the list with the counts."""
    host = make_host(redis_url, queue_name)
    async with host.run():
        failed = [await host.scheduler.enqueue(Alpha(n=i, fail=True)) for i in range(3)]
        fine = await host.scheduler.enqueue(Beta(n=1))
        for job_id in [*failed, fine]:
            await wait_for_job(host, job_id, timeout=30)
        async with client_for(host, auth=allow_all) as client:
            token = await csrf_token(client, "/jobs?state=failed")
            listed = (await client.get("/jobs?state=failed")).text
            assert 'id="bulk-retry"' in listed and 'name="ids"' in listed
            form = {"csrf_token": token, "action": "retry", "ids": [*failed, fine]}
            confirm = await client.post("/jobs/bulk", data=form)
            assert confirm.status_code == 200
            assert '<h1 id="bulk-question">Retry 3 failed jobs?</h1>' in confirm.text
            assert "1 is not failed and will be skipped (1 succeeded)" in confirm.text
            only_failed = await client.post("/jobs/bulk", data={**form, "ids": failed})
            assert "Retry 3 failed jobs?" in only_failed.text
            # Asking changed nothing yet.
            assert {i.status for i in await host.scheduler.get_many(failed) if i} == {
                JobStatus.FAILED
            }

            done = await client.post("/jobs/bulk/run", data={**form, "back": "state=failed"})
            assert done.status_code == 303
            location = done.headers["location"]
            assert location == "/ops/jobs/jobs?state=failed&done=retry&n=3&skipped=1"
            shown = (await client.get(location.removeprefix("/ops/jobs"))).text
            assert 'id="bulk-result">Retried 3 of 4 jobs; 1 skipped' in shown
            for job_id in failed:
                info = await wait_for_job(host, job_id, timeout=30)
                assert info.status is JobStatus.FAILED and info.tries == 1

            page_form = {"csrf_token": token, "action": "retry-page", "page_ids": failed}
            assert "Retry 3 failed jobs?" in (await client.post("/jobs/bulk", data=page_form)).text
            too_many = {
                "csrf_token": token,
                "action": "delete",
                "ids": [str(i) for i in range(BULK_LIMIT + 1)],
            }
            assert (await client.post("/jobs/bulk", data=too_many)).status_code == 400
            assert (
                await client.post("/jobs/bulk", data={**form, "action": "nuke"})
            ).status_code == 400
            no_token = {"action": "retry", "ids": failed}
            assert (await client.post("/jobs/bulk/run", data=no_token)).status_code == 403
        async with client_for(host) as read_only:
            assert (await read_only.post("/jobs/bulk", data=form)).status_code == 403


async def test_bulk_delete_and_cancel_and_the_job_pages_cancel_button(
    redis_url: str, queue_name: str
) -> None:
    """Scheduled jobs deleted and cancelled in bulk end cancelled; a running job cancelled
    from its page stops; the job page shows the failed job's traceback, escaped."""
    host = make_host(redis_url, queue_name)
    async with host.run():
        s = host.scheduler
        later = [await s.schedule(Beta(n=i), delay=timedelta(hours=1)) for i in range(4)]
        running = await s.enqueue(Alpha(n=1, pause=3600))
        await wait_for_job(host, running, statuses={JobStatus.RUNNING}, timeout=30)
        async with client_for(host, auth=allow_all) as client:
            token = await csrf_token(client, "/jobs?state=scheduled")
            deleted = await client.post(
                "/jobs/bulk/run",
                data={"csrf_token": token, "action": "delete", "ids": later[:2]},
                follow_redirects=True,
            )
            assert "Deleted 2 of 2 jobs" in deleted.text
            cancelled = await client.post(
                "/jobs/bulk/run",
                data={"csrf_token": token, "action": "cancel", "ids": later[2:]},
                follow_redirects=True,
            )
            assert "Cancelled 2 of 2 jobs" in cancelled.text
            infos = await s.get_many(later)
            assert [(i.status, i.message) for i in infos if i] == [
                (JobStatus.CANCELLED, "deleted"),
                (JobStatus.CANCELLED, "deleted"),
                (JobStatus.CANCELLED, "cancelled before it started"),
                (JobStatus.CANCELLED, "cancelled before it started"),
            ]

            page = (await client.get(f"/jobs/{running}")).text
            assert f'action="/ops/jobs/jobs/cancel?id={running}"' in page
            stop = await client.post(f"/jobs/{running}/cancel", data={"csrf_token": token})
            assert stop.headers["location"].endswith("notice=cancelled")
            info = await wait_for_job(host, running, timeout=30)
            assert info.status is JobStatus.CANCELLED
            again = await client.post(f"/jobs/{running}/cancel", data={"csrf_token": token})
            assert again.headers["location"].endswith("notice=not-cancelled")

            failed = await s.enqueue(Alpha(n=666, fail=True))
            await wait_for_job(host, failed, timeout=30)
            shown = (await client.get(f"/jobs/{failed}")).text
            assert '<details class="traceback" id="traceback" open>' in shown
            assert "in innermost_frame" in shown
            assert "raise ValueError(f&#34;alpha {n} refused&#34;)" in shown
            assert 'id="try-1"' in shown
