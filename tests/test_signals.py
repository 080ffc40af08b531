"""Signals to real processes: a second one cancels running jobs at once, which go back to
the queue unchanged, and the process exits promptly.

`hostedjobs worker` handles SIGTERM and SIGINT itself. Under uvicorn, hostedjobs installs no
signal handler: uvicorn's own force quit (a second Ctrl-C) is what cuts the grace there.
Every grace here is an hour, so a process that waited it out would fail the test's deadline.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hostedjobs import JobHost, JobStatus
from tests.servers import ROOT, free_port, subprocess_env
from tests.waiting import DEADLINE_S, eventually, eventually_sync
from tests.worker_app import Note

HOSTEDJOBS = str(Path(sys.executable).with_name("hostedjobs"))
HOUR_S = "3600"


class Process:
    """A child process whose combined output is collected line by line as it comes."""

    def __init__(self, args: list[str], **env: str) -> None:
        self.popen = subprocess.Popen(
            args,
            env=subprocess_env(**env),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self) -> int:
        """The exit code; fails the test if the process is still running after the deadline."""
        try:
            return self.popen.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the process did not exit within {DEADLINE_S:.0f} s:\n{self.output}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._reader.join(timeout=10)
        assert self.popen.stdout is not None
        self.popen.stdout.close()


@contextmanager
def started(args: list[str], **env: str) -> Iterator[Process]:
    process = Process(args, **env)
    try:
        yield process
    finally:
        process.stop()


def worker_args() -> list[str]:
    return [HOSTEDJOBS, "worker", "tests.worker_app:host"]


async def run_until_running(
    process: Process, redis_url: str, queue_name: str, out: Path, *, in_thread: bool = False
) -> str:
    """Enqueue an hour-long note and wait until ``process`` runs it; returns the job id."""
    enqueuer = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    async with enqueuer.run():
        job_id = await enqueuer.scheduler.enqueue(
            Note(path=str(out), text="long", pause=3600, in_thread=in_thread)
        )
        starts = out.with_name(out.name + ".starts")
        await eventually(starts.exists, what=lambda: f"the job started:\n{process.output}")
    return job_id


async def assert_back_in_the_queue(redis_url: str, queue_name: str, job_id: str) -> None:
    """The job is queued again, as it was: no try counted, same payload, never finished."""
    reader = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    async with reader.run():
        info = await reader.scheduler.get(job_id)
    assert info is not None
    assert (info.status, info.tries, info.error) == (JobStatus.QUEUED, 0, None)
    assert info.payload["pause"] == 3600


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (signal.SIGTERM, signal.SIGTERM),
        (signal.SIGINT, signal.SIGINT),
        (signal.SIGTERM, signal.SIGINT),
    ],
    ids=["term-term", "int-int", "term-int"],
)
async def test_a_second_signal_cancels_the_worker_process_runs_at_once(
    redis_url: str, queue_name: str, tmp_path: Path, first: int, second: int
) -> None:
    """The first signal starts the hour's grace; the second cancels the run now, the job
    goes back to the queue unchanged, and the process exits 0 well within the hour."""
    out = tmp_path / "notes.txt"
    env = {"HOSTEDJOBS_REDIS_URL": redis_url, "WORKER_APP_QUEUE": queue_name}
    with started(worker_args(), WORKER_APP_GRACE=HOUR_S, **env) as worker:
        job_id = await run_until_running(worker, redis_url, queue_name, out)
        worker.signal(first)
        await eventually(lambda: worker.said("waiting up to 3600.0s"), what="the grace began")
        worker.signal(second)
        assert worker.wait() == 0, worker.output
    assert "cancelling running jobs now" in worker.output
    assert not out.exists()  # the run never got to its end
    await assert_back_in_the_queue(redis_url, queue_name, job_id)


async def test_a_second_signal_does_not_wait_for_a_thread_running_the_job(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    """A run blocked in ``asyncio.to_thread`` is cancelled at once too, and the process
    exits without waiting for the thread (it used to stay until the thread's hour was up,
    after the job had already gone back to the queue)."""
    out = tmp_path / "notes.txt"
    env = {"HOSTEDJOBS_REDIS_URL": redis_url, "WORKER_APP_QUEUE": queue_name}
    with started(worker_args(), WORKER_APP_GRACE=HOUR_S, **env) as worker:
        job_id = await run_until_running(worker, redis_url, queue_name, out, in_thread=True)
        worker.signal(signal.SIGTERM)
        await eventually(lambda: worker.said("waiting up to 3600.0s"), what="the grace began")
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0, worker.output
    assert "exiting without waiting for threads" in worker.output
    await assert_back_in_the_queue(redis_url, queue_name, job_id)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["term", "int"])
def test_a_signal_during_a_blocking_startup_action_stops_the_worker(
    redis_url: str, queue_name: str, tmp_path: Path, signum: int
) -> None:
    """A signal while a blocking startup action runs stops the process at once (it used to
    be ignored, the second one too, until the action ended)."""
    marker = tmp_path / "migrating"
    env = {"HOSTEDJOBS_REDIS_URL": redis_url, "WORKER_APP_QUEUE": queue_name}
    with started(worker_args(), WORKER_APP_STARTUP_MARKER=str(marker), **env) as worker:
        eventually_sync(marker.exists, what=lambda: f"the action started:\n{worker.output}")
        worker.signal(signum)
        assert worker.wait() == 0, worker.output
    assert "while starting: stopping now" in worker.output


async def test_a_second_ctrl_c_under_uvicorn_cancels_runs_at_once(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    """Under uvicorn a second SIGINT during the lifespan shutdown (uvicorn's force quit)
    cancels the runs now; the job goes back to the queue unchanged and uvicorn exits. (The
    lifespan shutdown used to wait out the whole grace: uvicorn waits for it.)"""
    out = tmp_path / "notes.txt"
    server = [sys.executable, "-m", "uvicorn", "tests.worker_app:app", "--port", str(free_port())]
    env = {"HOSTEDJOBS_REDIS_URL": redis_url, "WORKER_APP_QUEUE": queue_name}
    with started(server, WORKER_APP_GRACE=HOUR_S, **env) as uvicorn:
        job_id = await run_until_running(uvicorn, redis_url, queue_name, out)
        uvicorn.signal(signal.SIGINT)
        await eventually(lambda: uvicorn.said("Waiting for application shutdown"))
        uvicorn.signal(signal.SIGINT)
        uvicorn.wait()  # uvicorn re-raises the SIGINT it handled: the code is not 0
    assert "the server is forcing its exit" in uvicorn.output
    assert "Application shutdown complete" in uvicorn.output
    await assert_back_in_the_queue(redis_url, queue_name, job_id)
