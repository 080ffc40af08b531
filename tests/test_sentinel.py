"""Redis behind Sentinel (issue 12, item 1): ``redis+sentinel://`` URLs, and a host that
follows a failover at once and writes nothing more to the demoted primary.

Every test runs its own primary, replica and three sentinels (tests/redis_servers.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from hostedjobs import JobContext, JobHost, JobStatus, RetryPolicy, job_type
from hostedjobs.exceptions import ConfigurationError, RedisUnavailableError
from hostedjobs.storage import KeyLayout, open_redis, redacted, resolve_redis_url
from hostedjobs.storage.sentinel import parse_sentinel_url
from hostedjobs.testing import wait_for_job
from tests.redis_servers import SERVICE, RedisServer, SentinelSetup, sentinel_setup
from tests.servers import free_port
from tests.waiting import DEADLINE_S, eventually

QUEUE = "sentinel"


@job_type("tests.sentinel.note")
@dataclass
class Note:
    number: int = 0


def make_host(url: str, runs: dict[str, int] | None = None) -> JobHost:
    host = JobHost(
        redis_url=url,
        queue_name=QUEUE,
        accept_risks={"persistence"},
        shutdown_grace=timedelta(seconds=0.5),
        retry=RetryPolicy(max_tries=3, backoff=timedelta(seconds=0.05), jitter=0),
    )

    @host.handler(Note)
    async def note(job: Note, ctx: JobContext) -> int:
        if runs is not None:
            runs[ctx.run_id] = runs.get(ctx.run_id, 0) + 1
        return job.number

    return host


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    """A primary, its replica and three sentinels, shared by the tests that fail nothing over."""
    with sentinel_setup(tmp_path_factory.mktemp) as started:
        yield started


# -- the URL ---------------------------------------------------------------------------------


def test_a_sentinel_url_names_the_sentinels_the_service_the_db_and_the_credentials() -> None:
    """Redis's credentials come before the ``@``, the sentinels' as query options (as redis-py
    and docket spell them); a sentinel without a port gets Sentinel's own, 26379."""
    url = (
        "rediss+sentinel://app:s%40cret@s1:26380,s2,[::1]:26381/jobs/2"
        "?sentinel_username=watch&sentinel_password=pw2&ssl_ca_certs=/ca.pem"
    )
    parsed = parse_sentinel_url(url)
    assert parsed.sentinels == (("s1", 26380), ("s2", 26379), ("::1", 26381))
    assert (parsed.service, parsed.db, parsed.tls) == ("jobs", 2, True)
    assert parsed.redis_options == {
        "username": "app",
        "password": "s@cret",
        "ssl_ca_certs": "/ca.pem",
    }
    assert parsed.sentinel_options == {
        "username": "watch",
        "password": "pw2",
        "ssl_ca_certs": "/ca.pem",
    }
    assert resolve_redis_url(url) == url
    shown = redacted(url)
    assert "s%40cret" not in shown and "pw2" not in shown
    assert shown.startswith("rediss+sentinel://app:***@s1:26380,s2,[::1]:26381/jobs/2?")
    assert "sentinel_password=***" in shown


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel:///jobs", "names no sentinel"),
        ("redis+sentinel://:pw@/jobs", "names no sentinel"),
        ("redis+sentinel://s1:26379", "names no service"),
        ("redis+sentinel://s1:26379/", "names no service"),
        ("redis+sentinel://s1:port/jobs", "sentinel 's1:port' has a bad port"),
        ("redis+sentinel://s1:70000/jobs", "sentinel 's1:70000' has a bad port"),
        ("redis+sentinel://s1:1,:2/jobs", "sentinel ':2' has no host"),
        ("redis+sentinel://s1/jobs/one", "the database must be a whole number >= 0, not 'one'"),
        ("redis+sentinel://s1/jobs/-1", "the database must be a whole number >= 0"),
        ("redis+sentinel://s1/jobs/1/2", "after the service name comes only the database"),
        ("redis+sentinel://s1/jobs?sentinel_pasword=x", "unknown option 'sentinel_pasword'"),
        ("redis+sentinel://s1/jobs?ssl_ca_certs=/ca.pem", "needs TLS: use rediss+sentinel://"),
        ("redis+sentinel://s1/jobs?max_connections=none", "max_connections must be a positive"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_saying_what_is_wrong(url: str, says: str) -> None:
    """Each mistake is named, with the URL's shape; a password never shows."""
    with pytest.raises(ConfigurationError) as raised:
        resolve_redis_url(url.replace("s1", "u:hidden@s1", 1))
    assert says in str(raised.value)
    assert "redis+sentinel://[user:password@]host1:port1,host2:port2/service[/db]" in str(
        raised.value
    )
    assert "hidden" not in str(raised.value)


# -- a host on Sentinel ----------------------------------------------------------------------


async def test_a_host_runs_on_the_primary_the_sentinels_name(setup: SentinelSetup) -> None:
    """Enqueued jobs run and their results read back; the host names the service and the
    primary it resolved, and its jobs are on that primary."""
    host = make_host(setup.url())
    async with host.run():
        job_ids = [await host.scheduler.enqueue(Note(number)) for number in range(5)]
        for number, job_id in enumerate(job_ids):
            info = await wait_for_job(host, job_id, timeout=DEADLINE_S)
            assert (info.status, info.result) == (JobStatus.SUCCEEDED, number)
        assert host._target == (
            f"sentinel service {SERVICE!r} (primary 127.0.0.1:{setup.primary.port}, db 0)"
        )
    admin = setup.primary.admin()
    try:
        assert all(admin.exists(KeyLayout(QUEUE).result(job_id)) for job_id in job_ids)
    finally:
        admin.close()


async def test_the_watchers_end_with_the_client(setup: SentinelSetup) -> None:
    """Closing the client (as Store.close does) stops its ``+switch-master`` watchers: no
    task is left behind."""
    before = asyncio.all_tasks()
    client = await open_redis(setup.url(), timeout_s=5)
    watchers = asyncio.all_tasks() - before
    assert len(watchers) == len(setup.sentinels)
    await client.aclose(close_connection_pool=True)
    assert all(task.done() for task in watchers)


async def test_an_unknown_service_fails_the_start_naming_the_ones_the_sentinels_watch(
    setup: SentinelSetup,
) -> None:
    """A typo in the service name fails at once, naming the services the sentinels know."""
    with pytest.raises(RedisUnavailableError) as raised:
        await asyncio.wait_for(open_redis(setup.url("job"), timeout_s=5), DEADLINE_S)
    assert "the sentinels do not know service 'job' (they watch: jobs)" in str(raised.value)


async def test_no_sentinel_answering_fails_the_start_naming_each_one() -> None:
    """Nothing listening at any sentinel: the start fails, with each sentinel's error."""
    ports = [free_port(), free_port()]
    url = f"redis+sentinel://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/jobs"
    with pytest.raises(RedisUnavailableError) as raised:
        await asyncio.wait_for(open_redis(url, timeout_s=2), DEADLINE_S)
    message = str(raised.value)
    assert "cannot find the primary of Sentinel service 'jobs'" in message
    assert "no sentinel answers" in message
    assert f"127.0.0.1:{ports[0]}: " in message and f"127.0.0.1:{ports[1]}: " in message


# -- failover --------------------------------------------------------------------------------


def keyspace(server: RedisServer) -> dict[bytes, bytes]:
    """Every key of ``server`` and its serialized value."""
    admin = server.admin()
    try:
        keys: list[bytes] = admin.keys("*")  # type: ignore[assignment]
        return {key: admin.dump(key) for key in keys}  # type: ignore[misc]
    finally:
        admin.close()


def present(server: RedisServer, job_ids: list[str]) -> set[str]:
    """The jobs of ``job_ids`` that ``server`` holds (waiting, running or finished)."""
    keys = KeyLayout(QUEUE)
    admin = server.admin()
    try:
        with admin.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.exists(keys.job(job_id), keys.result(job_id))
            found = pipe.execute()
    finally:
        admin.close()
    return {job_id for job_id, count in zip(job_ids, found, strict=True) if count}


@dataclass
class Load:
    """Jobs enqueued one after another until told to stop, with when each was acknowledged."""

    host: JobHost
    acked: dict[str, float]
    errors: list[str]
    stop: asyncio.Event

    async def run(self) -> None:
        number = 0
        while not self.stop.is_set():
            number += 1
            try:
                job_id = await self.host.scheduler.enqueue(Note(number))
            except RedisUnavailableError as error:
                self.errors.append(str(error))
                await asyncio.sleep(0.01)
            else:
                self.acked[job_id] = time.monotonic()
            await asyncio.sleep(0.002)


@pytest.mark.parametrize("fault", ["failover", "kill"])
async def test_a_failover_under_load_moves_every_write_to_the_new_primary(
    tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    """``SENTINEL FAILOVER`` (or a ``kill -9`` of the primary) while a host enqueues and
    drains: the host stops writing to the old primary as soon as a sentinel announces the
    promotion of the replica, and writes nothing to it afterwards (kept writable here: it
    refuses REPLICAOF, as one cut off from the sentinels would); then it follows the switch.
    Every acknowledged job is on the new primary, or (without replicated durability) was
    written to the old one before the notice and is lost. Every job on the new primary runs."""
    caplog.set_level(logging.WARNING, logger="hostedjobs.redis")
    disabled = ("--rename-command", "REPLICAOF", "", "--rename-command", "SLAVEOF", "")
    with sentinel_setup(tmp_path_factory.mktemp, *disabled, replicas=2) as setup:
        old = setup.primary
        runs: dict[str, int] = {}
        host = make_host(setup.url(), runs)
        load = Load(host, {}, [], asyncio.Event())
        async with host.run():
            producer = asyncio.create_task(load.run())
            await eventually(lambda: len(load.acked) >= 50, what="jobs acknowledged")
            if fault == "failover":
                await asyncio.to_thread(setup.failover)
            else:
                await asyncio.to_thread(old.kill)
            found = await eventually(
                lambda: re.search(
                    rf"from 127\.0\.0\.1:{old.port} to 127\.0\.0\.1:(\d+)", caplog.text
                ),
                what="the host seeing the failover",
            )
            noticed = time.monotonic()
            new = setup.server_at(int(found.group(1)))
            switch = found.group(0)
            before = None if fault == "kill" else await asyncio.to_thread(keyspace, old)
            await eventually(
                lambda: f"moved service 'jobs' {switch}" in caplog.text,
                what="the host following the switch",
            )
            after_switch = len(load.acked)
            await eventually(
                lambda: len(load.acked) >= after_switch + 100, what="jobs acknowledged after"
            )
            load.stop.set()
            await producer
            acked = list(load.acked)
            on_new = await asyncio.to_thread(present, new, acked)
            lost = [job_id for job_id in acked if job_id not in on_new]
            for job_id in on_new:
                info = await wait_for_job(host, job_id, timeout=DEADLINE_S)
                assert info.status is JobStatus.SUCCEEDED
        if before is not None:
            assert await asyncio.to_thread(keyspace, old) == before, "written after the notice"
            # The lost jobs were acknowledged by the demoted primary before the notice.
            assert await asyncio.to_thread(present, old, lost) == set(lost)
        assert all(load.acked[job_id] < noticed for job_id in lost)
        assert len(lost) < len(acked) / 2
        assert set(runs) >= on_new
        print(
            f"{fault}: {len(acked)} acknowledged, {len(lost)} lost, "
            f"{sum(n - 1 for n in runs.values())} run twice, {len(load.errors)} failed enqueues"
        )


async def test_the_host_follows_a_failover_with_a_sentinel_down(
    tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The first sentinel of the URL is down when the others fail the service over: the
    host still hears of it from them and moves to the new primary."""
    caplog.set_level(logging.WARNING, logger="hostedjobs.redis")
    with sentinel_setup(tmp_path_factory.mktemp) as setup:
        host = make_host(setup.url())
        async with host.run():
            setup.sentinels[0].stop()
            await asyncio.to_thread(setup.failover, 1)
            moved = f"to 127.0.0.1:{setup.replica.port}"
            await eventually(
                lambda: moved in caplog.text and "moved service" in caplog.text,
                what="the host following the switch",
            )
            job_id = await host.scheduler.enqueue(Note(7))
            info = await wait_for_job(host, job_id, timeout=DEADLINE_S)
            assert (info.status, info.result) == (JobStatus.SUCCEEDED, 7)
        assert await asyncio.to_thread(present, setup.replica, [job_id]) == {job_id}


async def test_a_replica_reached_by_its_own_url_refuses_the_start(setup: SentinelSetup) -> None:
    """The replica's own redis:// URL is refused at start-up (ROLE), naming its primary."""
    from tests.test_preflight import refused

    message = await refused(JobHost(redis_url=setup.replica.url, queue_name=QUEUE))
    assert f"it is a replica (of 127.0.0.1:{setup.primary.port})" in message


async def test_a_replica_is_refused_by_role_when_info_is_forbidden(
    setup: SentinelSetup,
) -> None:
    """An ACL user allowed ROLE but not INFO or CONFIG still cannot start on a replica."""
    from tests.test_preflight import refused

    admin = setup.replica.admin()
    try:
        admin.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-info", "-config"
        )
    finally:
        admin.close()
    url = f"redis://app:pw@127.0.0.1:{setup.replica.port}/0"
    message = await refused(JobHost(redis_url=url, queue_name=QUEUE))
    assert f"it is a replica (of 127.0.0.1:{setup.primary.port})" in message


async def test_a_subscription_survives_its_connection_being_dropped(setup: SentinelSetup) -> None:
    """A pub/sub connection that reconnects re-subscribes and goes on receiving: the primary
    check on a new connection does not read the re-subscription's reply as the role (it
    did, so every reconnect was refused as "no longer a primary (ROLE: b'subscribe')")."""
    client = await open_redis(setup.url(), timeout_s=5)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe("tests.sentinel.channel")
        first = await pubsub.get_message(timeout=DEADLINE_S)
        assert first is not None and first["type"] == "subscribe"
        admin = setup.primary.admin()
        try:
            assert admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1  # type: ignore[no-untyped-call]
        finally:
            admin.close()

        async def delivered() -> bool:
            await client.publish("tests.sentinel.channel", "hello")
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            except (ConnectionError, OSError, RedisUnavailableError):
                return False
            return message is not None and message["data"] == b"hello"

        await eventually(delivered)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose(close_connection_pool=True)


async def test_a_named_lock_on_the_primary_the_sentinels_name(setup: SentinelSetup) -> None:
    """A lock taken through a ``redis+sentinel://`` host excludes a second host, and its
    fencing token is stored on the primary."""
    first, second = make_host(setup.url()), make_host(setup.url())
    async with first.connected(), second.connected():
        async with first.lock("sentinel-lock", ttl=5) as held:
            assert not await second.lock("sentinel-lock").acquire(blocking=False)
        taken = second.lock("sentinel-lock")
        assert await taken.acquire(timeout=DEADLINE_S)
        assert taken.token == held.token + 1
        await taken.release()
    admin = setup.primary.admin()
    try:
        fence = KeyLayout(QUEUE).named_lock("sentinel-lock").fence
        assert int(admin.get(fence)) == taken.token  # type: ignore[arg-type]
    finally:
        admin.close()
