"""Start-up checks of the Redis server (issue 10, faults 4 and 6): a server that would lose
jobs silently or fail a script half-way refuses the start, naming the fix.

Every test runs redis-servers of its own (tests/redis_servers.py), configured as the fault
needs: an eviction policy, a replica, cluster mode, ACL users.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hostedjobs import JobContext, JobHost, JobStatus, RetryPolicy, job_type
from hostedjobs.exceptions import ConfigurationError, RedisConfigurationError
from hostedjobs.storage import KeyLayout, open_redis
from hostedjobs.storage.embedded import find_redis_server
from hostedjobs.storage.preflight import (
    REQUIRED_COMMANDS,
    ServerFacts,
    acl_rule,
    check_server,
    judge,
)
from hostedjobs.testing import wait_for_job
from tests.redis_servers import RedisServer, redis_server
from tests.servers import free_port
from tests.waiting import DEADLINE_S, eventually

LUA = Path(__file__).resolve().parent.parent / "hostedjobs" / "storage" / "lua"
QUEUE = "checked"


@job_type("tests.preflight.work")
@dataclass
class Work:
    mode: str = "ok"
    seconds: float = 0.0


@job_type("tests.preflight.nobody")
@dataclass
class Nobody:
    """A job type no handler of the test's host runs: its worker parks such jobs."""


def make_host(url: str, **options: Any) -> JobHost:
    options.setdefault("accept_risks", {"persistence"})
    host = JobHost(
        redis_url=url,
        queue_name=QUEUE,
        shutdown_grace=timedelta(seconds=0.2),
        retry=RetryPolicy(max_tries=2, backoff=timedelta(seconds=0.05), jitter=0),
        **options,
    )

    @host.handler(Work)
    async def work(job: Work, ctx: JobContext) -> str:
        if job.mode == "fail":
            raise ValueError("this job always fails")
        if job.mode == "flaky" and ctx.attempt == 1:
            raise ValueError("the first try fails")
        await ctx.report_progress(50, "half")
        await asyncio.sleep(job.seconds)
        return job.mode

    @host.distributed_cron("0 0 1 1 *", name="yearly")
    async def yearly() -> None:
        return None

    return host


async def starts(host: JobHost) -> None:
    """Start ``host`` and run one job through it."""
    async with host.run():
        job_id = await host.scheduler.enqueue(Work())
        assert (await wait_for_job(host, job_id)).status is JobStatus.SUCCEEDED


async def refused(host: JobHost) -> str:
    """Start ``host``, expecting `RedisConfigurationError`; returns its message."""

    async def start() -> None:
        async with host.run():
            pass

    with pytest.raises(RedisConfigurationError) as raised:
        await asyncio.wait_for(start(), DEADLINE_S)
    assert not host.running
    return str(raised.value)


def acl(server: RedisServer, *rule: str) -> None:
    """Run ``ACL SETUSER`` (or any command) as the server's admin."""
    admin = server.admin()
    try:
        admin.execute_command(*rule)  # type: ignore[no-untyped-call]
    finally:
        admin.close()


def run_line(server: RedisServer, line: str) -> None:
    """Run a command line as printed in an error message, e.g. ``ACL SETUSER u +publish``."""
    acl(server, *line.split())


def fix_line(message: str) -> str:
    """The ``ACL SETUSER ...`` line an error message gives as the fix."""
    found = re.search(r"Grant them with: (ACL SETUSER [^\n]+)", message)
    assert found, message
    return found.group(1)


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory) as started:
        yield started


# -- fault 4: a server that loses jobs silently ---------------------------------------------


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
async def test_an_evicting_redis_refuses_the_start_unless_the_risk_is_accepted(
    tmp_path_factory: pytest.TempPathFactory, policy: str
) -> None:
    """Issue 10 fault 4: with ``maxmemory-policy allkeys-lru`` 40,000 accepted jobs became
    3,862 runs and the rest vanished or expired, with no warning anywhere. Now a server with
    any policy but noeviction (volatile-* too: job records carry TTLs) refuses the start,
    saying how to fix it; ``accept_risks={"eviction"}`` starts anyway."""
    with redis_server(
        tmp_path_factory, "--maxmemory", "64mb", "--maxmemory-policy", policy
    ) as evicting:
        message = await refused(make_host(evicting.url))
        assert f"Redis at 127.0.0.1:{evicting.port}/0" in message
        assert f"maxmemory-policy is {policy}" in message
        assert "CONFIG SET maxmemory-policy noeviction" in message
        assert 'accept_risks={"eviction"}' in message
        await starts(make_host(evicting.url, accept_risks={"eviction", "persistence"}))


async def test_the_eviction_policy_is_read_from_info_when_config_is_forbidden(
    tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Managed Redis and ACL users often may not run CONFIG: the policy is then read from
    INFO. A user that may run neither gets a warning saying the policy is unknown."""
    with redis_server(tmp_path_factory, "--maxmemory-policy", "allkeys-lfu") as evicting:
        acl(evicting, "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-config")
        message = await refused(make_host(f"redis://app:pw@127.0.0.1:{evicting.port}/0"))
        assert "maxmemory-policy is allkeys-lfu" in message
    with redis_server(tmp_path_factory) as server:
        acl(server, "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-config", "-info")
        caplog.set_level(logging.WARNING, logger="hostedjobs.redis")
        await starts(make_host(f"redis://app:pw@127.0.0.1:{server.port}/0"))
        assert "cannot read its maxmemory-policy" in caplog.text


async def test_a_replica_refuses_the_start(
    server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A replica (read-only by default) fails every write, and a writable one loses them at
    its next sync: the start is refused, naming the primary to use instead."""
    with redis_server(tmp_path_factory, "--replicaof", "127.0.0.1", str(server.port)) as replica:
        message = await refused(make_host(replica.url))
    assert f"it is a replica (of 127.0.0.1:{server.port})" in message
    assert "point the URL at the primary" in message


async def test_a_sentinel_refuses_the_start_naming_the_primary_it_watches(
    server: RedisServer, tmp_path: Path
) -> None:
    """A URL at a Sentinel's port started, then every call failed with "unknown command
    'ZCOUNT'": now the start is refused, naming the primaries the Sentinel watches."""
    port = free_port()
    config = tmp_path / "sentinel.conf"  # Sentinel rewrites its config: it needs a file
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor jobs 127.0.0.1 {server.port} 1\n"
    )
    sentinel = subprocess.Popen(
        [find_redis_server(), str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"

        async def answers() -> bool:
            try:
                client = await open_redis(url, timeout_s=1)
            except Exception:
                return False
            await client.aclose()
            return True

        await eventually(answers, what="the sentinel answering")
        message = await refused(make_host(url))
    finally:
        sentinel.terminate()
        sentinel.wait(timeout=30)
    assert "is a Sentinel, not a Redis server" in message
    assert f"jobs at 127.0.0.1:{server.port}" in message


async def test_a_cluster_node_refuses_the_start(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A redis:// URL at a Redis Cluster node refuses the start, saying to use
    redis+cluster:// (which keeps each queue's keys in one slot)."""
    with redis_server(
        tmp_path_factory, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"
    ) as node:
        message = await refused(make_host(node.url))
    assert "use a redis+cluster://" in message


async def test_a_redis_that_persists_nothing_is_a_warning(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """No AOF and no RDB save points: every queued job dies with a restart. That is logged
    as a warning (the start goes on), unless ``accept_risks={"persistence"}``."""
    caplog.set_level(logging.WARNING, logger="hostedjobs.redis")
    await starts(make_host(server.url, accept_risks=()))
    assert "it persists nothing" in caplog.text
    caplog.clear()
    await starts(make_host(server.url, accept_risks={"persistence"}))
    assert "persists nothing" not in caplog.text


def test_too_old_a_redis_is_a_problem() -> None:
    """A server older than 6.2 lacks commands the engine uses: a problem that says so."""
    problems, _ = judge(ServerFacts(version=(6, 0, 16), eviction_policy="noeviction"))
    assert problems == ["it runs Redis 6.0.16; hostedjobs needs 6.2 or newer: upgrade it"]
    assert judge(ServerFacts(version=(6, 2, 0), eviction_policy="noeviction")) == ([], [])


def test_accept_risks_takes_known_risks_only() -> None:
    """An unknown risk name is a configuration error naming the known ones."""
    with pytest.raises(ConfigurationError, match="'eviction', 'persistence'"):
        JobHost(accept_risks={"evictions"})  # type: ignore[arg-type]


# -- fault 6: an ACL user without a permission the engine needs ------------------------------


async def test_an_acl_user_without_channel_permission_refuses_the_start(
    server: RedisServer,
) -> None:
    """Issue 10 fault 6: ``ACL SETUSER u on >pw ~* +@all`` (Redis 7's default gives no
    channel) let the claim script write and then fail at its PUBLISH. Now the start is
    refused, naming the events channel and the line that grants it; with that line run,
    the host starts."""
    acl(server, "ACL", "SETUSER", "u", "on", ">pw", "~*", "+@all")
    url = f"redis://u:pw@127.0.0.1:{server.port}/0"
    message = await refused(make_host(url))
    assert f"channel hostedjobs:{QUEUE}:events" in message
    line = fix_line(message)
    assert line == f"ACL SETUSER u &hostedjobs:{QUEUE}:events"
    run_line(server, line)
    await starts(make_host(url))


async def test_missing_commands_and_key_patterns_are_named_with_their_fix(
    server: RedisServer,
) -> None:
    """A user kept to hostedjobs' own keys, without EVALSHA and PUBLISH, is refused with
    each missing command and key pattern named; the line given fixes it."""
    acl(
        server,
        *("ACL", "SETUSER", "u", "on", ">pw", f"~hostedjobs:{QUEUE}:*", "&*"),
        *("+@all", "-evalsha", "-publish"),
    )
    url = f"redis://u:pw@127.0.0.1:{server.port}/0"
    message = await refused(make_host(url))
    assert "commands evalsha, publish" in message
    for pattern in (QUEUE, f"{QUEUE}:wake", "arq:job:*", "arq:result:*", "hostedjobs:meta:*"):
        assert f"~{pattern} " in fix_line(message) + " "
    assert f"hostedjobs:{QUEUE}:*" not in fix_line(message)
    run_line(server, fix_line(message))
    await starts(make_host(url))


async def test_the_probes_change_nothing(server: RedisServer) -> None:
    """The permission probes are queued in a MULTI and discarded: no key is written, no
    event published, no script loaded."""
    client = await open_redis(server.url)
    keys = KeyLayout(QUEUE)
    try:
        events = client.pubsub()
        await events.subscribe(keys.events)
        await check_server(client, keys, accept={"persistence"})
        message = await events.get_message(ignore_subscribe_messages=True, timeout=0.5)
        await events.aclose()  # type: ignore[no-untyped-call]
        assert message is None
        assert await client.dbsize() == 0
        probe_sha = hashlib.sha1(b"return 0").hexdigest()
        assert await client.script_exists(probe_sha) == [False]
    finally:
        await client.aclose()


def test_every_command_the_scripts_run_is_probed() -> None:
    """Each command a Lua script runs is in the probed list, so a permission it lacks is
    found at start-up, not half-way through a script."""
    used = {
        name.lower()
        for path in LUA.glob("*.lua")
        for name in re.findall(r"redis\.p?call\(\s*'(\w+)'", path.read_text())
    }
    assert used, "no redis.call found in the scripts"
    assert used <= set(REQUIRED_COMMANDS), sorted(used - set(REQUIRED_COMMANDS))


async def test_the_recommended_acl_rule_runs_the_whole_engine(
    server: RedisServer,
) -> None:
    """A user created with just the documented rule (commands, the queue's key patterns,
    its channel) runs everything the engine does without a single NOPERM, and every
    command Redis saw is one the start-up check probes."""
    rule = acl_rule(KeyLayout(QUEUE), "app")
    run_line(server, rule.replace(" app ", " app on >pw ", 1))
    acl(server, "CONFIG", "RESETSTAT")
    host = make_host(f"redis://app:pw@127.0.0.1:{server.port}/0")
    async with host.run():
        scheduler = host.scheduler
        ok = [await scheduler.enqueue(Work()), *await scheduler.enqueue_many([Work(), Work()])]
        later = await scheduler.schedule(Work(), delay=timedelta(seconds=0.2))
        doomed = await scheduler.schedule(Work(), delay=timedelta(hours=1))
        flaky = await scheduler.enqueue(Work("flaky"))
        failing = await scheduler.enqueue(Work("fail"))
        held = await scheduler.enqueue(Work("slow", seconds=30))
        parked = await scheduler.enqueue(Nobody())
        async for info in scheduler.watch(ok[0]):
            if info.finished:
                break
        for job_id in [*ok, later, flaky]:
            assert (await wait_for_job(host, job_id)).status is JobStatus.SUCCEEDED
        assert (await wait_for_job(host, failing)).status is JobStatus.FAILED
        assert await scheduler.retry(failing)
        assert (await wait_for_job(host, failing)).status is JobStatus.FAILED
        assert await scheduler.delete(doomed)
        await eventually(lambda: _running(host, held), what="the slow job running")
        assert await scheduler.cancel(held)
        assert (await wait_for_job(host, held)).status is JobStatus.CANCELLED
        run_id = await host.trigger("yearly")
        assert (await wait_for_job(host, run_id)).status is JobStatus.SUCCEEDED
        for status in JobStatus:
            await scheduler.jobs(status)
        await scheduler.counts()
        await host.status()
        await host.workers()
        assert (await scheduler.get(parked)) is not None
    commands = server.info("commandstats")
    # CONFIG GET is refused (the rule does not grant it: it shows secrets); the check then
    # reads INFO. Nothing else was.
    rejected = {
        name: stats["rejected_calls"]
        for name, stats in commands.items()
        if stats.get("rejected_calls") and name != "cmdstat_config|get"
    }
    assert not rejected, rejected
    seen = {name.removeprefix("cmdstat_") for name in commands}
    # The check's own reads, the connections' AUTH, and the admin's own commands.
    expected = {*REQUIRED_COMMANDS, "info", "role", "config|get", "auth"}
    admins = {"config|resetstat", "acl|setuser", "client|setinfo"}
    assert seen - admins <= expected, sorted(seen - admins - expected)


def test_the_documented_acl_rule_is_the_one_the_check_recommends() -> None:
    """docs/deployment.md shows the rule for the default queue that `acl_rule` builds (the
    one the previous test runs the engine with)."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "deployment.md").read_text()
    found = re.search(r"```sh\n(redis-cli ACL SETUSER .*?)```", page, re.DOTALL)
    assert found, "no ACL SETUSER block in docs/deployment.md"
    documented = shlex.split(found.group(1).replace("\\\n", " "))
    rule = acl_rule(KeyLayout("hostedjobs"), "jobs").split()
    assert documented == ["redis-cli", *rule[:3], "on", ">PASSWORD", *rule[3:]]


async def _running(host: JobHost, job_id: str) -> bool:
    info = await host.scheduler.get(job_id)
    return info is not None and info.status is JobStatus.RUNNING
