"""The ``hostedjobs`` command: run a worker process for a host defined in your code."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .exceptions import HostedJobsError
from .host import JobHost

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


async def _run_worker(host: JobHost, *, concurrency: int | None, burst: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            logger.info(
                "received %s: finishing running jobs, then exiting", signal.Signals(signum).name
            )
            stop.set()
        else:
            logger.warning("received a second signal: cancelling running jobs now")
            host.shutdown_grace_s = 0
            stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        async with host.run(concurrency=concurrency, burst=burst):
            if burst:
                idle = asyncio.create_task(host.wait_until_idle())
                stopped = asyncio.create_task(stop.wait())
                await asyncio.wait({idle, stopped}, return_when=asyncio.FIRST_COMPLETED)
                idle.cancel()
                stopped.cancel()
            else:
                await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hostedjobs`` console script."""
    parser = argparse.ArgumentParser(prog="hostedjobs", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser(
        "worker",
        help="run a worker process (handlers and hosted jobs) without a web server",
    )
    worker.add_argument(
        "target", metavar="MODULE:ATTR", help="where the JobHost is, e.g. app.jobs:host"
    )
    worker.add_argument("--concurrency", type=int, default=None, help="jobs run at once")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    host = load_host(args.target)
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    host.run_worker = True
    try:
        asyncio.run(_run_worker(host, concurrency=args.concurrency, burst=args.burst))
    except HostedJobsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
