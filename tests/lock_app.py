"""A process that takes a named lock, for tests/test_locks.py.

``python -m tests.lock_app count QUEUE LOCK N FILE``: N times, under the lock, read the
integer in FILE and write it back plus one (a read-modify-write that loses updates unless
the lock excludes the other processes); prints each fencing token it drew.

``python -m tests.lock_app hold QUEUE LOCK TTL``: take the lock, print ``held <token>``, wait
for a line on stdin, then leave the lock and print ``released`` or ``lost``.

Redis is ``$HOSTEDJOBS_REDIS_URL``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from hostedjobs import JobHost
from hostedjobs.exceptions import LockLostError


async def count(queue: str, name: str, times: int, path: Path) -> None:
    host = JobHost(queue_name=queue, run_worker=False)
    async with host.connected():
        for _ in range(times):
            async with host.lock(name, ttl=10) as lock:
                value = int(path.read_text() or "0")
                await asyncio.sleep(0.001)  # let another process interleave, if it can
                path.write_text(str(value + 1))
                print(lock.token, flush=True)


async def hold(queue: str, name: str, ttl: float) -> None:
    host = JobHost(queue_name=queue, run_worker=False)
    async with host.connected():
        try:
            async with host.lock(name, ttl=ttl) as lock:
                print(f"held {lock.token}", flush=True)
                await asyncio.to_thread(sys.stdin.readline)
        except LockLostError:
            print("lost", flush=True)
        else:
            print("released", flush=True)


if __name__ == "__main__":
    mode, queue, name, *rest = sys.argv[1:]
    if mode == "count":
        asyncio.run(count(queue, name, int(rest[0]), Path(rest[1])))
    else:
        asyncio.run(hold(queue, name, float(rest[0])))
