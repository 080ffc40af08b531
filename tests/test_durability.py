"""Replicated durability (issue 12, item 2) and an application's own client (item 5).

With ``durability="replicated"`` an enqueue, an outcome, a fired tick and an operator's
action return only once a replica holds them (Redis's WAIT), so a failover cannot take an
acknowledged job or a recorded outcome with the demoted primary. Each test runs a primary and
a replica of its own (tests/redis_servers.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, cast

import pytest
import redis
import redis.asyncio

from hostedjobs import JobContext, JobHost, JobStatus, RetryPolicy, job_type
from hostedjobs.exceptions import (
    ConfigurationError,
    NotReplicatedError,
    RedisConfigurationError,
)
from hostedjobs.storage import KeyLayout
from hostedjobs.storage.preflight import ServerFacts, judge
from hostedjobs.testing import wait_for_job
from tests.redis_servers import RedisServer, redis_server
from tests.waiting import DEADLINE_S, eventually

QUEUE = "durable"
KEYS = KeyLayout(QUEUE)


@job_type("tests.durability.work")
@dataclass
class Work:
    fail: bool = False


def make_host(**options: Any) -> JobHost:
    options.setdefault("accept_risks", {"persistence"})
    host = JobHost(
        queue_name=QUEUE,
        shutdown_grace=timedelta(seconds=0.2),
        retry=RetryPolicy(max_tries=1),
        **options,
    )

    @host.handler(Work)
    async def work(job: Work, ctx: JobContext) -> str:
        if job.fail:
            raise ValueError("asked to fail")
        return "done"

    return host


@pytest.fixture
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory) as server:
        yield server


@pytest.fixture
def replica(
    primary: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    """A replica of `primary`, in sync before the test starts."""
    with redis_server(tmp_path_factory, "--replicaof", "127.0.0.1", str(primary.port)) as server:

        def synced() -> bool:
            return server.info("replication").get("master_link_status") == "up"

        asyncio.run(eventually(synced, what="the replica in sync"))
        yield server


def _copied(copy: redis.Redis, job_id: str) -> bool:
    """The replica holds the job's outcome and no longer its record."""
    return bool(copy.exists(KEYS.result(job_id)) == 1 and copy.exists(KEYS.job(job_id)) == 0)


async def test_every_acknowledged_write_is_on_the_replica_when_it_returns(
    primary: RedisServer, replica: RedisServer
) -> None:
    host = make_host(redis_url=primary.url, durability="replicated")
    copy = replica.admin()
    try:
        async with host.run():
            for fail in (False, True):
                job_id = await host.scheduler.enqueue(Work(fail=fail))
                # No waiting: WAIT returned only once the replica had the job.
                assert copy.exists(KEYS.job(job_id)) == 1
                info = await wait_for_job(host, job_id, timeout=DEADLINE_S)
                assert info.status is (JobStatus.FAILED if fail else JobStatus.SUCCEEDED)
                # The worker's commit waits for the replica, but a reader of the primary (as
                # wait_for_job is) may see the outcome while that WAIT is still out: the copy
                # follows within the write's bounds.
                await eventually(partial(_copied, copy, job_id), what="the outcome on the replica")
            ids = await host.scheduler.enqueue_many([Work() for _ in range(1200)])
            on_replica = sum(cast(int, copy.exists(KEYS.job(i), KEYS.result(i))) for i in ids)
            assert on_replica >= len(ids)
    finally:
        copy.close()


async def test_a_write_no_replica_confirms_fails_with_not_replicated(
    primary: RedisServer, replica: RedisServer
) -> None:
    """A frozen replica confirms nothing: the enqueue fails, saying the job may not survive a
    failover, and the job (on the primary) is not lost: it runs once the replica is back."""
    host = make_host(
        redis_url=primary.url,
        durability="replicated",
        run_worker=False,
        redis_timeout=timedelta(seconds=0.5),
    )
    async with host.run():
        replica.pause()
        try:
            with pytest.raises(NotReplicatedError, match="0 of the 1 replica") as raised:
                await host.scheduler.enqueue(Work(), job_id="unconfirmed")
        finally:
            replica.resume()
        assert "may be lost if the primary fails" in str(raised.value)
        assert isinstance(raised.value, ConnectionError)  # a RedisUnavailableError
        assert (await host.scheduler.get("unconfirmed")) is not None


async def test_replicated_durability_refuses_a_primary_without_replicas(
    primary: RedisServer,
) -> None:
    host = make_host(redis_url=primary.url, durability="replicated")
    with pytest.raises(RedisConfigurationError) as raised:
        async with host.run():
            pass
    message = str(raised.value)
    assert 'durability="replicated" needs 1 connected replica(s) and it has 0' in message
    assert "replicaof" in message


def test_judge_counts_connected_replicas() -> None:
    facts = ServerFacts(role="master", replicas=1)
    assert judge(facts, {"eviction", "persistence"}, replicas=1) == ([], [])
    none = ServerFacts(role="master", replicas=0)
    problems, _ = judge(none, {"eviction", "persistence"}, replicas=1)
    assert problems and "has 0" in problems[0]
    assert judge(none, {"eviction", "persistence"}) == ([], [])


def test_bad_durability_and_client_options_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="durability must be one of"):
        JobHost(durability="quorum")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not both"):
        JobHost(redis_url="redis://127.0.0.1:1/0", redis_client=redis.asyncio.Redis())
    with pytest.raises(ConfigurationError, match=r"redis\.asyncio\.Redis client"):
        JobHost(redis_client=redis.Redis())  # type: ignore[arg-type]
    # Accepted before, then every claim failed on str ids while health said all was well.
    with pytest.raises(ConfigurationError, match="decode_responses"):
        JobHost(redis_client=redis.asyncio.Redis(decode_responses=True))
    with pytest.raises(ConfigurationError, match="decode_responses"):
        JobHost(redis_client=redis.asyncio.ConnectionPool(decode_responses=True))


@pytest.mark.parametrize("given", ["client", "pool"])
async def test_the_application_s_own_client_is_used_and_left_open(
    primary: RedisServer, given: str
) -> None:
    """A client or pool the application configured (its TLS, credential provider, proxy):
    the host runs on it and leaves it open when it stops."""
    pool = redis.asyncio.ConnectionPool(host="127.0.0.1", port=primary.port, db=0)
    client = redis.asyncio.Redis(connection_pool=pool)
    try:
        host = make_host(redis_client=client if given == "client" else pool)
        async with host.run():
            job_id = await host.scheduler.enqueue(Work())
            info = await wait_for_job(host, job_id, timeout=DEADLINE_S)
            assert info.status is JobStatus.SUCCEEDED
        assert await client.ping()
        assert await client.exists(KEYS.result(job_id)) == 1
    finally:
        await client.aclose()
        await pool.aclose()


async def test_a_lock_is_on_the_replica_when_acquire_returns(
    primary: RedisServer, replica: RedisServer
) -> None:
    """With replicated durability, a named lock and its fencing token are on the replica once
    ``acquire`` returns, so a failover cannot give the lock, or its token, to a second
    holder."""
    host = make_host(redis_url=primary.url, durability="replicated", run_worker=False)
    copy = replica.admin()
    try:
        async with host.connected():
            lock = host.lock("replicated", ttl=30)
            assert await lock.acquire(blocking=False)
            keys = KEYS.named_lock("replicated")
            assert copy.exists(keys.owner) == 1
            assert int(copy.get(keys.fence)) == lock.token  # type: ignore[arg-type]
            await lock.release()
    finally:
        copy.close()
