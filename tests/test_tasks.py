"""Function jobs (``@host.task``) end to end on a real Redis: enqueue and schedule a call,
its checks at enqueue, its result, its name and version, and registration errors."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import pydantic
import pytest
from fastapi import Depends

from hostedjobs import (
    Inject,
    JobContext,
    JobHost,
    JobId,
    JobResult,
    JobStatus,
    RetryPolicy,
    Services,
    Task,
)
from hostedjobs.exceptions import ConfigurationError, PayloadError
from hostedjobs.serialization import job_type_info, lookup_job_type
from hostedjobs.testing import eager, wait_for_job
from tests.waiting import eventually

OFFLINE = "redis://127.0.0.1:1/0"
"""A Redis nobody listens on: checks made before anything is sent need none."""


class Mailer:
    def __init__(self) -> None:
        self.sent: list[str] = []


def make_host(redis_url: str, queue_name: str, **options: Any) -> tuple[JobHost, Mailer]:
    mailer = Mailer()
    services = Services()
    services.add_singleton(Mailer, mailer)
    options.setdefault("retry", RetryPolicy(max_tries=1))
    return JobHost(services=services, redis_url=redis_url, queue_name=queue_name, **options), mailer


# A module-level task takes its default name from its module and qualified name.
module_host = JobHost(redis_url=OFFLINE)


@module_host.task
async def send_welcome(email: str) -> str:
    return f"welcome {email}"


def test_default_name_is_module_and_qualname_and_the_payload_is_a_job_type() -> None:
    """Its job type is registered under ``module.qualname`` (version 1) like any other."""
    assert send_welcome.name == "tests.test_tasks.send_welcome"
    assert send_welcome.version == 1
    info = job_type_info(send_welcome.payload_type)
    assert info.key == "tests.test_tasks.send_welcome@1"
    assert lookup_job_type(info.name, 1) is info
    assert dataclasses.is_dataclass(send_welcome.payload_type)
    assert "tests.test_tasks.send_welcome@1" in module_host._handlers.registrations


async def test_enqueued_call_runs_with_injected_values_and_its_return_is_the_result(
    redis_url: str, queue_name: str
) -> None:
    """Arguments travel as the payload; ctx and services are injected per run; the return
    value is the job's result, read back through the typed id or a plain string."""
    host, mailer = make_host(redis_url, queue_name)
    seen: list[tuple[str, int]] = []

    @host.task(name="tests.tasks.add")
    async def add(
        ctx: JobContext,
        a: int,
        b: int = 1,
        *,
        tags: list[str] | None = None,
        mailer: Mailer = Inject(),
        again: Annotated[Mailer, Inject()],
    ) -> dict[str, Any]:
        seen.append((ctx.job_name, ctx.attempt))
        mailer.sent.append(f"{a}+{b}")
        assert again is mailer
        return {"sum": a + b, "tags": tags}

    async with host.run():
        job_id = await add.enqueue(a=2, b=3, tags=["x"])
        positional = await add.enqueue(40)
        info = await wait_for_job(host, job_id)
        other = await wait_for_job(host, str(positional))
    assert isinstance(job_id, JobId)
    assert isinstance(job_id, str)
    assert info.status is JobStatus.SUCCEEDED
    assert info.result == {"sum": 5, "tags": ["x"]}
    assert info.job_type == "tests.tasks.add"
    assert info.version == 1
    assert info.payload == {"a": 2, "b": 3, "tags": ["x"]}
    assert other.result == {"sum": 41, "tags": None}
    assert sorted(mailer.sent) == ["2+3", "40+1"]
    assert seen == [("tests.tasks.add", 1), ("tests.tasks.add", 1)]


async def test_schedule_takes_a_delay_in_seconds_or_timedelta_or_a_datetime(
    redis_url: str, queue_name: str
) -> None:
    """``schedule(when, ...)``: a number of seconds, a timedelta, or an aware datetime."""
    host, _ = make_host(redis_url, queue_name)

    @host.task(name="tests.tasks.later")
    async def later(value: int) -> int:
        return value * 2

    async with host.run():
        far = await later.schedule(3600, value=1)
        soon = await later.schedule(timedelta(milliseconds=200), value=2)
        at = await later.schedule(datetime.now(UTC) + timedelta(milliseconds=300), value=3)
        waiting = await host.scheduler.get(far)
        assert waiting is not None
        assert waiting.status is JobStatus.SCHEDULED
        assert waiting.scheduled_for is not None
        assert waiting.scheduled_for > datetime.now(UTC) + timedelta(minutes=50)
        assert (await wait_for_job(host, soon, timeout=60)).result == 4
        assert (await wait_for_job(host, at, timeout=60)).result == 6
        assert await host.scheduler.delete(far)
        with pytest.raises(ConfigurationError, match=r"schedule\(when, \.\.\.\)'s delay"):
            await later.schedule(-1, value=4)
        with pytest.raises(ConfigurationError, match="aware datetime"):
            await later.schedule(datetime(2030, 1, 1), value=4)
        # Past what Redis's scores and datetime hold: a clear error, not a Redis one.
        for too_far in (10**18, 1e300, timedelta(days=3_000_000)):
            with pytest.raises(ConfigurationError, match=r"too far ahead.*year 9999"):
                await later.schedule(too_far, value=4)


@dataclasses.dataclass
class Report:
    month: str
    made_at: datetime
    sizes: tuple[int, ...]


async def test_results_come_back_as_the_return_type(redis_url: str, queue_name: str) -> None:
    """``get`` rebuilds a task's result as its return type (a dataclass, a datetime...),
    whatever form of id it is given; a `JobResult` keeps its message."""
    host, _ = make_host(redis_url, queue_name)
    made_at = datetime(2030, 1, 1, 12, tzinfo=UTC)

    @host.task(name="tests.tasks.report")
    async def report(month: str) -> Report:
        return Report(month, made_at, (1, 2))

    @host.task(name="tests.tasks.when")
    async def when() -> datetime | None:
        return made_at

    @host.task(name="tests.tasks.outcome")
    async def outcome(ok: bool) -> JobResult:
        return JobResult.success("done") if ok else JobResult.failed("no")

    async with host.run():
        report_id = await report.enqueue("2030-01")
        made = await wait_for_job(host, report_id)
        again = await host.scheduler.get(str(report_id))
        at = await wait_for_job(host, await when.enqueue())
        done = await wait_for_job(host, await outcome.enqueue(True))
        failed = await wait_for_job(host, await outcome.enqueue(ok=False))
        stored = await host.scheduler.pool.get(f"arq:result:{report_id}")
    assert made.result == Report("2030-01", made_at, (1, 2))
    assert again is not None
    assert again.result == made.result
    assert stored is not None
    assert b'"made_at":"2030-01-01T12:00:00Z"' in stored  # JSON on the wire
    assert at.result == made_at
    assert (done.status, done.message, done.result) == (JobStatus.SUCCEEDED, "done", None)
    assert (failed.status, failed.error) == (JobStatus.FAILED, "JobFailedError: no")


async def test_results_come_back_as_the_return_type_in_eager_mode_too() -> None:
    """Eager mode's ``get`` rebuilds a task's result as the engine's does, so a unit test
    sees the same `Report` (not its JSON form) that production code would."""
    host, _ = make_host(OFFLINE, "eager-results")
    made_at = datetime(2030, 1, 1, 12, tzinfo=UTC)

    @host.task(name="tests.tasks.eager_report")
    async def report(month: str) -> Report:
        return Report(month, made_at, (1, 2))

    with eager(host):
        async with host.run():
            report_id = await report.enqueue("2030-01")
            made = await wait_for_job(host, report_id)
            again = await host.scheduler.get(str(report_id))
    assert made.result == Report("2030-01", made_at, (1, 2))
    assert again is not None
    assert again.result == made.result


class Invoice(pydantic.BaseModel):
    number: int
    lines: list[str] = []


async def test_a_pydantic_model_result_comes_back_as_the_model(
    redis_url: str, queue_name: str
) -> None:
    """A task returning a pydantic model (or a list of them) gets the model back from
    ``get``, not its JSON form."""
    host, _ = make_host(redis_url, queue_name)

    @host.task(name="tests.tasks.invoice")
    async def invoice(number: int) -> Invoice:
        return Invoice(number=number, lines=["a"])

    @host.task(name="tests.tasks.invoices")
    async def invoices() -> list[Invoice] | None:
        return [Invoice(number=1), Invoice(number=2)]

    async with host.run():
        one = await wait_for_job(host, await invoice.enqueue(7))
        many = await wait_for_job(host, await invoices.enqueue())
    assert one.result == Invoice(number=7, lines=["a"])
    assert many.result == [Invoice(number=1), Invoice(number=2)]


def test_arguments_are_checked_against_the_signature_at_enqueue() -> None:
    """Missing, unknown, surplus and injected arguments raise TypeError naming the function
    and the argument; a value that does not fit its annotation raises PayloadError. The
    checks run before anything is sent (this host has no Redis)."""
    host = JobHost(redis_url=OFFLINE)

    @host.task(name="tests.tasks.checked")
    async def checked(ctx: JobContext, email: str, count: int = 1, /) -> None: ...

    @host.task(name="tests.tasks.keywords")
    async def keywords(*, email: str, mailer: Mailer = Inject()) -> None: ...

    loose: Any = checked  # the type checker refuses these calls: the runtime must too
    free: Any = keywords
    with pytest.raises(TypeError, match=r"<locals>\.checked: missing a required argument: 'email'"):
        loose.payload()
    with pytest.raises(TypeError, match=r"keywords.*'colour'"):
        free.payload(email="a@b.c", colour="red")
    with pytest.raises(TypeError, match=r"checked.*too many positional"):
        loose.payload("a@b.c", 2, 3)
    with pytest.raises(TypeError, match=r"checked.*email"):
        loose.payload(email="a@b.c")  # positional-only
    with pytest.raises(TypeError, match=r"keywords.*'mailer' is filled by each run"):
        free.payload(email="a@b.c", mailer=Mailer())
    with pytest.raises(PayloadError, match=r"checked.*count"):
        loose.payload("a@b.c", "many")
    with pytest.raises(PayloadError, match=r"keywords.*email"):
        free.payload(email=object())
    assert checked.payload("a@b.c", 2) == checked.payload_type(email="a@b.c", count=2)


async def test_bad_arguments_queue_nothing(redis_url: str, queue_name: str) -> None:
    """A refused call leaves the queue as it was; a payload can be queued with its own id."""
    host, _ = make_host(redis_url, queue_name, run_worker=False)

    @host.task(name="tests.tasks.nothing-queued")
    async def store(value: int) -> None: ...

    loose: Any = store
    async with host.run():
        with pytest.raises(PayloadError):
            await loose.enqueue(value="x")
        with pytest.raises(TypeError):
            await loose.schedule(10, values=1)
        assert await host.scheduler.pool.zcard(queue_name) == 0
        job_id = await host.scheduler.enqueue(store.payload(value=1), job_id="mine")
        assert job_id == "mine"
        assert await host.scheduler.pool.zcard(queue_name) == 1


async def test_failures_retries_and_timeouts_follow_the_task_options(
    redis_url: str, queue_name: str
) -> None:
    """``retry=`` and ``timeout=`` apply as for a handler; a raise fails the call."""
    host, _ = make_host(redis_url, queue_name)

    @host.task(
        name="tests.tasks.flaky",
        retry=RetryPolicy(max_tries=2, backoff=timedelta(milliseconds=10)),
    )
    async def flaky(ctx: JobContext, fail_until: int) -> int:
        if ctx.attempt < fail_until:
            raise RuntimeError(f"try {ctx.attempt}")
        return ctx.attempt

    @host.task(name="tests.tasks.slow", timeout=0.2)
    async def slow() -> None:
        await _forever()

    async with host.run():
        recovered = await wait_for_job(host, await flaky.enqueue(fail_until=2), timeout=60)
        failed = await wait_for_job(host, await flaky.enqueue(fail_until=5), timeout=60)
        timed_out = await wait_for_job(host, await slow.enqueue(), timeout=60)
    assert recovered.status is JobStatus.SUCCEEDED
    assert recovered.result == 2
    assert failed.status is JobStatus.FAILED
    assert failed.error == "RuntimeError: try 2"
    assert failed.tries == 2
    assert timed_out.status is JobStatus.FAILED
    assert timed_out.error == "TimeoutError: the run exceeded its timeout of 0.2s"


async def test_a_version_no_worker_has_is_parked_until_one_does(
    redis_url: str, queue_name: str
) -> None:
    """A call of version 2 waits, visibly, while only version 1 runs; a worker with
    version 2 runs it. The same name keeps both versions apart on the wire."""
    old, _ = make_host(redis_url, queue_name)
    new, _ = make_host(redis_url, queue_name)

    @old.task(name="tests.tasks.versioned")
    async def versioned_v1(email: str) -> str:
        return "v1"

    @new.task(name="tests.tasks.versioned", version=2)
    async def versioned(email: str, language: str = "en") -> str:
        return f"v2 {language}"

    assert versioned.version == 2
    async with old.run():
        async with new.connected():  # enqueues only
            job_id = await versioned.enqueue(email="a@b.c", language="cs")

        async def parked() -> str | None:
            info = await old.scheduler.get(job_id)
            return info.message if info is not None and info.message else None

        message = await eventually(parked, what="the version 2 call parked")
        assert "version 2" in message
    async with new.run():
        info = await wait_for_job(new, job_id, timeout=60)
    assert info.status is JobStatus.SUCCEEDED
    assert info.version == 2
    assert info.result == "v2 cs"


def test_registration_refuses_what_cannot_be_a_task() -> None:
    """Sync functions, *args/**kwargs, unannotated parameters, nested functions without a
    name, taken names and mutable defaults fail at registration, saying what to do."""
    host = JobHost(redis_url=OFFLINE)
    untyped: Any = host.task

    def sync(email: str) -> None: ...

    with pytest.raises(ConfigurationError, match="async"):
        untyped(name="tests.tasks.sync")(sync)

    async def star(*emails: str) -> None: ...

    with pytest.raises(ConfigurationError, match=r"\*args or \*\*kwargs"):
        host.task(name="tests.tasks.star")(star)

    async def unannotated(email) -> None:  # type: ignore[no-untyped-def]
        ...

    with pytest.raises(ConfigurationError, match="'email' has no type annotation"):
        untyped(name="tests.tasks.unannotated")(unannotated)

    async def nested(email: str) -> None: ...

    with pytest.raises(ConfigurationError, match="no stable default name"):
        host.task(nested)

    async def unsupported(when: complex) -> None: ...

    with pytest.raises(ConfigurationError, match="when"):
        host.task(name="tests.tasks.unsupported")(unsupported)

    async def mutable(emails: list[str] = []) -> None:  # noqa: B006
        ...

    with pytest.raises(ConfigurationError, match="mutable default"):
        host.task(name="tests.tasks.mutable")(mutable)

    with pytest.raises(ConfigurationError, match="already registered"):
        host.task(name=send_welcome.name)(nested)

    with pytest.raises(ConfigurationError, match="version"):
        host.task(name="tests.tasks.version", version=0)(nested)


def test_a_retry_that_is_not_a_retry_policy_is_refused_at_registration() -> None:
    """``retry=3`` was accepted and failed every run with an AttributeError."""
    host = JobHost(redis_url=OFFLINE)

    async def count(n: int) -> None: ...

    with pytest.raises(ConfigurationError, match=r"^retry must be a RetryPolicy, got 3; e\.g\."):
        host.task(name="tests.tasks.retry-int", retry=3)(count)  # type: ignore[call-overload]
    task = host.task(name="tests.tasks.retry-int", retry=RetryPolicy(max_tries=3))(count)
    with pytest.raises(ConfigurationError, match="retry must be a RetryPolicy"):
        host.add_handler(task.payload_type, task.handler, retry=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="retry must be a RetryPolicy"):
        JobHost(redis_url=OFFLINE, retry=5)  # type: ignore[arg-type]


def test_an_unstorable_parameter_hints_at_inject() -> None:
    """A service parameter left without `Inject()` is the likely mistake behind a type the
    payload cannot hold: the error says how to mark it."""
    host = JobHost(redis_url=OFFLINE)

    async def welcome(email: str, mailer: Mailer) -> None: ...

    with pytest.raises(ConfigurationError) as info:
        host.task(name="tests.tasks.unmarked")(welcome)
    assert "welcome.mailer has type tests.test_tasks.Mailer, which cannot be stored" in str(
        info.value
    )
    assert str(info.value).endswith("mark it: `= Inject()` or `= Depends(function)`")


def test_a_script_run_as_main_names_its_tasks_by_its_module(tmp_path: Path) -> None:
    """``python jobsapp.py`` (a web app started with ``uvicorn.run`` inside, say) and a
    worker importing ``jobsapp`` give a task the same default name: ``__main__.send``
    would wait for ever for a worker that has it."""
    script = tmp_path / "jobsapp.py"
    script.write_text(
        "from hostedjobs import JobHost\n"
        "host = JobHost(redis_url='redis://127.0.0.1:1/0')\n"
        "@host.task\n"
        "async def send(n: int) -> None: ...\n"
        "print(send.name)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    names = [
        subprocess.run(
            [sys.executable, *how],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for how in (["jobsapp.py"], ["-m", "jobsapp"], ["-c", "import jobsapp"])
    ]
    assert names == ["jobsapp.send"] * 3


def test_a_task_is_its_function_for_unit_tests() -> None:
    """``task.function`` is the undecorated function; the task shows its wire name."""
    assert isinstance(send_welcome, Task)
    assert send_welcome.function.__name__ == "send_welcome"
    assert repr(send_welcome) == "<Task tests.test_tasks.send_welcome@1>"


async def _forever() -> None:
    import asyncio

    await asyncio.Event().wait()


_CLOSED_DBS: list[str] = []


async def get_db() -> AsyncIterator[str]:
    yield "db"
    _CLOSED_DBS.append("db")


async def test_a_depends_parameter_is_resolved_per_run_not_passed(
    redis_url: str, queue_name: str
) -> None:
    """A FastAPI ``Depends`` parameter is the run's to fill, as ``Inject()`` is: it stays out
    of the payload (passing it is refused), and its generator is closed after the run."""
    host, _ = make_host(redis_url, queue_name)
    closed = _CLOSED_DBS
    closed.clear()

    @host.task(name="tests.tasks.with_db")
    # With a default (not Annotated) type checkers see it as optional to the caller.
    async def with_db(user: str, db: str = Depends(get_db)) -> str:
        return f"{user}@{db}"

    assert [f.name for f in dataclasses.fields(with_db.payload_type)] == ["user"]
    with pytest.raises(TypeError, match="db"):
        await with_db.enqueue("ada", db="mine")
    async with host.run():
        done = await wait_for_job(host, await with_db.enqueue("ada"))
    assert (done.status, done.result) == (JobStatus.SUCCEEDED, "ada@db")
    assert closed == ["db"]


class Address(pydantic.BaseModel):
    city: str = pydantic.Field(min_length=1)


class Order(pydantic.BaseModel):
    sku: str
    quantity: int = pydantic.Field(gt=0)
    ship_to: Address


async def test_pydantic_models_as_arguments(redis_url: str, queue_name: str) -> None:
    """A task may take pydantic models (a FastAPI app's request bodies), nested, in lists or
    optional: they are validated by pydantic at the call and again when the run reads them
    (before, such a task was refused: its type "cannot be stored as JSON")."""
    host, _ = make_host(redis_url, queue_name)

    @host.task(name="tests.tasks.ship")
    async def ship(order: Order, extras: list[Order] | None = None, note: str = "") -> str:
        return f"{order.quantity} x {order.sku} to {order.ship_to.city}, {len(extras or [])}"

    order = Order(sku="mug", quantity=2, ship_to=Address(city="Brno"))
    with pytest.raises(PayloadError, match="quantity"):
        await ship.enqueue(order.model_copy(update={"quantity": 0}), note="x")
    with pytest.raises(PayloadError):
        await ship.enqueue({"sku": "mug"})  # type: ignore[arg-type]
    async with host.run():
        done = await wait_for_job(host, await ship.enqueue(order, extras=[order]))
    assert (done.status, done.result) == (JobStatus.SUCCEEDED, "2 x mug to Brno, 1")
