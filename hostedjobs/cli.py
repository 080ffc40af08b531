"""The ``hostedjobs`` command: the operator's tools for a host defined in your code.

hostedjobs worker MODULE:ATTR [--concurrency N] [--burst]   run a worker process
hostedjobs status MODULE:ATTR [--json]                      show every hosted job
hostedjobs run MODULE:ATTR NAME [--no-wait]                 run a hosted job now
hostedjobs pause MODULE:ATTR NAME                           pause a hosted job everywhere
hostedjobs resume MODULE:ATTR NAME                          resume a paused hosted job
hostedjobs health MODULE:ATTR [--any] [--max-age S]         exit 0 if a worker is alive
hostedjobs cancel MODULE:ATTR JOB_ID [--no-wait]            cancel an on-demand job
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from .exceptions import HostedJobsError, UnknownJobError
from .health import BEAT_TTL_S
from .host import JobHost
from .outcomes import JobKind
from .scheduler import JobInfo, JobStatus
from .status import HostedJobStatus
from .testing import wait_for_job

__all__ = ["load_host", "main"]

logger = logging.getLogger("hostedjobs.cli")


def load_host(target: str) -> JobHost:
    """Import ``"package.module:attribute"`` and return the `JobHost` it names."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"error: expected MODULE:ATTR (e.g. myapp.jobs:host), got {target!r}")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        value: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"error: cannot import {module_name!r}: {exc}") from exc
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise SystemExit(f"error: {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(value, JobHost):
        raise SystemExit(
            f"error: {target} is a {type(value).__name__}, not a JobHost; point at the object "
            "created with JobHost(...)"
        )
    return value


_THREADS_WAIT_S = 2.0
"""How long a stopped worker process waits for threads still running code of runs it
cancelled (``asyncio.to_thread``) before it exits without them."""


async def _run_worker(host: JobHost, *, concurrency: int | None, burst: bool) -> bool:
    """Run the host until a signal (or, in burst mode, an empty queue); True if threads of
    cancelled runs are still busy, so the caller must exit without waiting for them."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0
    started = False

    async def serve() -> None:
        nonlocal started
        async with host.run(concurrency=concurrency, burst=burst):
            started = True
            if burst:
                idle = asyncio.create_task(host.wait_until_idle())
                stopped = asyncio.create_task(stop.wait())
                await asyncio.wait({idle, stopped}, return_when=asyncio.FIRST_COMPLETED)
                idle.cancel()
                stopped.cancel()
            else:
                await stop.wait()

    serving = loop.create_task(serve())

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        name = signal.Signals(signum).name
        if not started:
            # Still starting (a blocking startup action, say): nothing runs yet that a grace
            # would protect, and the start would not look at the signal until it is done.
            logger.info("received %s while starting: stopping now", name)
            serving.cancel()
        elif signals_seen == 1:
            logger.info("received %s: finishing running jobs, then exiting", name)
            stop.set()
        else:
            logger.warning("received a second signal: cancelling running jobs now")
            host.hurry_shutdown()
            stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await serving
    except asyncio.CancelledError:
        if not serving.cancelled() or signals_seen == 0:
            raise  # this task itself was cancelled, not the start
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    failed = host.failed_startup_action
    if failed is not None:
        raise _StartupFailed(f"startup action {failed[0]!r} failed: {failed[1]}")
    # A cancelled run's thread (asyncio.to_thread) goes on; the interpreter would wait for it
    # at exit, however long it takes, and the job is back in the queue already.
    executor = loop.create_task(loop.shutdown_default_executor())
    await asyncio.wait({executor}, timeout=_THREADS_WAIT_S)
    if executor.done():
        return False
    logger.warning(
        "exiting without waiting for threads still running code of cancelled jobs "
        "(asyncio.to_thread); those jobs are back in the queue"
    )
    return True


class _StartupFailed(Exception):
    pass


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _status_table(statuses: list[HostedJobStatus]) -> str:
    header = (
        "NAME",
        "KIND",
        "SCHEDULE",
        "ZONE",
        "NEXT RUN (UTC)",
        "LAST RUN (UTC)",
        "RESULT",
        "RUNNING",
    )
    rows = [header]
    for status in statuses:
        result = status.last_outcome or "-"
        if status.last_message:
            result = f"{result}: {status.last_message}"
        rows.append(
            (
                status.name,
                str(status.kind),
                status.schedule or "-",
                status.timezone or "-",
                _when(status.next_run),
                _when(status.last_started_at),
                result[:60],
                str(status.running),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def _status(host: JobHost, as_json: bool) -> None:
    async with host.connected():
        statuses = await host.status()
    now = datetime.now(UTC)
    statuses = [
        s
        if s.next_run is not None or s.kind is JobKind.CONTINUOUS
        else _with_next_run(host, s, now)
        for s in statuses
    ]
    if as_json:
        print(json.dumps([s.to_json() for s in statuses], indent=2))
    elif not statuses:
        print("no hosted jobs registered")
    else:
        print(_status_table(statuses))
        paused = [s.name for s in statuses if s.paused]
        if paused:
            print(f"\npaused: {', '.join(paused)} (hostedjobs resume MODULE:ATTR NAME)")


def _with_next_run(host: JobHost, status: HostedJobStatus, now: datetime) -> HostedJobStatus:
    job = host.hosted_jobs[status.name]
    assert job.schedule is not None
    return dataclasses.replace(status, next_run=job.schedule.next_tick(now))


async def _wait_reporting(host: JobHost, job_id: str) -> JobInfo:
    """Wait for a queued run, saying so if no worker seems to take it."""
    try:
        return await wait_for_job(host, job_id, timeout=10)
    except TimeoutError:
        info = await host.scheduler.get(job_id)
        if info is not None and info.status is JobStatus.QUEUED:
            print(
                f"still queued after 10 s: is a worker running for queue {host.queue_name!r}? "
                "(start one with `hostedjobs worker`; Ctrl-C stops waiting, the run stays queued)",
                file=sys.stderr,
            )
    return await wait_for_job(host, job_id, timeout=float("inf"))


async def _run_job(host: JobHost, name: str, wait: bool) -> int:
    job = host.hosted_jobs.get(name)
    if job is None:
        known = ", ".join(sorted(host.hosted_jobs)) or "none"
        raise UnknownJobError(f"no hosted job named {name!r} (registered: {known})")
    async with host.connected():
        if job.kind is JobKind.DISTRIBUTED_CRON:
            job_id = await host.trigger(name)
            print(f"queued {name} as job {job_id}")
            if not wait:
                return 0
            info = await _wait_reporting(host, job_id)
            message = info.error or info.message
            print(f"{name}: {info.status}{': ' + message if message else ''}")
            return 0 if info.status is JobStatus.SUCCEEDED else 1
        result = await host.run_once(name)
        await host.services.aclose()
    print(f"{name}: {result.outcome}{': ' + result.message if result.message else ''}")
    return 0 if result.is_success else 1


async def _pause(host: JobHost, name: str, paused: bool) -> int:
    async with host.connected():
        changed = await (host.pause(name) if paused else host.resume(name))
    state = "paused" if paused else "resumed"
    print(f"{name}: {state}" if changed else f"{name}: already {state}")
    return 0


async def _health(host: JobHost, *, any_host: bool, max_age_s: float) -> int:
    async with host.connected():
        beats = await host.workers(max_age=max_age_s)
    here = socket.gethostname()
    alive = beats if any_host else [beat for beat in beats if beat.hostname == here]
    where = "any host" if any_host else f"host {here!r}"
    if not alive:
        print(
            f"unhealthy: no worker of queue {host.queue_name!r} on {where} has beaten in the "
            f"last {max_age_s:g}s",
            file=sys.stderr,
        )
        return 1
    for beat in alive:
        shard = (
            "" if beat.shard is None else f" (shard {beat.shard} of {beat.shards}, {beat.queue})"
        )
        print(
            f"ok: worker {beat.worker_id}{shard} beat {beat.age_s:.1f}s ago, running "
            f"{beat.running}, completed {beat.completed}, failed {beat.failed}"
        )
    return 0


_CANCEL_WAIT_S = 30.0
"""How long `hostedjobs cancel` waits for a running job's worker to stop it."""


async def _cancel(host: JobHost, job_id: str, wait: bool) -> int:
    """Cancel a queued, scheduled or running job; 0 once it is cancelled (or, with
    ``wait`` off, asked to stop), 1 if it is unknown, already finished, or did not stop."""
    async with host.connected():
        scheduler = host.scheduler
        info = await scheduler.get(job_id)
        if info is None:
            print(
                f"error: no job {job_id!r} (never queued, or its result expired)", file=sys.stderr
            )
            return 1
        if info.finished:
            print(f"error: job {job_id} has already finished: {info.status}", file=sys.stderr)
            return 1
        if not await scheduler.cancel(job_id):
            latest = await scheduler.get(job_id)
            status = "gone" if latest is None else str(latest.status)
            print(f"error: job {job_id} could not be cancelled: it is {status}", file=sys.stderr)
            return 1
        if info.status is not JobStatus.RUNNING:
            print(f"cancelled {job_id} ({info.job_type}, was {info.status})")
            return 0
        print(f"asked the worker running {job_id} ({info.job_type}) to stop it")
        if not wait:
            return 0
        try:
            done = await wait_for_job(host, job_id, timeout=_CANCEL_WAIT_S)
        except TimeoutError:
            print(
                f"error: job {job_id} still runs after {_CANCEL_WAIT_S:g} s: is its worker "
                "alive? (it stops the job when it next looks, about every half second)",
                file=sys.stderr,
            )
            return 1
        print(f"{job_id}: {done.status}{': ' + done.message if done.message else ''}")
        return 0 if done.status is JobStatus.CANCELLED else 1


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop for a worker process: uvloop (15-20% faster) when available."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit(
                "error: --loop uvloop needs uvloop: pip install 'hostedjobs[uvloop]'"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hostedjobs`` console script."""
    parser = argparse.ArgumentParser(
        prog="hostedjobs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)
    target_help = "where the JobHost is, e.g. app.jobs:host"
    worker = commands.add_parser(
        "worker",
        parents=[common],
        help="run a worker process (queued jobs and hosted jobs) without a web server",
    )
    worker.add_argument("target", metavar="MODULE:ATTR", help=target_help)
    worker.add_argument("--concurrency", type=int, default=None, help="queued jobs run at once")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop: uvloop if installed (the uvloop extra) unless told otherwise",
    )
    status = commands.add_parser(
        "status", parents=[common], help="show every hosted job: schedule, next and last run"
    )
    status.add_argument("target", metavar="MODULE:ATTR", help=target_help)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    run = commands.add_parser(
        "run",
        parents=[common],
        help="run a hosted job now (a distributed cron job is queued for the workers)",
    )
    run.add_argument("target", metavar="MODULE:ATTR", help=target_help)
    run.add_argument("name", help="the hosted job's name")
    run.add_argument("--no-wait", action="store_true", help="do not wait for a queued run to end")
    for command, doing in (("pause", "pause"), ("resume", "resume")):
        control = commands.add_parser(
            command,
            parents=[common],
            help=f"{doing} a hosted job in every process (stored in Redis)",
        )
        control.add_argument("target", metavar="MODULE:ATTR", help=target_help)
        control.add_argument("name", help="the hosted job's name")
    health = commands.add_parser(
        "health",
        parents=[common],
        help="exit 0 if a worker on this host (or --any host) has a recent heartbeat, else 1",
    )
    health.add_argument("target", metavar="MODULE:ATTR", help=target_help)
    health.add_argument("--any", action="store_true", help="any worker of the queue, anywhere")
    health.add_argument(
        "--max-age", type=float, default=BEAT_TTL_S, help="seconds a heartbeat stays fresh"
    )
    cancel = commands.add_parser(
        "cancel",
        parents=[common],
        help="cancel a queued, scheduled or running on-demand job (a running one is stopped)",
    )
    cancel.add_argument("target", metavar="MODULE:ATTR", help=target_help)
    cancel.add_argument("job_id", metavar="JOB_ID", help="the job's id")
    cancel.add_argument(
        "--no-wait", action="store_true", help="do not wait for a running job to stop"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    host = load_host(args.target)
    try:
        if args.command == "worker":
            if args.concurrency is not None and args.concurrency < 1:
                parser.error("--concurrency must be >= 1")
            host.run_worker = True
            with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
                if runner.run(_run_worker(host, concurrency=args.concurrency, burst=args.burst)):
                    # Closing the runner would wait for the busy threads: leave without them.
                    logging.shutdown()
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(0)
        elif args.command == "status":
            asyncio.run(_status(host, args.json))
        elif args.command in ("pause", "resume"):
            return asyncio.run(_pause(host, args.name, args.command == "pause"))
        elif args.command == "health":
            return asyncio.run(_health(host, any_host=args.any, max_age_s=args.max_age))
        elif args.command == "cancel":
            return asyncio.run(_cancel(host, args.job_id, wait=not args.no_wait))
        else:
            return asyncio.run(_run_job(host, args.name, wait=not args.no_wait))
    except (HostedJobsError, _StartupFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
