"""Redis calls are bounded and fail clearly: a frozen server, a missing password, TLS on one
side only, nothing listening (issue 10, fault 3).

Every test talks to redis-servers of its own (tests/redis_servers.py). Each call under test is
wrapped in a generous deadline, so a call that hangs fails the test instead of stalling it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import redis.exceptions
from starlette.requests import Request

from hostedjobs import JobContext, JobHost, job_type
from hostedjobs.exceptions import RedisUnavailableError
from hostedjobs.testing import wait_for_job
from tests.redis_servers import RedisServer, redis_server
from tests.waiting import DEADLINE_S, eventually

T = TypeVar("T")


@job_type("tests.connection.note")
@dataclass
class Note:
    text: str = ""


def make_host(url: str, **options: Any) -> JobHost:
    host = JobHost(redis_url=url, queue_name="faults", accept_risks={"persistence"}, **options)

    @host.handler(Note)
    async def note(job: Note, ctx: JobContext) -> str:
        return job.text

    return host


async def within_deadline(call: Awaitable[T]) -> T:
    """``call``, failing the test (not hanging it) if it takes past the deadline."""
    return await asyncio.wait_for(call, DEADLINE_S)


async def start_fails(host: JobHost) -> RedisUnavailableError:
    """Start ``host``, expecting `RedisUnavailableError`; returns it."""

    async def start() -> None:
        async with host.run():
            pass

    with pytest.raises(RedisUnavailableError) as raised:
        await within_deadline(start())
    assert not host.running
    return raised.value


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory) as started:
        yield started


async def test_a_frozen_redis_fails_every_call_within_the_timeout(server: RedisServer) -> None:
    """Issue 10 fault 3: during a Redis freeze (SIGSTOP) enqueue and /health blocked for as
    long as it lasted. Now each scheduler call fails within ``redis_timeout`` with a
    `RedisUnavailableError` naming the server, /health answers 503 with the reason, and once
    Redis is back the worker carries on."""
    host = make_host(server.url, redis_timeout=1)
    async with host.run():
        before = await host.scheduler.enqueue(Note("before"))
        await wait_for_job(host, before)
        server.pause()
        try:
            scheduler = host.scheduler
            calls: list[Callable[[], Awaitable[Any]]] = [
                lambda: scheduler.enqueue(Note("during")),
                lambda: scheduler.enqueue_many([Note("a"), Note("b")]),
                lambda: scheduler.get(before),
                lambda: scheduler.delete(before),
                lambda: scheduler.cancel(before),
                lambda: scheduler.retry(before),
                lambda: scheduler.jobs("queued"),
                scheduler.counts,
                host.workers,
            ]
            for call in calls:
                with pytest.raises(RedisUnavailableError, match=f"127.0.0.1:{server.port}/0"):
                    await within_deadline(call())
            report = await within_deadline(host.health_report())
            assert not report["healthy"]
            assert "did not answer" in report["redis"]["error"]
            response = await within_deadline(host.health(Request({"type": "http"})))
            assert response.status_code == 503
        finally:
            server.resume()
        after = await host.scheduler.enqueue(Note("after"))
        info = await wait_for_job(host, after)
        assert info.result == "after"


async def test_a_dead_redis_raises_no_redis_py_exception(server: RedisServer) -> None:
    """Issue 10 fault 3: with Redis gone, the public API raised redis-py's own exceptions.
    Now every scheduler method raises `RedisUnavailableError` (a builtin ConnectionError)
    saying the connection was refused, and works again once Redis is back."""
    host = make_host(server.url, redis_timeout=2)
    async with host.run():
        job_id = await host.scheduler.enqueue(Note("x"))
        await wait_for_job(host, job_id)
        server.stop()
        scheduler = host.scheduler
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: scheduler.enqueue(Note("during")),
            lambda: scheduler.get(job_id),
            lambda: scheduler.jobs("succeeded"),
            scheduler.counts,
        ]
        for call in calls:
            with pytest.raises(RedisUnavailableError) as raised:
                await within_deadline(call())
            assert not isinstance(raised.value, redis.exceptions.RedisError)
            assert isinstance(raised.value, ConnectionError)
            assert "refused" in str(raised.value)
        server.start()
        again = await host.scheduler.enqueue(Note("again"))
        assert (await wait_for_job(host, again)).result == "again"


async def test_an_error_reply_is_a_redis_unavailable_error(server: RedisServer) -> None:
    """An error reply (here a full Redis's OOM) reaches the caller as a
    `RedisUnavailableError` naming the server and quoting the reply."""
    host = make_host(server.url)
    async with host.run():
        admin = server.admin()
        try:
            admin.config_set("maxmemory", 1)
            with pytest.raises(
                RedisUnavailableError, match=f"{server.port}/0: Redis is out of memory"
            ):
                await within_deadline(host.scheduler.enqueue(Note("full")))
        finally:
            admin.config_set("maxmemory", 0)
            admin.close()


async def test_a_missing_password_fails_the_start_at_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Issue 10 fault 3: a URL without the password a server requires made the start-up
    reconnect for ever (108 connections in 12 s, no error). Now the start fails at once,
    saying the server wants a password and where to put it, after a connection or two."""
    with redis_server(tmp_path_factory, password="s3cret") as secured:
        error = await start_fails(make_host(secured.url))
        assert f"127.0.0.1:{secured.port}/0" in str(error)
        assert "requires a password" in str(error)
        assert "redis://:PASSWORD@host:port/db" in str(error)
        connections = secured.info("stats")["total_connections_received"]
        # The admin client's, the check's own, and the refused one or two.
        assert connections <= 4


async def test_a_wrong_password_or_acl_user_fails_the_start_and_stays_secret(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A wrong password (or an unknown ACL user) fails the start with a message that says
    so and never shows the password."""
    with redis_server(tmp_path_factory, password="s3cret") as secured:
        port = secured.port
        for url in (
            f"redis://:wrong-pw@127.0.0.1:{port}/0",
            f"redis://nobody:wrong-pw@127.0.0.1:{port}/0",
        ):
            error = await start_fails(make_host(url))
            assert "password in the URL is wrong" in str(error)
            assert "wrong-pw" not in str(error)
        host = make_host(f"redis://:s3cret@127.0.0.1:{port}/0")
        async with host.run():
            job_id = await host.scheduler.enqueue(Note("in"))
            assert (await wait_for_job(host, job_id)).result == "in"


async def test_tls_on_one_side_only_fails_the_start_saying_which_scheme(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Issue 10 fault 3: ``redis://`` pointed at a TLS port hung. Now the start fails saying
    the port speaks TLS; ``rediss://`` at a plain port says the reverse; an untrusted
    certificate says how to trust it; the right URL starts."""
    with redis_server(tmp_path_factory, tls=True) as server:
        assert server.tls_port is not None
        tls = f"127.0.0.1:{server.tls_port}/0"
        error = await start_fails(make_host(f"redis://{tls}", redis_timeout=1))
        assert "this port speaks TLS: use rediss://" in str(error)
        error = await start_fails(
            make_host(f"rediss://127.0.0.1:{server.port}/0?ssl_cert_reqs=none", redis_timeout=1)
        )
        assert "plain Redis, not TLS: use redis://" in str(error)
        error = await start_fails(make_host(f"rediss://{tls}", redis_timeout=1))
        assert "certificate is not trusted" in str(error)
        host = make_host(f"rediss://{tls}?ssl_ca_certs={server.certificate}")
        async with host.run():
            job_id = await host.scheduler.enqueue(Note("tls"))
            assert (await wait_for_job(host, job_id)).result == "tls"


async def test_a_port_that_never_answers_fails_the_start_within_the_timeout() -> None:
    """A listener that accepts connections and never answers (a TLS server waiting for a
    ClientHello, a frozen proxy) fails the start once ``redis_timeout`` has passed."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        error = await start_fails(make_host(f"redis://127.0.0.1:{port}/0", redis_timeout=0.5))
    assert f"Redis at 127.0.0.1:{port}/0: no answer within 0.5s" in str(error)


async def test_nothing_listening_and_an_unknown_host_fail_the_start_saying_so() -> None:
    """A refused connection and a host name that does not resolve each fail the start with
    their own cause and fix."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    error = await start_fails(make_host(f"redis://127.0.0.1:{port}/0"))
    assert "nothing listens there" in str(error)
    error = await start_fails(make_host("redis://no-such-host.invalid:6379/0"))
    assert "does not resolve" in str(error)


async def test_a_blocking_wait_longer_than_the_timeout_is_not_cut_short(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An idle worker's BLPOP blocks for the fallback poll (3 s here), longer than the 0.5 s
    ``redis_timeout``: its read waits the block time on top, so the wait ends normally, no
    Redis error is logged, and a job enqueued meanwhile runs."""
    caplog.set_level(logging.WARNING, logger="hostedjobs")
    host = make_host(server.url, redis_timeout=0.5, fallback_poll=3)

    def blpops() -> int:
        stats = server.info("commandstats").get("cmdstat_blpop", {})
        return int(stats.get("calls", 0))

    async with host.run():
        # Two waits ended: the first at least ran its full 3 s.
        await eventually(lambda: blpops() >= 3, what="three idle waits")
        job_id = await host.scheduler.enqueue(Note("woken"))
        assert (await wait_for_job(host, job_id)).result == "woken"
    assert not [r for r in caplog.records if "Redis error" in r.getMessage()], caplog.text


def test_redis_timeout_must_be_positive() -> None:
    """``redis_timeout`` takes a positive duration, like the host's other durations."""
    with pytest.raises(ValueError, match="redis_timeout must be positive"):
        JobHost(redis_timeout=0)
