"""A process running a host with runtime schedules, for tests/test_schedules.py.

``cli_host`` is what the CLI test points ``hostedjobs schedules`` at.

``python -m tests.schedules_app QUEUE FILE``: run a host (worker included) whose handler of
`Ping` appends each run's job id to FILE, print ``ready``, and stop at a line on stdin.
Redis is ``$HOSTEDJOBS_REDIS_URL``.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

from hostedjobs import JobContext, JobHost, job_type


@job_type("schedule-ping")
@dataclass
class Ping:
    customer: str


def make_host(queue: str, runs: Path | None, *, run_worker: bool = True) -> JobHost:
    host = JobHost(queue_name=queue, run_worker=run_worker, fallback_poll=0.2)

    @host.handler(Ping)
    async def ping(job: Ping, ctx: JobContext) -> None:
        if runs is not None:
            with runs.open("a") as out:
                out.write(f"{ctx.run_id}\n")

    return host


cli_host = make_host("schedules-cli", None, run_worker=False)
"""For `hostedjobs schedules tests.schedules_app:cli_host ...` (tests/test_schedules.py)."""


async def main(queue: str, runs: Path) -> None:
    async with make_host(queue, runs).run():
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
