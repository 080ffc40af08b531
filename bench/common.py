"""Pieces shared by the benchmark's parent and its worker processes.

Worker processes report one JSON object on the last line of stdout (`emit`); the parent reads
it back. `Recorder` is what the benchmark jobs of both systems call at their start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "READY",
    "Recorder",
    "announce_ready",
    "emit",
    "percentile",
    "worker_arguments",
]

READY = "ready"
"""The line a latency worker prints once it is waiting for jobs."""


@dataclass
class Recorder:
    """Counts the jobs a worker process ran and their enqueue-to-start latencies.

    A job calls `started` first thing with the wall-clock time its enqueuer took just before
    the enqueue call (0 for jobs that carry none). ``done`` is set once ``expected`` jobs
    have started.
    """

    expected: int = 0
    count: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def started(self, sent_at: float) -> None:
        """Record one job start; ``sent_at`` is the enqueuer's ``time.time()``, or 0."""
        if sent_at:
            self.latencies_ms.append((time.time() - sent_at) * 1000)
        self.count += 1
        if self.count == self.expected:
            self.done.set()


def emit(result: dict[str, Any]) -> None:
    """Print a worker's result as the JSON line the parent reads."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def announce_ready() -> None:
    """Tell the parent that the worker is up and waiting for jobs."""
    sys.stdout.write(READY + "\n")
    sys.stdout.flush()


def worker_arguments(description: str) -> argparse.ArgumentParser:
    """The command line every worker module takes: a mode and where the queue is."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("mode", choices=["drain", "latency"])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--jobs", type=int, required=True, help="jobs to expect")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=60.0, help="latency mode: give up after")
    return parser


def percentile(values: list[float], pct: float) -> float:
    """The ``pct``-th percentile of ``values`` (linear interpolation between ranks)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
