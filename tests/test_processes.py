"""Real processes: a `hostedjobs worker`, and the demo app under a real uvicorn."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from hostedjobs import JobHost, JobStatus
from hostedjobs.cli import main
from hostedjobs.testing import wait_for_job
from tests.servers import ROOT, free_port, request_json, subprocess_env
from tests.waiting import eventually, eventually_sync
from tests.worker_app import Note

HOSTEDJOBS = str(Path(sys.executable).with_name("hostedjobs"))


@pytest.mark.parametrize("loop", ["auto", "asyncio", "uvloop"])
async def test_worker_process_runs_queued_jobs_in_burst_mode(
    redis_url: str, queue_name: str, tmp_path: Path, loop: str
) -> None:
    """`hostedjobs worker MODULE:ATTR --burst` runs what is queued, then exits 0."""
    out = tmp_path / "notes.txt"
    enqueuer = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
    async with enqueuer.run():
        for i in range(5):
            await enqueuer.scheduler.enqueue(Note(path=str(out), text=f"note {i}"))
    result = subprocess.run(
        [
            HOSTEDJOBS,
            "worker",
            "tests.worker_app:host",
            "--burst",
            "--concurrency",
            "2",
            "--loop",
            loop,
        ],
        env=subprocess_env(HOSTEDJOBS_REDIS_URL=redis_url, WORKER_APP_QUEUE=queue_name),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = sorted(out.read_text().splitlines())
    assert [line.split(" pid=")[0] for line in lines] == [f"note {i}" for i in range(5)]


async def test_worker_process_drains_on_sigterm(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    """SIGTERM lets the running job finish, then the worker process exits 0."""
    out = tmp_path / "notes.txt"
    worker = subprocess.Popen(
        [HOSTEDJOBS, "worker", "tests.worker_app:host"],
        env=subprocess_env(HOSTEDJOBS_REDIS_URL=redis_url, WORKER_APP_QUEUE=queue_name),
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        enqueuer = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
        async with enqueuer.run():
            job_id = await enqueuer.scheduler.enqueue(Note(path=str(out), text="slow", pause=2.0))
            starts = out.with_name(out.name + ".starts")
            await eventually(starts.exists, what="the job started")
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0
            info = await enqueuer.scheduler.get(job_id)
        assert info is not None
        assert info.status is JobStatus.SUCCEEDED
        assert out.read_text().startswith("slow ")
    finally:
        if worker.poll() is None:
            worker.kill()
        assert worker.stderr is not None
        worker.stderr.close()


def test_worker_command_reports_bad_targets(capsys: pytest.CaptureFixture[str]) -> None:
    """A target that is not MODULE:ATTR of a JobHost is refused with a clear message."""
    for target, message in [
        ("nocolon", "expected MODULE:ATTR"),
        ("no_such_module_xyz:host", "cannot import"),
        ("tests.worker_app:missing", "has no attribute"),
        ("tests.worker_app:Note", "not a JobHost"),
    ]:
        with pytest.raises(SystemExit, match=message):
            main(["worker", target])


def test_python_dash_m_hostedjobs_is_the_command() -> None:
    """``python -m hostedjobs`` runs the same command as ``hostedjobs``."""
    done = subprocess.run(
        [sys.executable, "-m", "hostedjobs", "worker", "nocolon"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=subprocess_env(),
        timeout=60,
    )
    assert done.returncode == 1 and "expected MODULE:ATTR" in done.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "hostedjobs", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=subprocess_env(),
        timeout=60,
    )
    assert shown.returncode == 0 and "schedules" in shown.stdout


def test_worker_command_reports_redis_down() -> None:
    """With Redis unreachable the worker exits 1 and says where it looked."""
    result = subprocess.run(
        [HOSTEDJOBS, "worker", "tests.worker_app:host"],
        env=subprocess_env(HOSTEDJOBS_REDIS_URL="redis://127.0.0.1:1/0"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "cannot connect to Redis at 127.0.0.1:1/0: connection refused" in result.stderr


def test_demo_under_uvicorn_runs_jobs_end_to_end(demo_server: str) -> None:
    """POST a sign-up: the welcome job runs at once, the reminder after its delay."""
    status, body = request_json(demo_server + "/signups", "POST", {"email": "ada@example.com"})
    assert status == 202

    def both_succeeded() -> tuple[Any, Any] | None:
        _, welcome = request_json(f"{demo_server}/jobs/{body['welcome_job']}")
        _, reminder = request_json(f"{demo_server}/jobs/{body['reminder_job']}")
        return (
            (welcome, reminder) if welcome["status"] == reminder["status"] == "succeeded" else None
        )

    welcome, _ = eventually_sync(both_succeeded, what="the welcome and reminder jobs done")
    assert welcome["message"] == "welcome email sent to ada@example.com"
    assert welcome["progress"] == 50
    _, signups = request_json(demo_server + "/signups")
    assert signups[0]["emails"] == ["welcome", "reminder"]
    assert request_json(demo_server + "/signups", "POST", {"email": "nope"})[0] == 400
    assert request_json(demo_server + "/jobs/unknown")[0] == 404
    with urllib.request.urlopen(demo_server + "/metrics", timeout=30) as response:
        exposition = response.read().decode()
    assert 'hostedjobs_jobs_succeeded_total{job="welcome-email",kind="on_demand"} 1.0' in (
        exposition
    )


def test_demo_hosted_jobs_show_in_status(demo_server: str) -> None:
    """The demo's hosted jobs are listed; the fast distributed job fires and can be run now."""

    def fast_report_ran() -> dict[str, Any] | None:
        _, jobs = request_json(demo_server + "/status")
        by_name = {job["name"]: job for job in jobs}
        return by_name if by_name["fast-report"]["last_outcome"] == "succeeded" else None

    by_name = eventually_sync(fast_report_ran, what="a fast-report run")
    assert set(by_name) == {
        "sweep_outbox",
        "refresh-stats",
        "nightly-report",
        "fast-report",
    }
    assert by_name["nightly-report"]["kind"] == "distributed_cron"
    assert by_name["nightly-report"]["timezone"] == "Europe/Prague"
    assert by_name["refresh-stats"]["kind"] == "cron"
    status, _ = request_json(demo_server + "/status/nightly-report/run", "POST")
    assert status == 202
    eventually_sync(
        lambda: any(
            report["kind"] == "nightly" for report in request_json(demo_server + "/reports")[1]
        ),
        what="a nightly report",
    )
    assert request_json(demo_server + "/status/nope/run", "POST")[0] == 404


def _serve_startup_app(tmp_path: Path, redis_url: str, queue_name: str, **env: str) -> Any:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.startup_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=subprocess_env(
            HOSTEDJOBS_REDIS_URL=redis_url,
            STARTUP_APP_QUEUE=queue_name,
            OUT_DIR=str(tmp_path),
            **env,
        ),
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    return server, f"http://127.0.0.1:{port}"


def _poll_until_served(base: str, server: Any) -> None:
    def served() -> bool:
        try:
            request_json(base + "/health")
        except OSError:
            assert server.poll() is None, server.stderr.read()
            return False
        return True

    eventually_sync(served, interval=0.02, what="the server answering")


def test_uvicorn_serves_at_once_and_is_ready_only_after_startup_actions(
    tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    """Liveness passes during the action; /ready and the gated job wait for it to end."""
    server, base = _serve_startup_app(
        tmp_path, redis_url, queue_name, STARTUP_SECONDS="0", STARTUP_UNTIL_RELEASED="1"
    )
    try:
        _poll_until_served(base, server)
        assert request_json(base + "/health") == (200, {"status": "alive"})
        status, body = request_json(base + "/ready")
        assert status == 503
        assert body == {"status": "starting", "startup": "running", "running_actions": ["migrate"]}
        assert not (tmp_path / "gated").exists()
        (tmp_path / "release").touch()  # the action ends
        eventually_sync(lambda: request_json(base + "/ready")[0] == 200, interval=0.02)
        ready_at = time.time()
        eventually_sync((tmp_path / "gated").exists, interval=0.02, what="the gated job")
        migrated = float((tmp_path / "migrated").read_text())
        gated = float((tmp_path / "gated").read_text())
        assert migrated <= gated
        assert migrated <= ready_at
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        assert server.stderr is not None
        server.stderr.close()


def test_failed_startup_action_under_uvicorn_exits_non_zero(
    tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    """A failing action is logged with its traceback and the server process exits non-zero."""
    server, _ = _serve_startup_app(
        tmp_path, redis_url, queue_name, STARTUP_FAIL="1", STARTUP_SECONDS="0.2"
    )
    try:
        code = server.wait(timeout=120)
        assert server.stderr is not None
        log = server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
    assert code != 0
    assert "RuntimeError: the database is not reachable" in log
    assert "Traceback" in log
    assert not (tmp_path / "gated").exists()


def test_failed_startup_action_can_leave_the_server_up_and_not_ready(
    tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    """With on_startup_failure='stay', /ready answers 503 naming the failed action."""
    server, base = _serve_startup_app(
        tmp_path, redis_url, queue_name, STARTUP_FAIL="1", STARTUP_STAY="1", STARTUP_SECONDS="0.1"
    )
    try:
        _poll_until_served(base, server)

        def failed() -> Any:
            body = request_json(base + "/ready")[1]
            return body if body["status"] == "failed" else None

        body = eventually_sync(failed, interval=0.02, what="startup failed")
        assert body == {
            "status": "failed",
            "failed_action": "migrate",
            "error": "RuntimeError: the database is not reachable",
        }
        assert server.poll() is None
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        assert server.stderr is not None
        server.stderr.close()


def test_worker_command_exits_1_when_a_startup_action_fails(
    redis_url: str, queue_name: str
) -> None:
    """`hostedjobs worker` stops with status 1 and names the failed action."""
    result = subprocess.run(
        [HOSTEDJOBS, "worker", "tests.startup_app:host"],
        env=subprocess_env(
            HOSTEDJOBS_REDIS_URL=redis_url,
            STARTUP_APP_QUEUE=queue_name,
            STARTUP_FAIL="1",
            STARTUP_SECONDS="0.1",
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "startup action 'migrate' failed: RuntimeError: the database is not reachable" in (
        result.stderr
    )


def test_status_and_run_commands(
    redis_url: str,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`hostedjobs status` prints every hosted job; `hostedjobs run` runs one now."""
    monkeypatch.setenv("HOSTEDJOBS_REDIS_URL", redis_url)
    assert main(["status", "tests.startup_app:host"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "KIND", "SCHEDULE"]
    assert any(line.startswith("report") and "0 3 * * *" in line for line in lines)
    assert any(line.startswith("gated") and "continuous" in line for line in lines)
    assert main(["status", "tests.startup_app:host", "--json"]) == 0
    jobs = json.loads(capsys.readouterr().out)
    assert {job["name"] for job in jobs} == {"gated", "report"}
    assert main(["run", "tests.startup_app:host", "report"]) == 0
    assert capsys.readouterr().out.strip() == "report: succeeded: report written"
    assert main(["run", "tests.startup_app:host", "nope"]) == 1
    assert "no hosted job named 'nope' (registered: gated, report)" in capsys.readouterr().err


def test_run_command_queues_a_distributed_job_and_waits_for_it(
    redis_url: str,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`hostedjobs run` on a distributed cron job queues it and reports the worker's result."""
    monkeypatch.setenv("HOSTEDJOBS_REDIS_URL", redis_url)
    monkeypatch.setenv("CRON_APP_QUEUE", queue_name)
    monkeypatch.setenv("CRON_APP_SCHEDULE", "0 0 1 1 *")
    monkeypatch.delitem(sys.modules, "tests.cron_app", raising=False)  # read the env anew
    worker = _start_cron_worker(redis_url, queue_name)
    try:
        assert main(["run", "tests.cron_app:host", "every-second"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith("queued every-second as job hostedjobs:")
        assert out[-1] == "every-second: succeeded"
        assert main(["run", "tests.cron_app:host", "every-second", "--no-wait"]) == 0
        assert main(["status", "tests.cron_app:host"]) == 0
        assert "distributed_cron" in capsys.readouterr().out
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)


def _start_cron_worker(redis_url: str, queue_name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [HOSTEDJOBS, "worker", "tests.cron_app:host", "--log-level", "WARNING"],
        env=subprocess_env(
            HOSTEDJOBS_REDIS_URL=redis_url, CRON_APP_QUEUE=queue_name, CRON_APP_SCHEDULE="0 0 1 1 *"
        ),
        cwd=ROOT,
    )


async def test_a_crashed_workers_job_runs_again_on_another_worker(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    """A live worker keeps its job (its lease is renewed); once it is SIGKILLed, another
    worker reruns the job."""
    out = tmp_path / "notes.txt"
    starts = tmp_path / "notes.txt.starts"
    env = subprocess_env(
        HOSTEDJOBS_REDIS_URL=redis_url, WORKER_APP_QUEUE=queue_name, WORKER_APP_LEASE_TTL="2"
    )
    command = [HOSTEDJOBS, "worker", "tests.worker_app:host", "--log-level", "WARNING"]
    workers = [subprocess.Popen(command, env=env, cwd=ROOT) for _ in range(2)]
    try:
        enqueuer = JobHost(redis_url=redis_url, queue_name=queue_name, run_worker=False)
        async with enqueuer.run():
            await eventually(lambda: _beating(enqueuer, queue_name, 2), what="both workers beating")
            # Long enough to outlast the window below; the rerun is quick.
            note = Note(path=str(out), text="long", pause=60, pause_on_retry=0)
            job_id = await enqueuer.scheduler.enqueue(note)
            await eventually(
                lambda: starts.exists() and starts.read_text().endswith("\n"),
                what="the job started",
            )
            (line,) = starts.read_text().splitlines()
            owner = next(w for w in workers if line == f"long pid={w.pid} try=1")
            (other,) = (w for w in workers if w is not owner)
            # Negative check, so a window: twice the 2 s lease, which only renewal keeps.
            await asyncio.sleep(4)
            assert starts.read_text().splitlines() == [line]
            owner.send_signal(signal.SIGKILL)
            info = await wait_for_job(enqueuer, job_id, timeout=60)
        assert info.status is JobStatus.SUCCEEDED
        assert info.tries == 2
        assert out.read_text() == f"long pid={other.pid} try=2\n"
    finally:
        for process in workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)


async def _beating(host: JobHost, queue_name: str, count: int) -> bool:
    return len(await host.workers()) >= count


def test_health_command_flips_to_1_when_the_worker_is_gone(
    redis_url: str,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`hostedjobs health` exits 0 while a worker beats, 1 once it is killed or stopped."""
    monkeypatch.setenv("HOSTEDJOBS_REDIS_URL", redis_url)
    monkeypatch.setenv("WORKER_APP_QUEUE", queue_name)
    monkeypatch.delitem(sys.modules, "tests.worker_app", raising=False)
    assert main(["health", "tests.worker_app:host"]) == 1
    assert "unhealthy: no worker of queue" in capsys.readouterr().err
    env = subprocess_env(HOSTEDJOBS_REDIS_URL=redis_url, WORKER_APP_QUEUE=queue_name)
    command = [HOSTEDJOBS, "worker", "tests.worker_app:host", "--log-level", "WARNING"]
    killed = subprocess.Popen(command, env=env, cwd=ROOT)
    try:
        eventually_sync(lambda: main(["health", "tests.worker_app:host"]) == 0, interval=0.2)
        assert f":{killed.pid}:" in capsys.readouterr().out
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
        # Once its last heartbeat is older than 3 s.
        eventually_sync(
            lambda: main(["health", "tests.worker_app:host", "--max-age", "3"]) == 1,
            interval=0.2,
        )
        stopped = subprocess.Popen(command, env=env, cwd=ROOT)
        capsys.readouterr()

        def stopped_beats() -> bool:
            main(["health", "tests.worker_app:host", "--any", "--max-age", "3"])
            return f":{stopped.pid}:" in capsys.readouterr().out

        eventually_sync(stopped_beats, interval=0.2, what="the second worker beating")
        stopped.send_signal(signal.SIGTERM)
        assert stopped.wait(timeout=60) == 0
        # A clean stop removes the heartbeat at once (the killed worker's is older than 3 s).
        assert main(["health", "tests.worker_app:host", "--max-age", "3"]) == 1
    finally:
        if killed.poll() is None:
            killed.kill()
