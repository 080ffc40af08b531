"""The ``hostedjobs`` command: the operator's tools for a host defined in your code.

hostedjobs worker MODULE:ATTR [--concurrency N] [--burst]   run a worker process
hostedjobs status MODULE:ATTR [--json]                      show every hosted job
hostedjobs run MODULE:ATTR NAME [--no-wait]                 run a hosted job now
hostedjobs pause MODULE:ATTR NAME                           pause a hosted job everywhere
hostedjobs resume MODULE:ATTR NAME                          resume a paused hosted job
hostedjobs pause-jobs MODULE:ATTR TYPE [--where F=V ...]    pause a job type's queued jobs
hostedjobs resume-jobs MODULE:ATTR TYPE [--where F=V ...]   lift a job type's pauses
hostedjobs paused-jobs MODULE:ATTR [--json]                 list the paused job types
hostedjobs health MODULE:ATTR [--any] [--max-age S]         exit 0 if a worker is alive
hostedjobs cancel MODULE:ATTR JOB_ID [--no-wait]            cancel an on-demand job
hostedjobs schedules MODULE:ATTR list [--json]              list the runtime schedules
hostedjobs schedules MODULE:ATTR add NAME CRON TYPE [--payload JSON] [--timezone Z]
                                                            add a runtime schedule
hostedjobs schedules MODULE:ATTR update NAME [--cron C] [--timezone Z] [--type T]
                                 [--payload JSON] [--misfire M]   change one
hostedjobs schedules MODULE:ATTR pause|resume|remove NAME   change one runtime schedule
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import logging
import os
import shlex
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .exceptions import ConfigurationError, HostedJobsError, UnknownJobError
from .health import BEAT_TTL_S
from .host import JobHost
from .outcomes import JobKind
from .scheduler import JobInfo, JobStatus
from .schedules import Schedule
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
                "paused" if status.paused else _when(status.next_run),
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


async def _status(host: JobHost, as_json: bool, target: str) -> None:
    async with host.connected():
        statuses = await host.status()
    now = datetime.now(UTC)
    statuses = [
        s
        if s.next_run is not None or s.paused or s.kind is JobKind.CONTINUOUS
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
            print(f"\npaused: {', '.join(paused)}; to resume:")
            for name in paused:
                print(f"  hostedjobs resume {shlex.quote(target)} {shlex.quote(name)}")


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


def _where(items: list[str] | None) -> dict[str, Any] | None:
    """``--where field=value`` options: a value that reads as a JSON scalar is that (``42``,
    ``true``, ``null``, ``"42"``), anything else a string."""
    if not items:
        return None
    where: dict[str, Any] = {}
    for item in items:
        field, equals, text = item.partition("=")
        if not equals or not field:
            raise ConfigurationError(f"--where takes field=value, not {item!r}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        where[field] = value
    return where


async def _pause_jobs(
    host: JobHost, job_type: str, where: dict[str, Any] | None, paused: bool
) -> int:
    async with host.connected():
        if paused:
            changed = await host.pause_jobs(job_type, where=where)
        else:
            changed = await host.resume_jobs(job_type, where=where)
    what = job_type if where is None else f"{job_type} where {json.dumps(where, sort_keys=True)}"
    state = "paused" if paused else "resumed"
    if changed:
        print(f"{what}: {state}")
    else:
        print(f"{what}: already paused" if paused else f"{what}: not paused")
    return 0


async def _paused_jobs(host: JobHost, as_json: bool, target: str) -> int:
    async with host.connected():
        pauses = await host.paused_jobs()
    if as_json:
        print(
            json.dumps(
                [
                    {"job_type": p.job_type, "where": dict(p.where), "since": p.since.isoformat()}
                    for p in pauses
                ],
                indent=2,
            )
        )
        return 0
    if not pauses:
        print("no job type is paused")
        return 0
    for pause in pauses:
        where = " ".join(
            f"--where {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in sorted(pause.where.items())
        )
        print(
            f"{pause.job_type}{' ' + where if where else ''}  (since "
            f"{pause.since.isoformat(timespec='seconds')}); to resume: hostedjobs resume-jobs "
            f"{shlex.quote(target)} {shlex.quote(pause.job_type)}{' ' + where if where else ''}"
        )

    return 0


def _schedules_table(schedules: list[Schedule]) -> str:
    header = ("NAME", "CRON", "ZONE", "NEXT TICK (UTC)", "PAUSED", "JOB")
    rows = [header]
    for schedule in schedules:
        rows.append(
            (
                schedule.name,
                schedule.cron,
                schedule.timezone,
                _when(schedule.next_tick),
                "yes" if schedule.paused else "no",
                schedule.job_type,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def _schedules(host: JobHost, args: argparse.Namespace) -> int:
    async with host.connected():
        if args.action == "list":
            found = await host.schedules.list(args.offset, args.limit)
            total = await host.schedules.count()
            if args.json:
                print(
                    json.dumps(
                        [
                            {
                                **dataclasses.asdict(schedule),
                                "next_tick": schedule.next_tick.isoformat()
                                if schedule.next_tick
                                else None,
                            }
                            for schedule in found
                        ],
                        indent=2,
                    )
                )
            elif not found:
                print("no runtime schedules" if not total else f"none here of {total}")
            else:
                print(_schedules_table(found))
                if len(found) < total:
                    print(f"\n{args.offset + 1}-{args.offset + len(found)} of {total}")
            return 0
        name = args.name
        if args.action in ("add", "update"):
            schedule = await _add_or_update_schedule(host, args)
            next_tick = "paused" if schedule.paused else f"next tick {_when(schedule.next_tick)}"
            print(f"{'added' if args.action == 'add' else 'updated'} {name}: {next_tick}")
            return 0
        if args.action == "remove":
            if not await host.schedules.remove(name):
                raise UnknownJobError(f"no schedule named {name!r}")
            print(f"removed {name}")
            return 0
        paused = args.action == "pause"
        changed = await (host.schedules.pause(name) if paused else host.schedules.resume(name))
    state = "paused" if paused else "resumed"
    print(f"{state} {name}" if changed else f"{name}: already {state}")
    return 0


async def _add_or_update_schedule(host: JobHost, args: argparse.Namespace) -> Schedule:
    schedules = host.schedules
    if args.action == "add":
        job = schedules.job(args.job_type, args.payload)
        return await schedules.add(
            args.name,
            args.cron,
            job,
            timezone=args.timezone,
            misfire=args.misfire,
            paused=args.paused,
        )
    changed: object | None = None
    if args.job_type is not None or args.payload is not None:
        current = await schedules.get(args.name)
        if current is None:
            raise UnknownJobError(f"no schedule named {args.name!r}")
        changed = schedules.job(
            args.job_type if args.job_type is not None else current.job_type,
            args.payload if args.payload is not None else current.payload,
        )
    return await schedules.update(
        args.name, cron=args.cron, job=changed, timezone=args.timezone, misfire=args.misfire
    )


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
    for command, doing in (("pause-jobs", "pause"), ("resume-jobs", "lift the pauses of")):
        control = commands.add_parser(
            command,
            parents=[common],
            help=f"{doing} an on-demand job type in every worker (stored in Redis)",
        )
        control.add_argument("target", metavar="MODULE:ATTR", help=target_help)
        control.add_argument("job_type", metavar="TYPE", help="the job type's name")
        control.add_argument(
            "--where",
            action="append",
            metavar="FIELD=VALUE",
            help="only the jobs whose payload's FIELD equals VALUE (a JSON scalar: 42, true, "
            'null, "42"; else a string); repeat for several fields',
        )
    listing = commands.add_parser(
        "paused-jobs", parents=[common], help="list the paused on-demand job types"
    )
    listing.add_argument("target", metavar="MODULE:ATTR", help=target_help)
    listing.add_argument("--json", action="store_true", help="print JSON instead of lines")
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
    schedules = commands.add_parser(
        "schedules", parents=[common], help="list or change the runtime schedules"
    )
    schedules.add_argument("target", metavar="MODULE:ATTR", help=target_help)
    actions = schedules.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the schedules in name order, with next tick")
    listing.add_argument("--offset", type=int, default=0, help="skip this many (default 0)")
    listing.add_argument("--limit", type=int, default=100, help="show this many (default 100)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    adding = actions.add_parser(
        "add", help="add a schedule: enqueue a job of TYPE with --payload at each tick of CRON"
    )
    adding.add_argument("name", help="the schedule's name (unique)")
    adding.add_argument("cron", help="a cron expression, e.g. '*/5 * * * *' or @hourly")
    adding.add_argument(
        "job_type", metavar="TYPE", help="a job type with a handler here: name or name@version"
    )
    adding.add_argument(
        "--payload", default="{}", help="the job's fields as a JSON object (default {})"
    )
    adding.add_argument("--timezone", default="UTC", help="an IANA zone (default UTC)")
    adding.add_argument("--misfire", choices=("skip", "run_once"), default="skip")
    adding.add_argument("--paused", action="store_true", help="add it paused")
    updating = actions.add_parser(
        "update", help="change a schedule's expression, zone, job or misfire policy"
    )
    updating.add_argument("name", help="the schedule's name")
    updating.add_argument("--cron", help="a new cron expression")
    updating.add_argument("--timezone", help="a new IANA zone")
    updating.add_argument(
        "--type", dest="job_type", metavar="TYPE", help="a new job type (name or name@version)"
    )
    updating.add_argument(
        "--payload", help="the job's new fields as a JSON object (the type stays unless --type)"
    )
    updating.add_argument("--misfire", choices=("skip", "run_once"))
    for action, doing in (
        ("pause", "stop enqueuing a schedule's runs, in every process"),
        ("resume", "resume a paused schedule from its next tick"),
        ("remove", "delete a schedule (runs already queued stay)"),
    ):
        change = actions.add_parser(action, help=doing)
        change.add_argument("name", help="the schedule's name")
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
            asyncio.run(_status(host, args.json, args.target))
        elif args.command in ("pause", "resume"):
            return asyncio.run(_pause(host, args.name, args.command == "pause"))
        elif args.command in ("pause-jobs", "resume-jobs"):
            where = _where(args.where)
            paused = args.command == "pause-jobs"
            return asyncio.run(_pause_jobs(host, args.job_type, where, paused))
        elif args.command == "paused-jobs":
            return asyncio.run(_paused_jobs(host, args.json, args.target))
        elif args.command == "health":
            return asyncio.run(_health(host, any_host=args.any, max_age_s=args.max_age))
        elif args.command == "schedules":
            if args.action == "list" and (args.offset < 0 or args.limit < 0):
                parser.error("--offset and --limit must be >= 0")
            return asyncio.run(_schedules(host, args))
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
