"""What publishing hosted-job runs costs a continuous job that loops as fast as it can
(``python -m bench.hosted_runs``; Redis from ``$HOSTEDJOBS_REDIS_URL``, else embedded).

Runs the same no-op continuous job (``interval=0``) for a few seconds with publishing on and
off, and prints runs per second and the Redis commands the process sent per second.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from hostedjobs import JobContext, JobHost
from hostedjobs.hosted import HostedServices

SECONDS = 5.0


async def measure(publish: bool) -> tuple[float, float]:
    host = JobHost(queue_name=f"bench-{uuid.uuid4().hex[:8]}", run_worker=False)
    runs = 0

    @host.job(name="spin")
    async def spin(ctx: JobContext) -> None:
        nonlocal runs
        runs += 1

    original: Callable[..., Awaitable[None]] = HostedServices._publish_loop
    if not publish:

        async def idle(self: HostedServices, store: object) -> None:
            await asyncio.Event().wait()

        setattr(HostedServices, "_publish_loop", idle)  # noqa: B010
    try:
        async with host.run():
            redis: Redis = host.scheduler.pool
            before = int((await redis.info("stats"))["total_commands_processed"])
            await asyncio.sleep(1)  # warm up
            start_runs, started = runs, time.perf_counter()
            await asyncio.sleep(SECONDS)
            elapsed = time.perf_counter() - started
            ran = runs - start_runs
            after = int((await redis.info("stats"))["total_commands_processed"])
    finally:
        setattr(HostedServices, "_publish_loop", original)  # noqa: B010
    return ran / elapsed, (after - before) / (elapsed + 1)


async def main() -> None:
    for publish in (False, True, False, True):
        rate, commands = await measure(publish)
        print(
            f"publishing {'on ' if publish else 'off'}: {rate:9.0f} runs/s, "
            f"{commands:6.1f} Redis commands/s (all of the process's)"
        )


if __name__ == "__main__":
    asyncio.run(main())
