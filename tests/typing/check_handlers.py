"""Handlers, hosted jobs, startup actions and enqueue: wrong ones are type errors."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, assert_type

import msgspec
import pydantic

from hostedjobs import Inject, JobContext, JobHost, JobInfo, JobResult, job_type

host = JobHost()


@job_type("typing.send-welcome")
@dataclass
class SendWelcome:
    email: str


@job_type("typing.charge-card")
@dataclass
class ChargeCard:
    order_id: int


@job_type("typing.refund")
class Refund(pydantic.BaseModel):
    order_id: int


@job_type("typing.ship")
class Ship(msgspec.Struct):
    order_id: int


class NotAJob:
    email = "a@b.c"


class Mailer: ...


def poll_context() -> JobContext:
    raise NotImplementedError


# -- handlers: the job parameter is checked against the job type ------------------------------


@host.handler(SendWelcome)
async def welcome(job: SendWelcome, ctx: JobContext, mailer: Mailer = Inject()) -> None: ...


@host.handler(SendWelcome)  # type: ignore[arg-type]
async def wrong_job(job: ChargeCard, ctx: JobContext) -> None: ...


@host.handler(SendWelcome)  # type: ignore[arg-type]
def sync_handler(job: SendWelcome) -> None: ...


@host.handler(Refund)
async def refund(job: Refund) -> None: ...


@host.handler(Ship)  # type: ignore[arg-type]
async def wrong_model(job: Refund) -> None: ...


@host.handler(ChargeCard)
class ChargeHandler:
    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer

    async def handle(self, job: ChargeCard, ctx: JobContext) -> JobResult:
        return JobResult.success()


@host.handler(SendWelcome)  # type: ignore[arg-type]
class WrongJobHandler:
    async def handle(self, job: ChargeCard) -> None: ...


@host.handler(SendWelcome)  # type: ignore[arg-type]
class SyncHandler:
    def handle(self, job: SendWelcome) -> None: ...


async def charge(job: ChargeCard) -> int:
    return job.order_id


def sync_charge(job: ChargeCard) -> int:
    return job.order_id


class OnlyTheJob:
    async def handle(self, job: ChargeCard) -> None: ...


host.add_handler(ChargeCard, charge)
host.add_handler(ChargeCard, ChargeHandler)
host.add_handler(ChargeCard, OnlyTheJob)
host.add_handler(SendWelcome, charge)  # type: ignore[arg-type]
host.add_handler(SendWelcome, WrongJobHandler)  # type: ignore[arg-type]
host.add_handler(ChargeCard, sync_charge)  # type: ignore[arg-type]
host.add_handler(NotAJob, charge)  # type: ignore[type-var, arg-type]


# -- hosted jobs and startup actions: sync code is refused --------------------------------------


@host.job(interval=30)
async def poll(ctx: JobContext, mailer: Mailer = Inject()) -> JobResult:
    return JobResult.success("3 messages")


@host.job(interval=30)  # type: ignore[type-var]
def sync_poll(ctx: JobContext) -> None: ...


@host.cron("*/5 * * * *")
async def refresh() -> None: ...


@host.cron("*/5 * * * *")  # type: ignore[type-var]
def sync_refresh() -> None: ...


@host.distributed_cron("0 2 * * *", name="typing-nightly")
async def nightly(ctx: JobContext) -> None: ...


@host.distributed_cron("0 3 * * *", name="typing-sync-nightly")  # type: ignore[type-var]
def sync_nightly(ctx: JobContext) -> None: ...


@host.startup_action(priority=0)
async def migrate(mailer: Mailer = Inject()) -> None: ...


@host.startup_action(priority=1)  # type: ignore[type-var]
def sync_migrate() -> None: ...


@host.cron("0 * * * *")
class Cleanup:
    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer

    async def run(self, ctx: JobContext) -> JobResult | None:
        return None


class SyncCleanup:
    def run(self, ctx: JobContext) -> None: ...


host.add_cron_job(Cleanup, "0 */6 * * *", name="typing-cleanup", timezone="Europe/Prague")
host.add_cron_job(SyncCleanup, "0 */6 * * *")  # type: ignore[arg-type]
host.add_job(sync_refresh)  # type: ignore[arg-type]
host.add_distributed_cron_job(sync_refresh, "0 4 * * *")  # type: ignore[arg-type]
host.add_startup_action(SyncCleanup)  # type: ignore[arg-type]
host.add_startup_action(Cleanup)

# The decorators give back what they were given.
kept: Callable[[], Coroutine[Any, Any, None]] = refresh
call = assert_type(welcome(SendWelcome("a@b.c"), ctx=poll_context()), Coroutine[Any, Any, None])
call.close()
assert_type(Cleanup(Mailer()).mailer, Mailer)


# -- enqueue: only job payloads ------------------------------------------------------------------


async def enqueue() -> None:
    scheduler = host.scheduler
    job_id = await scheduler.enqueue(SendWelcome(email="a@b.c"))
    await scheduler.schedule(ChargeCard(order_id=1), delay=60)
    await scheduler.enqueue_many([SendWelcome(email="a@b.c"), ChargeCard(order_id=2)])
    await scheduler.enqueue(Refund(order_id=3))  # a pydantic model
    await scheduler.enqueue(Ship(order_id=4))  # a msgspec Struct
    await scheduler.enqueue(NotAJob())  # type: ignore[arg-type]
    await scheduler.schedule(NotAJob(), delay=60)  # type: ignore[arg-type]
    await scheduler.enqueue_many([NotAJob()])  # type: ignore[list-item]
    await scheduler.enqueue("send-welcome")  # type: ignore[arg-type]

    # Ids are strings, and plain strings are ids.
    text: str = job_id
    info = await scheduler.get(text)
    assert info is not None
    assert_type(info, JobInfo[Any])
    assert await scheduler.delete(job_id)
    untyped: JobInfo | None = await scheduler.get("0123")
    assert untyped is not None
