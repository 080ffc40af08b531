"""Function jobs: arguments are checked against the function, results are typed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, assert_type

from hostedjobs import Inject, JobContext, JobHost, JobId, JobInfo, RetryPolicy, Task
from hostedjobs.testing import wait_for_job

host = JobHost()


class Mailer: ...


@host.task
async def send_welcome(ctx: JobContext, email: str, mailer: Mailer = Inject()) -> int:
    return len(email)


@host.task(name="typing.export", version=2, retry=RetryPolicy(max_tries=1), timeout=30)
async def export(rows: int, /, *, fmt: str = "csv") -> list[str]:
    return []


@host.task  # type: ignore[arg-type]
def sync_task(email: str) -> None: ...


@host.task(name="typing.sync")  # type: ignore[arg-type]
def sync_named(email: str) -> None: ...


welcome_task: Task[..., int] = send_welcome
export_task: Task[..., list[str]] = export
wrong_result: Task[..., str] = send_welcome  # type: ignore[assignment]


def stored_id() -> str:
    """An id read back from somewhere (a database, a URL): a plain string."""
    return "0123"


async def calls() -> None:
    job_id = await send_welcome.enqueue(email="a@b.c")
    assert_type(job_id, JobId[int])
    await send_welcome.enqueue("a@b.c")
    await export.enqueue(10, fmt="json")
    await send_welcome.enqueue(email=42)  # type: ignore[arg-type]
    await send_welcome.enqueue()  # type: ignore[call-arg]
    await send_welcome.enqueue(email="a@b.c", colour="red")  # type: ignore[call-arg]
    await export.enqueue(rows=10)  # type: ignore[call-arg]

    await send_welcome.schedule(60, email="a@b.c")
    await send_welcome.schedule(timedelta(days=7), email="a@b.c")
    await send_welcome.schedule(datetime(2030, 1, 1, tzinfo=UTC), email="a@b.c")
    await send_welcome.schedule("soon", email="a@b.c")  # type: ignore[arg-type]
    await send_welcome.schedule(60, email=b"a@b.c")  # type: ignore[arg-type]

    # The id carries the result type to get, wait_for_job and watch.
    info = await host.scheduler.get(job_id)
    assert info is not None
    assert_type(info.result, int | None)
    text: str = info.result  # type: ignore[assignment]
    finished = await wait_for_job(host, job_id)
    assert_type(finished, JobInfo[int])
    exported = await wait_for_job(host, await export.enqueue(1))
    assert_type(exported.result, list[str] | None)
    updates = host.scheduler.watch(job_id)
    assert_type(updates, AsyncIterator[JobInfo[int]])

    # Ids stay strings, and plain strings stay ids (of an unknown result type).
    text = stored_id()
    untyped = await wait_for_job(host, text)
    assert_type(untyped, JobInfo[Any])
    assert await host.scheduler.cancel(job_id)
    assert await host.scheduler.delete(text)
    typed_again: JobId[int] = text  # type: ignore[assignment]

    # A call's payload is a job for the scheduler's own methods.
    await host.scheduler.enqueue(send_welcome.payload(email="a@b.c"), job_id="welcome-1")
    await host.scheduler.enqueue_many([export.payload(1), export.payload(2, fmt="json")])
    send_welcome.payload(mailer=Mailer())  # type: ignore[call-arg]
    del typed_again
