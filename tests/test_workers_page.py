"""The workers page and the heartbeats behind it, with real worker processes on a real Redis.

What a browser does with the page is in `test_dashboard_workers_browser.py`.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from hostedjobs import JobHost, job_type
from hostedjobs.health import RUNNING_LISTED, WorkerBeat
from hostedjobs.storage import KeyLayout
from hostedjobs.testing import wait_for_job
from tests.servers import ROOT, subprocess_env
from tests.test_dashboard import Note as DashboardNote
from tests.test_dashboard import client_for, make_host
from tests.waiting import eventually
from tests.worker_app import Note

HOSTEDJOBS = str(Path(sys.executable).with_name("hostedjobs"))


@job_type("tests.workers-page.held")
@dataclass
class Held:
    """A job that waits for the test to let it finish (or not)."""

    wait: bool


@contextmanager
def worker_process(
    redis_url: str, queue_name: str, *args: str, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A `hostedjobs worker tests.worker_app:host` process; killed at the end if still up."""
    process = subprocess.Popen(
        [HOSTEDJOBS, "worker", "tests.worker_app:host", *args],
        env=subprocess_env(HOSTEDJOBS_REDIS_URL=redis_url, WORKER_APP_QUEUE=queue_name, **env),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)


def rows(html: str) -> dict[str, str]:
    """The workers table's rows by worker id."""
    return dict(re.findall(r'<tr data-worker="([^"]+)"(.*?)</tr>', html, re.S))


def state_of(row: str) -> str:
    match = re.search(r'data-state="(\w+)"', row)
    assert match, row
    return match.group(1)


async def test_worker_processes_show_with_pid_host_concurrency_and_running_jobs(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    """Two worker processes appear with their pid, host and concurrency; a running job shows
    on its worker with a link; a worker killed with SIGKILL shows stale, then gone, and its
    job moves to the other worker."""
    out = tmp_path / "notes.txt"
    viewer = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    with (
        worker_process(redis_url, queue_name, "--concurrency", "3") as first,
        worker_process(redis_url, queue_name, "--concurrency", "5") as second,
    ):
        async with viewer.run(), client_for(viewer) as client:

            async def page() -> dict[str, str]:
                answer = await client.get("/workers")
                assert answer.status_code == 200
                return rows(answer.text)

            await eventually(lambda: _len_is(viewer, 2), what="both workers beat")
            beats = {beat.pid: beat for beat in await viewer.workers()}
            assert set(beats) == {first.pid, second.pid}
            assert beats[first.pid].concurrency == 3
            assert beats[second.pid].concurrency == 5
            assert {beat.hostname for beat in beats.values()} == {socket.gethostname()}
            assert all(beat.shard is None and beats[pid].shards == 1 for pid, beat in beats.items())
            listed = await page()
            for pid, beat in beats.items():
                row = listed[beat.worker_id]
                assert state_of(row) == "alive"
                assert f'<span class="pid">{pid}</span>' in row
                assert f'<span class="host">{socket.gethostname()}</span>' in row
                assert f'class="concurrency">{beat.concurrency}' in row

            job_id = await viewer.scheduler.enqueue(
                Note(path=str(out), text="long", pause=3600, pause_on_retry=3600)
            )
            starts = out.with_name(out.name + ".starts")
            await eventually(starts.exists, what="the long job started")
            pid = int(starts.read_text().split("pid=")[1].split()[0])
            runner, other = (first, second) if pid == first.pid else (second, first)

            async def running_on(pid: int) -> str | None:
                beat = next((b for b in await viewer.workers() if b.pid == pid), None)
                if beat is None or [job.job_id for job in beat.running_jobs] != [job_id]:
                    return None
                return beat.worker_id

            runner_id = await eventually(lambda: running_on(runner.pid), what="the beat lists it")
            beat = next(b for b in await viewer.workers() if b.pid == runner.pid)
            assert beat.running == 1
            assert beat.running_jobs[0].function.startswith("tests.worker-app.note")
            row = (await page())[runner_id]
            assert f'href="/ops/jobs/jobs/view?id={job_id}"' in row
            assert "tests.worker-app.note" in row

            runner.send_signal(signal.SIGKILL)
            runner.wait(timeout=60)

            async def shown(wanted: str) -> bool:
                listed = await page()
                return runner_id in listed and state_of(listed[runner_id]) == wanted

            # Stale once two beats are missed, while its heartbeat has not expired yet.
            await eventually(lambda: shown("stale"), interval=0.1, what="shown stale")
            await eventually(lambda: shown("gone"), what="shown gone")
            other_id = next(b.worker_id for b in await viewer.workers() if b.pid == other.pid)
            assert state_of((await page())[other_id]) == "alive"
            # Its lease lapsed and the other worker gave the job back and took it.
            await eventually(lambda: running_on(other.pid), what="the job moved")
            row = (await page())[runner_id]
            assert re.search(r"lease (lapsed|none)", row), row


async def _len_is(host: JobHost, count: int) -> bool:
    return len(await host.workers()) == count


async def test_sharded_workers_name_their_shard_on_the_page_and_in_health(
    redis_url: str, queue_name: str
) -> None:
    """A process serving 2 shards beats once per shard; the page and `hostedjobs health`
    name each worker's shard, and the concurrency is the process's, shared."""
    viewer = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False, shards=2)
    with worker_process(redis_url, queue_name, "--concurrency", "4", WORKER_APP_SHARDS="2") as p:
        async with viewer.run(), client_for(viewer) as client:
            await eventually(lambda: _len_is(viewer, 2), what="both shard workers beat")
            beats = sorted(await viewer.workers(), key=lambda beat: beat.shard or 0)
            assert [(b.shard, b.shards, b.pid, b.concurrency) for b in beats] == [
                (0, 2, p.pid, 4),
                (1, 2, p.pid, 4),
            ]
            listed = rows((await client.get("/workers")).text)
            for beat in beats:
                assert f"shard {beat.shard} of 2" in listed[beat.worker_id]
                assert beat.queue in listed[beat.worker_id]
        health = subprocess.run(
            [HOSTEDJOBS, "health", "tests.worker_app:host"],
            env=subprocess_env(
                HOSTEDJOBS_REDIS_URL=redis_url, WORKER_APP_QUEUE=queue_name, WORKER_APP_SHARDS="2"
            ),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert health.returncode == 0, health.stderr
    lines = health.stdout.splitlines()
    assert len(lines) == 2, health.stdout
    for beat in beats:
        named = f"ok: worker {beat.worker_id} (shard {beat.shard} of 2, {beat.queue}) beat "
        assert any(line.startswith(named) for line in lines), (named, lines)


async def test_beats_list_running_jobs_bounded_with_the_total_and_a_rate(
    redis_url: str, queue_name: str
) -> None:
    """A heartbeat lists the first RUNNING_LISTED running jobs and counts them all; after
    jobs finish, its rate is the jobs finished over its recent beats."""
    release = asyncio.Event()
    host = JobHost(redis_url=redis_url, queue_name=queue_name, concurrency=RUNNING_LISTED + 10)

    @host.handler(Held)
    async def held(job: Held) -> None:
        if job.wait:
            await release.wait()

    async with host.run():
        await eventually(lambda: _len_is(host, 1), what="the worker beat")
        quick = await host.scheduler.enqueue_many(Held(wait=False) for _ in range(10))
        for job_id in quick:
            await wait_for_job(host, job_id)
        waiting = await host.scheduler.enqueue_many(
            Held(wait=True) for _ in range(RUNNING_LISTED + 5)
        )

        async def all_listed() -> WorkerBeat | None:
            (beat,) = await host.workers()
            return beat if beat.running == RUNNING_LISTED + 5 else None

        beat = await eventually(all_listed, what="every held job in the beat")
        assert len(beat.running_jobs) == RUNNING_LISTED
        assert {job.job_id for job in beat.running_jobs} < set(waiting)
        assert {job.function for job in beat.running_jobs} == {"tests.workers-page.held@1"}
        assert beat.concurrency == RUNNING_LISTED + 10
        assert beat.recent_finished > 0  # the quick jobs, finished since its first beat
        assert beat.rate_per_s == beat.recent_finished / beat.recent_s
        async with client_for(host) as client:
            page = (await client.get("/workers")).text
        assert "and 5 more" in page
        assert page.count('href="/ops/jobs/jobs/') == RUNNING_LISTED
        release.set()
        for job_id in waiting:
            await wait_for_job(host, job_id)


async def test_heartbeats_of_older_versions_still_read(redis_url: str, queue_name: str) -> None:
    """A beat without the newer fields reads with their defaults; one hostedjobs cannot read
    is skipped; a worker whose beat expired without a clean stop is listed as gone."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    keys = KeyLayout(queue_name)
    now = time.time()
    old = {
        "worker_id": "old:1:abc",
        "hostname": "old-host",
        "pid": 1,
        "queue": queue_name,
        "started_at": now - 60,
        "beat_at": now,
        "running": 2,
        "completed": 7,
        "failed": 1,
        "retried": 0,
        "functions": ["a@1"],
        "from_the_future": True,
    }
    probe = aioredis.Redis.from_url(redis_url)
    try:
        await probe.set(keys.worker("old:1:abc"), json.dumps(old), px=10_000)
        await probe.set(keys.worker("junk:1:abc"), b"\xff not json", px=10_000)
        await probe.zadd(
            keys.workers,
            {"old:1:abc": now * 1000, "junk:1:abc": now * 1000, "gone:1:abc": (now - 120) * 1000},
        )
        async with host.run(), client_for(host) as client:
            (beat,) = await host.workers()
            assert (beat.worker_id, beat.running, beat.functions) == ("old:1:abc", 2, ("a@1",))
            assert (beat.concurrency, beat.running_jobs, beat.shard, beat.shards) == (
                0,
                (),
                None,
                1,
            )
            assert beat.rate_per_s is None
            states = {state.worker_id: state for state in await host.worker_states()}
            assert states["old:1:abc"].state == "alive"
            assert states["old:1:abc"].lease == "none"
            assert states["gone:1:abc"].state == "gone"
            assert states["junk:1:abc"].state == "gone"  # unreadable: shown without details
            page = await client.get("/workers")
        assert page.status_code == 200
        listed = rows(page.text)
        assert state_of(listed["old:1:abc"]) == "alive"
        assert state_of(listed["gone:1:abc"]) == "gone"
        assert "2 min ago" in listed["gone:1:abc"]
    finally:
        await probe.aclose()


async def test_the_workers_page_never_scans_the_keyspace(redis_url: str, queue_name: str) -> None:
    """The workers page reads the heartbeat index, the beats and the leases: no KEYS or SCAN,
    and a fixed number of round trips whatever the number of workers."""
    host = make_host(redis_url, queue_name)
    probe = aioredis.Redis.from_url(redis_url)
    try:
        async with host.run(), client_for(host) as client:
            await wait_for_job(host, await host.scheduler.enqueue(DashboardNote(text="a")))
            await eventually(lambda: _len_is(host, 1), what="the worker beat")
            before = await probe.info("commandstats")
            assert (await client.get("/workers")).status_code == 200
            after = await probe.info("commandstats")
    finally:
        await probe.aclose()
    for command in ("cmdstat_keys", "cmdstat_scan"):
        calls = after.get(command, {}).get("calls", 0) - before.get(command, {}).get("calls", 0)
        assert calls == 0, command
