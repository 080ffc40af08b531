"""Hosted jobs in one place: every process's continuous and cron runs, shared through Redis,
and pausing that every process obeys (real processes, real Redis)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from hostedjobs import JobContext, JobHost
from hostedjobs.exceptions import UnknownJobError
from hostedjobs.status import PAUSED_MESSAGE, HostedJobStatus, RunRecord
from tests.conftest import RestartableRedis
from tests.hosted_app import make_host
from tests.servers import ROOT, subprocess_env
from tests.test_dashboard import allow_all, client_for, csrf_token
from tests.waiting import eventually

HOSTEDJOBS = str(Path(sys.executable).with_name("hostedjobs"))


@contextmanager
def processes(redis_url: str, queue_name: str, count: int, **env: str) -> Iterator[list[int]]:
    """``count`` `hostedjobs worker tests.hosted_app:host` processes; their pids."""
    started = [
        subprocess.Popen(
            [HOSTEDJOBS, "worker", "tests.hosted_app:host"],
            env=subprocess_env(HOSTEDJOBS_REDIS_URL=redis_url, HOSTED_APP_QUEUE=queue_name, **env),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    try:
        yield [p.pid for p in started]
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def by_name(statuses: list[HostedJobStatus], name: str) -> HostedJobStatus:
    return next(s for s in statuses if s.name == name)


async def test_runs_of_every_process_appear_in_one_status(redis_url: str, queue_name: str) -> None:
    """Runs of a continuous and a per-process cron job in two other processes show up, with
    their process, in this process's status, merged with its own."""
    observer = make_host(queue_name)
    observer.run_worker = False
    with processes(redis_url, queue_name, 2) as pids:
        async with observer.run():
            expected = {*pids, os.getpid()}

            async def everyone_ran() -> list[HostedJobStatus] | None:
                statuses = await observer.status()
                for name in ("tick-tock", "every-second"):
                    status = by_name(statuses, name)
                    ran = {r.pid for r in status.history if r.outcome == "succeeded"}
                    live = {p.pid for p in status.processes}
                    if not expected <= ran or not expected <= live:
                        return None
                return statuses

            statuses = await eventually(everyone_ran, what="runs of all three processes")
    tick = by_name(statuses, "tick-tock")
    finished = [r for r in tick.history if r.finished_at is not None]
    assert all(r.duration_s is not None and r.duration_s >= 0 for r in finished)
    assert all(r.hostname and r.process == f"{r.hostname}:{r.pid}" for r in finished)
    assert tick.last_outcome == "succeeded" and tick.last_started_at is not None
    cron = by_name(statuses, "every-second")
    assert cron.next_run is not None and all(r.scheduled_at for r in cron.history)
    assert cron.to_json()["processes"] and "hostname" in cron.to_json()["history"][0]


async def test_a_killed_process_running_run_lapses(redis_url: str, queue_name: str) -> None:
    """A process killed mid-run stops being counted as running within `PROCESS_TTL_S`."""
    observer = make_host(queue_name, sleeper=True)
    with processes(redis_url, queue_name, 1, HOSTED_APP_SLEEPER="1") as (pid,):
        async with observer.connected():

            async def sleeping() -> HostedJobStatus | None:
                status = by_name(await observer.status(), "sleeper")
                return status if status.running == 1 else None

            status = await eventually(sleeping, what="the sleeper running")
            assert [p.pid for p in status.processes] == [pid]
            assert status.history[0].pid == pid and status.history[0].outcome is None
            os.kill(pid, signal.SIGKILL)

            async def lapsed() -> HostedJobStatus | None:
                status = by_name(await observer.status(), "sleeper")
                return status if status.running == 0 and not status.processes else None

            await eventually(lapsed, what="the killed process's run no longer running")


async def _runs(redis: Redis, queue_name: str) -> list[str]:
    raw = await redis.lrange(f"{queue_name}:runs", 0, -1)  # type: ignore[misc]
    return [item.decode() for item in raw]


def _all_ran(runs: list[str], pids: list[int]) -> bool:
    return all(f"{name} {pid}" in runs for name in ("tick-tock", "every-second") for pid in pids)


async def test_pause_reaches_every_process_and_resume_restarts(
    redis_url: str, queue_name: str
) -> None:
    """Paused: every process says so within a bounded wait, and nothing runs anywhere;
    the cron job records one skipped tick per process; resumed: both run again."""
    observer = make_host(queue_name)
    redis = Redis.from_url(redis_url)
    try:
        with processes(redis_url, queue_name, 2) as pids:
            async with observer.connected():

                async def both_ran() -> bool:
                    runs = await _runs(redis, queue_name)
                    return all(
                        f"{name} {pid}" in runs
                        for name in ("tick-tock", "every-second")
                        for pid in pids
                    )

                await eventually(both_ran, what="both processes running both jobs")
                assert await observer.pause("tick-tock") is True
                assert await observer.pause("every-second") is True
                assert await observer.pause("tick-tock") is False

                async def obeyed() -> bool:
                    statuses = await observer.status()
                    return all(
                        s.paused
                        and {p.pid for p in s.processes} == set(pids)
                        and all(p.paused for p in s.processes)
                        and s.running == 0
                        for s in statuses
                    )

                await eventually(obeyed, timeout=15, what="every process paused")
                before = len(await _runs(redis, queue_name))
                # A fixed window to show that nothing runs (a cron tick comes every second).
                await asyncio.sleep(2.5)
                assert len(await _runs(redis, queue_name)) == before

                async def skips_noted() -> list[RunRecord] | None:
                    cron = by_name(await observer.status(), "every-second")
                    skips = [r for r in cron.history if r.message == PAUSED_MESSAGE]
                    return skips if {r.pid for r in skips} == set(pids) else None

                skips = await eventually(skips_noted, what="one skipped tick per process")
                assert len(skips) == 2
                assert await observer.resume("tick-tock") is True
                assert await observer.resume("every-second") is True

                async def running_again() -> bool:
                    runs = (await _runs(redis, queue_name))[before:]
                    return all(
                        f"{name} {pid}" in runs
                        for name in ("tick-tock", "every-second")
                        for pid in pids
                    )

                await eventually(running_again, what="both processes running again")
                assert not any(s.paused for s in await observer.status())
                with pytest.raises(UnknownJobError, match="no hosted job named 'nope'"):
                    await observer.pause("nope")
    finally:
        await redis.aclose()


def test_pause_and_resume_commands(redis_url: str, queue_name: str) -> None:
    """`hostedjobs pause` / `resume MODULE:ATTR NAME`; an unknown name is an error."""
    env = subprocess_env(HOSTEDJOBS_REDIS_URL=redis_url, HOSTED_APP_QUEUE=queue_name)

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HOSTEDJOBS, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )

    paused = command("pause", "tests.hosted_app:host", "tick-tock")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == "tick-tock: paused"
    status = command("status", "tests.hosted_app:host")
    assert "paused: tick-tock" in status.stdout
    assert command("pause", "tests.hosted_app:host", "tick-tock").stdout.strip() == (
        "tick-tock: already paused"
    )
    resumed = command("resume", "tests.hosted_app:host", "tick-tock")
    assert resumed.stdout.strip() == "tick-tock: resumed"
    unknown = command("pause", "tests.hosted_app:host", "nope")
    assert unknown.returncode == 1
    assert "no hosted job named 'nope'" in unknown.stderr


async def test_redis_outage_does_not_stop_a_continuous_job(
    restartable_redis: RestartableRedis, queue_name: str
) -> None:
    """With Redis gone, a continuous job keeps running; its runs are published once Redis
    is back."""
    host = JobHost(redis_url=restartable_redis.url, queue_name=queue_name, run_worker=False)
    runs = 0

    @host.job(name="counter", interval=timedelta(seconds=0.01))
    async def count(ctx: JobContext) -> None:
        nonlocal runs
        runs += 1

    async with host.run():
        await eventually(lambda: runs > 5, what="the job running")
        restartable_redis.kill()
        at_outage = runs
        await eventually(lambda: runs > at_outage + 200, what="the job running without Redis")
        restartable_redis.start()
        restarted_at = datetime.now(UTC)
        during = runs
        stored = Redis.from_url(restartable_redis.url)
        key = host.scheduler.stores[0].keys.hosted("counter").runs
        try:

            async def published_again() -> bool:
                newest = await stored.lindex(key, 0)
                return (
                    newest is not None
                    and RunRecord.from_json(json.loads(newest)).started_at >= restarted_at
                )

            await eventually(published_again, what="runs published again")
        finally:
            await stored.aclose()
        await eventually(lambda: runs > during, what="the job still running")


async def test_console_pause_resume_and_read_only(redis_url: str, queue_name: str) -> None:
    """Pause and Resume on the hosted pages need auth and the CSRF token, redirect with a
    notice and show the state; without auth the buttons are absent and the POSTs refused."""
    host = make_host(queue_name)
    host.redis_url = redis_url
    host.run_worker = False
    async with host.run():
        async with client_for(host, auth=allow_all) as client:
            token = await csrf_token(client, "/hosted/tick-tock")
            page = await client.get("/hosted/tick-tock")
            assert "/hosted/tick-tock/pause" in page.text and 'id="processes"' in page.text
            paused = await client.post("/hosted/tick-tock/pause", data={"csrf_token": token})
            assert paused.status_code == 303
            assert paused.headers["location"] == "/ops/jobs/hosted/tick-tock?notice=paused"
            page = await client.get("/hosted/tick-tock?notice=paused")
            assert 'id="paused"' in page.text and "/hosted/tick-tock/resume" in page.text
            assert by_name(await host.status(), "tick-tock").paused
            listing = await client.get("/hosted")
            assert 'data-name="tick-tock" data-paused="1"' in listing.text
            refused = await client.post("/hosted/tick-tock/resume", data={"csrf_token": "0" * 64})
            assert refused.status_code == 403
            missing = await client.post("/hosted/nope/pause", data={"csrf_token": token})
            assert missing.status_code == 404
            resumed = await client.post("/hosted/tick-tock/resume", data={"csrf_token": token})
            assert resumed.headers["location"].endswith("?notice=resumed")
            assert not by_name(await host.status(), "tick-tock").paused
        async with client_for(host) as client:
            page = await client.get("/hosted/tick-tock")
            assert "/pause" not in page.text
            assert (await client.post("/hosted/tick-tock/pause")).status_code == 403


async def test_a_paused_distributed_job_skips_its_ticks_once_recorded(
    redis_url: str, queue_name: str
) -> None:
    """Paused, a distributed cron job's ticks are claimed but not run (one skipped entry per
    pause, from whichever process claimed it); resumed, it runs the next tick, with no burst
    of the ticks it missed."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name)
    ticks: list[datetime] = []

    @host.distributed_cron("* * * * * *", name="each-second")
    async def each_second(ctx: JobContext) -> None:
        assert ctx.scheduled_at is not None
        ticks.append(ctx.scheduled_at)

    async with host.run():
        await eventually(lambda: ticks, what="a first run")
        await host.pause("each-second")
        paused_at = datetime.now(UTC)

        async def skip_noted() -> list[RunRecord] | None:
            status = by_name(await host.status(), "each-second")
            skips = [r for r in status.history if r.message == PAUSED_MESSAGE]
            return skips if status.paused and skips else None

        await eventually(skip_noted, what="the paused tick recorded")
        # A fixed window in which three ticks come and go unrun.
        await asyncio.sleep(3)
        skips = await skip_noted()
        assert skips is not None and len(skips) == 1
        ran_while_paused = [t for t in ticks if t > paused_at + timedelta(seconds=1)]
        assert ran_while_paused == []
        await host.resume("each-second")
        resumed_at = datetime.now(UTC)
        await eventually(lambda: ticks[-1] > resumed_at, what="a run after resuming")
        after = [t for t in ticks if t > paused_at + timedelta(seconds=1)]
        assert all(t >= resumed_at - timedelta(seconds=1) for t in after), after
        assert len(after) == len(set(after))
        status = by_name(await host.status(), "each-second")
        assert not status.paused
        ran = next(r for r in status.history if r.outcome == "succeeded")
        assert ran.pid == os.getpid() and ran.hostname
