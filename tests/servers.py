"""Helpers for tests that start real processes: environments, ports, the demo under uvicorn."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def subprocess_env(**extra: str) -> dict[str, str]:
    """This environment without HOSTEDJOBS_* settings, the repo importable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTEDJOBS_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def free_port(*, cluster: bool = False) -> int:
    """A TCP port free on loopback right now. With ``cluster``, one a cluster node can use:
    at most 55535, with the port 10000 above it (its cluster bus) free too."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not cluster:
            return port
        if port <= 55535:
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


def request_json(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    """Send ``body`` as JSON; returns the status and the decoded JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@contextlib.contextmanager
def serve_demo(tmp_path: Path, *, failing_jobs: bool = False, **env: str) -> Iterator[str]:
    """The demo app under a real uvicorn, on the embedded server (no Redis URL set).

    Yields its base URL; stops it with SIGTERM and checks it shut down cleanly, with no
    traceback in its log unless ``failing_jobs`` (a failed job logs its own).
    """
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "demo_app"],
        env=subprocess_env(
            **{
                "PORT": str(port),
                "HOSTEDJOBS_DATA_DIR": str(tmp_path / "data"),
                # The embedded server stops soon after the demo, not a minute later.
                "HOSTEDJOBS_EMBEDDED_IDLE_TIMEOUT": "1",
                "DEMO_DB": str(tmp_path / "demo.sqlite3"),
                "REMINDER_DELAY": "0.5",
                "DEMO_FAST_CRON": "* * * * * *",
                **env,
            }
        ),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if request_json(base + "/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "the demo did not become ready"
            time.sleep(0.1)
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            # A job still running holds the stop for the demo's 20 s shutdown grace.
            code = server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
        assert server.stderr is not None
        log = server.stderr.read()
        server.stderr.close()
        # uvicorn re-raises the signal it handled once it has shut down cleanly.
        assert code in (0, -signal.SIGTERM), log
        assert failing_jobs or "Traceback" not in log, log
