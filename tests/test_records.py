"""Records hostedjobs did not write: every read path survives each one, as that job's error.

A job record (``arq:job:<id>``) or result record (``arq:result:<id>``) can be written by
anything that reaches Redis: a stock arq client with its pickle serializer, another tool, a
damaged restore. Listing, ``get``, ``watch``, ``cancel``, ``retry``, the dashboard and the
worker must show or fail that one job with a message saying what is wrong, and go on.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx2
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Mount

from hostedjobs import JobHost, JobStatus, RetryPolicy, job_type
from hostedjobs.dashboard import PAGE_SIZE
from hostedjobs.exceptions import PayloadDecodeError
from hostedjobs.serialization import read_record
from hostedjobs.testing import wait_for_job
from tests.waiting import eventually


@job_type("tests.records.echo")
@dataclass
class Echo:
    text: str = ""


GOOD: dict[str, Any] = {"t": None, "f": "tests.records.echo@1", "a": [{"text": "x"}], "k": {}}


def _record(**changes: Any) -> bytes:
    record = {**GOOD, "et": int(time.time() * 1000), **changes}
    return json.dumps({k: v for k, v in record.items() if v is not _DROP}).encode()


_DROP = object()
"""A field left out of `_record`."""

Planter = Callable[[aioredis.Redis, str], Awaitable[Any]]


def _string(raw: bytes) -> Planter:
    async def plant(pool: aioredis.Redis, key: str) -> None:
        await pool.set(key, raw)

    return plant


async def _hash(pool: aioredis.Redis, key: str) -> None:
    await pool.hset(key, mapping={"f": "tests.records.echo@1"})  # type: ignore[misc]


async def _list(pool: aioredis.Redis, key: str) -> None:
    await pool.rpush(key, b"{}")  # type: ignore[misc]


async def _zset(pool: aioredis.Redis, key: str) -> None:
    await pool.zadd(key, {"f": 1})


HUGE = 10**30
MALFORMED: dict[str, Planter] = {
    "bytes": _string(b"\xff\xfe\x00garbage"),
    "text": _string(b"hello"),
    "empty": _string(b""),
    "json-list": _string(b"[1, 2, 3]"),
    "json-number": _string(b"42"),
    "json-string": _string(b'"job"'),
    "json-null": _string(b"null"),
    "json-true": _string(b"true"),
    "nested-too-deep": _string(b"[" * 100_000 + b"]" * 100_000),
    "nan": _string(b'{"f": "tests.records.echo@1", "a": [], "k": {}, "et": NaN}'),
    "stock-arq-pickle": _string(pickle.dumps({**GOOD, "et": 1})),
    "no-f": _string(_record(f=_DROP)),
    "no-a": _string(_record(a=_DROP)),
    "no-k": _string(_record(k=_DROP)),
    "no-et": _string(_record(et=_DROP)),
    "f-int": _string(_record(f=123)),
    "f-empty": _string(_record(f="")),
    "f-list": _string(_record(f=["x"])),
    "f-null": _string(_record(f=None)),
    "a-string": _string(_record(a="abc")),
    "a-int": _string(_record(a=5)),
    "a-object": _string(_record(a={"text": "x"})),
    "a-null": _string(_record(a=None)),
    "k-list": _string(_record(k=[1])),
    "k-string": _string(_record(k="x")),
    "k-traceparent-int": _string(_record(k={"traceparent": 5})),
    "t-string": _string(_record(t="1")),
    "t-float": _string(_record(t=1.5)),
    "t-negative": _string(_record(t=-1)),
    "t-huge": _string(_record(t=HUGE)),
    "t-bool": _string(_record(t=True)),
    "t-list": _string(_record(t=[1])),
    "et-string": _string(_record(et="yesterday")),
    "et-negative": _string(_record(et=-(10**20))),
    "et-huge": _string(_record(et=HUGE)),
    "et-huge-float": _string(_record(et=1e300)),
    "et-bool": _string(_record(et=True)),
    "et-null": _string(_record(et=None)),
    "st-string": _string(_record(st="x")),
    "ft-huge": _string(_record(ft=HUGE)),
    "s-string": _string(_record(s="yes")),
    "o-int": _string(_record(o=3)),
    "m-list": _string(_record(m=["x"])),
    "q-int": _string(_record(q=1)),
    "id-int": _string(_record(id=1)),
    "digits-past-the-int-limit": _string(b'{"t": ' + b"9" * 5000 + b"}"),
    "huge-function-name": _string(_record(f="x" * 1_000_000)),
    "hash": _hash,
    "list": _list,
    "zset": _zset,
}
"""Every malformed shape of a stored record we could think of, by name."""

# Records for functions no worker here has: parked, shown queued, for a worker that has one.
NO_WORKER_FOR: dict[str, Planter] = {
    "unknown-function": _string(_record(f="tests.records.nobody@1")),
    "no-version": _string(_record(f="tests.records.echo")),
    "distributed-run-of-no-job-here": _string(_record(f="hostedjobs:cron:nightly", a=["x"])),
}

# Records that are well-formed but hold what no handler can take: each still fails clearly.
ODD_BUT_WELL_FORMED: dict[str, Planter] = {
    "no-arguments": _string(_record(a=[])),
    "argument-not-an-object": _string(_record(a=[5])),
    "argument-with-wrong-field": _string(_record(a=[{"text": 5}])),
    "huge-payload": _string(_record(a=[{"text": 7, "pad": "y" * 5_000_000}])),
}


def make_host(redis_url: str, queue_name: str, **options: Any) -> JobHost:
    host = JobHost(
        redis_url=redis_url, queue_name=queue_name, retry=RetryPolicy(max_tries=1), **options
    )

    @host.handler(Echo)
    async def echo(job: Echo) -> str:
        return job.text

    @host.distributed_cron("0 0 1 1 *", name="nightly")
    async def nightly() -> None:
        return None

    return host


async def plant(
    pool: aioredis.Redis, queue_name: str, planters: dict[str, Planter], *, due_ms: int
) -> dict[str, str]:
    """Each planter's record under a fresh job id, in the queue at ``due_ms``; name -> id."""
    ids = {name: f"{name}-{uuid.uuid4().hex[:8]}" for name in planters}
    for name, planter in planters.items():
        await planter(pool, f"arq:job:{ids[name]}")
    await pool.zadd(queue_name, dict.fromkeys(ids.values(), due_ms))
    await pool.lpush(f"{queue_name}:wake", b"1")  # type: ignore[misc]
    return ids


def dashboard_client(host: JobHost) -> httpx2.AsyncClient:
    app = Starlette(routes=[Mount("/jobs", app=host.dashboard(auth=lambda request: True))])
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://testserver/jobs"
    )


async def test_every_read_path_shows_a_malformed_record_as_that_jobs_error(
    redis_url: str, queue_name: str
) -> None:
    """A page of scheduled jobs holding every malformed record lists them all, each as
    ``<unreadable>`` with an error saying what is wrong; ``get``, ``counts``, ``watch`` and
    the dashboard's pages work; ``cancel`` and ``delete`` still act on such a job. (One
    non-JSON record used to make the whole listing raise; ``"a": 5`` made ``get`` raise
    TypeError, a hash under the job key WRONGTYPE.)"""
    host = make_host(redis_url, queue_name, run_worker=False)
    async with host.run():
        pool = host.scheduler.pool
        good = await host.scheduler.schedule(Echo(text="fine"), delay=timedelta(hours=1))
        ids = await plant(pool, queue_name, MALFORMED, due_ms=int(time.time() * 1000) + 3_600_000)
        listed = await host.scheduler.jobs("scheduled", limit=len(ids) + 10)
        by_id = {info.id: info for info in listed}
        assert set(by_id) == {good, *ids.values()}
        assert by_id[good].error is None and by_id[good].job_type == "tests.records.echo"
        for name, job_id in ids.items():
            info = await host.scheduler.get(job_id)
            assert info == by_id[job_id], name
            assert info.status is JobStatus.SCHEDULED, name
            assert info.job_type == "<unreadable>", name
            assert info.error and len(info.error) < 400, (name, info.error)
        assert "hash" in by_id[ids["hash"]].error  # type: ignore[operator]
        assert "pickle" in by_id[ids["stock-arq-pickle"]].error  # type: ignore[operator]
        assert "'et'" in by_id[ids["et-huge"]].error  # type: ignore[operator]
        assert "'a'" in by_id[ids["a-int"]].error  # type: ignore[operator]
        assert (await host.scheduler.counts())[JobStatus.SCHEDULED] == len(ids) + 1

        first = await anext(aiter(host.scheduler.watch(ids["bytes"])))
        assert first == by_id[ids["bytes"]]

        async with dashboard_client(host) as client:
            shown = 0
            for number in range(1, len(ids) // PAGE_SIZE + 2):
                page = await client.get("/jobs", params={"state": "scheduled", "page": number})
                assert page.status_code == 200
                shown += page.text.count("&lt;unreadable&gt;")
            assert shown == len(ids)
            for job_id in ids.values():
                assert (await client.get(f"/jobs/{job_id}")).status_code == 200, job_id

        assert await host.scheduler.cancel(ids["a-string"])
        cancelled = await host.scheduler.get(ids["a-string"])
        assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
        assert await host.scheduler.delete(ids["hash"])
        assert await host.scheduler.get(ids["hash"]) is None


async def test_malformed_results_read_as_failed_with_their_error(
    redis_url: str, queue_name: str
) -> None:
    """A result record that is not one (under ``arq:result:<id>``, listed in the failed
    index) reads as failed, saying why; the failed list, ``get``, ``retry`` and the dashboard
    go on. (It used to raise from ``get`` and for the whole page.)"""
    host = make_host(redis_url, queue_name, run_worker=False)
    async with host.run():
        pool = host.scheduler.pool
        ids = {name: f"{name}-{uuid.uuid4().hex[:8]}" for name in MALFORMED}
        for name, planter in MALFORMED.items():
            await planter(pool, f"arq:result:{ids[name]}")
        index = f"hostedjobs:{queue_name}:failed"
        await pool.zadd(index, {job_id: int(time.time() * 1000) for job_id in ids.values()})
        listed = await host.scheduler.jobs(JobStatus.FAILED, limit=len(ids) + 10)
        assert {info.id for info in listed} == set(ids.values())
        for name, job_id in ids.items():
            info = await host.scheduler.get(job_id)
            assert info is not None and info.status is JobStatus.FAILED, name
            assert info.error and info.job_type == "<unreadable>", (name, info)
            assert not await host.scheduler.retry(job_id), name
        async with dashboard_client(host) as client:
            page = await client.get("/jobs", params={"state": "failed"})
            assert page.status_code == 200
            for job_id in ids.values():
                assert (await client.get(f"/jobs/{job_id}")).status_code == 200, job_id


async def test_the_worker_fails_each_malformed_record_clearly_and_goes_on(
    redis_url: str, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each malformed (or odd) record fails its own job, once, with a PayloadDecodeError (or
    an unknown job type) saying what is wrong, and a job queued behind them all runs. (A
    record with ``"k": "x"`` or ``"et": "x"`` used to crash the run's bookkeeping with
    AttributeError/ValueError and leave the job claimed; ``"f": 123`` failed with
    AttributeError; a hash under the job key failed as "expired".)"""
    host = make_host(redis_url, queue_name)
    async with host.run():
        pool = host.scheduler.pool
        ids = await plant(
            pool,
            queue_name,
            {**MALFORMED, **ODD_BUT_WELL_FORMED},
            due_ms=int(time.time() * 1000),
        )
        waiting = await plant(pool, queue_name, NO_WORKER_FOR, due_ms=int(time.time() * 1000))
        after = await wait_for_job(host, await host.scheduler.enqueue(Echo(text="after")))
        assert after.status is JobStatus.SUCCEEDED and after.result == "after"
        # JSON may carry a lone surrogate, which is no UTF-8: the job runs, its page renders.
        (lone,) = (
            await plant(
                pool, queue_name, {"lone": _string(_record(a=[{"text": "\ud800"}]))}, due_ms=0
            )
        ).values()
        info = await wait_for_job(host, lone)
        assert (info.status, info.payload, info.result) == (
            JobStatus.SUCCEEDED,
            {"text": "\ud800"},
            "\ud800",
        )
        async with dashboard_client(host) as client:
            assert (await client.get(f"/jobs/{lone}")).status_code == 200
        for name, job_id in ids.items():
            info = await wait_for_job(host, job_id, timeout=60)
            assert info.status is JobStatus.FAILED, (name, info)
            assert info.error is not None, name
            assert info.error.startswith(("PayloadDecodeError: ", "UnknownJobTypeError: ")), (
                name,
                info.error,
            )
            assert info.tries == 1, name
        assert "hash" in (await host.scheduler.get(ids["hash"])).error  # type: ignore[union-attr,operator]
        for name, job_id in waiting.items():

            async def parked(job_id: str = job_id) -> bool:
                info = await host.scheduler.get(job_id)
                return info is not None and (info.message or "").startswith("waiting for")

            await eventually(parked, what=f"{name} parked")
        assert await pool.zcard(f"hostedjobs:{queue_name}:claimed") == 0
    assert "could not record its outcome" not in caplog.text
    for bad in ("AttributeError", "KeyError", "TypeError", "ValueError", "RecursionError"):
        assert bad not in caplog.text, bad


# -- random records ----------------------------------------------------------------------------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=()), max_size=20),  # lone surrogates too
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_FIELDS = ("t", "f", "a", "k", "et", "s", "r", "st", "ft", "q", "id", "o", "m")


@st.composite
def _near_records(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed record with some fields dropped or replaced by any JSON value."""
    record: dict[str, Any] = {**GOOD, "et": 1_700_000_000_000}
    for field in draw(st.lists(st.sampled_from(_FIELDS), max_size=4)):
        if draw(st.booleans()):
            record.pop(field, None)
        else:
            record[field] = draw(_JSON)
    return record


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()


RANDOM_RECORDS = st.one_of(
    st.binary(max_size=64),
    _JSON.map(_encode),
    _near_records().map(_encode),
)


@given(RANDOM_RECORDS)
@settings(max_examples=500, deadline=None)
def test_read_record_returns_a_usable_record_or_says_what_is_wrong(data: bytes) -> None:
    """Whatever the bytes, read_record returns a record whose fields have the documented
    types, or raises PayloadDecodeError: never another error from deep inside."""
    try:
        record = read_record(data)
    except PayloadDecodeError:
        return
    assert type(record["f"]) is str and record["f"]
    assert type(record["a"]) is list and type(record["k"]) is dict
    assert type(record["et"]) in (int, float)
    assert record.get("t") is None or type(record["t"]) is int


@given(st.lists(st.tuples(st.booleans(), RANDOM_RECORDS), min_size=1, max_size=12))
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_random_records_are_listed_read_and_failed_one_by_one(
    redis_url: str, records: list[tuple[bool, bytes]]
) -> None:
    """Random records, as jobs or as results: lists, get and the dashboard survive them, and
    a worker finishes every queued one (or parks it, when its function is one no worker
    has: a random name) and then runs a good job."""
    asyncio.run(_random_records(redis_url, records))


async def _random_records(redis_url: str, records: list[tuple[bool, bytes]]) -> None:
    queue_name = f"test-{uuid.uuid4().hex[:12]}"
    host = make_host(redis_url, queue_name, run_worker=False)
    async with host.run():
        pool = host.scheduler.pool
        now_ms = int(time.time() * 1000)
        queued: list[str] = []
        results: list[str] = []
        for as_result, raw in records:
            job_id = uuid.uuid4().hex
            if as_result:
                await pool.set(f"arq:result:{job_id}", raw, px=600_000)
                await pool.zadd(f"hostedjobs:{queue_name}:failed", {job_id: now_ms})
                results.append(job_id)
            else:
                await pool.set(f"arq:job:{job_id}", raw, px=600_000)
                await pool.zadd(queue_name, {job_id: now_ms})
                queued.append(job_id)
        listed = {info.id for info in await host.scheduler.jobs("queued", limit=50)}
        assert listed == set(queued)
        await host.scheduler.jobs("failed", limit=50)
        async with dashboard_client(host) as client:
            for state in ("queued", "failed"):
                assert (await client.get("/jobs", params={"state": state})).status_code == 200
            for job_id in queued + results:
                assert (await client.get(f"/jobs/{job_id}")).status_code == 200
    worker = make_host(redis_url, queue_name)
    async with worker.run():
        for job_id in queued:

            async def settled(job_id: str = job_id) -> bool:
                info = await worker.scheduler.get(job_id)
                parked = info is not None and (info.message or "").startswith("waiting for")
                return info is not None and (info.finished or parked)

            await eventually(settled, timeout=60, what=f"job {job_id} finished or parked")
        after = await wait_for_job(worker, await worker.scheduler.enqueue(Echo(text="after")))
        assert after.status is JobStatus.SUCCEEDED
        assert await worker.scheduler.pool.zcard(f"hostedjobs:{queue_name}:claimed") == 0
