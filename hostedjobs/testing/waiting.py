"""Waiting for an on-demand job to reach a state."""

from __future__ import annotations

import asyncio
import time
from typing import TypeVar, overload

from ..eager import EagerScheduler
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

    Raises `TimeoutError` with the job's last known state if that takes over ``timeout`` s.
    A `JobId` from a function job gives a `JobInfo` whose ``result`` has the function's type.
    """
    wanted = statuses or {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    deadline = time.monotonic() + timeout
    info = await host.scheduler.get(job_id)
    while info is None or info.status not in wanted:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"job {job_id} did not reach {sorted(wanted)} in {timeout}s: {_why(host, info)}"
            )
        await asyncio.sleep(0.01)
        info = await host.scheduler.get(job_id)
    return info


def _why(host: JobHost, info: JobInfo | None) -> str:
    if info is None:
        return "there is no job with this id (never enqueued, deleted, or its result expired)"
    if info.status is JobStatus.SCHEDULED and isinstance(host.scheduler, EagerScheduler):
        return (
            f"{info}; it is scheduled: under eager mode's frozen clock it runs only when the "
            "test moves the clock past its time: jobs.advance(...) moves it and runs what is due"
        )
    return str(info)
