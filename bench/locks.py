"""What a named lock costs (``python -m bench.locks``; Redis from ``$HOSTEDJOBS_REDIS_URL``,
else embedded).

Prints acquire + release cycles per second for: one task taking and releasing one lock in a
loop (two round trips a cycle: the acquire script, the release script); 16 tasks each on its
own lock name; and 16 tasks contending for one name (each release hands the lock on through
the wake token a waiter blocks on).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from hostedjobs import JobHost

SECONDS = 3.0
TASKS = 16


async def cycles(host: JobHost, names: list[str]) -> float:
    done = 0
    deadline = time.perf_counter() + SECONDS

    async def loop(name: str) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            async with host.lock(name, ttl=30):
                done += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(name) for name in names))
    return done / (time.perf_counter() - started)


async def main() -> None:
    host = JobHost(queue_name=f"bench-{uuid.uuid4().hex[:8]}", run_worker=False)
    async with host.connected():
        await cycles(host, ["warm-up"])
        for label, names in (
            ("1 task, 1 lock", ["solo"]),
            (f"{TASKS} tasks, a lock each", [f"own-{i}" for i in range(TASKS)]),
            (f"{TASKS} tasks, 1 lock", ["shared"] * TASKS),
        ):
            print(f"{label:>22}: {await cycles(host, names):8.0f} acquire+release/s")


if __name__ == "__main__":
    asyncio.run(main())
