"""Run history: per-minute counts and run-time buckets written with each commit, read back
per window and per job type, and drawn as SVG charts."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from hostedjobs import JobHost, JobStatus, RetryPolicy, job_type
from hostedjobs.dashboard.charts import history_chart, nice_ceiling
from hostedjobs.exceptions import ConfigurationError
from hostedjobs.history import (
    HISTORY_TTL_S,
    MINUTE_MS,
    HistoryPoint,
    HistoryWindow,
    bucket_seconds,
    duration_bucket,
    history_fields,
    history_points,
    percentile_s,
)
from hostedjobs.storage import Finished, Requeued, Store
from hostedjobs.testing import wait_for_job
from tests.waiting import eventually


@job_type("tests.history.nap")
@dataclass
class Nap:
    seconds: float
    fail: bool = False


def _host(redis_url: str, queue_name: str, **options: object) -> JobHost:
    host = JobHost(redis_url=redis_url, queue_name=queue_name, **options)  # type: ignore[arg-type]

    @host.handler(Nap, retry=RetryPolicy(max_tries=2, backoff=timedelta(milliseconds=10)))
    async def nap(job: Nap) -> str:
        await asyncio.sleep(job.seconds)
        if job.fail:
            raise RuntimeError("nap failed")
        return "rested"

    return host


# -- the bucket scheme and binning (no Redis) -----------------------------------------------


def test_every_run_time_is_within_the_stated_error_of_its_bucket() -> None:
    """Bucket b holds (2**((b-1)/4), 2**(b/4)] ms; its middle is within 9.05 % of any of them."""
    for ms in (1.5, 2, 7, 10, 99, 250, 1000, 3_600_000, 86_400_000):
        shown = bucket_seconds(duration_bucket(ms / 1000)) * 1000
        assert abs(shown - ms) / ms <= 2 ** (1 / 8) - 1 + 1e-9, ms
    assert duration_bucket(0) == duration_bucket(0.0005) == 0
    assert duration_bucket(0.002) == 4
    assert duration_bucket(86_400) < 110


def test_percentiles_come_from_bucket_counts() -> None:
    """p50 and p95 are the buckets holding the 50th and 95th percent of the runs."""
    times = [0.010] * 90 + [1.0] * 10
    buckets: dict[int, int] = {}
    for t in times:
        buckets[duration_bucket(t)] = buckets.get(duration_bucket(t), 0) + 1
    p50, p95 = percentile_s(buckets, 0.5), percentile_s(buckets, 0.95)
    assert p50 is not None and abs(p50 - 0.010) / 0.010 < 0.0906
    assert p95 is not None and abs(p95 - 1.0) < 0.0906
    assert percentile_s({}, 0.5) is None


def test_a_batch_adds_one_increment_per_field() -> None:
    """Outcomes of one batch are summed per field; an unknown type counts in the totals only,
    a cancelled run adds no run time."""
    fields = history_fields(
        [("s", "a", 0.01), ("s", "a", 0.01), ("f", "b", None), ("c", "a", 5.0), ("s", "", 1)]
    )
    bucket = f"d{duration_bucket(0.01)} a"
    assert fields == {"s": 3, "s a": 2, bucket: 2, "f": 1, "f b": 1, "c": 1, "c a": 1}


def test_windows_align_bins_and_refuse_what_is_not_kept() -> None:
    """Bins start at UTC multiples of their length, the last holds now; beyond 24 h or a bin
    of part of a minute is a ConfigurationError."""
    now_ms = 1_700_000_123_456
    window = HistoryWindow.of(now_ms, 3600, 60)
    assert (window.bins, window.bin_minutes, window.last_minute) == (60, 1, now_ms // MINUTE_MS)
    assert window.first_minute == window.last_minute - 59
    day = HistoryWindow.of(now_ms, 86_400, 900)
    assert day.bins == 96 and day.first_minute % 15 == 0
    assert day.last_minute - day.first_minute < 96 * 15
    points = history_points(day, [{"s": 1, "f": 2}] * (day.last_minute - day.first_minute + 1))
    assert len(points) == 96 and points[0].start.minute % 15 == 0
    assert sum(p.succeeded for p in points) == day.last_minute - day.first_minute + 1
    for since, bin_s in ((86_401, 60), (30, 30), (3600, 90), (600, 1200)):
        with pytest.raises(ConfigurationError):
            HistoryWindow.of(now_ms, since, bin_s)


def test_nice_ceilings() -> None:
    """The chart's top is 1, 2 or 5 times a power of ten."""
    assert [nice_ceiling(v) for v in (0, 1, 2, 3, 7, 10, 11, 240, 501)] == [
        1,
        1,
        2,
        5,
        10,
        10,
        20,
        500,
        1000,
    ]


# -- on Redis --------------------------------------------------------------------------------


async def test_runs_are_counted_per_status_and_type_with_run_times(
    redis_url: str, queue_name: str
) -> None:
    """Succeeded, retried then failed, cancelled queued and cancelled running jobs are counted
    in the current minute, totals and per type; run times give p50/p95 within the bucket
    error; the minute's key expires after 25 h."""
    host = _host(redis_url, queue_name)
    scheduler = host.scheduler
    async with host.run():
        fast = [await scheduler.enqueue(Nap(0.02)) for _ in range(9)]
        slow = await scheduler.enqueue(Nap(0.4))
        failing = await scheduler.enqueue(Nap(0.0, fail=True))
        for job_id in (*fast, slow, failing):
            await wait_for_job(host, job_id, timeout=30)
        queued = await scheduler.schedule(Nap(0), delay=timedelta(hours=1))
        assert await scheduler.cancel(queued)
        running = await scheduler.enqueue(Nap(30))
        await wait_for_job(host, running, statuses={JobStatus.RUNNING}, timeout=30)
        assert await scheduler.cancel(running)
        await wait_for_job(host, running, timeout=30)

        points = await scheduler.history(since=timedelta(minutes=5))
        total = HistoryPoint(
            points[0].start,
            *(sum(getattr(p, f) for p in points) for f in HistoryPoint.__slots__[1:]),
        )
        assert (total.succeeded, total.failed, total.retried, total.cancelled) == (10, 1, 1, 2)
        assert len(points) == 5 and points[-1].start <= datetime.now(UTC)
        assert all(p.start.second == 0 for p in points)

        by_type = await scheduler.history(since=300, job_type="tests.history.nap")
        assert sum(p.total for p in by_type) == 14
        assert sum(p.total for p in await scheduler.history(since=300, job_type="other")) == 0

        (stats,) = await scheduler.job_types(since=timedelta(minutes=5))
        assert (stats.name, stats.succeeded, stats.failed, stats.retried, stats.cancelled) == (
            "tests.history.nap",
            10,
            1,
            1,
            2,
        )
        assert stats.p50_s is not None and stats.p95_s is not None
        # 12 tries ran: 9 of 20 ms (and a bit), 2 failing ones of ~0 ms, 1 of 400 ms.
        assert 0.015 < stats.p50_s < 0.2
        assert 0.35 < stats.p95_s < 1.0
        assert stats.failure_rate == pytest.approx(1 / 13)

        store = scheduler.store
        keys = [k async for k in store.redis.scan_iter(match=f"*{queue_name}*:history:*")]
        assert keys
        for key in keys:
            ttl = await store.redis.ttl(key)
            assert HISTORY_TTL_S - 600 < ttl <= HISTORY_TTL_S


async def test_both_commit_paths_write_the_same_history(redis_url: str, queue_name: str) -> None:
    """commit.lua (checked) and the MULTI/EXEC path add the same fields; outcomes the worker
    no longer held, and uncounted requeues, add nothing."""
    client = aioredis.Redis.from_url(redis_url)
    store = Store(client, queue_name)
    now_ms = int(time.time() * 1000)
    minute = now_ms // MINUTE_MS
    outcomes: list[Finished | Requeued] = [
        Finished("a", JobStatus.SUCCEEDED, b"{}", 60_000, False, job_type="t1", duration_s=0.005),
        Finished("b", JobStatus.FAILED, None, 0, False, job_type="t1", duration_s=0.5),
        Finished("c", JobStatus.CANCELLED, None, 0, True, job_type="t2", duration_s=0.1),
        Requeued("d", now_ms + 60_000, "boom", job_type="t2", duration_s=2.0),
        Requeued("e", now_ms, counted=False, tries=1, job_type="t2", duration_s=1.0),
        Finished("f", JobStatus.SUCCEEDED, None, 0, False, job_type="", duration_s=None),
    ]
    try:
        for path in ("checked", "held"):
            await client.delete(store.keys.history(minute))
            await client.sadd(store.keys.claims("w1"), *"abcdef")
            if path == "checked":
                # "x" was not held: it is dropped and not counted.
                extra = Finished(
                    "x", JobStatus.SUCCEEDED, None, 0, False, job_type="t9", duration_s=0.1
                )
                dropped = await store.commit(
                    [*outcomes, extra], worker_id="w1", now_ms=now_ms, max_age_ms=0
                )
                assert dropped == ["x"]
            else:
                await store.commit(outcomes, worker_id="w1", now_ms=now_ms, max_age_ms=0, held=True)
            (found,) = await store.history(minute, minute)
            assert found == {
                "s": 2,
                "f": 1,
                "c": 1,
                "r": 1,
                "s t1": 1,
                f"d{duration_bucket(0.005)} t1": 1,
                "f t1": 1,
                f"d{duration_bucket(0.5)} t1": 1,
                "c t2": 1,
                "r t2": 1,
                f"d{duration_bucket(2.0)} t2": 1,
            }, path
            assert await client.ttl(store.keys.history(minute)) > HISTORY_TTL_S - 60
    finally:
        await store.close()


async def test_a_sharded_host_sums_its_shards(redis_url: str, queue_name: str) -> None:
    """With shards, history and job types add up every shard's counts."""
    host = _host(redis_url, queue_name, shards=3)
    async with host.run():
        ids = [await host.scheduler.enqueue(Nap(0)) for _ in range(12)]
        for job_id in ids:
            await wait_for_job(host, job_id, timeout=30)
        stores = host.scheduler.stores
        assert len(stores) == 3
        now_minute = int(time.time() * 1000) // MINUTE_MS
        per_shard = [
            sum(m.get("s", 0) for m in await s.history(now_minute - 2, now_minute)) for s in stores
        ]
        assert sum(per_shard) == 12 and max(per_shard) < 12
        points = await host.scheduler.history(since=180)
        assert sum(p.succeeded for p in points) == 12
        (stats,) = await host.scheduler.job_types(since=180)
        assert stats.succeeded == 12


async def test_reading_a_day_of_history_is_one_round_trip_per_shard(
    redis_url: str, queue_name: str
) -> None:
    """24 h by 15 min reads up to 1,440 minutes and bins them into 96 points; the job types
    of 24 h read the last 1,440 minutes."""
    host = _host(redis_url, queue_name)
    async with host.run():
        store = host.scheduler.store
        now_minute = int(time.time() * 1000) // MINUTE_MS
        async with store.redis.pipeline(transaction=False) as pipe:
            for minute in range(now_minute - 1439, now_minute + 1):
                pipe.hset(store.keys.history(minute), mapping={"s": 3, "f": 1, "s t": 3, "f t": 1})
            await pipe.execute()
        points = await host.scheduler.history(since=timedelta(hours=24), bin=timedelta(minutes=15))
        assert len(points) == 96
        # 95 whole bins and the current one: 1,425 to 1,440 minutes (the minute may turn).
        assert 3 * 1425 <= sum(p.succeeded for p in points) <= 3 * 1440
        (stats,) = await host.scheduler.job_types(since=timedelta(hours=24))
        assert stats.succeeded in (4317, 4320) and stats.failed in (1439, 1440)


# -- charts ----------------------------------------------------------------------------------


def _parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


async def test_the_chart_of_real_runs_is_valid_svg(redis_url: str, queue_name: str) -> None:
    """The figure parses as XML; its SVG has a title, a description and a bar per busy bin,
    coloured by class, and the legend's totals match."""
    host = _host(redis_url, queue_name)
    async with host.run():
        ids = [await host.scheduler.enqueue(Nap(0, fail=i == 0)) for i in range(5)]
        for job_id in ids:
            await wait_for_job(host, job_id, timeout=30)
        points = await eventually(lambda: _busy(host), what="the runs to be counted", timeout=30)
    figure = _parse(history_chart(points, chart_id="h", label="Runs <last hour>"))
    svg = figure.find(".//svg")
    assert svg is not None and svg.get("role") == "img"
    assert svg.findtext("title") == "Runs <last hour>"
    assert "4 succeeded" in (svg.findtext("desc") or "")
    rects = svg.findall(".//rect")
    assert {r.get("class") for r in rects} >= {"bar-succeeded", "bar-failed", "bar-retried"}
    assert all(0 <= float(r.get("y", "-1")) <= 100 for r in rects)
    assert figure.find(".//*[@id='h-succeeded']") is not None
    assert figure.find(".//*[@id='h-succeeded']").text == "4"  # type: ignore[union-attr]
    assert figure.find(".//table") is not None


async def _busy(host: JobHost) -> list[HistoryPoint] | None:
    points = await host.scheduler.history(since=600)
    return points if sum(p.succeeded for p in points) == 4 else None


def test_an_empty_history_renders() -> None:
    """No runs: a valid chart with no bars, zero totals and a note instead of the table."""
    start = datetime(2030, 1, 1, tzinfo=UTC)
    points = [HistoryPoint(start + timedelta(minutes=i)) for i in range(60)]
    figure = _parse(history_chart(points, chart_id="e", label="Runs"))
    assert figure.findall(".//rect") == []
    assert "No runs in this window." in ET.tostring(figure, encoding="unicode")
    assert _parse(history_chart([], chart_id="z", label="Runs")).find(".//svg") is not None


async def test_an_eager_host_answers_from_the_jobs_it_keeps() -> None:
    """In eager mode (no Redis) history and job types count the finished jobs it keeps."""
    from hostedjobs.testing import eager

    host = _host("redis://127.0.0.1:1/0", "eager-history")
    with eager(host):
        async with host.run():
            await host.scheduler.enqueue(Nap(0))
            await host.scheduler.enqueue(Nap(0, fail=True))
            points = await host.scheduler.history(since=600)
            assert (sum(p.succeeded for p in points), sum(p.failed for p in points)) == (1, 1)
            (stats,) = await host.scheduler.job_types(since=600)
            assert (stats.name, stats.succeeded, stats.failed) == ("tests.history.nap", 1, 1)
