"""Cron tick lateness: how long after its tick a cron run starts, hostedjobs beside arq.

    python -m bench.cron_lateness [--seconds 20]

Every system runs an every-second cron job on a private Redis for ``--seconds`` seconds, one
system after another, all in this process; each run records ``start - tick``. Systems:

- hostedjobs per-process cron (``host.cron``): a timer to the next tick in a heap;
- hostedjobs distributed cron (``host.distributed_cron``): claim + enqueue at the tick, then
  a woken worker picks the run up;
- arq's own cron at its default ``poll_delay=0.5`` and tuned at ``poll_delay=0.01`` (arq
  checks cron jobs once per poll; ``microsecond=0`` so its ticks are whole seconds too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from arq import cron
from arq.connections import RedisSettings
from arq.worker import Worker

from bench.common import percentile

__all__ = ["SYSTEMS", "main", "measure", "report"]
from hostedjobs import JobContext, JobHost
from hostedjobs.storage.embedded import EmbeddedRedis

Runner = Callable[[str, float], Awaitable[list[float]]]


async def hostedjobs_cron(redis_url: str, seconds: float) -> list[float]:
    """Lateness (ms) of a per-process every-second cron job."""
    lateness: list[float] = []
    host = JobHost(redis_url=redis_url, queue_name="bench-cron", run_worker=False)

    @host.cron("* * * * * *", name="tick")
    async def tick(ctx: JobContext) -> None:
        assert ctx.scheduled_at is not None
        lateness.append((time.time() - ctx.scheduled_at.timestamp()) * 1000)

    async with host.run():
        await asyncio.sleep(seconds)
    return lateness


async def hostedjobs_distributed(redis_url: str, seconds: float) -> list[float]:
    """Lateness (ms) of a distributed every-second cron job, start measured in the worker."""
    lateness: list[float] = []
    host = JobHost(redis_url=redis_url, queue_name="bench-distributed")

    @host.distributed_cron("* * * * * *", name="tick")
    async def tick(ctx: JobContext) -> None:
        assert ctx.scheduled_at is not None
        lateness.append((time.time() - ctx.scheduled_at.timestamp()) * 1000)

    async with host.run():
        await asyncio.sleep(seconds)
    return lateness


def arq_cron(poll_delay: float) -> Runner:
    """arq's own cron with ``poll_delay``."""

    async def run(redis_url: str, seconds: float) -> list[float]:
        lateness: list[float] = []

        async def tick(ctx: dict[str, Any]) -> None:
            lateness.append(time.time() * 1000 - ctx["score"])

        worker = Worker(
            cron_jobs=[cron(tick, second=set(range(60)), microsecond=0, name="tick")],
            redis_settings=RedisSettings.from_dsn(redis_url),
            queue_name=f"bench-arq-{poll_delay}",
            poll_delay=poll_delay,
            handle_signals=False,
            keep_result=0,
        )
        task = asyncio.create_task(worker.async_run())
        await asyncio.sleep(seconds)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()
        return lateness

    return run


SYSTEMS: dict[str, Runner] = {
    "hostedjobs cron": hostedjobs_cron,
    "hostedjobs distributed cron": hostedjobs_distributed,
    "arq cron (poll 0.5 s)": arq_cron(0.5),
    "arq cron (poll 0.01 s)": arq_cron(0.01),
}


async def measure(seconds: float) -> dict[str, list[float]]:
    """Run every system for ``seconds`` on one private Redis; lateness samples in ms."""
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        redis = EmbeddedRedis(folder, persistent=False)
        redis.start()
        try:
            for name, runner in SYSTEMS.items():
                samples = await runner(redis.url, seconds)
                # The first tick can be caught mid-start-up; it says nothing about steady state.
                results[name] = samples[1:]
        finally:
            redis.shutdown()
    return results


def report(results: dict[str, list[float]], seconds: float) -> str:
    """The table: ticks, p50, p99 and max lateness in ms, and the ratio to hostedjobs."""
    lines = [
        f"cron tick lateness, every-second jobs, {seconds:g} s each (ms after the tick)",
        f"{'system':<30} {'ticks':>5} {'p50':>8} {'p99':>8} {'max':>8}",
    ]
    for name, samples in results.items():
        if not samples:
            lines.append(f"{name:<30} {0:>5} {'-':>8} {'-':>8} {'-':>8}")
            continue
        lines.append(
            f"{name:<30} {len(samples):>5} {percentile(samples, 50):>8.2f} "
            f"{percentile(samples, 99):>8.2f} {max(samples):>8.2f}"
        )
    ours = results.get("hostedjobs cron") or []
    best_arq = min(
        (percentile(v, 99) for k, v in results.items() if k.startswith("arq") and v),
        default=None,
    )
    if ours and best_arq:
        lines.append(f"p99 ratio hostedjobs cron / best arq: {percentile(ours, 99) / best_arq:.3f}")
    return "\n".join(lines)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="per system (default 20)")
    args = parser.parse_args()
    results = asyncio.run(measure(args.seconds))
    print(report(results, args.seconds))


if __name__ == "__main__":
    main()
