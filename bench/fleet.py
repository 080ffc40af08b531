"""Several worker processes started together, with the parent deciding when they are done.

`run_fleet` starts worker processes in serve mode (see `bench.common`), waits until each is
ready, sends them all the go line at once, and times from there until the caller's ``until``
coroutine returns (typically `queue_back_to`, which watches the queue zset from the parent).
Then it stops them and collects each one's JSON result, a line of any length (it lists the
sequence number of every job the process ran: `bench.common.read_line`). Neither interpreter
start-up nor the workers' shutdown is in the time, and no system's own stop condition (burst
mode, a per-process job count) decides it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from .common import GO, READY, STREAM_LIMIT, read_line

__all__ = ["FleetError", "FleetRun", "queue_back_to", "run_fleet"]

ROOT = Path(__file__).resolve().parent.parent
READY_WAIT_S = 60.0
STOP_WAIT_S = 30.0
POLL_S = 0.002


class FleetError(RuntimeError):
    """A worker process of the fleet did not get ready or gave no result."""


@dataclass(frozen=True)
class FleetRun:
    """What one fleet run measured."""

    wall_s: float
    """From the go line to ``until`` returning (or to the timeout)."""
    finished: bool
    """False when ``until`` did not return within the timeout."""
    workers: list[dict[str, Any]]
    """Each process's result line, in start order."""


async def queue_back_to(client: aioredis.Redis, queue: str, baseline: int) -> None:
    """Return once the queue holds ``baseline`` jobs or fewer, running ones included.

    arq workers (and hostedjobs before its claimed set) remove a job from the queue zset only
    once its outcome is stored; hostedjobs moves a claimed job to ``hostedjobs:<queue>:claimed``
    and removes it from there with its outcome. Either way, this returns once the last job's
    result is in Redis.
    """
    claimed = f"hostedjobs:{queue}:claimed"
    while True:  # the state is in Redis: polled, there is no event to wait on
        async with client.pipeline(transaction=False) as pipe:
            pipe.zcard(queue)
            pipe.zcard(claimed)
            waiting, running = await pipe.execute()
        if waiting + running <= baseline:
            return
        await asyncio.sleep(POLL_S)


async def run_fleet(
    commands: list[list[str]],
    log_dir: Path,
    until: Callable[[], Awaitable[None]],
    *,
    timeout_s: float,
    root: Path = ROOT,
) -> FleetRun:
    """Run one process per command in serve mode; time from go until ``until()`` returns.

    The processes run in ``root`` with it on ``PYTHONPATH``: this repository, or another
    revision's checkout (``bench.engine --baseline``).
    """
    env = {**os.environ, "PYTHONPATH": str(root)}
    processes: list[asyncio.subprocess.Process] = []
    logs: list[Path] = []
    try:
        for command in commands:
            log = log_dir / f"fleet-{uuid.uuid4().hex[:8]}.log"
            logs.append(log)
            with log.open("wb") as stderr:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        *command,
                        cwd=root,
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=stderr,
                        env=env,
                        limit=STREAM_LIMIT,
                    )
                )
        for process, log in zip(processes, logs, strict=True):
            assert process.stdout is not None
            line = await asyncio.wait_for(read_line(process.stdout), READY_WAIT_S)
            if line.decode().strip() != READY:
                raise FleetError(f"worker did not get ready: {line!r}\n{_tail(log)}")
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(f"{GO}\n".encode())
        start = time.perf_counter()
        await asyncio.gather(*(_drain_stdin(p) for p in processes))
        finished = True
        try:
            await asyncio.wait_for(until(), timeout_s)
        except TimeoutError:
            finished = False
        wall = time.perf_counter() - start
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(b"stop\n")
            process.stdin.close()
        workers = [await _result(p, log) for p, log in zip(processes, logs, strict=True)]
        return FleetRun(wall, finished, workers)
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _drain_stdin(process: asyncio.subprocess.Process) -> None:
    assert process.stdin is not None
    await process.stdin.drain()


async def _result(process: asyncio.subprocess.Process, log: Path) -> dict[str, Any]:
    assert process.stdout is not None
    result: dict[str, Any] | None = None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(STOP_WAIT_S):
            while result is None:
                line = await read_line(process.stdout)
                if not line:
                    break
                if line.startswith(b"{"):
                    result = json.loads(line)
            await process.wait()
    if result is None:
        raise FleetError(f"worker gave no result (exit {process.returncode})\n{_tail(log)}")
    return result


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-30:])
