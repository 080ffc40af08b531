"""What runtime schedules cost (``python -m bench.schedules``; Redis from
``$HOSTEDJOBS_REDIS_URL``, else embedded).

Prints, for a host with 0, 1,000 and 100,000 schedules (none due: each ticks yearly), the
Redis commands per second and the CPU of that host while it sits idle (its worker off, so
only the schedules' loop and the host's own background reads count), then the time a host,
and three hosts racing, take to fire 1,000 due schedules (enqueue one run each).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from dataclasses import dataclass

from hostedjobs import JobHost, job_type

IDLE_S = 10.0
SIZES = (0, 1_000, 100_000)
DUE = 1_000
YEARLY = "0 0 1 1 *"


@job_type("bench-schedule-ping")
@dataclass
class Ping:
    customer: str


def make_host(queue: str) -> JobHost:
    host = JobHost(queue_name=queue, run_worker=False)

    @host.handler(Ping)
    async def ping(job: Ping) -> None:
        return None

    return host


async def commands(admin: JobHost) -> int:
    stats = await admin.scheduler.store.redis.info("stats")
    return int(stats["total_commands_processed"])


async def add(admin: JobHost, start: int, stop: int, cron: str = YEARLY) -> None:
    for first in range(start, stop, 1000):
        await asyncio.gather(
            *(
                admin.schedules.add(f"customer-{i}", cron, Ping(f"c{i}"))
                for i in range(first, min(first + 1000, stop))
            )
        )


async def idle(admin: JobHost, queue: str) -> tuple[float, float]:
    """(Redis commands/s, CPU %) of one firing host left idle."""
    async with make_host(queue).run():
        await asyncio.sleep(2)  # start-up is not idle
        before, cpu, began = await commands(admin), time.process_time(), time.perf_counter()
        await asyncio.sleep(IDLE_S)
        after, cpu_after = await commands(admin), time.process_time()
        wall = time.perf_counter() - began
    return (after - before - 1) / wall, 100 * (cpu_after - cpu) / wall


async def fire(admin: JobHost, queue: str, hosts: int) -> float:
    """Seconds for ``hosts`` firing hosts to enqueue one run for each of `DUE` due schedules."""
    store = admin.scheduler.store
    names = [f"due-{uuid.uuid4().hex[:6]}-{i}" for i in range(DUE)]
    await asyncio.gather(*(admin.schedules.add(name, YEARLY, Ping(name)) for name in names))
    queued_before = await store.redis.zcard(store.keys.waiting)
    firing = [make_host(queue) for _ in range(hosts)]
    async with contextlib.AsyncExitStack() as stack:
        for each in firing:
            await stack.enter_async_context(each.run())
        await asyncio.sleep(1)  # every host asleep until the earliest tick, months away
        began = time.perf_counter()
        # As if their tick had just come, then the notice a change sends.
        now_ms = int(time.time() * 1000) // 1000 * 1000
        await store.redis.zadd(store.keys.schedules_due, dict.fromkeys(names, now_ms))
        await store.redis.publish(store.keys.control, "schedules")
        while True:  # the hosts' own counters: no extra Redis load while they fire
            if sum(each.schedules.fired for each in firing) >= DUE:
                break
            await asyncio.sleep(0.001)
        took = time.perf_counter() - began
    fired = sum(each.schedules.fired for each in firing)
    queued = await store.redis.zcard(store.keys.waiting) - queued_before
    assert fired == queued == DUE, f"{fired} runs enqueued ({queued} queued) for {DUE} ticks"
    for name in names:
        await admin.schedules.remove(name)
    return took


async def main() -> None:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    admin = make_host(queue)
    sizes = [int(arg) for arg in sys.argv[1:]] or list(SIZES)
    async with admin.connected():
        print(f"Redis {os.environ.get('HOSTEDJOBS_REDIS_URL', '(embedded)')}, idle {IDLE_S:g} s")
        print(f"{'schedules':>10} {'add s':>7} {'cmds/s':>7} {'CPU %':>6}")
        have = 0
        for size in sizes:
            began = time.perf_counter()
            await add(admin, have, size)
            added = time.perf_counter() - began
            have = size
            rate, cpu = await idle(admin, queue)
            print(f"{size:>10,} {added:>7.1f} {rate:>7.1f} {cpu:>6.2f}")
        for hosts in (1, 3):
            took = await fire(admin, queue, hosts)
            print(f"fire {DUE:,} due schedules, {hosts} host(s): {took * 1000:.0f} ms")
        store = admin.scheduler.store
        keys = await store.redis.keys(f"{store.keys.namespace}*")
        if keys:
            for first in range(0, len(keys), 1000):
                await store.redis.delete(*keys[first : first + 1000])


if __name__ == "__main__":
    asyncio.run(main())
