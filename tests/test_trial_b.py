"""Faults a newcomer found trying the console and the engine (issue 13, trial B)."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hostedjobs import JobContext, JobHost, JobStatus, job_type
from hostedjobs.testing import wait_for_job
from tests.servers import ROOT, subprocess_env
from tests.test_dashboard import client_for
from tests.waiting import eventually

HOSTEDJOBS = str(Path(sys.executable).with_name("hostedjobs"))
LEASE_S = 2.0


async def _finished(host: JobHost, job_id: str) -> Any:
    infos: list[Any] = []

    async def finished() -> bool:
        info = await host.scheduler.get(job_id)
        infos.append(info)
        return info is not None and info.status.finished

    await eventually(finished, what=f"job {job_id} finished", timeout=120)
    return infos[-1]


async def _kill_the_runner(
    redis_url: str, queue_name: str, started: Path, enqueue: Any, *, cancel: bool = False
) -> tuple[Any, int, float, str]:
    """Two worker processes (short leases); the one that starts the job is SIGKILLed. The
    job's info once it finished, the killed worker's pid, a time before the job was queued,
    and the job's console page."""
    env = subprocess_env(
        HOSTEDJOBS_REDIS_URL=redis_url,
        WORKER_APP_QUEUE=queue_name,
        WORKER_APP_LEASE_TTL=str(LEASE_S),
    )
    command = [HOSTEDJOBS, "worker", "tests.worker_app:host", "--log-level", "WARNING"]
    workers = [subprocess.Popen(command, env=env, cwd=ROOT) for _ in range(2)]
    try:
        enqueuer = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
        async with enqueuer.run():
            await eventually(lambda: _beating(enqueuer), what="both workers beating", timeout=60)
            # The survivor takes jobs back only once it has been connected for a lease.
            await asyncio.sleep(LEASE_S * 2)
            before = time.time()
            job_id = await enqueue(enqueuer)
            await eventually(
                lambda: started.exists() and started.read_text().endswith("\n"),
                what="the job started",
            )
            line = started.read_text().splitlines()[0]
            owner = next(w for w in workers if f"pid={w.pid} " in f"{line} ")
            owner.send_signal(signal.SIGKILL)
            if cancel:  # while its worker is gone, before the lease lapses
                assert await enqueuer.scheduler.cancel(job_id)
            info = await _finished(enqueuer, job_id)
            async with client_for(enqueuer) as client:
                page = (await client.get(f"/jobs/{job_id}")).text
        return info, owner.pid, before, page
    finally:
        for process in workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)


async def _beating(host: JobHost) -> bool:
    return len(await host.workers()) >= 2


# -- 1. a try lost with its worker is in the job's history, told plainly ----------------------


async def test_a_lost_last_try_fails_the_job_plainly(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    """A job with one try whose worker is SIGKILLed fails with a message naming the worker
    and the try, no traceback of ours, and the lost try (worker, start) in its history."""
    from tests.worker_app import OneTry

    started = tmp_path / "started.txt"

    async def enqueue(host: JobHost) -> str:
        return await host.scheduler.enqueue(OneTry(path=str(started), pause=600))

    info, pid, before, page = await _kill_the_runner(redis_url, queue_name, started, enqueue)
    assert info.status is JobStatus.FAILED
    (lost,) = info.errors
    assert lost.attempt == 1
    assert lost.worker is not None and str(pid) in lost.worker
    assert lost.started_at is not None and lost.started_at.timestamp() >= before - 1
    assert lost.traceback is None
    expected = (
        f"its worker {lost.worker} stopped during try 1 (lease lapsed); no tries left (max_tries=1)"
    )
    assert info.error == expected
    assert lost.error == expected
    assert info.traceback is None
    assert info.tries == 1
    assert started.read_text().count("\n") == 1
    assert html.escape(expected, quote=False) in page and "started " in page


async def test_a_job_cancelled_while_its_worker_is_gone_ends_cancelled(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    """Cancel asked while the job's worker is dead (SIGKILLed, its lease not lapsed yet):
    once another worker takes the job back it ends cancelled, as the operator was told, not
    failed for its lost try (found in a second newcomer's trial)."""
    from tests.worker_app import OneTry

    started = tmp_path / "started.txt"

    async def enqueue(host: JobHost) -> str:
        return await host.scheduler.enqueue(OneTry(path=str(started), pause=600))

    info, _, _, _ = await _kill_the_runner(redis_url, queue_name, started, enqueue, cancel=True)
    assert info.status is JobStatus.CANCELLED, (info.status, info.error)
    assert info.tries == 1
    assert started.read_text().count("\n") == 1


async def test_a_lost_try_with_tries_left_is_in_the_history(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    """A job whose worker is SIGKILLed runs again elsewhere; its history keeps the lost try
    with the worker, its start and the plain message."""
    from tests.worker_app import Note

    out = tmp_path / "notes.txt"
    started = tmp_path / "notes.txt.starts"

    async def enqueue(host: JobHost) -> str:
        note = Note(path=str(out), text="x", pause=600, pause_on_retry=0)
        return await host.scheduler.enqueue(note)

    info, pid, before, page = await _kill_the_runner(redis_url, queue_name, started, enqueue)
    assert info.status is JobStatus.SUCCEEDED
    assert info.tries == 2
    (lost,) = info.errors
    assert lost.attempt == 1
    assert lost.worker is not None and str(pid) in lost.worker
    assert lost.started_at is not None and lost.started_at.timestamp() >= before - 1
    assert lost.error == f"its worker {lost.worker} stopped during try 1 (lease lapsed)"
    assert lost.traceback is None
    assert html.escape(lost.error, quote=False) in page


# -- 2. a paused hosted job shows no next run -------------------------------------------------


async def test_a_paused_job_reports_no_next_run_anywhere(redis_url: str, queue_name: str) -> None:
    """Paused: every kind of hosted job (in a worker process and in this one) reports
    next_run None in the status API, /status's JSON, the CLI, and the console's pages, which
    say "paused" instead; resumed, the next run is back."""
    from tests.hosted_app import make_host
    from tests.test_hosted_runs import processes

    host = make_host(queue_name)
    host.redis_url = redis_url

    @host.distributed_cron("* * * * * *", name="each-second")
    async def each_second(ctx: JobContext) -> None:
        pass

    names = ("tick-tock", "every-second", "each-second")
    with processes(redis_url, queue_name, 1):
        async with host.run():

            async def scheduled() -> bool:
                statuses = await host.status()
                return all(s.next_run is not None for s in statuses) and all(
                    len(s.processes) == 2 for s in statuses if s.name != "each-second"
                )

            await eventually(scheduled, what="every job scheduled in both processes")
            for name in names:
                assert await host.pause(name) is True

            async def obeyed() -> list[Any] | None:
                statuses = await host.status()
                done = all(s.paused and all(p.paused for p in s.processes) for s in statuses)
                return statuses if done else None

            statuses = await eventually(obeyed, what="both processes paused")
            for status in statuses:
                assert status.next_run is None, status
                assert all(p.next_run is None for p in status.processes), status
                assert status.to_json()["next_run"] is None
            cli = _cli("status", "tests.hosted_app:host", redis_url=redis_url, queue=queue_name)
            rows = {line.split()[0]: line for line in cli.splitlines()[1:] if line.strip()}
            assert "paused" in rows["every-second"] and "paused" in rows["tick-tock"]
            as_json = json.loads(
                _cli(
                    "status",
                    "tests.hosted_app:host",
                    "--json",
                    redis_url=redis_url,
                    queue=queue_name,
                )
            )
            assert all(s["next_run"] is None for s in as_json if s["paused"])
            async with client_for(host) as client:
                for path in ("/", "/hosted", *(f"/hosted/{name}" for name in names)):
                    page = await client.get(path)
                    assert page.status_code == 200
                    assert "paused</span>" in page.text, path
                    assert "<time" not in _next_run_cells(page.text), path
            for name in names:
                await host.resume(name)

            await eventually(scheduled, what="every job scheduled again")


def _next_run_cells(html: str) -> str:
    """The "Next run" cells and entries of a page, joined."""
    cells = re.findall(r'data-label="Next run">(.*?)</td>', html, re.DOTALL)
    cells += re.findall(r"<dt>Next run</dt><dd>(.*?)</dd>", html, re.DOTALL)
    assert cells, "no next run shown"
    return "\n".join(cells)


def _cli(*args: str, redis_url: str, queue: str) -> str:
    env = subprocess_env(HOSTEDJOBS_REDIS_URL=redis_url, HOSTED_APP_QUEUE=queue)
    done = subprocess.run(
        [HOSTEDJOBS, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- 3. pausing is logged once per process, when the state changes ----------------------------


async def test_pausing_is_logged_only_when_it_changes(
    redis_url: str, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two hosts on the real control channel: a pause is logged once in each, and neither
    logs it again on later notices (another job paused, the same pause repeated) or polls."""
    from tests.hosted_app import make_host

    caplog.set_level(logging.INFO, logger="hostedjobs.hosted")
    hosts = [make_host(queue_name), make_host(queue_name)]
    for host in hosts:
        host.redis_url = redis_url
        host.run_worker = False

    def lines(text: str) -> int:
        return sum(r.getMessage() == text for r in caplog.records)

    async with hosts[0].run(), hosts[1].run():
        assert await hosts[0].pause("tick-tock") is True
        await eventually(lambda: "tick-tock" in hosts[1]._hosted.paused, what="the pause seen")
        assert lines("tick-tock: paused") == 2
        assert await hosts[1].pause("tick-tock") is False
        assert await hosts[1].pause("every-second") is True
        await eventually(
            lambda: "every-second" in hosts[0]._hosted.paused, what="the second pause seen"
        )
        assert await hosts[0].resume("every-second") is True
        await eventually(
            lambda: "every-second" not in hosts[1]._hosted.paused, what="the resume seen"
        )
        assert lines("tick-tock: paused") == 2
        assert lines("every-second: paused") == 2
        assert lines("every-second: resumed") == 2


# -- 4. the status footnote is a command that runs ----------------------------------------------


def test_the_status_footnote_is_a_runnable_command(redis_url: str, queue_name: str) -> None:
    """`hostedjobs status` names the app as typed in its resume hint; running that hint
    resumes the job."""
    paused = _cli(
        "pause", "tests.hosted_app:host", "tick-tock", redis_url=redis_url, queue=queue_name
    )
    assert paused.strip() == "tick-tock: paused"
    out = _cli("status", "tests.hosted_app:host", redis_url=redis_url, queue=queue_name)
    assert "MODULE:ATTR" not in out
    (hint,) = [line.strip() for line in out.splitlines() if line.strip().startswith("hostedjobs ")]
    assert hint == "hostedjobs resume tests.hosted_app:host tick-tock"
    resumed = _cli(*shlex.split(hint)[1:], redis_url=redis_url, queue=queue_name)
    assert resumed.strip() == "tick-tock: resumed"


# -- 5. the demo: its front page and its longest export -----------------------------------------


def test_the_demos_printed_address_leads_to_the_console(demo_server: str) -> None:
    """uvicorn prints the demo's bare address: it redirects to the dashboard, not a 404."""
    with urllib.request.urlopen(demo_server + "/", timeout=60) as reply:
        assert reply.status == 200
        assert reply.url.rstrip("/").endswith("/dashboard")
        assert "Overview" in reply.read().decode()


def test_the_demos_longest_export_fits_its_time_limit() -> None:
    """/exports accepts up to 600 one-second steps: the handler's limit leaves room for them,
    not the default five minutes."""
    from demo_app.main import host

    (export,) = (r for k, r in host._handlers.registrations.items() if k.startswith("export-"))
    assert export.timeout_s is not None and export.timeout_s >= 660


# -- 6. job ids: any non-empty string, no length limit -------------------------------------------


@job_type("tests.trial-b.echo")
@dataclass
class Echo:
    """Returns its text."""

    text: str


async def test_a_job_id_may_be_long_but_not_empty(redis_url: str, queue_name: str) -> None:
    """A 10 KB job id is queued, run, read back and shown by the console; an empty one is a
    clear error (a ValueError saying what an id must be), for enqueue and schedule."""

    host = JobHost(redis_url=redis_url, queue_name=queue_name)

    @host.handler(Echo)
    async def echo(job: Echo) -> str:
        return job.text

    long_id = "id/" + "é" * 5000 + " ∞"
    async with host.run():
        job_id = await host.scheduler.enqueue(Echo(text="hi"), job_id=long_id)
        assert job_id == long_id
        info = await wait_for_job(host, job_id)
        assert info.status is JobStatus.SUCCEEDED and info.id == long_id and info.result == "hi"
        async with client_for(host) as client:
            path = f"/jobs/{urllib.parse.quote(long_id, safe='')}"
            assert (await client.get(path)).status_code == 200
            # The action is routed (refused without auth), not a 404 or 405.
            assert (await client.post(path + "/cancel")).status_code == 403
        for empty in (
            host.scheduler.enqueue(Echo(text="x"), job_id=""),
            host.scheduler.schedule(Echo(text="x"), delay=timedelta(seconds=1), job_id=""),
        ):
            with pytest.raises(ValueError, match="job_id must be a non-empty string"):
                await empty
