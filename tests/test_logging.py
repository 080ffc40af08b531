"""Log records about runs carry structured fields, successful runs stay out of INFO, and
under a plain uvicorn hostedjobs' INFO records show."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hostedjobs import JobContext, JobHost, RetryPolicy, job_type
from hostedjobs.testing import wait_for_job
from tests.servers import ROOT, free_port, subprocess_env
from tests.waiting import eventually, eventually_sync


@job_type("tests.logging.task")
@dataclass
class Task:
    fail_until_try: int = 0


def make_host(redis_url: str, queue_name: str) -> JobHost:
    host = JobHost(
        redis_url=redis_url,
        queue_name=queue_name,
        retry=RetryPolicy(max_tries=2, backoff=timedelta(milliseconds=10)),
    )

    @host.handler(Task)
    async def task(job: Task, ctx: JobContext) -> None:
        if ctx.attempt <= job.fail_until_try:
            raise RuntimeError(f"try {ctx.attempt}")

    return host


def about(caplog: pytest.LogCaptureFixture, run_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "run_id", None) == run_id]


async def test_retried_and_failed_tries_log_their_fields(
    redis_url: str, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A retried try is a WARNING, the final failure one ERROR, both with the run's fields."""
    caplog.set_level(logging.INFO, logger="hostedjobs")
    host = make_host(redis_url, queue_name)
    async with host.run():
        job_id = await host.scheduler.enqueue(Task(fail_until_try=5))
        await wait_for_job(host, job_id)
    retried, failed = about(caplog, job_id)
    assert (retried.name, retried.levelno) == ("hostedjobs.run", logging.WARNING)
    assert retried.__dict__["job_name"] == "tests.logging.task"
    assert retried.__dict__["attempt"] == 1
    assert retried.__dict__["outcome"] == "retried"
    assert retried.__dict__["error_type"] == "RuntimeError"
    assert retried.__dict__["duration_s"] >= 0
    assert (failed.name, failed.levelno) == ("hostedjobs.run", logging.ERROR)
    assert failed.__dict__["job_name"] == "tests.logging.task"
    assert failed.__dict__["attempt"] == 2
    assert failed.__dict__["outcome"] == "failed"
    assert failed.__dict__["duration_s"] >= 0
    assert failed.exc_info is not None


async def test_successful_runs_log_only_at_debug(
    redis_url: str, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """At INFO a successful run logs nothing; at DEBUG one record with its outcome and time."""
    host = make_host(redis_url, queue_name)

    @host.job(iteration_limit=1, name="tidy")
    async def tidy() -> None:
        return None

    caplog.set_level(logging.INFO, logger="hostedjobs")
    async with host.run():
        quiet = await host.scheduler.enqueue(Task())
        await wait_for_job(host, quiet)
        caplog.set_level(logging.DEBUG, logger="hostedjobs")
        loud = await host.scheduler.enqueue(Task())
        await wait_for_job(host, loud)
        await eventually(lambda: about(caplog, loud), what="the run's record")
    # Nothing at INFO (a DEBUG record of it may come after the switch to DEBUG above).
    assert [r for r in about(caplog, quiet) if r.levelno >= logging.INFO] == []
    (record,) = about(caplog, loud)
    assert record.levelno == logging.DEBUG
    assert record.__dict__["outcome"] == "succeeded"
    assert record.__dict__["duration_s"] >= 0


async def test_hosted_failures_and_unrunnable_jobs_carry_fields(
    redis_url: str, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed hosted run and a job that cannot run are logged with outcome and duration."""
    caplog.set_level(logging.DEBUG, logger="hostedjobs")
    host = make_host(redis_url, queue_name)

    @host.job(iteration_limit=2, name="flaky-loop", failure_backoff=0)
    async def flaky_loop(ctx: JobContext) -> None:
        if ctx.run_id:
            raise ValueError("nope")

    async with host.run():
        # A queued id whose job record expired: the worker cannot run it.
        async with host.scheduler.pool.pipeline(transaction=False) as pipe:
            pipe.zadd(queue_name, {"ghost": int(time.time() * 1000)})
            pipe.lpush(f"{queue_name}:wake", b"1")
            await pipe.execute()
        await eventually(
            lambda: about(caplog, "ghost") and len(_named(caplog, "flaky-loop")) >= 2,
            what="the ghost's and both failures' records",
        )
    (ghost,) = about(caplog, "ghost")
    assert ghost.levelno == logging.WARNING
    assert ghost.__dict__["outcome"] == "failed"
    failures = _named(caplog, "flaky-loop")
    assert [r.levelno for r in failures] == [logging.ERROR, logging.ERROR]
    assert all(r.__dict__["outcome"] == "failed" for r in failures)
    assert all(r.__dict__["duration_s"] >= 0 for r in failures)


def _named(caplog: pytest.LogCaptureFixture, job_name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "job_name", None) == job_name]


def _serve_logging_app(tmp_path: Path, redis_url: str, queue_name: str, *args: str) -> Any:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.logging_app:app",
            "--port",
            str(free_port()),
            *args,
        ],
        env=subprocess_env(
            HOSTEDJOBS_REDIS_URL=redis_url, LOGGING_APP_QUEUE=queue_name, OUT_DIR=str(tmp_path)
        ),
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(server: Any) -> str:
    server.send_signal(signal.SIGINT)
    _, stderr = server.communicate(timeout=60)
    return str(stderr)


def test_under_plain_uvicorn_the_start_line_and_run_logs_show(
    tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    """Under ``uvicorn app:app`` with no logging configured, hostedjobs' INFO records showed
    nowhere (Python's last resort prints WARNING and up): now they go to uvicorn's handlers."""
    server = _serve_logging_app(tmp_path, redis_url, queue_name)
    try:
        eventually_sync(lambda: (tmp_path / "welcomed").exists(), what="the job run")
    finally:
        stderr = _stop(server)
    assert f"INFO:     hostedjobs started on {redis_url}, queue {queue_name!r}" in stderr, stderr
    assert "running a worker" in stderr and "hosted jobs: sign_up" in stderr, stderr
    assert "welcomed ada@example.com" in stderr, stderr


def test_uvicorns_log_level_applies_to_hostedjobs_too(
    tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    server = _serve_logging_app(tmp_path, redis_url, queue_name, "--log-level", "warning")
    try:
        eventually_sync(lambda: (tmp_path / "welcomed").exists(), what="the job run")
    finally:
        stderr = _stop(server)
    assert "hostedjobs started" not in stderr and "welcomed" not in stderr, stderr
