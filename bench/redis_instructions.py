"""Redis's cost per drained job, counted in instructions (callgrind): repeatable on a busy box.

    python -m bench.redis_instructions [--jobs 2000] [--baseline REV ...]

``INFO cpu`` (the engine benchmark's "Redis CPU µs per job") moves by a third from run to run
on a shared 2-core machine. This counts the user-space instructions the redis-server process
executes while one worker process drains N preloaded no-op jobs, with redis-server under
``valgrind --tool=callgrind`` (counters zeroed after the preload, dumped after the drain).
The count is the same from run to run for the same code, whatever else the machine does; it
leaves out the kernel's share (socket reads and writes), which fewer round trips also cut.

Each system is this tree's hostedjobs and, with ``--baseline REV``, hostedjobs at REV (laid out
as the engine benchmark does, `bench.engine.ensure_baseline`), each preloading and draining
with its own ``bench/hosted_worker.py``. Needs ``valgrind`` (Debian's package) and
``redis-server`` on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .engine import ROOT, BenchError, ensure_baseline, resolve_baseline

__all__ = ["instructions_per_job", "main"]

_QUEUE = "bench-hostedjobs"
_PRELOAD = """
import asyncio, sys
from bench.hosted_worker import build_host, BenchJob
from bench.common import Recorder

async def main(url, n):
    host = build_host(url, {queue!r}, Recorder(), run_worker=False)
    async with host.run():
        await host.scheduler.enqueue_many(BenchJob(seq=i) for i in range(n))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _run(args: list[str], root: Path, timeout_s: float) -> str:
    done = subprocess.run(
        args,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout_s,
    )
    if done.returncode != 0:
        raise BenchError(f"{' '.join(args[:4])} failed: {done.stderr.strip()[-800:]}")
    return done.stdout


def instructions_per_job(root: Path, jobs: int) -> float:
    """Instructions redis-server executes per job while ``root``'s worker drains ``jobs``."""
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        server = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                "redis-server",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while (
                subprocess.run(
                    ["redis-cli", "-p", str(port), "ping"], capture_output=True, check=False
                ).stdout.strip()
                != b"PONG"
            ):
                if time.monotonic() > deadline:
                    raise BenchError("redis-server under valgrind did not start")
                time.sleep(0.2)
            _run([sys.executable, "-c", _PRELOAD.format(queue=_QUEUE), url, str(jobs)], root, 600)
            subprocess.run(["callgrind_control", "-z", str(server.pid)], capture_output=True)
            result = _run(
                [
                    sys.executable,
                    "-m",
                    "bench.hosted_worker",
                    "drain",
                    "--redis-url",
                    url,
                    "--queue",
                    _QUEUE,
                    "--jobs",
                    str(jobs),
                    "--timeout",
                    "600",
                ],
                root,
                900,
            )
            subprocess.run(["callgrind_control", "-d", str(server.pid)], capture_output=True)
            ran = json.loads(result.strip().splitlines()[-1])["jobs"]
            if ran != jobs:
                raise BenchError(f"the worker ran {ran} of {jobs} jobs")
            total = 0
            for dump in Path(folder).glob("callgrind.out*"):
                for line in dump.read_text(errors="replace").splitlines():
                    if line.startswith(("summary:", "totals:")):
                        total = max(total, int(line.split()[1]))
            if not total:
                raise BenchError("callgrind wrote no totals")
            return total / jobs
        finally:
            server.terminate()
            server.wait(timeout=60)


def main() -> None:
    """Print instructions per drained job for this tree and each baseline, and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--baseline", action="append", default=[], metavar="REV")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    systems = [("hostedjobs", ROOT)]
    for rev in args.baseline:
        baseline = resolve_baseline(rev)
        ensure_baseline(baseline)
        systems.append((f"hostedjobs@{rev}", baseline.checkout))
    counts = {label: instructions_per_job(root, args.jobs) for label, root in systems}
    print(f"redis-server instructions per drained no-op job (callgrind, N={args.jobs})")
    for label, count in counts.items():
        print(f"  {label:<24} {count:>10,.0f}")
    for label, count in list(counts.items())[1:]:
        print(f"  hostedjobs / {label}: {counts['hostedjobs'] / count:.2f}×")


if __name__ == "__main__":
    main()
