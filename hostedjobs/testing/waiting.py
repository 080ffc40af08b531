"""Waiting for an on-demand job to reach a state."""

from __future__ import annotations

import asyncio
import time
from typing import TypeVar, overload

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
            raise TimeoutError(f"job {job_id} did not reach {sorted(wanted)} in {timeout}s: {info}")
        await asyncio.sleep(0.01)
        info = await host.scheduler.get(job_id)
    return info
