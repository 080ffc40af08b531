"""Cancelling on-demand jobs: queued ones never run, running ones stop on their worker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

from arq.jobs import Job

from hostedjobs import Inject, JobHost, JobStatus, Services, job_type
from hostedjobs.serialization import loads
from hostedjobs.testing import wait_for_job
from tests.servers import ROOT, subprocess_env
from tests.waiting import eventually
from tests.worker_app import Note

HOSTEDJOBS = str(Path(sys.executable).with_name("hostedjobs"))


@job_type("tests.cancel.sleep")
@dataclass
class Sleep:
    seconds: float


class Resource:
    """A scoped service that records how its scope ended."""

    ends: ClassVar[list[BaseException | None]] = []


async def open_resource() -> AsyncIterator[Resource]:
    try:
        yield Resource()
    except BaseException as exc:
        Resource.ends.append(exc)
        raise
    Resource.ends.append(None)


def make_host(redis_url: str, queue_name: str, started: asyncio.Event) -> JobHost:
    services = Services().add_scoped(Resource, open_resource)
    host = JobHost(services=services, redis_url=redis_url, queue_name=queue_name)

    @host.handler(Sleep)
    async def sleep(job: Sleep, resource: Resource = Inject()) -> str:
        started.set()
        await asyncio.sleep(job.seconds)
        return "slept"

    return host


async def test_a_queued_or_scheduled_job_is_cancelled_and_never_runs(
    redis_url: str, queue_name: str
) -> None:
    """A scheduled job cancelled before it is due ends cancelled, keeps its payload, never
    runs; cancelling it again, or an unknown id, changes nothing."""
    started = asyncio.Event()
    host = make_host(redis_url, queue_name, started)
    async with host.run():
        job_id = await host.scheduler.schedule(Sleep(seconds=0), delay=timedelta(hours=1))
        assert await host.scheduler.cancel(job_id) is True
        info = await host.scheduler.get(job_id)
        assert info is not None
        assert (info.status, info.payload) == (JobStatus.CANCELLED, {"seconds": 0})
        assert info.message == "cancelled before it started"
        assert await host.scheduler.cancel(job_id) is False
        assert await host.scheduler.cancel("no-such-job") is False
        assert await host.scheduler.delete(job_id) is False
        assert [i.id for i in await host.scheduler.jobs(JobStatus.CANCELLED)] == [job_id]
        assert (await host.scheduler.counts())[JobStatus.SCHEDULED] == 0
    assert not started.is_set()


async def test_a_running_job_is_cancelled_on_its_worker(redis_url: str, queue_name: str) -> None:
    """The run is cancelled within about a second, its scope sees the cancellation, and the
    job ends cancelled (not retried, not failed)."""
    started = asyncio.Event()
    host = make_host(redis_url, queue_name, started)
    Resource.ends.clear()
    async with host.run():
        job_id = await host.scheduler.enqueue(Sleep(seconds=3600))
        await asyncio.wait_for(started.wait(), 30)
        assert await host.scheduler.cancel(job_id) is True
        info = await wait_for_job(host, job_id, timeout=30)
        assert (info.status, info.tries, info.result) == (JobStatus.CANCELLED, 1, None)
        assert info.message == "cancelled while it ran"
        assert await host.scheduler.cancel(job_id) is False
        assert await host.scheduler.retry(job_id) is False
    (end,) = Resource.ends
    assert isinstance(end, asyncio.CancelledError)


async def test_stock_arq_abort_cancels_a_job_running_on_a_hostedjobs_worker(
    redis_url: str, queue_name: str
) -> None:
    """arq's own ``Job.abort()`` flags the job in arq's abort set, which the worker honours."""
    started = asyncio.Event()
    host = make_host(redis_url, queue_name, started)
    async with host.run():
        job_id = await host.scheduler.enqueue(Sleep(seconds=3600))
        await asyncio.wait_for(started.wait(), 30)
        job = Job(job_id, host.scheduler.pool, _queue_name=queue_name, _deserializer=loads)
        # Stock abort then waits for a result it can read as "aborted"; the result is JSON, so
        # it cannot: only the cancellation itself is checked.
        abort = asyncio.create_task(job.abort(timeout=30, poll_delay=0.05))
        info = await wait_for_job(host, job_id, timeout=30)
        assert info.status is JobStatus.CANCELLED
        await asyncio.gather(abort, return_exceptions=True)


async def test_the_cancel_command_stops_a_job_running_in_a_worker_process(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    """`hostedjobs cancel MODULE:ATTR JOB_ID`, in its own process, stops a long job running
    in a `hostedjobs worker` process: the run ends cancelled and the command exits 0 saying
    so; an unknown or finished job exits 1 with the reason."""
    out = tmp_path / "notes.txt"
    env = subprocess_env(HOSTEDJOBS_REDIS_URL=redis_url, WORKER_APP_QUEUE=queue_name)
    worker = subprocess.Popen(
        [HOSTEDJOBS, "worker", "tests.worker_app:host"],
        env=env,
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )

    def cancel(job_id: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HOSTEDJOBS, "cancel", "tests.worker_app:host", job_id],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    try:
        enqueuer = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
        async with enqueuer.run():
            job_id = await enqueuer.scheduler.enqueue(Note(path=str(out), text="long", pause=3600))
            starts = out.with_name(out.name + ".starts")
            await eventually(starts.exists, what="the job started in the worker process")
            done = await asyncio.to_thread(cancel, job_id)
            assert done.returncode == 0, done.stderr
            assert f"asked the worker running {job_id}" in done.stdout
            assert f"{job_id}: cancelled" in done.stdout
            info = await enqueuer.scheduler.get(job_id)
            assert info is not None
            assert (info.status, info.message) == (JobStatus.CANCELLED, "cancelled while it ran")
            assert not out.exists()

            again = await asyncio.to_thread(cancel, job_id)
            assert again.returncode == 1
            assert "has already finished: cancelled" in again.stderr
            unknown = await asyncio.to_thread(cancel, "no-such-job")
            assert unknown.returncode == 1
            assert "no job 'no-such-job'" in unknown.stderr
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
