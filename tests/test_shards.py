"""Sharded queues on one Redis: names that spread over slots, routing by id, merged lists and
counts, workers serving every shard under one slot budget, and the shard-count guard."""

from __future__ import annotations

import asyncio
import zlib
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from hostedjobs import JobContext, JobHost, JobInfo, JobStatus, RetryPolicy, job_type
from hostedjobs.dashboard import PAGE_SIZE
from hostedjobs.exceptions import ConfigurationError
from hostedjobs.storage.layout import KeyLayout
from hostedjobs.storage.preflight import acl_rule
from hostedjobs.storage.shards import (
    ShardLayout,
    shard_count_key,
    shard_name,
    slot_of_queue,
    slot_ranges,
)
from hostedjobs.testing import wait_for_job
from tests.redis_servers import redis_server
from tests.test_dashboard import Note, allow_all, client_for, csrf_token, make_host
from tests.waiting import eventually


@job_type("tests.shards.item")
@dataclass
class Item:
    n: int


def _host(redis_url: str, queue_name: str, **options: object) -> JobHost:
    options.setdefault("shards", 3)
    options.setdefault("shutdown_grace", timedelta(seconds=2))
    return JobHost(redis_url=redis_url, queue_name=queue_name, **options)  # type: ignore[arg-type]


async def _shard_sizes(host: JobHost) -> list[int]:
    return [await s.redis.zcard(s.keys.waiting) for s in host.scheduler.stores]


# -- names and routing (no Redis) ------------------------------------------------------------


def test_redis_cli_cuts_three_primaries_as_it_does() -> None:
    """The slot ranges are redis-cli's: 0-5460, 5461-10922, 10923-16383 for 3 primaries."""
    assert [(r.start, r.stop - 1) for r in slot_ranges(3)] == [
        (0, 5460),
        (5461, 10922),
        (10923, 16383),
    ]
    assert sum(len(r) for r in slot_ranges(7)) == 16384


@pytest.mark.parametrize("count", [2, 3, 4, 5, 6, 8, 16])
def test_each_shard_lands_in_its_own_slot_range(count: int) -> None:
    """Shard i's keys hash to the i-th of N equal slot ranges, and every key of a shard to one
    slot; names are deterministic."""
    layout = ShardLayout("jobs", count)
    assert len(set(layout.names)) == count
    for index, name in enumerate(layout.names):
        slot = slot_of_queue(name)
        assert slot in slot_ranges(count)[index], (index, name, slot)
        assert name == shard_name("jobs", index, count)
        keys = KeyLayout(name, hash_tag=True)
        assert {keys.waiting, keys.job("x"), keys.claimed}  # all under the one tag:
        assert all(k.startswith(f"{{hostedjobs:{name}}}") for k in (keys.waiting, keys.job("x")))


@pytest.mark.parametrize(("count", "primaries"), [(6, 3), (4, 2), (6, 2), (9, 3), (3, 3)])
def test_shards_over_a_divisor_of_primaries_spread_evenly(count: int, primaries: int) -> None:
    """N shards over M primaries (M divides N): N/M shards on each primary."""
    owners = Counter(
        next(p for p, r in enumerate(slot_ranges(primaries)) if slot_of_queue(name) in r)
        for name in ShardLayout("orders", count).names
    )
    assert owners == dict.fromkeys(range(primaries), count // primaries)


def test_ids_route_stably_and_spread_over_the_shards() -> None:
    """crc32(id) % N picks the shard; 3,000 random ids fill each of 3 shards about equally;
    a cron run's id (the shard's hash tag) routes to the shard it names."""
    layout = ShardLayout("q", 3)
    ids = [f"{i:032x}" for i in range(3000)]
    assert all(layout.of(i) == zlib.crc32(i.encode()) % 3 for i in ids)
    spread = Counter(layout.of(i) for i in ids)
    assert min(spread.values()) > 800, spread
    run_id = KeyLayout(layout.names[0], hash_tag=True).cron_run_id("nightly", 1)
    assert layout.of(run_id) == 0
    assert layout.of(KeyLayout(layout.names[2], hash_tag=True).cron_run_id("x", 1)) == 2
    assert ShardLayout("q", 1).names == ("q",)


@pytest.mark.parametrize("shards", [0, -1, True, "3", 2.0, 65])
def test_a_bad_shard_count_is_refused(shards: object) -> None:
    """shards must be an int from 1 to 64: ConfigurationError naming the value."""
    with pytest.raises(ConfigurationError, match="shards must be an int"):
        JobHost(redis_url="redis://localhost:1/0", shards=shards)  # type: ignore[arg-type]


# -- on Redis -------------------------------------------------------------------------------


async def test_scheduler_operations_find_jobs_on_their_shards(
    redis_url: str, queue_name: str
) -> None:
    """enqueue, enqueue_many, schedule, get, delete and cancel route by id; counts are summed
    over the shards; an unsharded layout's keys are never written."""
    host = _host(redis_url, queue_name, run_worker=False)

    @host.handler(Item)
    async def item(job: Item) -> None: ...

    async with host.run():
        ids = await host.scheduler.enqueue_many(Item(n=i) for i in range(60))
        one = await host.scheduler.enqueue(Item(n=60))
        later = await host.scheduler.schedule(Item(n=61), delay=timedelta(hours=1))
        sizes = await _shard_sizes(host)
        assert sum(sizes) == 62 and all(sizes), sizes
        for job_id in [*ids, one, later]:
            store = host.scheduler.stores[ShardLayout(queue_name, 3).of(job_id)]
            assert await store.redis.zscore(store.keys.waiting, job_id) is not None
        infos = [await host.scheduler.get(job_id) for job_id in ids]
        assert [i.payload["n"] for i in infos if i is not None] == list(range(60))
        counts = await host.scheduler.counts()
        assert counts[JobStatus.QUEUED] == 61 and counts[JobStatus.SCHEDULED] == 1
        assert await host.scheduler.delete(ids[0])
        deleted = await host.scheduler.get(ids[0])  # kept as cancelled on its shard
        assert deleted is not None and deleted.message == "deleted"
        assert await host.scheduler.cancel(ids[1])
        cancelled = await host.scheduler.get(ids[1])
        assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
        assert (await host.scheduler.counts())[JobStatus.QUEUED] == 59
        pool = host.scheduler.pool
        assert await pool.exists(queue_name, f"hostedjobs:{queue_name}:claimed") == 0
        assert await pool.get(shard_count_key(queue_name)) == b"3"


async def test_list_pages_merge_the_shards_in_order(redis_url: str, queue_name: str) -> None:
    """Pages of scheduled jobs (soonest first) across shards equal one sorted list, and
    pages of finished jobs are newest first, with nothing repeated or missed."""
    host = _host(redis_url, queue_name, concurrency=4)

    @host.handler(Item, retry=RetryPolicy(max_tries=1))
    async def item(job: Item) -> None:
        if job.n % 2:
            raise ValueError("odd")

    start = datetime.now(UTC) + timedelta(hours=1)
    async with host.run():
        scheduled = [
            await host.scheduler.schedule(Item(n=i), at=start + timedelta(seconds=i))
            for i in range(23)
        ]
        pages = [
            await host.scheduler.jobs("scheduled", offset=offset, limit=5)
            for offset in range(0, 25, 5)
        ]
        assert [info.id for page in pages for info in page] == scheduled
        ids = await host.scheduler.enqueue_many(Item(n=i) for i in range(20))
        for job_id in ids:
            await wait_for_job(host, job_id)
        failed = [
            info
            for offset in (0, 4, 8)
            for info in await host.scheduler.jobs(JobStatus.FAILED, offset=offset, limit=4)
        ]
        assert {info.id for info in failed} == {ids[i] for i in range(1, 20, 2)}
        assert len(failed) == 10
        finished = [info.finished_at for info in failed]
        assert finished == sorted(finished, reverse=True)  # type: ignore[type-var]
        counts = await host.scheduler.counts()
        assert counts[JobStatus.SUCCEEDED] == 10 and counts[JobStatus.FAILED] == 10
        assert counts[JobStatus.SCHEDULED] == 23
        # A failed job is retried on its own shard, under its id.
        assert await host.scheduler.retry(ids[1])
        assert (await wait_for_job(host, ids[1])).status is JobStatus.FAILED
        info = await host.scheduler.get(ids[1])
        assert info is not None and info.tries == 1


async def test_one_worker_drains_every_shard_within_its_concurrency(
    redis_url: str, queue_name: str
) -> None:
    """A host's workers (one per shard) run every job once and never more than
    ``concurrency`` at a time in total; workers() shows one per shard; watch and progress
    work on a job's shard."""
    running = 0
    peak = 0
    runs: Counter[int] = Counter()
    host = _host(redis_url, queue_name, concurrency=3)

    @host.handler(Item)
    async def item(job: Item, ctx: JobContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await ctx.report_progress(50, "half")
        await asyncio.sleep(0.01)
        runs[job.n] += 1
        running -= 1

    async with host.run():
        watched = await host.scheduler.schedule(Item(n=-1), delay=timedelta(seconds=0.5))
        updates = [info async for info in host.scheduler.watch(watched)]
        assert updates[-1].status is JobStatus.SUCCEEDED
        ids = await host.scheduler.enqueue_many(Item(n=i) for i in range(150))
        await eventually(lambda: len(runs) >= 151, what=lambda: len(runs))
        for job_id in ids:
            await wait_for_job(host, job_id)
        info = await host.scheduler.get(ids[0])
        assert info is not None and info.progress == 50 and info.progress_message == "half"
        beats = await eventually(host.workers, what="heartbeats")
        assert sorted({b.queue for b in beats}) == sorted(ShardLayout(queue_name, 3).names)
        report = await host.health_report()
        assert report["healthy"] and len(report["worker"]["shards"]) == 3
    assert set(runs) == set(range(-1, 150)) and max(runs.values()) == 1
    assert peak <= 3, peak


async def test_two_hosts_drain_one_sharded_queue_running_each_job_once(
    redis_url: str, queue_name: str
) -> None:
    """Two hosts on one sharded queue share its jobs; none runs twice."""
    runs: Counter[int] = Counter()
    by: Counter[str] = Counter()

    def make(name: str) -> JobHost:
        host = _host(redis_url, queue_name, concurrency=4)

        @host.handler(Item)
        async def item(job: Item) -> None:
            await asyncio.sleep(0.002)
            runs[job.n] += 1
            by[name] += 1

        return host

    first, second = make("first"), make("second")
    async with first.run(), second.run():
        ids = await first.scheduler.enqueue_many(Item(n=i) for i in range(400))
        await eventually(lambda: sum(runs.values()) >= 400, what=lambda: sum(runs.values()))
        for job_id in ids:
            await wait_for_job(second, job_id)
        assert sum((await first.scheduler.counts()).values()) >= 400
    assert set(runs) == set(range(400)) and max(runs.values()) == 1
    assert by["first"] and by["second"], by


async def test_burst_mode_empties_every_shard(redis_url: str, queue_name: str) -> None:
    """run(burst=True) and wait_until_idle return once every shard is empty."""
    runs: list[int] = []
    producer = _host(redis_url, queue_name, run_worker=False)
    async with producer.run():
        await producer.scheduler.enqueue_many(Item(n=i) for i in range(30))
    host = _host(redis_url, queue_name)

    @host.handler(Item)
    async def item(job: Item) -> None:
        runs.append(job.n)

    async with host.run(burst=True):
        await asyncio.wait_for(host.wait_until_idle(), 60)
        assert await _shard_sizes(host) == [0, 0, 0]
    assert sorted(runs) == list(range(30))


async def test_distributed_cron_runs_once_per_tick_on_a_sharded_queue(
    redis_url: str, queue_name: str
) -> None:
    """Three hosts with shards=3: one run per tick; the runs live on shard 0 and
    scheduler.get finds them by their ids."""
    runs: list[datetime] = []
    run_ids: list[str] = []

    def make() -> JobHost:
        host = _host(redis_url, queue_name)

        @host.distributed_cron("* * * * * *", name="sharded-tick")
        async def tick(ctx: JobContext) -> None:
            assert ctx.scheduled_at is not None
            runs.append(ctx.scheduled_at)
            run_ids.append(ctx.run_id)

        return host

    hosts = [make(), make(), make()]
    async with hosts[0].run(), hosts[1].run(), hosts[2].run():
        await eventually(lambda: len(runs) >= 3, what=lambda: f"3 runs, got {runs}")
        info = await eventually(
            lambda: _finished(hosts[1], run_ids[0]), what="the first run's outcome"
        )
        assert info.status is JobStatus.SUCCEEDED
    counts = Counter(runs)
    assert max(counts.values()) == 1, counts
    assert all(ShardLayout(queue_name, 3).of(run_id) == 0 for run_id in run_ids)


async def _finished(host: JobHost, job_id: str) -> JobInfo | None:
    info = await host.scheduler.get(job_id)
    return info if info is not None and info.finished else None


async def test_a_different_shard_count_is_refused_while_jobs_wait(
    redis_url: str, queue_name: str
) -> None:
    """Jobs queued under shards=3: shards=2 (or 1) is refused, naming the fix; once the
    queue is drained the count can change. An unsharded queue with jobs cannot become
    sharded either."""
    host = _host(redis_url, queue_name, run_worker=False)
    async with host.run():
        await host.scheduler.enqueue(Item(n=1))
    for count in (2, 1):
        other = _host(redis_url, queue_name, shards=count, run_worker=False)
        with pytest.raises(ConfigurationError, match=r"queued with shards=3.*shards=3 until"):
            async with other.run():
                pass
    worker = _host(redis_url, queue_name)

    @worker.handler(Item)
    async def item(job: Item) -> None: ...

    async with worker.run(burst=True):
        await asyncio.wait_for(worker.wait_until_idle(), 60)
    unsharded = _host(redis_url, queue_name, shards=1, run_worker=False)
    async with unsharded.run():
        assert await unsharded.scheduler.pool.exists(shard_count_key(queue_name)) == 0
        await unsharded.scheduler.enqueue(Item(n=2))
    sharded = _host(redis_url, queue_name, shards=4, run_worker=False)
    with pytest.raises(ConfigurationError, match="queued with shards=1"):
        async with sharded.run():
            pass


async def test_a_different_shard_count_is_refused_while_old_workers_live(
    redis_url: str, queue_name: str
) -> None:
    """A rolling deploy from shards=1 to shards=3 on an empty queue started both, and each
    then missed the other's jobs: now the new count is refused while a worker started with
    the old one is alive, and accepted once it has stopped."""
    old = _host(redis_url, queue_name, shards=1)
    async with old.run():
        await eventually(old.workers, what="the old worker's heartbeat")
        new = _host(redis_url, queue_name, shards=3)
        with pytest.raises(ConfigurationError, match=r"1 live worker\(s\) running with shards=1"):
            async with new.run():
                pass
    async with new.run():
        assert len(new.scheduler.stores) == 3


async def test_the_dashboard_reads_and_acts_on_a_sharded_queue(
    redis_url: str, queue_name: str
) -> None:
    """The dashboard's counts, pages (paging through every shard) and job pages, and its
    retry action, on shards=3."""
    host = make_host(redis_url, queue_name, shards=3)
    async with host.run():
        ids = await host.scheduler.enqueue_many(Note(text=str(i)) for i in range(PAGE_SIZE * 2 + 3))
        failed = await host.scheduler.enqueue(Note(text="no", fail=True))
        for job_id in [*ids, failed]:
            await wait_for_job(host, job_id)
        async with client_for(host, auth=allow_all) as client:
            overview = (await client.get("/")).text
            assert f'id="count-succeeded-hour">{PAGE_SIZE * 2 + 3}<' in overview
            assert "3 alive" in overview
            pages = [(await client.get(f"/jobs?state=succeeded&page={p}")).text for p in (1, 2, 3)]
            assert "page 1 of 3" in pages[0]
            assert pages[2].count('data-label="Job"') == 3
            assert all(sum(i in page for page in pages) == 1 for i in ids)
            assert "noted 5" in (await client.get(f"/jobs/{ids[5]}")).text
            token = await csrf_token(client, f"/jobs/{failed}")
            retried = await client.post(f"/jobs/{failed}/retry", data={"csrf_token": token})
            assert retried.headers["location"].endswith("notice=retried")
            info = await wait_for_job(host, failed, statuses={JobStatus.FAILED})
            assert info.error == "RuntimeError: refused no"


async def test_an_acl_user_with_the_documented_shard_patterns_runs_a_sharded_queue(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Without the shards' patterns the start-up check names every shard's keys and
    channel; the unsharded ACL rule plus ``~{hostedjobs:Q~*`` and ``&{hostedjobs:Q~*`` (as
    the docs say) run a sharded queue: enqueue, a drain, counts."""
    queue = "acl-sharded"

    def run_as_admin(line: str) -> None:
        admin = server.admin()
        try:
            admin.execute_command(*line.split())  # type: ignore[no-untyped-call]
        finally:
            admin.close()

    with redis_server(tmp_path_factory) as server:
        run_as_admin(acl_rule(KeyLayout(queue), "app").replace(" app ", " app on >pw ", 1))
        refused = JobHost(
            redis_url=f"redis://app:pw@127.0.0.1:{server.port}/0", queue_name=queue, shards=3
        )
        with pytest.raises(ConfigurationError, match="lacks permissions") as raised:
            async with refused.run():
                pass
        for name in ShardLayout(queue, 3).names:
            assert f"~{{hostedjobs:{name}}}:*" in str(raised.value)
            assert f"&{{hostedjobs:{name}}}:events" in str(raised.value)
        run_as_admin(f"ACL SETUSER app ~{{hostedjobs:{queue}~* &{{hostedjobs:{queue}~*")
        runs: list[int] = []
        host = JobHost(
            redis_url=f"redis://app:pw@127.0.0.1:{server.port}/0",
            queue_name=queue,
            shards=3,
            accept_risks={"persistence"},
            shutdown_grace=timedelta(seconds=1),
        )

        @host.handler(Item)
        async def item(job: Item) -> None:
            runs.append(job.n)

        async with host.run():
            ids = await host.scheduler.enqueue_many(Item(n=i) for i in range(30))
            for job_id in ids:
                await wait_for_job(host, job_id)
            assert (await host.scheduler.counts())[JobStatus.SUCCEEDED] == 30
            assert len(await host.workers()) == 3
    assert sorted(runs) == list(range(30))
