"""Pieces shared by the benchmark's parent and its worker processes.

Worker processes report one JSON object on the last line of stdout (`emit`); the parent reads
it back. `Recorder` is what the benchmark jobs of every system call at their start (and end).
In serve mode a worker prints `READY`, starts on the parent's `GO` line on stdin and runs until
the next line (`wait_for_go`, `wait_for_stop`); the parent decides when the work is done.

This module imports only the standard library: the peer workers (``bench/peer_*.py``) run it
under their own virtualenvs, where neither hostedjobs nor arq is installed. `PeerClient` and
`peer_main` are the harness those peer modules share.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

__all__ = [
    "GO",
    "LATENCY_INTERVAL_S",
    "READY",
    "STREAM_LIMIT",
    "WARM_UP_JOBS",
    "PeerClient",
    "Recorder",
    "announce_ready",
    "emit",
    "peer_main",
    "percentile",
    "read_line",
    "wait_for_go",
    "wait_for_stop",
    "worker_arguments",
]

READY = "ready"
"""The line a latency worker prints once it is waiting for jobs."""

GO = "go"
"""Serve mode: the line the parent sends a ready worker to start it (later lines stop it)."""

LATENCY_INTERVAL_S = 0.010
"""Pickup test: one job every 10 ms."""

PRELOAD_CHUNK = 250
"""Preloads without a bulk API: enqueues in flight at once (asyncio.gather)."""

WARM_UP_JOBS = 100
"""Enqueue mode: untimed enqueues before the timed ones (connection, script load)."""


@dataclass
class Recorder:
    """Counts the jobs a worker process ran and their enqueue-to-start latencies.

    A job calls `started` first thing with the wall-clock time its enqueuer took just before
    the enqueue call (0 for jobs that carry none). ``done`` is set once ``expected`` jobs
    have started. A job that calls `finished` at its end also counts towards ``all_done``,
    set once ``expected`` jobs have finished (the stop condition of workers without a burst
    mode). With ``track_seqs`` it also keeps the sequence number of every job it saw start,
    so that the parent can check each job ran exactly once across several processes.
    """

    expected: int = 0
    count: int = 0
    finished_count: int = 0
    track_seqs: bool = False
    seqs: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    all_done: asyncio.Event = field(default_factory=asyncio.Event)

    def started(self, sent_at: float, seq: int = -1) -> None:
        """Record one job start; ``sent_at`` is the enqueuer's ``time.time()``, or 0."""
        if self.track_seqs:
            self.seqs.append(seq)
        if sent_at:
            self.latencies_ms.append((time.time() - sent_at) * 1000)
        self.count += 1
        if self.count == self.expected:
            self.done.set()

    def finished(self) -> None:
        """Record one job end."""
        self.finished_count += 1
        if self.finished_count == self.expected:
            self.all_done.set()


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
    parser.add_argument("mode", choices=["drain", "latency", "serve", "enqueue", "preload", "feed"])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--jobs", type=int, required=True, help="jobs to expect")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=60.0, help="latency mode: give up after")
    parser.add_argument("--bulk-jobs", type=int, default=0, help="enqueue mode: bulk size")
    parser.add_argument("--sleep", type=float, default=0.0, help="preload: each job sleeps")
    return parser


async def wait_for_go() -> float:
    """Serve mode: wait for the parent's go line; returns ``time.process_time()`` at it.

    Pair with `wait_for_stop` once the worker is running.
    """
    announce_ready()
    line = await asyncio.to_thread(sys.stdin.readline)
    if line.strip() != GO:
        raise SystemExit(f"expected {GO!r} on stdin, got {line!r}")
    return time.process_time()


async def wait_for_stop() -> None:
    """Serve mode: wait for the parent's stop line (or the end of stdin)."""
    await asyncio.to_thread(sys.stdin.readline)


STREAM_LIMIT = 1 << 20
"""The ``limit=`` the parent gives its workers' stdout readers: 1 MiB lines in one piece."""


async def read_line(stream: asyncio.StreamReader) -> bytes:
    """The parent's read of one line of a worker's stdout, however long (b"" at the end).

    ``StreamReader.readline`` fails on a line longer than the reader's ``limit`` (64 KiB by
    default; a serve-mode result carries every job's sequence number: 20,000 jobs make
    ~120 KB). This takes such a line in pieces of up to the limit.
    """
    pieces: list[bytes] = []
    while True:
        try:
            pieces.append(await stream.readuntil(b"\n"))
        except asyncio.IncompleteReadError as exc:  # end of stream: the rest, if any
            pieces.append(exc.partial)
        except asyncio.LimitOverrunError as exc:  # no separator within the limit yet
            pieces.append(await stream.readexactly(exc.consumed))
            continue
        return b"".join(pieces)


def percentile(values: list[float], pct: float) -> float:
    """The ``pct``-th percentile of ``values`` (linear interpolation between ranks)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# -- the peers' harness ---------------------------------------------------------------------


class PeerClient(abc.ABC):
    """One peer library, as the harness drives it: enqueue jobs, and run a worker.

    The job is the benchmark's no-op: ``job(seq, sent_at, sleep_s)`` calls
    ``recorder.started(sent_at)``, sleeps ``sleep_s`` if non-zero, then ``recorder.finished()``.
    """

    has_bulk = False
    """Whether the peer has a bulk enqueue API (`enqueue_many`)."""

    def __init__(self, redis_url: str, queue: str, recorder: Recorder) -> None:
        self.redis_url = redis_url
        self.queue = queue
        self.recorder = recorder

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect (called once, before anything else)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def enqueue(self, seq: int, sent_at: float = 0.0, sleep_s: float = 0.0) -> None:
        """Queue one job with the peer's ordinary single-enqueue call."""

    async def enqueue_many(self, seqs: range, sleep_s: float = 0.0) -> None:
        """Queue one job per ``seqs`` item with the peer's bulk API (only if `has_bulk`)."""
        raise NotImplementedError

    @abc.abstractmethod
    def worker(self, concurrency: int) -> AbstractAsyncContextManager[None]:
        """A running worker while the context is entered; stopped on exit."""


async def _preload(client: PeerClient, n: int, sleep_s: float) -> None:
    if client.has_bulk:
        await client.enqueue_many(range(n), sleep_s)
        return
    for start in range(0, n, PRELOAD_CHUNK):
        await asyncio.gather(
            *(client.enqueue(i, 0.0, sleep_s) for i in range(start, min(n, start + PRELOAD_CHUNK)))
        )


async def _enqueue_rates(client: PeerClient, n: int, bulk_n: int) -> dict[str, Any]:
    single: float | None = None
    if n:
        for i in range(WARM_UP_JOBS):  # warm-up: connection, script load
            await client.enqueue(-i)
        start = time.perf_counter()
        for i in range(n):
            await client.enqueue(i)
        single = n / (time.perf_counter() - start)
    bulk: float | None = None
    if client.has_bulk and bulk_n:
        await client.enqueue_many(range(WARM_UP_JOBS))
        start = time.perf_counter()
        await client.enqueue_many(range(bulk_n))
        bulk = bulk_n / (time.perf_counter() - start)
    return {"single": single, "bulk": bulk, "has_bulk": client.has_bulk}


async def _feed(client: PeerClient, n: int) -> None:
    await client.enqueue(-1, 0.0)  # warm-up, not timed by the worker (sent_at 0)
    begin = time.perf_counter()
    for i in range(n):
        delay = begin + i * LATENCY_INTERVAL_S - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await client.enqueue(i, time.time())


async def _drain(client: PeerClient, n: int, concurrency: int) -> None:
    client.recorder.expected = n
    wall0, cpu0 = time.perf_counter(), time.process_time()
    async with client.worker(concurrency):
        await client.recorder.all_done.wait()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        emit({"jobs": client.recorder.finished_count, "wall_s": wall, "cpu_s": cpu})
        _exit_soon()


async def _latency(client: PeerClient, n: int, concurrency: int, give_up_s: float) -> None:
    # The feeder's warm-up job carries no timestamp, so it starts but records no latency.
    client.recorder.expected = n + 1
    async with client.worker(concurrency):
        announce_ready()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.recorder.done.wait(), give_up_s)
        emit({"jobs": client.recorder.count - 1, "latencies_ms": client.recorder.latencies_ms})
        _exit_soon()


def _exit_soon(seconds: float = 10.0) -> None:
    """Once a worker's result is out, don't let the peer's shutdown hang the benchmark.

    (taskiq's receiver sometimes never returned from its shutdown.)
    """
    timer = threading.Timer(seconds, os._exit, args=(0,))
    timer.daemon = True
    timer.start()


def peer_main(description: str, make: Callable[[str, str, Recorder], PeerClient]) -> None:
    """Entry point of a peer module: parse the worker command line and run one mode.

    Modes beyond `worker_arguments`' drain and latency: ``enqueue`` (sequential single enqueue
    rate over ``--jobs`` unless it is 0, then one bulk call of ``--bulk-jobs`` if that is not 0
    and the peer has a bulk API), ``preload``
    (queue ``--jobs`` jobs that each sleep ``--sleep`` s) and ``feed`` (the pickup test's
    enqueuer: ``--jobs`` jobs, one every 10 ms, each carrying its ``time.time()``).
    """
    args = worker_arguments(description).parse_args()

    async def run() -> dict[str, Any] | None:
        """The mode's result, or None when the mode emitted it itself."""
        async with make(args.redis_url, args.queue, Recorder()) as client:
            if args.mode == "enqueue":
                return await _enqueue_rates(client, args.jobs, args.bulk_jobs)
            if args.mode == "preload":
                await _preload(client, args.jobs, args.sleep)
                return {"jobs": args.jobs}
            if args.mode == "feed":
                await _feed(client, args.jobs)
                return {"jobs": args.jobs}
            if args.mode == "drain":
                await _drain(client, args.jobs, args.concurrency)
            else:
                await _latency(client, args.jobs, args.concurrency, args.timeout)
            return None

    result = asyncio.run(run())
    if result is not None:
        emit(result)
