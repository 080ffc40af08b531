"""Pausing on-demand job types (issue 14, item 3), across real worker processes."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hostedjobs import JobHost, JobStatus
from hostedjobs.exceptions import (
    ConfigurationError,
    HostNotRunningError,
    RedisUnavailableError,
    UnknownJobTypeError,
)
from hostedjobs.pauses import JobPause, PausedJobs
from hostedjobs.testing import wait_for_job
from tests.servers import ROOT, subprocess_env
from tests.test_dashboard import allow_all, client_for, csrf_token
from tests.waiting import eventually
from tests.worker_app import Note

HOSTEDJOBS = str(Path(sys.executable).with_name("hostedjobs"))
NOTE = "tests.worker-app.note"


@contextmanager
def workers(redis_url: str, queue_name: str, logs: list[Path]) -> Iterator[list[Any]]:
    """``hostedjobs worker`` processes, one per log file (their stderr), stopped at the end."""
    env = subprocess_env(HOSTEDJOBS_REDIS_URL=redis_url, WORKER_APP_QUEUE=queue_name)
    command = [HOSTEDJOBS, "worker", "tests.worker_app:host", "--log-level", "INFO"]
    files = [log.open("a") for log in logs]
    processes = [subprocess.Popen(command, env=env, cwd=ROOT, stderr=f) for f in files]
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        for file in files:
            file.close()


async def _all_paused(host: JobHost, ids: Sequence[str]) -> bool:
    """Each job claimed by a worker and parked as paused (so it surely did not run)."""
    return all(
        info is not None
        and info.status is JobStatus.QUEUED
        and (info.message or "").startswith("paused")
        for info in [await host.scheduler.get(i) for i in ids]
    )


async def _beating(host: JobHost, count: int) -> bool:
    return len(await host.workers()) >= count


def _heard(log: Path) -> Callable[[], bool]:
    return lambda: f"job type {NOTE}: paused" in log.read_text()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_a_pause_reaches_every_worker_and_its_jobs_run_once_after_resume(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    out = tmp_path / "notes.txt"
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    with workers(redis_url, queue_name, logs):
        host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
        async with host.connected():
            await eventually(lambda: _beating(host, 2), what="both workers beating")
            assert await host.pause_jobs(NOTE) is True
            assert await host.pause_jobs(NOTE) is False  # already paused
            for log in logs:
                await eventually(_heard(log), what=f"{log.name} heard of the pause")
            ids = [
                await host.scheduler.enqueue(Note(path=str(out), text=f"n{i}")) for i in range(20)
            ]
            await eventually(lambda: _all_paused(host, ids), what="every job parked as paused")
            assert not out.exists()  # parked jobs were claimed, and none ran
            [pause] = await host.paused_jobs()
            assert (pause.job_type, dict(pause.where)) == (NOTE, {})

            assert await host.resume_jobs(NOTE) is True
            for job_id in ids:
                info = await wait_for_job(host, job_id, timeout=60)
                assert info.status is JobStatus.SUCCEEDED
            assert await host.paused_jobs() == []
        texts = [line.split(" pid=")[0] for line in _lines(out)]
        assert sorted(texts) == sorted(f"n{i}" for i in range(20))  # each exactly once
        assert len(_lines(tmp_path / "notes.txt.starts")) == 20


async def test_a_keyed_pause_holds_only_the_matching_payloads(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    out = tmp_path / "notes.txt"
    with workers(redis_url, queue_name, [tmp_path / "worker.log"]):
        host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
        async with host.connected():
            await eventually(lambda: _beating(host, 1), what="the worker beating")
            assert await host.pause_jobs(NOTE, where={"text": "held"}) is True
            await eventually(
                lambda: f"job type {NOTE}: paused" in (tmp_path / "worker.log").read_text(),
                what="the worker heard of the pause",
            )
            held = [
                await host.scheduler.enqueue(Note(path=str(out), text="held")) for _ in range(5)
            ]
            free = [
                await host.scheduler.enqueue(Note(path=str(out), text="free")) for _ in range(5)
            ]
            for job_id in free:
                assert (await wait_for_job(host, job_id, timeout=60)).status is JobStatus.SUCCEEDED
            await eventually(lambda: _all_paused(host, held), what="the held jobs parked")
            assert [line.split(" pid=")[0] for line in _lines(out)] == ["free"] * 5

            # Lifting another pause leaves this one; lifting this one runs the held jobs.
            assert await host.resume_jobs(NOTE, where={"text": "other"}) is False
            assert await host.resume_jobs(NOTE, where={"text": "held"}) is True
            for job_id in held:
                assert (await wait_for_job(host, job_id, timeout=60)).status is JobStatus.SUCCEEDED
        assert sorted(line.split(" pid=")[0] for line in _lines(out)) == ["free"] * 5 + ["held"] * 5


async def test_a_pause_survives_a_worker_restart(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    out = tmp_path / "notes.txt"
    host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    async with host.connected():
        with workers(redis_url, queue_name, [tmp_path / "first.log"]):
            await eventually(lambda: _beating(host, 1), what="the first worker beating")
            await host.pause_jobs(NOTE)
            await eventually(
                lambda: f"job type {NOTE}: paused" in (tmp_path / "first.log").read_text(),
                what="the first worker heard of the pause",
            )
        # The first worker is gone; a new one reads the pause before it claims anything.
        ids = [await host.scheduler.enqueue(Note(path=str(out), text=f"n{i}")) for i in range(3)]
        with workers(redis_url, queue_name, [tmp_path / "second.log"]):
            await eventually(lambda: _all_paused(host, ids), what="the jobs parked as paused")
            assert not out.exists()
            await host.resume_jobs(NOTE)
            for job_id in ids:
                assert (await wait_for_job(host, job_id, timeout=60)).status is JobStatus.SUCCEEDED
    assert sorted(line.split(" pid=")[0] for line in _lines(out)) == ["n0", "n1", "n2"]


async def test_pausing_checks_its_arguments(redis_url: str, queue_name: str) -> None:
    host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    with pytest.raises(HostNotRunningError):
        await host.pause_jobs(NOTE)
    async with host.connected():
        with pytest.raises(UnknownJobTypeError, match="no job type named 'nope'"):
            await host.pause_jobs("nope")
        with pytest.raises(UnknownJobTypeError, match="no job type named 'nope'"):
            await host.resume_jobs("nope")
        with pytest.raises(ConfigurationError, match="at least one payload field"):
            await host.pause_jobs(NOTE, where={})
        for bad in ([1], {"a": 1}, (1, 2), b"x"):
            with pytest.raises(ConfigurationError, match="must be a str, int, float, bool"):
                await host.pause_jobs(NOTE, where={"text": bad})
        assert await host.paused_jobs() == []


async def test_pausing_with_redis_down_raises_redis_unavailable(
    restartable_redis: Any, queue_name: str
) -> None:
    host = JobHost(redis_url=restartable_redis.url, queue_name=queue_name, run_worker=False)
    async with host.connected():
        restartable_redis.stop()
        with pytest.raises(RedisUnavailableError):
            await host.pause_jobs(NOTE)
        with pytest.raises(RedisUnavailableError):
            await host.paused_jobs()


def _cli(*args: str, redis_url: str, queue: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(HOSTEDJOBS_REDIS_URL=redis_url, WORKER_APP_QUEUE=queue)
    return subprocess.run(
        [HOSTEDJOBS, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_the_cli_pauses_lists_and_resumes_job_types(redis_url: str, queue_name: str) -> None:
    app = "tests.worker_app:host"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _cli(*args, redis_url=redis_url, queue=queue_name)

    assert run("paused-jobs", app).stdout.strip() == "no job type is paused"
    assert run("pause-jobs", app, NOTE).stdout.strip() == f"{NOTE}: paused"
    keyed = run("pause-jobs", app, NOTE, "--where", "text=held", "--where", "pause=0")
    assert keyed.stdout.strip() == f'{NOTE} where {{"pause": 0, "text": "held"}}: paused'
    listed = run("paused-jobs", app).stdout.splitlines()
    assert len(listed) == 2
    hint = listed[1].split("to resume: ")[1]
    assert hint == (f"hostedjobs resume-jobs {app} {NOTE} --where pause=0 --where 'text=\"held\"'")
    resumed = run(*shlex.split(hint)[1:])
    assert resumed.stdout.strip() == f'{NOTE} where {{"pause": 0, "text": "held"}}: resumed'
    [pause] = json.loads(run("paused-jobs", app, "--json").stdout)
    assert (pause["job_type"], pause["where"]) == (NOTE, {})
    assert run("resume-jobs", app, NOTE).stdout.strip() == f"{NOTE}: resumed"
    assert run("resume-jobs", app, NOTE).stdout.strip() == f"{NOTE}: not paused"

    unknown = run("pause-jobs", app, "nope")
    assert unknown.returncode == 1
    assert "error: no job type named 'nope'" in unknown.stderr
    bad = run("pause-jobs", app, NOTE, "--where", "text")
    assert (bad.returncode, bad.stderr.strip()) == (
        1,
        "error: --where takes field=value, not 'text'",
    )
    nested = run("pause-jobs", app, NOTE, "--where", "text=[1]")
    assert nested.returncode == 1
    assert "must be a str, int, float, bool or None" in nested.stderr


def test_the_cli_reports_redis_down(queue_name: str) -> None:
    down = _cli(
        "pause-jobs",
        "tests.worker_app:host",
        NOTE,
        redis_url="redis://127.0.0.1:1/0",
        queue=queue_name,
    )
    assert down.returncode == 1
    assert down.stderr.startswith("error: ")


async def test_console_pause_resume_held_count_and_read_only(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    """Pause and Resume on the job type pages need auth and the CSRF token; the paused
    badge and the held count show; without auth the buttons are absent and POSTs refused."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    async with host.connected():
        async with client_for(host, auth=allow_all) as client:
            token = await csrf_token(client, f"/types/{NOTE}")
            assert f"/types/{NOTE}/pause" in (await client.get(f"/types/{NOTE}")).text
            paused = await client.post(f"/types/{NOTE}/pause", data={"csrf_token": token})
            assert paused.status_code == 303
            assert paused.headers["location"] == f"/ops/jobs/types/{NOTE}?notice=type-paused"
            assert [p.job_type for p in await host.paused_jobs()] == [NOTE]
            await host.pause_jobs(NOTE, where={"text": "x"})
            # A worker parks the queued job, holding it in the queue.
            with workers(redis_url, queue_name, [tmp_path / "worker.log"]):
                job_id = await host.scheduler.enqueue(Note(path=str(tmp_path / "n"), text="x"))
                await eventually(lambda: _all_paused(host, [job_id]), what="the job parked")
            page = (await client.get(f"/types/{NOTE}?notice=type-paused")).text
            assert 'id="paused"' in page and f"/types/{NOTE}/resume" in page
            assert '<dd id="held">1</dd>' in page
            assert 'paused: every job; the jobs where text = "x" (workers' in page
            listing = (await client.get("/types")).text
            assert (
                f'<tr data-name="{NOTE}">' in listing
                and '<td data-label="Held" class="held">1' in listing
            )
            refused = await client.post(f"/types/{NOTE}/resume", data={"csrf_token": "0" * 64})
            assert refused.status_code == 403
            unknown = await client.post("/types/nope/pause", data={"csrf_token": token})
            assert unknown.status_code == 404 and "no job type named" in unknown.text
            resumed = await client.post(f"/types/{NOTE}/resume", data={"csrf_token": token})
            assert resumed.headers["location"].endswith("?notice=type-resumed")
            assert await host.paused_jobs() == []
            assert (await host.scheduler.get(job_id)) is not None
            assert await host.scheduler.parked() == {}
        async with client_for(host) as client:
            read_only = await client.get(f"/types/{NOTE}")
            assert "/pause" not in read_only.text
            assert (await client.post(f"/types/{NOTE}/pause")).status_code == 403


def test_a_keyed_pause_compares_payload_fields_as_json() -> None:
    pauses = PausedJobs()
    pauses.apply([JobPause("t", {"id": 1, "vip": True, "note": None}, datetime.now(UTC))])
    assert pauses.types == {"t"}
    assert pauses.holds("t", [{"id": 1, "vip": True, "note": None, "other": "x"}])
    assert pauses.holds("t", [{"id": 1.0, "vip": True, "note": None}])
    assert not pauses.holds("t", [{"id": True, "vip": True, "note": None}])  # true is not 1
    assert not pauses.holds("t", [{"id": 1, "vip": 1, "note": None}])
    assert not pauses.holds("t", [{"id": 1, "vip": True}])  # a missing field is not None
    assert not pauses.holds("t", [{"id": "1", "vip": True, "note": None}])
    assert not pauses.holds("t", [])
    assert not pauses.holds("t", ["not an object"])
    pauses.apply([JobPause("t", {}, datetime.now(UTC))])
    assert pauses.holds("t", [])
    pauses.apply([])
    assert pauses.types == frozenset()


async def test_pausing_and_resuming_in_quick_turns_loses_and_repeats_no_job(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    """Resumes and pauses racing the workers' parks and claims (each worker hears of them at
    its own moment): once the last pause is lifted, every job ran exactly once."""
    out = tmp_path / "notes.txt"
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    with workers(redis_url, queue_name, logs):
        host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
        async with host.connected():
            await eventually(lambda: _beating(host, 2), what="both workers beating")
            await host.pause_jobs(NOTE)
            for log in logs:
                await eventually(_heard(log), what=f"{log.name} heard of the pause")
            ids = [
                await host.scheduler.enqueue(Note(path=str(out), text=f"n{i}")) for i in range(60)
            ]
            for turn in range(10):
                await host.resume_jobs(NOTE)
                await host.pause_jobs(NOTE, where={"text": f"n{turn}"} if turn % 2 else None)
            await host.resume_jobs(NOTE)
            for job_id in ids:
                info = await wait_for_job(host, job_id, timeout=60)
                assert info.status is JobStatus.SUCCEEDED
            assert await host.scheduler.parked() == {}
        texts = [line.split(" pid=")[0] for line in _lines(out)]
        assert sorted(texts) == sorted(f"n{i}" for i in range(60))
        assert len(_lines(tmp_path / "notes.txt.starts")) == 60


async def test_a_held_job_can_be_cancelled_or_deleted(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    """A job held by a pause (parked) is queued to the operator, and is cancelled or deleted
    like one: it ends cancelled, leaves the held count, and does not run after the resume."""
    host = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    async with host.connected():
        await host.pause_jobs(NOTE)
        out = tmp_path / "notes"
        with workers(redis_url, queue_name, [tmp_path / "worker.log"]):
            held = [
                await host.scheduler.enqueue(Note(path=str(out), text=t)) for t in ("a", "b", "c")
            ]
            await eventually(lambda: _all_paused(host, held), what="the jobs parked")
            assert await host.scheduler.parked() == {NOTE: 3}
            assert await host.scheduler.cancel(held[0])
            assert await host.scheduler.delete(held[1])
            cancelled = await host.scheduler.get(held[0])
            assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
            assert await host.scheduler.parked() == {NOTE: 1}
            assert await host.resume_jobs(NOTE)
            await wait_for_job(host, held[2], timeout=60)
        assert [line.split()[0] for line in _lines(out)] == ["c"]
        again = await host.scheduler.get(held[0])
        assert again is not None and again.status is JobStatus.CANCELLED
