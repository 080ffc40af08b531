"""The host the chaos suite's worker processes run: ``hostedjobs worker tests.chaos.app:host``.

One module for every scenario, set by environment variables:

- ``CHAOS_QUEUE``: the queue; ``CHAOS_LEDGER``: the ledger directory (see `tests.chaos.ledger`);
- ``CHAOS_GRACE``: the shutdown grace in seconds (default 5);
- ``CHAOS_CRON``: a distributed cron schedule for the ``chaos-tick`` job (none if unset), with
  ``CHAOS_CRON_RUN_S`` (how long each run takes), ``CHAOS_OVERLAP`` and ``CHAOS_CLOCK_SKEW_S``
  (this replica's clock is off by that much);
- ``CHAOS_EXTRA_CRON``: a JSON list of ``[expression, zone]`` registered as more distributed
  cron jobs that do nothing (fuzzed schedules a worker must live with).

Every run writes ``start`` and ``end`` records to this process's ledger file; the start-up
action writes ``up`` once the worker is about to take jobs.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from hostedjobs import JobContext, JobHost, job_type
from hostedjobs.testing import SkewedClock
from tests.chaos.ledger import LedgerWriter, digest

MAX_PAUSE_S = 30.0
"""A longer pause (a planted record may ask for any) is not waited out."""


@job_type("chaos.work")
@dataclass
class Work:
    """An on-demand job: ``pause`` seconds between its start and its end; ``data`` is any
    JSON payload (fuzzed ones too), fingerprinted in the end record."""

    pause: float = 0.0
    data: Any = None


host = JobHost(
    queue_name=os.environ.get("CHAOS_QUEUE", "chaos"),
    clock=SkewedClock(timedelta(seconds=float(os.environ.get("CHAOS_CLOCK_SKEW_S", "0")))),
    shutdown_grace=timedelta(seconds=float(os.environ.get("CHAOS_GRACE", "5"))),
)
_ledger: LedgerWriter | None = None


def ledger() -> LedgerWriter:
    """This process's ledger writer (opened on first use, in the worker process)."""
    global _ledger
    if _ledger is None:
        _ledger = LedgerWriter(os.environ["CHAOS_LEDGER"], "worker")
    return _ledger


@host.startup_action()
async def announce() -> None:
    ledger().write("up")


@host.handler(Work)
async def work(job: Work, ctx: JobContext) -> None:
    ledger().write("start", job=ctx.run_id, **{"try": ctx.attempt})
    pause = job.pause if 0 < job.pause <= MAX_PAUSE_S else 0
    await asyncio.sleep(pause)
    ledger().write("end", job=ctx.run_id, digest=digest(job.data), **{"try": ctx.attempt})


if os.environ.get("CHAOS_CRON"):

    @host.distributed_cron(
        os.environ["CHAOS_CRON"],
        name="chaos-tick",
        overlap="allow" if os.environ.get("CHAOS_OVERLAP") == "allow" else "skip",
    )
    async def tick(ctx: JobContext) -> None:
        assert ctx.scheduled_at is not None
        record = {"job": ctx.run_id, "try": ctx.attempt, "tick": ctx.scheduled_at.timestamp()}
        ledger().write("start", **record)
        await asyncio.sleep(float(os.environ.get("CHAOS_CRON_RUN_S", "0")))
        ledger().write("end", **record)


async def _nothing(ctx: JobContext) -> None:
    return None


for _index, (_expression, _zone) in enumerate(json.loads(os.environ.get("CHAOS_EXTRA_CRON", "[]"))):
    host.add_distributed_cron_job(_nothing, _expression, name=f"fuzzed-{_index}", timezone=_zone)
