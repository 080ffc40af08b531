"""Waiting for an on-demand job to reach a state."""

from __future__ import annotations

import asyncio
import time
from typing import TypeVar, overload

from ..eager import EagerScheduler
from ..exceptions import RedisUnavailableError
from ..host import JobHost
from ..scheduler import JobId, JobInfo, JobStatus

__all__ = ["wait_for_job"]

R = TypeVar("R")


@overload
async def wait_for_job(
    host: JobHost,
    job_id: JobId[R],
    *,
    statuses: frozenset[JobStatus] | set[JobStatus] | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> JobInfo[R]: ...
@overload
async def wait_for_job(
    host: JobHost,
    job_id: str,
    *,
    statuses: frozenset[JobStatus] | set[JobStatus] | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> JobInfo: ...
async def wait_for_job(
    host: JobHost,
    job_id: str,
    *,
    statuses: frozenset[JobStatus] | set[JobStatus] | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 - a deadline for the whole wait, not one call
) -> JobInfo:
    """Wait until the job reaches one of ``statuses`` (default: finished) and return it.

    Raises `TimeoutError` with the job's last known state if that takes over ``timeout`` s;
    Redis not answering meanwhile (a failover, a restart) is waited through, within it.
    A `JobId` from a function job gives a `JobInfo` whose ``result`` has the function's type.
    """
    wanted = statuses or {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    deadline = time.monotonic() + timeout
    info: JobInfo | None = None
    unavailable: RedisUnavailableError | None = None
    while True:
        try:
            info = await host.scheduler.get(job_id)
            unavailable = None
        except RedisUnavailableError as error:
            # A failover or a restart under way: keep waiting within the deadline.
            unavailable = error
        if info is not None and unavailable is None and info.status in wanted:
            return info
        if time.monotonic() > deadline:
            why = f"Redis did not answer ({unavailable})" if unavailable else _why(host, info)
            raise TimeoutError(f"job {job_id} did not reach {sorted(wanted)} in {timeout}s: {why}")
        await asyncio.sleep(0.01 if unavailable is None else 0.1)


def _why(host: JobHost, info: JobInfo | None) -> str:
    if info is None:
        return "there is no job with this id (never enqueued, deleted, or its result expired)"
    if info.status is JobStatus.SCHEDULED and isinstance(host.scheduler, EagerScheduler):
        return (
            f"{info}; it is scheduled: under eager mode's frozen clock it runs only when the "
            "test moves the clock past its time: jobs.advance(...) moves it and runs what is due"
        )
    return str(info)
