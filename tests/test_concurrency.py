"""Concurrency limits per job type and per payload key (issue 14, item 1), on a real Redis,
across real worker processes where it says fleet."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from hostedjobs import (
    ConcurrencyLimit,
    JobContext,
    JobHost,
    JobStatus,
    RateLimit,
    RetryPolicy,
    job_type,
)
from hostedjobs.exceptions import ConfigurationError
from hostedjobs.storage.shards import ShardLayout
from hostedjobs.testing import wait_for_job
from tests.concurrency_app import Limited, Solo
from tests.servers import ROOT, subprocess_env
from tests.waiting import eventually

HOSTEDJOBS = str(Path(sys.executable).with_name("hostedjobs"))


@job_type("tests.concurrency.slow")
@dataclass
class Slow:
    tag: str
    hold: float = 0.3
    mode: str = "ok"
    """ok, fail, retry (fails its first try), timeout, or wait (until cancelled)."""


@job_type("tests.concurrency.fast")
@dataclass
class Fast:
    n: int


@job_type("tests.concurrency.keyed")
@dataclass
class Keyed:
    tag: str
    customer: str


@contextmanager
def workers(
    redis_url: str, queue_name: str, count: int, shards: int = 1
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``hostedjobs worker tests.concurrency_app:host`` processes, stopped at the end."""
    env = subprocess_env(
        HOSTEDJOBS_REDIS_URL=redis_url,
        CONCURRENCY_APP_QUEUE=queue_name,
        CONCURRENCY_APP_SHARDS=str(shards),
    )
    command = [HOSTEDJOBS, "worker", "tests.concurrency_app:host", "--log-level", "WARNING"]
    processes = [subprocess.Popen(command, env=env, cwd=ROOT) for _ in range(count)]
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


async def _seen(redis: Redis, tag: str, group: str) -> list[int]:
    return [int(n) for n in await redis.lrange(f"{tag}:seen:{group}", 0, -1)]  # type: ignore[misc]


async def _beating(host: JobHost, count: int) -> bool:
    return len(await host.workers()) >= count


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "2"])
def test_a_limit_below_one_or_not_an_int_is_refused(limit: Any) -> None:
    with pytest.raises(ConfigurationError, match="at least 1"):
        ConcurrencyLimit(limit)


def test_a_key_that_is_not_callable_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="key must be a function"):
        ConcurrencyLimit(2, key="customer_id")  # type: ignore[arg-type]


def test_concurrency_must_be_a_limit(queue_name: str) -> None:
    host = JobHost(queue_name=queue_name, run_worker=False)
    with pytest.raises(ConfigurationError, match="ConcurrencyLimit"):
        host.add_handler(Fast, _fast, concurrency=2)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ConcurrencyLimit"):
        host.task(concurrency=2)  # type: ignore[call-overload]


async def _limited(job: Limited) -> None:
    raise AssertionError("runs in the worker processes")


async def _fast(job: Fast) -> int:
    return job.n


# -- fleet-wide -----------------------------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 3])
async def test_at_most_limit_runs_per_key_across_the_fleet(
    redis_url: str, queue_name: str, shards: int
) -> None:
    """Three worker processes of concurrency 6; ConcurrencyLimit(2) per customer; on one
    queue, and on a queue of three shards (each group's jobs and slots in one shard)."""
    tag = f"fleet-{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(redis_url)
    with workers(redis_url, queue_name, 3, shards):
        host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False, shards=shards)
        host.add_handler(
            Limited,
            _limited,
            concurrency=ConcurrencyLimit(2, key=lambda job: job.customer),
        )
        async with host.connected():
            await eventually(lambda: _beating(host, 3 * shards), what="three workers beating")
            ids = [
                await host.scheduler.enqueue(Limited(tag=tag, customer=i % 2, hold=0.15))
                for i in range(30)
            ]
            ids += await host.scheduler.enqueue_many(
                [Limited(tag=tag, customer=i % 2, hold=0.15) for i in range(10)]
            )
            if shards > 1:
                layout = ShardLayout(queue_name, shards)
                for first in (0, 1):  # customer 0's jobs, then customer 1's
                    assert len({layout.of(job_id) for job_id in ids[first::2]}) == 1
            for job_id in ids:
                info = await wait_for_job(host, job_id, timeout=120)
                assert info.status is JobStatus.SUCCEEDED, info
    for customer in ("0", "1"):
        seen = await _seen(redis, tag, customer)
        assert len(seen) == 20
        assert max(seen) <= 2, seen
    pids = {int(p) for p in await redis.lrange(f"{tag}:pids", 0, -1)}
    print(f"runs spread over {len(pids)} processes; most at once per customer: 2")
    await redis.aclose()


async def test_a_killed_workers_slot_comes_back_within_its_lease(
    redis_url: str, queue_name: str
) -> None:
    """The worker running the job that holds a type's only slot is SIGKILLed: the jobs
    waiting for it run once the dead worker's lease lapses (its run is lost: one try)."""
    tag = f"crash-{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(redis_url)
    with workers(redis_url, queue_name, 2) as processes:
        host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
        async with host.connected():
            await eventually(lambda: _beating(host, 2), what="both workers beating")
            holder = await host.scheduler.enqueue(Solo(tag=tag, hold=600))
            pid = int(await eventually(lambda: redis.lpop(f"{tag}:pids"), what="holder runs"))
            waiters = [await host.scheduler.enqueue(Solo(tag=tag)) for _ in range(4)]

            async def all_waiting() -> bool:
                infos = [await host.scheduler.get(i) for i in waiters]
                return all(
                    i is not None and (i.message or "").startswith("waiting for a concurrency")
                    for i in infos
                )

            await eventually(all_waiting, what="the later jobs waiting for the slot")
            info = await host.scheduler.get(waiters[0])
            assert info is not None and info.status is JobStatus.QUEUED
            assert info.message == "waiting for a concurrency slot (1 of 1 in use)"
            (victim,) = (p for p in processes if p.pid == pid)
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=60)
            # Its run never ends: uncount it (nothing else runs until its lease lapses).
            await redis.decr(f"{tag}:running:solo")
            for job_id in waiters:
                finished = await wait_for_job(host, job_id, timeout=120)
                assert finished.status is JobStatus.SUCCEEDED, finished
            lost = await wait_for_job(host, holder, timeout=120)
            assert lost.status is JobStatus.FAILED  # one try, lost with its worker
    assert max(await _seen(redis, tag, "solo")) == 1
    await redis.aclose()


async def test_waiters_run_after_a_crash_and_a_deploy_without_the_limit(
    redis_url: str, queue_name: str
) -> None:
    """The worker holding a type's only slot is SIGKILLed and the app comes back without the
    limit (a deploy that removed it): the jobs left waiting for the slot run, though no
    worker runs a limited type any more (they waited for ever)."""
    tag = f"unlimited-{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(redis_url)
    host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    with workers(redis_url, queue_name, 1) as (victim,):
        async with host.connected():
            await eventually(lambda: _beating(host, 1), what="the worker beating")
            await host.scheduler.enqueue(Solo(tag=tag, hold=600))
            await eventually(lambda: redis.lpop(f"{tag}:pids"), what="the holder runs")
            waiters = [await host.scheduler.enqueue(Solo(tag=tag)) for _ in range(3)]

            async def all_waiting() -> bool:
                infos = [await host.scheduler.get(i) for i in waiters]
                return all(
                    i is not None and (i.message or "").startswith("waiting for a concurrency")
                    for i in infos
                )

            await eventually(all_waiting, what="the later jobs waiting for the slot")
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=60)
    ran: list[float] = []
    redeployed = JobHost(redis_url=redis_url, queue_name=queue_name, concurrency=4)

    @redeployed.handler(Solo)  # no concurrency= any more
    async def solo(job: Solo) -> None:
        ran.append(job.hold)

    async with redeployed.run():
        for job_id in waiters:
            finished = await wait_for_job(redeployed, job_id, timeout=120)
            assert finished.status is JobStatus.SUCCEEDED, finished
    assert len(ran) >= 3
    await redis.aclose()


# -- one worker process ---------------------------------------------------------------------


class Overlap:
    """The most runs seen at once."""

    def __init__(self) -> None:
        self.now = self.most = self.runs = 0

    def __enter__(self) -> None:
        self.now += 1
        self.runs += 1
        self.most = max(self.most, self.now)

    def __exit__(self, *exc: object) -> None:
        self.now -= 1


async def _statuses(host: JobHost, ids: list[str]) -> list[JobStatus | None]:
    return [None if (i := await host.scheduler.get(j)) is None else i.status for j in ids]


async def test_waiting_jobs_hold_no_worker_slot(redis_url: str, queue_name: str) -> None:
    """A worker of concurrency 4; 20 slow jobs of a type limited to 1 and 20 unrelated fast
    ones: the fast ones all finish while the slow ones still run one at a time."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, concurrency=4)
    slow = Overlap()
    release = asyncio.Event()

    @host.handler(Slow, concurrency=ConcurrencyLimit(1))
    async def run_slow(job: Slow) -> None:
        with slow:
            await release.wait()

    host.add_handler(Fast, _fast)
    async with host.run():
        slow_ids = [await host.scheduler.enqueue(Slow(tag="s")) for _ in range(20)]
        await eventually(lambda: slow.runs == 1 or None, what="the first slow job running")
        fast_ids = [await host.scheduler.enqueue(Fast(n=i)) for i in range(20)]
        for job_id in fast_ids:
            info = await wait_for_job(host, job_id, timeout=60)
            assert info.status is JobStatus.SUCCEEDED
        assert slow.runs == 1  # the slow ones still wait, behind the one that runs
        waiting = await host.scheduler.get(slow_ids[-1])
        assert waiting is not None and waiting.status is JobStatus.QUEUED
        assert waiting.message == "waiting for a concurrency slot (1 of 1 in use)"
        counts = await host.scheduler.counts()
        assert counts[JobStatus.QUEUED] + counts[JobStatus.RUNNING] == 20  # waiters counted
        assert await host.scheduler.parked() == {}  # parked() is for paused or unknown jobs
        listed = [j.id for j in await host.scheduler.jobs(JobStatus.QUEUED, limit=50)]
        assert slow_ids[-1] in listed  # the console's queued list shows the waiting ones
        assert await host.scheduler.cancel(slow_ids[-1]) is True  # cancelled while waiting
        assert await host.scheduler.delete(slow_ids[-2]) is True  # deleted while waiting
        release.set()
        for job_id in slow_ids[:-2]:
            info = await wait_for_job(host, job_id, timeout=60)
            assert info.status is JobStatus.SUCCEEDED
        cancelled = await wait_for_job(host, slow_ids[-1], timeout=60)
        assert cancelled.status is JobStatus.CANCELLED
        deleted = await wait_for_job(host, slow_ids[-2], timeout=60)
        assert (deleted.status, deleted.message) == (JobStatus.CANCELLED, "deleted")
    assert (slow.runs, slow.most) == (18, 1)


async def test_every_ending_releases_the_slot(redis_url: str, queue_name: str) -> None:
    """Failure, a retry (its slot free while it waits), a timeout and a cancel while running
    each free the slot: every job ends, one at a time."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, concurrency=4)
    overlap = Overlap()
    started: dict[str, asyncio.Event] = {}

    @host.handler(
        Slow,
        concurrency=ConcurrencyLimit(1),
        timeout=2.0,
        retry=RetryPolicy(max_tries=2, backoff=0.2, jitter=0),
    )
    async def run_slow(job: Slow, ctx: JobContext) -> str:
        with overlap:
            started.setdefault(job.tag, asyncio.Event()).set()
            if job.mode == "fail" or (job.mode == "retry" and ctx.attempt == 1):
                raise RuntimeError(f"{job.mode} on try {ctx.attempt}")
            if job.mode in ("timeout", "wait"):
                await asyncio.sleep(30)
            await asyncio.sleep(0.05)
            return job.tag

    async with host.run():
        modes = ["fail", "retry", "timeout", "wait", "ok"]
        ids = {m: await host.scheduler.enqueue(Slow(tag=m, mode=m)) for m in modes}
        await eventually(lambda: (started.get("wait") and started["wait"].is_set()) or None)
        assert await host.scheduler.cancel(ids["wait"]) is True  # cancelled while running
        expected = {
            "fail": JobStatus.FAILED,
            "retry": JobStatus.SUCCEEDED,
            "timeout": JobStatus.FAILED,
            "wait": JobStatus.CANCELLED,
            "ok": JobStatus.SUCCEEDED,
        }
        for mode, job_id in ids.items():
            info = await wait_for_job(host, job_id, timeout=60)
            assert info.status is expected[mode], (mode, info)
    assert overlap.most == 1


async def _waiting(host: JobHost, job_id: str) -> Any:
    info = await host.scheduler.get(job_id)
    if info is not None and (info.message or "").startswith("waiting for a concurrency slot"):
        return info
    return None


async def test_a_key_per_payload_and_a_key_that_raises(redis_url: str, queue_name: str) -> None:
    """Each customer has its own limit; a job whose key raises fails, saying why."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, concurrency=8)
    overlap: dict[str, Overlap] = {}
    gate = asyncio.Event()

    def customer(job: Keyed) -> str:
        if job.customer == "bad":
            raise KeyError("no customer")
        return job.customer

    @host.handler(Keyed, concurrency=ConcurrencyLimit(2, key=customer))
    async def run_keyed(job: Keyed) -> None:
        with overlap.setdefault(job.customer, Overlap()):
            await gate.wait()

    async with host.run():
        ids = [await host.scheduler.enqueue(Keyed(tag="k", customer=c)) for c in "aaabbbc"]
        bad = await host.scheduler.enqueue(Keyed(tag="k", customer="bad"))
        # Two of a, two of b and the c run at once; the third a and b wait.
        await eventually(
            lambda: sum(o.now for o in overlap.values()) == 5 or None, what="five running"
        )
        info = await eventually(lambda: _waiting(host, ids[2]), what="the third a waiting")
        assert info.message == "waiting for a concurrency slot (2 of 2 in use for key 'a')"
        failed = await wait_for_job(host, bad, timeout=60)
        assert failed.status is JobStatus.FAILED
        assert "concurrency key" in (failed.error or "") and "no customer" in (failed.error or "")
        gate.set()
        for job_id in ids:
            assert (await wait_for_job(host, job_id, timeout=60)).status is JobStatus.SUCCEEDED
    assert {c: o.most for c, o in overlap.items()} == {"a": 2, "b": 2, "c": 1}


async def test_a_paused_limited_type_waits_then_runs_within_its_limit(
    redis_url: str, queue_name: str
) -> None:
    host = JobHost(redis_url=redis_url, queue_name=queue_name, concurrency=4)
    overlap = Overlap()

    @host.task(name="tests.concurrency.paused-task", concurrency=ConcurrencyLimit(2))
    async def paused_task(n: int) -> int:
        with overlap:
            await asyncio.sleep(0.05)
        return n

    async with host.run():
        assert await host.pause_jobs("tests.concurrency.paused-task") is True
        ids = [await paused_task.enqueue(n=n) for n in range(8)]

        async def all_paused() -> bool:
            infos = [await host.scheduler.get(i) for i in ids]
            return all(i is not None and (i.message or "").startswith("paused") for i in infos)

        await eventually(all_paused, what="every job parked as paused")
        assert overlap.runs == 0
        assert await host.resume_jobs("tests.concurrency.paused-task") is True
        for job_id in ids:
            assert (await wait_for_job(host, job_id, timeout=60)).status is JobStatus.SUCCEEDED
    assert (overlap.runs, overlap.most) == (8, 2)


async def test_a_job_waiting_for_its_retry_holds_no_slot(redis_url: str, queue_name: str) -> None:
    """Limit 1: the first job fails its first try and waits 5 s for its retry; the second
    runs meanwhile, in the slot the first gave back."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, concurrency=4)

    @host.handler(
        Slow,
        concurrency=ConcurrencyLimit(1),
        retry=RetryPolicy(max_tries=2, backoff=5, jitter=0),
    )
    async def run_slow(job: Slow, ctx: JobContext) -> None:
        if job.mode == "retry" and ctx.attempt == 1:
            raise RuntimeError("first try fails")

    async with host.run():
        first = await host.scheduler.enqueue(Slow(tag="first", mode="retry"))
        await eventually(lambda: _tried(host, first), what="the first job's first try failed")
        second = await host.scheduler.enqueue(Slow(tag="second"))
        done = await wait_for_job(host, second, timeout=60)
        assert done.status is JobStatus.SUCCEEDED
        info = await wait_for_job(host, first, timeout=60)
        assert (info.status, info.tries) == (JobStatus.SUCCEEDED, 2)
        # Had the first held the slot while it waited, the second would have run after it.
        assert done.finished_at is not None and info.started_at is not None
        assert done.finished_at <= info.started_at  # started_at: its last try's start


async def _tried(host: JobHost, job_id: str) -> bool:
    info = await host.scheduler.get(job_id)
    return info is not None and info.status is JobStatus.SCHEDULED


async def test_a_limit_and_a_rate_limit_together(redis_url: str, queue_name: str) -> None:
    """One at a time, and at most 3 started per 0.5 s: every job runs once, within both."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, concurrency=4)
    overlap = Overlap()

    @host.handler(
        Fast,
        concurrency=ConcurrencyLimit(1),
        rate_limit=RateLimit(3, per=timedelta(seconds=0.5), excess="wait"),
    )
    async def run_fast(job: Fast) -> int:
        with overlap:
            await asyncio.sleep(0.01)
        return job.n

    async with host.run():
        ids = [await host.scheduler.enqueue(Fast(n=n)) for n in range(8)]
        for job_id in ids:
            assert (await wait_for_job(host, job_id, timeout=60)).status is JobStatus.SUCCEEDED
    assert (overlap.runs, overlap.most) == (8, 1)
