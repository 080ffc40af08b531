"""The three kinds of payload class: dataclass, msgspec Struct and pydantic BaseModel.

Each kind runs through a real worker on the test Redis, fails a stored payload that does not
fit with the field path in the job's error, and refuses an unencodable value at enqueue.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pydantic
import pytest

from hostedjobs import JobContext, JobHost, JobStatus, RetryPolicy, job_type
from hostedjobs.exceptions import ConfigurationError, PayloadDecodeError, PayloadError
from hostedjobs.serialization import decode_payload, encode_payload, queued_record
from hostedjobs.testing import wait_for_job


@dataclass
class LineData:
    sku: str
    quantity: int


@job_type("tests.kinds.order-dataclass")
@dataclass
class OrderData:
    order_id: uuid.UUID
    placed_at: datetime
    within: timedelta
    lines: list[LineData]
    extra: Any = None


class LineStruct(msgspec.Struct):
    sku: str
    quantity: int


@job_type("tests.kinds.order-struct")
class OrderStruct(msgspec.Struct):
    order_id: uuid.UUID
    placed_at: datetime
    within: timedelta
    lines: list[LineStruct]
    extra: Any = None


class LineModel(pydantic.BaseModel):
    sku: str
    quantity: int


@job_type("tests.kinds.order-pydantic")
class OrderModel(pydantic.BaseModel):
    order_id: uuid.UUID
    placed_at: datetime
    within: timedelta
    lines: list[LineModel]
    extra: Any = None


ORDER: dict[str, Any] = {
    "order_id": uuid.UUID(int=7),
    "placed_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    "within": timedelta(minutes=5),
}
KINDS: list[tuple[type[Any], type[Any]]] = [
    (OrderData, LineData),
    (OrderStruct, LineStruct),
    (OrderModel, LineModel),
]


def _order(cls: type[Any], line: type[Any]) -> Any:
    return cls(**ORDER, lines=[line(sku="a", quantity=1), line(sku="b", quantity=2)])


def _host(redis_url: str, queue_name: str, received: list[object]) -> JobHost:
    host = JobHost(redis_url=redis_url, queue_name=queue_name, retry=RetryPolicy(max_tries=1))

    @host.handler(OrderData)
    async def handle_data(job: OrderData, ctx: JobContext) -> str:
        received.append(job)
        return f"{len(job.lines)} lines"

    @host.handler(OrderStruct)
    async def handle_struct(job: OrderStruct, ctx: JobContext) -> str:
        received.append(job)
        return f"{len(job.lines)} lines"

    @host.handler(OrderModel)
    async def handle_model(job: OrderModel, ctx: JobContext) -> str:
        received.append(job)
        return f"{len(job.lines)} lines"

    return host


@pytest.mark.parametrize(("cls", "line"), KINDS, ids=["dataclass", "struct", "pydantic"])
async def test_each_kind_round_trips_through_a_worker(
    redis_url: str, queue_name: str, cls: type[Any], line: type[Any]
) -> None:
    """A job of each kind reaches its handler equal to what was enqueued, as its own class."""
    received: list[object] = []
    host = _host(redis_url, queue_name, received)
    job = _order(cls, line)
    async with host.run():
        job_id = await host.scheduler.enqueue(job)
        info = await wait_for_job(host, job_id, timeout=30)
    assert info.status is JobStatus.SUCCEEDED, info.error
    assert info.result == "2 lines"
    assert received == [job]
    assert type(received[0]) is cls


@pytest.mark.parametrize(
    ("cls", "line", "expected"),
    [
        (OrderData, LineData, "Expected `str`, got `int` - at `$.lines[1].sku`"),
        (OrderStruct, LineStruct, "Expected `str`, got `int` - at `$.lines[1].sku`"),
        (OrderModel, LineModel, "Input should be a valid string, got int - at `$.lines[1].sku`"),
    ],
    ids=["dataclass", "struct", "pydantic"],
)
async def test_a_stored_payload_that_does_not_fit_fails_with_its_field_path(
    redis_url: str, queue_name: str, cls: type[Any], line: type[Any], expected: str
) -> None:
    """A payload whose field has the wrong type fails its job with a PayloadDecodeError that
    names the job type and the path down to the field; the worker goes on."""
    received: list[object] = []
    host = _host(redis_url, queue_name, received)
    key = cls.__hostedjobs_type__.key
    bad = {
        "order_id": str(uuid.UUID(int=7)),
        "placed_at": "2026-01-02T03:04:05Z",
        "within": 300.0,
        "lines": [{"sku": "a", "quantity": 1}, {"sku": 5, "quantity": 2}],
    }
    now_ms = int(time.time() * 1000)
    async with host.run():
        await host.scheduler.store.enqueue(
            "bad-" + queue_name, queued_record(key, [bad], now_ms), due_ms=now_ms, ttl_ms=60_000
        )
        info = await wait_for_job(host, "bad-" + queue_name, timeout=30)
        good = await host.scheduler.enqueue(_order(cls, line))
        after = await wait_for_job(host, good, timeout=30)
    assert info.status is JobStatus.FAILED
    assert info.error == f"PayloadDecodeError: {key}: {expected}"
    assert after.status is JobStatus.SUCCEEDED


@pytest.mark.parametrize(("cls", "line"), KINDS, ids=["dataclass", "struct", "pydantic"])
async def test_enqueue_of_an_unencodable_value_names_the_field(
    redis_url: str, queue_name: str, cls: type[Any], line: type[Any]
) -> None:
    """A value with no JSON form is a PayloadError at enqueue, naming the field path; nothing
    is queued."""
    host = _host(redis_url, queue_name, [])
    job = cls(**ORDER, lines=[], extra={"ratio": object()})
    async with host.run():
        with pytest.raises(
            PayloadError, match=r"\.extra\[\"ratio\"\]: cannot store a value of type object"
        ):
            await host.scheduler.enqueue(job)
        assert await host.scheduler.jobs(JobStatus.QUEUED) == []


def test_an_object_with_no_json_form_names_its_path_and_what_is_supported() -> None:
    """For Structs as for dataclasses, the error names the path and the supported types."""
    job = OrderStruct(**ORDER, lines=[], extra=[1, {"k": object()}])
    with pytest.raises(PayloadError) as info:
        encode_payload(job)
    assert str(info.value).startswith(
        'OrderStruct.extra[1]["k"]: cannot store a value of type object as JSON; use str'
    )
    assert "msgspec Structs or pydantic models" in str(info.value)


def test_struct_and_pydantic_wire_forms() -> None:
    """A Struct's payload has the dataclass wire forms; a pydantic model's is pydantic's JSON."""
    struct = encode_payload(_order(OrderStruct, LineStruct))
    assert struct["within"] == 300.0
    assert struct["placed_at"] == "2026-01-02T03:04:05Z"
    assert struct["lines"] == [{"sku": "a", "quantity": 1}, {"sku": "b", "quantity": 2}]
    model = encode_payload(_order(OrderModel, LineModel))
    assert model["within"] == "PT5M"
    assert decode_payload(OrderModel, model) == _order(OrderModel, LineModel)


def test_pydantic_missing_field_and_several_errors() -> None:
    """Pydantic's errors keep its wording; more than one is counted."""
    with pytest.raises(PayloadDecodeError) as info:
        decode_payload(OrderModel, {"order_id": "x", "lines": []})
    message = str(info.value)
    assert message.startswith("tests.kinds.order-pydantic@1: Input should be a valid UUID")
    assert "- at `$.order_id`" in message
    assert "(and 2 more errors)" in message


def test_struct_unknown_fields_follow_the_struct_config() -> None:
    """A Struct ignores unknown fields unless it says forbid_unknown_fields=True."""

    class Loose(msgspec.Struct):
        a: int

    class Strict(msgspec.Struct, forbid_unknown_fields=True):
        a: int

    assert decode_payload(Loose, {"a": 1, "b": 2}) == Loose(a=1)
    with pytest.raises(PayloadDecodeError, match=r"Object contains unknown field `b`"):
        decode_payload(Strict, {"a": 1, "b": 2})


def test_hostedjobs_works_without_pydantic() -> None:
    """With pydantic not installed, hostedjobs imports, never imports it, and runs the codec."""
    code = """
import sys
sys.modules["pydantic"] = None  # any import of pydantic now fails, as if not installed
from dataclasses import dataclass
import hostedjobs
from hostedjobs.serialization import decode_payload, encode_payload, job_type

@job_type("no-pydantic")
@dataclass
class Job:
    to: str

assert decode_payload(Job, encode_payload(Job("x"))) == Job("x")
assert sys.modules["pydantic"] is None
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_a_post_init_raising_any_exception_is_a_decode_error() -> None:
    """Whatever __post_init__ raises becomes a PayloadDecodeError with it as the cause."""

    @dataclass
    class Picky:
        code: str

        def __post_init__(self) -> None:
            raise KeyError(self.code)

    with pytest.raises(
        PayloadDecodeError, match=r"Picky\(\.\.\.\) rejected the values: KeyError"
    ) as info:
        decode_payload(Picky, {"code": "x"})
    assert isinstance(info.value.__cause__, KeyError)


def test_a_pydantic_validator_raising_any_exception_is_a_decode_error() -> None:
    """An exception pydantic does not wrap becomes a PayloadDecodeError with it as the cause."""

    class Picky(pydantic.BaseModel):
        code: str

        @pydantic.field_validator("code")
        @classmethod
        def refuse(cls, value: str) -> str:
            raise KeyError(value)

    with pytest.raises(PayloadDecodeError, match=r"Picky\(\.\.\.\) rejected the values") as info:
        decode_payload(Picky, {"code": "x"})
    assert isinstance(info.value.__cause__, KeyError)


@job_type("tests.kinds.pydantic-dataclass")
@pydantic.dataclasses.dataclass
class Refund:
    amount_cents: int = pydantic.Field(gt=0)
    reason: str = ""

    @pydantic.field_validator("reason")
    @classmethod
    def strip(cls, value: str) -> str:
        return value.strip()


def test_a_pydantic_dataclass_is_validated_by_pydantic() -> None:
    """A pydantic dataclass is a dataclass too, but its validators and constraints run when
    it is read, as a model's do: msgspec alone would pass `amount_cents=0` through."""
    assert encode_payload(Refund(5, " late ")) == {"amount_cents": 5, "reason": "late"}
    assert decode_payload(Refund, {"amount_cents": 5, "reason": " x "}) == Refund(5, "x")
    with pytest.raises(PayloadDecodeError) as info:
        decode_payload(Refund, {"amount_cents": 0})
    assert str(info.value) == (
        "tests.kinds.pydantic-dataclass@1: Input should be greater than 0, got int "
        "- at `$.amount_cents`"
    )


class ApiCredentials(pydantic.BaseModel):
    token: pydantic.SecretStr | None = None


class RevealedPassword(pydantic.BaseModel):
    password: pydantic.SecretStr

    @pydantic.field_serializer("password", when_used="json")
    def reveal(self, value: pydantic.SecretStr) -> str:
        return value.get_secret_value()


def test_a_pydantic_secret_field_is_refused_unless_it_is_revealed() -> None:
    """pydantic writes a secret as stars; a job would get the stars, so such a field is
    refused when the class is decorated, unless a serializer of its own writes it."""

    class Login(pydantic.BaseModel):
        password: pydantic.SecretStr

    class Sync(pydantic.BaseModel):
        accounts: list[ApiCredentials]

    with pytest.raises(ConfigurationError, match=r"\.Login\.password is a SecretStr, which"):
        job_type("tests.kinds.login")(Login)
    with pytest.raises(ConfigurationError, match=r"\.Sync\.accounts\.token is a SecretStr"):
        job_type("tests.kinds.sync")(Sync)
    job_type("tests.kinds.revealed")(RevealedPassword)
    stored = encode_payload(RevealedPassword(password=pydantic.SecretStr("hunter2")))
    assert decode_payload(RevealedPassword, stored).password.get_secret_value() == "hunter2"


def test_a_pydantic_model_that_cannot_read_back_its_json_is_refused_at_enqueue() -> None:
    """A payload pydantic writes but cannot read back would fail in the worker: one with a
    serialization alias only, an excluded required field, a computed field under
    extra='forbid'. The first enqueue of such a class raises `PayloadError`."""

    @job_type("tests.kinds.serialization-alias")
    class Renamed(pydantic.BaseModel):
        user_id: int = pydantic.Field(serialization_alias="uid")

    @job_type("tests.kinds.excluded")
    class Excluded(pydantic.BaseModel):
        note: str = pydantic.Field(exclude=True)

    @job_type("tests.kinds.computed-forbid")
    class Computed(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        n: int

        @pydantic.computed_field  # type: ignore[prop-decorator]
        @property
        def double(self) -> int:
            return 2 * self.n

    with pytest.raises(PayloadError) as info:
        encode_payload(Renamed(user_id=1))
    assert str(info.value).startswith(
        "Renamed.user_id: pydantic cannot read back the JSON it writes for "
    )
    assert "would fail in the worker" in str(info.value)
    with pytest.raises(PayloadError, match=r"^Excluded\.note: pydantic cannot read back"):
        encode_payload(Excluded(note="x"))
    with pytest.raises(PayloadError, match=r"^Computed\.double: pydantic cannot read back"):
        encode_payload(Computed(n=1))
