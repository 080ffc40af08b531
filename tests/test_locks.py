"""Named locks (`JobHost.lock`) on a real Redis, held across real processes."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from hostedjobs import JobHost
from hostedjobs.exceptions import (
    ConfigurationError,
    HostNotRunningError,
    LockLostError,
    LockTimeoutError,
    RedisUnavailableError,
)
from hostedjobs.testing import eager
from tests.conftest import RestartableRedis
from tests.script_keys import ScriptKeyWatch, summarize
from tests.servers import ROOT, subprocess_env
from tests.waiting import DEADLINE_S, eventually


@pytest.fixture
async def host(redis_url: str, queue_name: str) -> AsyncIterator[JobHost]:
    """A host connected to the session's Redis (no worker)."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    async with host.connected():
        yield host


async def _spawn(redis_url: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.lock_app",
        *args,
        cwd=ROOT,
        env=subprocess_env(HOSTEDJOBS_REDIS_URL=redis_url),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def _line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), DEADLINE_S)
    assert line, f"the lock process ended (exit {await process.wait()})"
    return line.decode().strip()


async def _renewed(host: JobHost, name: str) -> None:
    """Wait until the lock ``name`` is renewed: its remaining TTL goes up between reads."""
    store = host.scheduler.store
    owner_key = store.keys.named_lock(name).owner
    last = [math.inf]

    async def went_up() -> bool:
        now = int(await store.redis.pttl(owner_key))
        went, last[0] = now > last[0], now
        return went

    await eventually(went_up, what=f"a renewal of lock {name!r}")


async def test_processes_exclude_each_other(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    """Three processes incrementing a file under one lock lose no update, and the fencing
    tokens they draw are all different and increase within each process."""
    counter = tmp_path / "counter"
    counter.write_text("0")
    times = 40
    processes = [
        await _spawn(redis_url, "count", queue_name, "counter", str(times), str(counter))
        for _ in range(3)
    ]
    outputs = await asyncio.wait_for(
        asyncio.gather(*(p.communicate() for p in processes)), DEADLINE_S * 2
    )
    assert [p.returncode for p in processes] == [0, 0, 0]
    tokens = [[int(t) for t in out.split()] for out, _ in outputs]
    assert int(counter.read_text()) == 3 * times
    assert all(drawn == sorted(drawn) for drawn in tokens)
    assert sorted(t for drawn in tokens for t in drawn) == list(range(1, 3 * times + 1))


async def test_a_held_lock_is_renewed_beyond_its_ttl(host: JobHost) -> None:
    """A lock held for three times its TTL stays held, renewed: nobody else takes it
    meanwhile, and leaving it reports no loss."""
    async with host.lock("renewed", ttl=1.5) as lock:
        other = host.lock("renewed")
        loop = asyncio.get_running_loop()
        until = loop.time() + 4.5  # a fixed window: what is checked must NOT happen in it
        while loop.time() < until:
            assert not await other.acquire(blocking=False)
            await asyncio.sleep(0.1)
        await _renewed(host, "renewed")
        assert lock.held and not lock.lost
    assert not lock.held
    assert await other.acquire(blocking=False)
    assert other.token == lock.token + 1
    await other.release()


async def test_a_killed_holders_lock_lapses(redis_url: str, queue_name: str, host: JobHost) -> None:
    """A holder killed with SIGKILL never releases; its lock lapses after its TTL and a
    waiter then gets it, with a higher fencing token."""
    holder = await _spawn(redis_url, "hold", queue_name, "crash", "2")
    try:
        killed_token = int((await _line(holder)).removeprefix("held "))
        waiter = host.lock("crash", ttl=5)
        assert not await waiter.acquire(blocking=False)
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
        assert await waiter.acquire(timeout=DEADLINE_S)
        assert waiter.token > killed_token
        await waiter.release()
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_a_paused_holder_finds_its_lock_lost(
    redis_url: str, queue_name: str, host: JobHost
) -> None:
    """A holder frozen (SIGSTOP) past its TTL loses the lock to another; woken, it cannot
    release the other's lock and raises LockLostError on leaving its ``async with``."""
    holder = await _spawn(redis_url, "hold", queue_name, "paused", "1")
    try:
        first = int((await _line(holder)).removeprefix("held "))
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGSTOP)
        taker = host.lock("paused", ttl=30)
        assert await taker.acquire(timeout=DEADLINE_S)
        assert taker.token > first
        os.kill(holder.pid, signal.SIGCONT)
        assert holder.stdin is not None
        holder.stdin.write(b"go\n")
        assert await _line(holder) == "lost"
        assert taker.held
        assert not await host.lock("paused").acquire(blocking=False)
        await taker.release()
    finally:
        if holder.returncode is None:
            os.kill(holder.pid, signal.SIGCONT)
            holder.kill()
            await holder.wait()


async def test_a_lapse_while_held_sets_lost_and_raises_on_exit(host: JobHost) -> None:
    """A holder whose event loop stalls past the TTL finds the lock lost (``lost``), and
    leaving ``async with`` raises LockLostError without releasing the new holder's lock."""
    taker, lock = host.lock("stalled"), host.lock("stalled", ttl=0.2)

    async def stall() -> None:
        async with lock:
            time.sleep(0.6)  # blocks the loop: no renewal can run, the lock lapses
            await eventually(lambda: taker.acquire(blocking=False), what="the lapsed lock")
            await eventually(lambda: lock.lost, what="the holder noticing its loss")
            assert not lock.held

    with pytest.raises(LockLostError, match=r"'stalled' .* lapsed while held"):
        await stall()
    assert taker.held and taker.token > lock.token
    await taker.release()


async def test_try_without_waiting(host: JobHost) -> None:
    """``acquire(blocking=False)`` is one try: False while another holds the lock, True
    once it is free."""
    first, second = host.lock("try"), host.lock("try")
    assert await first.acquire(blocking=False)
    assert not await second.acquire(blocking=False)
    assert not second.held and second.token == 0
    await first.release()
    assert await second.acquire(blocking=False)
    await second.release()


async def test_a_bounded_wait_times_out(host: JobHost) -> None:
    """A wait with a timeout raises LockTimeoutError (a TimeoutError) while the lock stays
    held; a waiter without one gets the lock as soon as the holder releases it."""
    async with host.lock("bounded"):
        with pytest.raises(LockTimeoutError, match=r"'bounded' was not acquired within 0\.2 s"):
            async with host.lock("bounded", timeout=0.2):
                pytest.fail("acquired a held lock")
        with pytest.raises(TimeoutError):
            await host.lock("bounded").acquire(timeout=timedelta(0))
        waiting = asyncio.ensure_future(host.lock("bounded").acquire())
        await asyncio.sleep(0)
        assert not waiting.done()
    assert await asyncio.wait_for(waiting, DEADLINE_S)


async def test_only_the_holder_releases(host: JobHost) -> None:
    """Another Lock object of the same name cannot release the holder's lock."""
    holder, other = host.lock("owned"), host.lock("owned")
    await holder.acquire()
    with pytest.raises(RuntimeError, match="not held"):
        await other.release()
    assert not await other.acquire(blocking=False)
    with pytest.raises(RuntimeError, match="already held"):
        await holder.acquire()
    await holder.release()


async def test_a_cancelled_body_releases(host: JobHost) -> None:
    """A task cancelled inside ``async with`` still releases the lock."""
    entered = asyncio.Event()

    async def body() -> None:
        async with host.lock("cancelled", ttl=60):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(body())
    await asyncio.wait_for(entered.wait(), DEADLINE_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await host.lock("cancelled").acquire(timeout=DEADLINE_S)


async def test_bad_options_are_refused(host: JobHost, redis_url: str, queue_name: str) -> None:
    """An empty name, a ttl <= 0 or over 365 days and a negative timeout raise
    ConfigurationError; a host that is not running raises HostNotRunningError."""
    with pytest.raises(ConfigurationError, match="non-empty string"):
        host.lock("")
    for ttl in (0, -1, timedelta(seconds=-1), float("nan")):
        with pytest.raises(ConfigurationError, match="ttl"):
            host.lock("x", ttl=ttl)
    # A far longer ttl reached Redis as an expiry it refuses: a RedisUnavailableError.
    for ttl in (timedelta(days=366), 10**20):
        with pytest.raises(ConfigurationError, match="ttl must be at most 365 days"):
            host.lock("x", ttl=ttl)
    assert host.lock("x", ttl=timedelta(days=365)).ttl_s == 365 * 86400
    with pytest.raises(ConfigurationError, match="timeout must be >= 0"):
        host.lock("x", timeout=-1)
    with pytest.raises(ConfigurationError, match="timeout must be >= 0"):
        await host.lock("x").acquire(timeout=-0.5)
    with pytest.raises(HostNotRunningError):
        JobHost(redis_url=redis_url, queue_name=queue_name).lock("x")


async def test_eager_mode_has_no_locks(queue_name: str) -> None:
    """In eager mode (no Redis) asking for a lock says that locks need Redis."""
    host = JobHost(queue_name=queue_name)
    with eager(host):
        async with host.run():
            with pytest.raises(ConfigurationError, match="named locks need Redis"):
                host.lock("x")


async def test_redis_down_raises_unavailable(
    restartable_redis: RestartableRedis, queue_name: str
) -> None:
    """With Redis gone, acquiring raises RedisUnavailableError, as every Redis call does."""
    host = JobHost(
        redis_url=restartable_redis.url, queue_name=queue_name, run_worker=False, redis_timeout=2
    )
    async with host.connected():
        lock = host.lock("down")
        restartable_redis.stop()
        with pytest.raises(RedisUnavailableError):
            await lock.acquire()


async def test_lock_scripts_declare_their_keys(redis_url: str, host: JobHost) -> None:
    """Acquire (free and held), renew and release touch only the keys in their KEYS, so they
    route on a cluster."""
    async with ScriptKeyWatch(redis_url, flush_scripts=True) as watch:
        async with host.lock("declared", ttl=3) as lock:
            assert not await host.lock("declared").acquire(blocking=False)
            await _renewed(host, "declared")
        assert not lock.lost
    assert not watch.findings, summarize(watch.findings)
    ran = {line.args[0].upper() for call in watch.calls for line in call.inner}
    assert {b"SET", b"INCR", b"PTTL", b"PEXPIRE", b"DEL", b"LPUSH"} <= ran, ran
