"""Rate limits, debounce and cooldown of on-demand job types (issue 14, item 2), on a real
Redis, the fleet-wide limit across worker processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hostedjobs import Cooldown, Debounce, JobContext, JobHost, JobStatus, RateLimit, job_type
from hostedjobs.exceptions import ConfigurationError, PayloadError
from hostedjobs.rates import Rates
from hostedjobs.storage.scripts import _sha, source
from hostedjobs.testing import eager, wait_for_job
from tests import rates_app
from tests.redis_servers import redis_cluster
from tests.script_keys import ScriptKeyWatch, summarize
from tests.servers import ROOT, subprocess_env
from tests.waiting import eventually

HOSTEDJOBS = str(Path(sys.executable).with_name("hostedjobs"))


@job_type("tests.rates.call")
@dataclass
class Call:
    key: str
    value: int = 0


@job_type("tests.rates.edit")
@dataclass
class Edit:
    value: int


@contextmanager
def workers(redis_url: str, queue_name: str, count: int, log: Path) -> Iterator[None]:
    """``hostedjobs worker tests.rates_app:host`` processes, stopped at the end."""
    env = subprocess_env(HOSTEDJOBS_REDIS_URL=redis_url, RATES_APP_QUEUE=queue_name)
    command = [HOSTEDJOBS, "worker", "tests.rates_app:host"]
    with log.open("a") as file:
        processes = [
            subprocess.Popen(command, env=env, cwd=ROOT, stderr=file) for _ in range(count)
        ]
        try:
            yield
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()


def _host(redis_url: str, queue_name: str) -> JobHost:
    return JobHost(redis_url=redis_url, queue_name=queue_name, concurrency=20)


async def _finished(host: JobHost, ids: Sequence[str]) -> list[Any]:
    return [await wait_for_job(host, job_id, timeout=60) for job_id in ids]


async def test_a_rate_limit_holds_across_worker_processes(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    """Two worker processes never start more than N runs of a key within any window, by
    Redis's clock; the excess waits (its try not counted) and every job runs once."""
    out = tmp_path / "starts.txt"
    jobs = {"a": 12, "b": 6}
    with workers(redis_url, queue_name, 2, tmp_path / "workers.log"):
        client = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
        async with client.connected():
            await eventually(lambda: _beating(client, 2), what="both worker processes beating")
            ids = [
                await client.scheduler.enqueue(rates_app.Stamp(key=key, path=str(out)))
                for key, count in jobs.items()
                for _ in range(count)
            ]
            infos = await _finished(client, ids)
    assert {info.status for info in infos} == {JobStatus.SUCCEEDED}
    lines = [line.split() for line in out.read_text().splitlines()]
    assert len(lines) == sum(jobs.values())  # each ran once
    assert {line[3] for line in lines} == {"1"}  # waiting used up no try
    assert len({line[2] for line in lines}) == 2  # both processes ran jobs
    window_ms = int(rates_app.WINDOW.total_seconds() * 1000)
    # Starts are admitted by Redis's clock in the script; each handler reads TIME a moment
    # later (its own round trip, plus the loop's delay on a loaded machine), so a gap may
    # look shorter than the window by that much: 250 ms allowed for it.
    tolerance_ms = 250
    limit = rates_app.RATE_LIMIT
    for key, count in jobs.items():
        starts = sorted(int(line[1]) for line in lines if line[0] == key)
        assert len(starts) == count
        for first, later in zip(starts, starts[limit:], strict=False):
            assert later - first >= window_ms - tolerance_ms, (key, starts)


async def _beating(host: JobHost, count: int) -> bool:
    return len(await host.workers()) >= count


async def test_drop_ends_the_excess_cancelled_and_keys_are_independent(
    redis_url: str, queue_name: str
) -> None:
    """With excess="drop", runs past the limit end cancelled without running, each key
    counted on its own."""
    ran: list[str] = []
    host = _host(redis_url, queue_name)

    @host.handler(
        Call,
        rate_limit=RateLimit(2, per=timedelta(minutes=1), key=lambda job: job.key, excess="drop"),
    )
    async def call(job: Call) -> None:
        ran.append(job.key)

    async with host.run():
        ids = {
            key: [await host.scheduler.enqueue(Call(key)) for _ in range(count)]
            for key, count in (("a", 5), ("b", 2))
        }
        a = await _finished(host, ids["a"])
        b = await _finished(host, ids["b"])
    assert [info.status for info in b] == [JobStatus.SUCCEEDED] * 2
    assert sorted(info.status for info in a) == sorted(
        [JobStatus.SUCCEEDED] * 2 + [JobStatus.CANCELLED] * 3
    )
    dropped = [info for info in a if info.status is JobStatus.CANCELLED]
    assert {info.message for info in dropped} == {"dropped: rate limit 2 per 60s for key a reached"}
    assert sorted(ran) == ["a", "a", "b", "b"]


async def test_wait_defers_the_excess_until_the_window_admits_it(
    redis_url: str, queue_name: str
) -> None:
    """With excess="wait" (the default) and no key, every job of the type runs, once, on
    its first try, at most 2 per second."""
    attempts: list[int] = []
    host = _host(redis_url, queue_name)

    @host.handler(Call, rate_limit=RateLimit(2, per=timedelta(seconds=1)))
    async def call(job: Call, ctx: JobContext) -> None:
        attempts.append(ctx.attempt)

    async with host.run():
        ids = [await host.scheduler.enqueue(Call("x", i)) for i in range(5)]
        infos = await _finished(host, ids)
    assert [info.status for info in infos] == [JobStatus.SUCCEEDED] * 5
    assert attempts == [1] * 5


async def test_debounce_runs_only_the_last_of_a_burst_once(redis_url: str, queue_name: str) -> None:
    """Of five jobs of one key enqueued in a burst, only the last runs; the others end
    cancelled, superseded by it. Another key's job runs on its own."""
    ran: list[tuple[str, int]] = []
    host = _host(redis_url, queue_name)

    @host.handler(Call, debounce=Debounce(timedelta(seconds=1), key=lambda job: job.key))
    async def call(job: Call) -> None:
        ran.append((job.key, job.value))

    async with host.run():
        burst = [await host.scheduler.enqueue(Call("k", i)) for i in range(5)]
        [other] = await host.scheduler.enqueue_many([Call("other", 9)])
        infos = await _finished(host, [*burst, other])
    assert [info.status for info in infos] == [JobStatus.CANCELLED] * 4 + [JobStatus.SUCCEEDED] * 2
    assert {info.message for info in infos[:4]} == {
        f"dropped: superseded by job {burst[-1]} (debounce)"
    }
    assert sorted(ran) == [("k", 4), ("other", 9)]


async def test_a_batch_with_debounced_jobs_queues_nothing_if_one_is_refused(
    redis_url: str, queue_name: str
) -> None:
    """`enqueue_many` of a batch holding debounced jobs validates every job before it queues
    any, as for any batch: a priority, a payload that cannot be stored or a debounce key
    that raises, anywhere in it, queues none of it (the jobs before it were queued)."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)

    def key(job: Call) -> str:
        if job.value < 0:
            raise LookupError("no such document")
        return job.key

    @host.handler(Call, debounce=Debounce(60, key=key))
    async def call(job: Call) -> None:
        return None

    @host.handler(Edit)
    async def edit(job: Edit) -> None:
        return None

    async with host.connected():
        with pytest.raises(ConfigurationError, match="debounced"):
            await host.scheduler.enqueue_many([Edit(1), Call("k")], priority=timedelta(minutes=1))
        with pytest.raises(PayloadError, match=r"jobs\[2\]"):
            await host.scheduler.enqueue_many([Edit(1), Call("k"), Call(object())])  # type: ignore[arg-type]
        with pytest.raises(LookupError, match="no such document"):
            await host.scheduler.enqueue_many([Edit(1), Call("k"), Call("k", -1)])
        counts = await host.scheduler.counts()
        assert sum(counts.values()) == 0, counts
        assert len(await host.scheduler.enqueue_many([Edit(1), Call("k")])) == 2


async def test_cooldown_runs_the_first_and_drops_the_rest_of_its_window(
    redis_url: str, queue_name: str
) -> None:
    """The first job of a key runs; the others that start within the window are dropped;
    one that starts after the window runs."""
    ran: list[int] = []
    host = _host(redis_url, queue_name)

    @host.handler(Call, cooldown=Cooldown(timedelta(seconds=2), key=lambda job: job.key))
    async def call(job: Call) -> None:
        ran.append(job.value)

    async with host.run():
        ids = [await host.scheduler.enqueue(Call("k", i)) for i in range(4)]
        infos = await _finished(host, ids)
        statuses = sorted(info.status for info in infos)
        assert statuses == sorted([JobStatus.SUCCEEDED] + [JobStatus.CANCELLED] * 3)
        dropped = [info.message or "" for info in infos if info.status is JobStatus.CANCELLED]
        assert all(m.startswith("dropped: cooldown of 2s for key k") for m in dropped), dropped

        async def a_later_one_runs() -> bool:
            info = await wait_for_job(host, await host.scheduler.enqueue(Call("k", 99)))
            return info.status is JobStatus.SUCCEEDED

        await eventually(a_later_one_runs, interval=0.5, what="a job after the cooldown ran")
    assert len(ran) == 2 and ran[-1] == 99


async def test_a_key_function_that_raises_fails_the_job(redis_url: str, queue_name: str) -> None:
    """The job fails without running, its message naming the key function."""
    ran: list[str] = []
    host = _host(redis_url, queue_name)

    def key(job: Call) -> str:
        if job.key == "boom":
            raise LookupError("no customer")
        return job.key

    @host.handler(Call, rate_limit=RateLimit(5, per=60, key=key))
    async def call(job: Call) -> None:
        ran.append(job.key)

    async with host.run():
        bad, good = [await host.scheduler.enqueue(Call(k)) for k in ("boom", "fine")]
        bad_info, good_info = await _finished(host, [bad, good])
    assert bad_info.status is JobStatus.FAILED
    assert bad_info.error == (
        "JobFailedError: the rate limit key function raised on this job: LookupError('no customer')"
    )
    assert good_info.status is JobStatus.SUCCEEDED and ran == ["fine"]


async def test_a_task_takes_the_limits_too(redis_url: str, queue_name: str) -> None:
    """`@host.task(cooldown=...)`: the key function gets the call's arguments as its job."""
    ran: list[int] = []
    host = _host(redis_url, queue_name)

    @host.task(name=f"tests.rates.task-{queue_name}", cooldown=Cooldown(60, key=lambda j: j.n))
    async def work(n: int) -> None:
        ran.append(n)

    async with host.run():
        ids = [await work.enqueue(n=1), await work.enqueue(n=1), await work.enqueue(n=2)]
        infos = await _finished(host, ids)
    assert sorted(info.status for info in infos) == sorted(
        [JobStatus.SUCCEEDED] * 2 + [JobStatus.CANCELLED]
    )
    assert sorted(ran) == [1, 2]


async def test_a_sharded_queue_limits_across_its_shards(redis_url: str, queue_name: str) -> None:
    """On a sharded queue the limits live on shard 0: one count and one latest job per key,
    whichever shard holds each job."""
    ran: list[tuple[str, int]] = []
    host = JobHost(redis_url=redis_url, queue_name=queue_name, shards=4, concurrency=20)

    @host.handler(
        Call,
        rate_limit=RateLimit(2, per=timedelta(minutes=1), key=lambda job: job.key, excess="drop"),
    )
    async def call(job: Call) -> None:
        ran.append((job.key, job.value))

    @host.handler(Edit, debounce=Debounce(timedelta(seconds=1)))
    async def edit(job: Edit) -> None:
        ran.append(("edit", job.value))

    async with host.run():
        limited = [await host.scheduler.enqueue(Call("a", i)) for i in range(12)]
        edits = [await host.scheduler.enqueue(Edit(i)) for i in range(6)]
        infos = await _finished(host, [*limited, *edits])
        assert len(host.scheduler.stores) == 4
        assert len({host.scheduler._layout.of(job_id) for job_id in limited}) > 1  # spread
    statuses = [info.status for info in infos]
    assert statuses[:12].count(JobStatus.SUCCEEDED) == 2
    assert statuses[12:] == [JobStatus.CANCELLED] * 5 + [JobStatus.SUCCEEDED]
    assert sorted(key for key, _ in ran) == ["a", "a", "edit"]
    assert ("edit", 5) in ran


async def test_the_scripts_declare_their_keys(redis_url: str, queue_name: str) -> None:
    """The admission script and the debounced enqueue touch only the keys in their KEYS, so
    they route on a cluster."""
    host = _host(redis_url, queue_name)

    @host.handler(
        Call,
        rate_limit=RateLimit(1, per=60, key=lambda job: job.key, excess="drop"),
        debounce=Debounce(0.2, key=lambda job: job.key),
        cooldown=Cooldown(60, key=lambda job: job.value),
    )
    async def call(job: Call) -> None:
        return None

    async with ScriptKeyWatch(redis_url, flush_scripts=True) as watch, host.run():
        ids = [await host.scheduler.enqueue(Call("k", i)) for i in range(3)]
        await _finished(host, ids)
    assert not watch.findings, summarize(watch.findings)
    ran = {line.args[0].upper() for call in watch.calls for line in call.inner}
    assert {b"GET", b"PTTL", b"ZREMRANGEBYSCORE", b"ZADD", b"SET"} <= ran, ran


async def test_limits_work_on_a_redis_cluster(
    tmp_path_factory: pytest.TempPathFactory, queue_name: str
) -> None:
    """On a cluster, a sharded queue's limits and debounce keys share shard 0's slot with
    nothing crossing slots: the rate limit, the debounce and the cooldown hold."""
    ran: list[tuple[str, int]] = []
    with redis_cluster(tmp_path_factory) as cluster:
        host = JobHost(
            redis_url=cluster.url, queue_name=queue_name, shards=2, accept_risks={"persistence"}
        )

        @host.handler(
            Call,
            rate_limit=RateLimit(2, per=60, key=lambda job: job.key, excess="drop"),
            cooldown=Cooldown(60, key=lambda job: job.value),
        )
        async def call(job: Call) -> None:
            ran.append((job.key, job.value))

        @host.handler(Edit, debounce=Debounce(0.5))
        async def edit(job: Edit) -> None:
            ran.append(("edit", job.value))

        async with host.run():
            limited = [await host.scheduler.enqueue(Call("a", i)) for i in range(4)]
            cooled = [await host.scheduler.enqueue(Call(f"c{i}", 7)) for i in range(3)]
            edits = [await host.scheduler.enqueue(Edit(i)) for i in range(3)]
            infos = await _finished(host, [*limited, *cooled, *edits])
    statuses = [info.status for info in infos]
    assert statuses[:4].count(JobStatus.SUCCEEDED) == 2
    assert statuses[4:7].count(JobStatus.SUCCEEDED) == 1
    assert statuses[7:] == [JobStatus.CANCELLED] * 2 + [JobStatus.SUCCEEDED]
    assert ("edit", 2) in ran and len(ran) == 4


async def test_a_type_without_limits_never_calls_the_admission_script(
    redis_url: str, queue_name: str
) -> None:
    """Jobs of a type with no limit run without the admission script; a limited type's
    jobs started by one claim share one call."""
    host = _host(redis_url, queue_name)

    @host.handler(Edit)
    async def edit(job: Edit) -> None:
        return None

    @host.handler(Call, rate_limit=RateLimit(1000, per=60))
    async def call(job: Call) -> None:
        return None

    admit_sha = _sha(source("admit").text).encode()
    async with host.run():
        async with ScriptKeyWatch(redis_url) as watch:
            free = await host.scheduler.enqueue_many([Edit(i) for i in range(20)])
            await _finished(host, free)
        assert watch.calls  # the claims and commits were seen
        assert not [c for c in watch.calls if c.call and c.call.args[1] == admit_sha]
        async with ScriptKeyWatch(redis_url) as watch:
            limited = await host.scheduler.enqueue_many([Call("k", i) for i in range(20)])
            await _finished(host, limited)
        admits = [c for c in watch.calls if c.call and c.call.args[1] == admit_sha]
        assert 1 <= len(admits) <= 20


async def test_eager_mode_runs_every_job_without_limits() -> None:
    """Eager mode (no Redis) ignores the limits: every job runs at once, as enqueued."""
    ran: list[int] = []
    host = JobHost(run_worker=False)

    @host.handler(
        Call,
        rate_limit=RateLimit(1, per=60, excess="drop"),
        debounce=Debounce(60),
        cooldown=Cooldown(60),
    )
    async def call(job: Call) -> None:
        ran.append(job.value)

    with eager(host):
        async with host.run():
            for i in range(3):
                await host.scheduler.enqueue(Call("k", i))
    assert ran == [0, 1, 2]


def _bad(make: Callable[[], object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        make()


def test_bad_settings_raise_configuration_errors() -> None:
    """Each wrong setting is refused at registration, with a hint."""
    _bad(lambda: RateLimit(0, per=1), r"an int >= 1")
    _bad(lambda: RateLimit(True, per=1), r"an int >= 1")
    _bad(lambda: RateLimit(1.5, per=1), r"an int >= 1")  # type: ignore[arg-type]
    _bad(lambda: RateLimit(1, per=0), r"per=.*positive")
    _bad(lambda: RateLimit(1, per=timedelta(seconds=-1)), r"per=.*positive")
    _bad(lambda: RateLimit(1, per="1s"), r"timedelta or a number")  # type: ignore[arg-type]
    _bad(lambda: RateLimit(1, per=1, excess="queue"), r"'wait'.*'drop'")  # type: ignore[arg-type]
    _bad(lambda: RateLimit(1, per=1, key="customer_id"), r"key=lambda job")  # type: ignore[arg-type]
    _bad(lambda: Debounce(0), r"quiet.*positive")
    _bad(lambda: Debounce(1, key=42), r"key=lambda job")  # type: ignore[arg-type]
    _bad(lambda: Cooldown(-1), r"window.*positive")
    _bad(lambda: Cooldown(1, key=[]), r"key=lambda job")  # type: ignore[arg-type]
    # Longer windows overflowed Redis's expiry (or the scripts' integer ms): the job never
    # started, put back or left running for ever.
    _bad(lambda: RateLimit(1, per=timedelta(days=366)), r"per=.*at most 365 days")
    _bad(lambda: RateLimit(1, per=10**30), r"per=.*at most 365 days")
    _bad(lambda: Debounce(10**15), r"quiet.*at most 365 days")
    _bad(lambda: Cooldown(10**20), r"window.*at most 365 days")
    assert RateLimit(1, per=timedelta(days=365)).per_ms == 365 * 86_400_000
    host = JobHost(run_worker=False)
    _bad(
        lambda: host.add_handler(Call, _noop, rate_limit=10),  # type: ignore[arg-type]
        r"rate_limit= takes a hostedjobs.RateLimit",
    )
    _bad(
        lambda: host.add_handler(Call, _noop, debounce=timedelta(seconds=5)),  # type: ignore[arg-type]
        r"debounce= takes a hostedjobs.Debounce",
    )
    with pytest.raises(ConfigurationError, match=r"cooldown= takes a hostedjobs\.Cooldown"):
        host.task(cooldown=RateLimit(1, per=1))  # type: ignore[call-overload]
    assert host._handlers.registrations == {}


def test_a_type_without_limits_has_no_rates() -> None:
    """No setting: nothing for the worker to check (no Redis call, no decode)."""
    assert Rates.create("t", _noop) is None
    rates = Rates.create("t", _noop, cooldown=Cooldown(1))
    assert rates is not None and not rates.needs_job


async def _noop(job: Call) -> None:
    return None
