"""JSON job payloads: registration, encode/decode (msgspec), and the arq serializer pair.

Decode errors are msgspec's wording with the field path, ``Expected `str`, got `int` - at
`$.address.city```; the same shape for dataclasses, Structs and pydantic models.
"""

import dataclasses
import enum
import json
import math
import pickle
import typing
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal, Optional, Union

import msgspec
import pytest

import hostedjobs.serialization as serialization
from hostedjobs.exceptions import ConfigurationError, PayloadDecodeError, PayloadError
from hostedjobs.serialization import (
    JobTypeInfo,
    decode_payload,
    dumps,
    encode_payload,
    error_message,
    job_type,
    job_type_info,
    loads,
    lookup_job_type,
    registered_versions,
)

PRAGUE_SUMMER = timezone(timedelta(hours=2), "CEST")


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    READ = 1
    WRITE = 2


@dataclass
class Address:
    city: str
    zip_code: int | None = None


@dataclass
class Tree:
    label: str
    children: "list[Tree]" = field(default_factory=list)


class Opaque:
    """A value with no JSON form."""


@dataclass
class Holder:
    handle: object


@dataclass
class Envelope:
    attachment: Holder


def test_public_surface_is_pinned() -> None:
    """The module exports exactly the names other modules import."""
    assert serialization.__all__ == [
        "JobTypeInfo",
        "decode_payload",
        "dumps",
        "encode_payload",
        "error_message",
        "job_record",
        "job_type",
        "job_type_info",
        "loads",
        "lookup_job_type",
        "queued_record",
        "read_record",
        "registered_names",
        "registered_versions",
        "result_record",
    ]


def test_round_trip_of_every_supported_type() -> None:
    """A dataclass with every supported field type comes back equal after a JSON round trip."""

    @job_type("test-round-trip-every-type", version=1)
    @dataclass
    class Everything:
        text: str
        number: int
        ratio: float
        flag: bool
        nothing: None
        aware: datetime
        naive: datetime
        day: date
        clock: time
        aware_clock: time
        span: timedelta
        ident: uuid.UUID
        price: Decimal
        color: Color
        level: Level
        perms: Perm
        blob: bytes
        numbers: list[int]
        variadic: tuple[int, ...]
        pair: tuple[int, str]
        tags: set[str]
        frozen: frozenset[int]
        weights: dict[str, float]
        by_color: dict[Color, list[Address]]
        address: Address
        addresses: list[Address]
        tree: Tree
        maybe_set: Optional[Address]  # noqa: UP045 (Optional is what is under test)
        maybe_unset: Address | None
        choice: Literal["fast", "slow"]
        either: Union[int, str]  # noqa: UP007 (Union is what is under test)
        anything: Any
        bare_list: list  # type: ignore[type-arg]
        defaulted: str = "default"

    job = Everything(
        text="héllo",
        number=-(2**70),
        ratio=0.1,
        flag=True,
        nothing=None,
        aware=datetime(2024, 7, 1, 12, 30, 15, 123456, tzinfo=PRAGUE_SUMMER),
        naive=datetime(2024, 1, 2, 3, 4, 5),
        day=date(2024, 2, 29),
        clock=time(23, 59, 58, 1),
        aware_clock=time(8, 0, tzinfo=UTC),
        span=timedelta(days=3, seconds=7, microseconds=250),
        ident=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        price=Decimal("19.990"),
        color=Color.BLUE,
        level=Level.HIGH,
        perms=Perm.READ | Perm.WRITE,
        blob=b"\x00\xffbinary",
        numbers=[1, 2, 3],
        variadic=(4, 5),
        pair=(6, "six"),
        tags={"a", "b"},
        frozen=frozenset({7, 8}),
        weights={"x": 1.5, "y": 2.0},
        by_color={Color.RED: [Address("Brno")]},
        address=Address("Praha", 11000),
        addresses=[Address("Ostrava"), Address("Plzeň", 30100)],
        tree=Tree("root", [Tree("leaf")]),
        maybe_set=Address("Olomouc"),
        maybe_unset=None,
        choice="slow",
        either="not an int",
        anything={"free": ["form", 1]},
        bare_list=[1, "two"],
    )

    payload = encode_payload(job)
    stored = json.loads(json.dumps(payload))
    decoded = decode_payload(Everything, stored)

    assert decoded == job
    assert decoded.aware.utcoffset() == timedelta(hours=2)
    assert isinstance(decoded.variadic, tuple)
    assert isinstance(decoded.frozen, frozenset)
    assert isinstance(decoded.tree.children[0], Tree)


def test_encoded_payload_is_plain_json_with_documented_forms() -> None:
    """Encoding yields plain JSON values: ISO strings, seconds, str UUIDs, enum values, lists."""

    @dataclass
    class Forms:
        when: datetime
        span: timedelta
        ident: uuid.UUID
        price: Decimal
        color: Color
        blob: bytes
        pair: tuple[int, int]
        nested: Address

    payload = encode_payload(
        Forms(
            when=datetime(2024, 7, 1, 12, 0, tzinfo=PRAGUE_SUMMER),
            span=timedelta(minutes=1, milliseconds=500),
            ident=uuid.UUID(int=1),
            price=Decimal("1.10"),
            color=Color.RED,
            blob=b"hi",
            pair=(1, 2),
            nested=Address("Brno"),
        )
    )

    assert payload == {
        "when": "2024-07-01T12:00:00+02:00",
        "span": 60.5,
        "ident": "00000000-0000-0000-0000-000000000001",
        "price": "1.10",
        "color": "red",
        "blob": "aGk=",
        "pair": [1, 2],
        "nested": {"city": "Brno", "zip_code": None},
    }


def test_unserializable_field_is_rejected_with_its_nested_path() -> None:
    """A value with no JSON form raises PayloadError naming the path down to it."""
    with pytest.raises(PayloadError) as info:
        encode_payload(Envelope(Holder(Opaque())))

    message = str(info.value)
    assert message.startswith("Envelope.attachment.handle: cannot store a value of type Opaque")
    assert "use str, int, float" in message
    assert isinstance(info.value, TypeError)


def test_unserializable_value_inside_containers_names_index_and_key() -> None:
    """Paths through lists and dicts show the index and the key."""
    with pytest.raises(PayloadError, match=r'Envelope\.attachment\.handle\[1\]\["k"\]: '):
        encode_payload(Envelope(Holder([1, {"k": Opaque()}])))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_rejected(value: float) -> None:
    """NaN and infinity have no JSON form, so encoding them raises PayloadError."""
    with pytest.raises(PayloadError, match=r"Envelope\.attachment\.handle: .*NaN and infinity"):
        encode_payload(Envelope(Holder(value)))


def test_non_str_dict_key_is_rejected() -> None:
    """A dict with a non-str key raises PayloadError instead of silently stringifying it."""
    with pytest.raises(PayloadError, match=r"Envelope\.attachment\.handle: .*dict key of type int"):
        encode_payload(Envelope(Holder({1: "one"})))


def test_encode_payload_rejects_what_is_not_a_dataclass_instance() -> None:
    """Only dataclass instances are payloads; a class or plain object is a PayloadError."""
    with pytest.raises(PayloadError, match="is not a job"):
        encode_payload({"to": "a@b.c"})
    with pytest.raises(PayloadError, match="is not a job"):
        encode_payload(Address)


@job_type("test-decode-errors", version=3)
@dataclass
class DecodeTarget:
    to: str
    address: Address
    items: list[int]
    cc: str = ""


def _valid_decode_target() -> dict[str, Any]:
    return {"to": "a@b.c", "address": {"city": "Brno"}, "items": [1, 2]}


def test_decode_missing_required_field_names_it() -> None:
    """A missing field without a default names the job type and the field."""
    data = _valid_decode_target()
    del data["to"]
    with pytest.raises(
        PayloadDecodeError, match=r"^test-decode-errors@3: Object missing required field `to`"
    ):
        decode_payload(DecodeTarget, data)


def test_decode_fields_with_defaults_may_be_missing() -> None:
    """Fields with a default can be absent from the payload, in the job and nested."""
    job = decode_payload(DecodeTarget, _valid_decode_target())
    assert job == DecodeTarget("a@b.c", Address("Brno"), [1, 2])


def test_decode_unknown_field_is_rejected() -> None:
    """An extra field in the payload is an error naming it and the known fields."""
    data = {**_valid_decode_target(), "bcc": "x"}
    with pytest.raises(PayloadDecodeError) as info:
        decode_payload(DecodeTarget, data)
    assert str(info.value) == (
        "test-decode-errors@3: Object contains unknown field `bcc` "
        "(DecodeTarget has fields: address, cc, items, to)"
    )


def test_decode_wrong_type_names_field_and_types() -> None:
    """A value of the wrong JSON type gives "Expected `T`, got `U` - at `$.x`"."""
    data = {**_valid_decode_target(), "to": 5}
    with pytest.raises(PayloadDecodeError) as info:
        decode_payload(DecodeTarget, data)
    assert str(info.value) == "test-decode-errors@3: Expected `str`, got `int` - at `$.to`"


def test_decode_wrong_nested_type_names_the_full_path() -> None:
    """Errors inside nested dataclasses and lists name the whole path."""
    nested = {**_valid_decode_target(), "address": {"city": 7}}
    with pytest.raises(
        PayloadDecodeError, match=r"Expected `str`, got `int` - at `\$\.address\.city`"
    ):
        decode_payload(DecodeTarget, nested)

    in_list = {**_valid_decode_target(), "items": [1, "2"]}
    with pytest.raises(
        PayloadDecodeError, match=r"Expected `int`, got `str` - at `\$\.items\[1\]`"
    ):
        decode_payload(DecodeTarget, in_list)

    extra_nested = {**_valid_decode_target(), "address": {"city": "Brno", "street": "x"}}
    with pytest.raises(PayloadDecodeError, match=r"unknown field `street` .* - at `\$\.address`"):
        decode_payload(DecodeTarget, extra_nested)


def test_decode_rejects_a_payload_that_is_not_an_object() -> None:
    """A payload that is not a JSON object is a decode error, not a crash."""
    with pytest.raises(
        PayloadDecodeError, match=r"^test-decode-errors@3: Expected `object`, got `array`"
    ):
        decode_payload(DecodeTarget, ["a@b.c"])


def test_decode_is_strict_about_bool_int_and_float() -> None:
    """True is not an int, 1.5 is not an int, but an int is accepted as a float."""

    @dataclass
    class Numbers:
        count: int
        ratio: float

    assert decode_payload(Numbers, {"count": 1, "ratio": 2}) == Numbers(1, 2.0)
    with pytest.raises(PayloadDecodeError, match=r"Expected `int`, got `bool` - at `\$\.count`"):
        decode_payload(Numbers, {"count": True, "ratio": 1.0})
    with pytest.raises(PayloadDecodeError, match=r"Expected `int`, got `float` - at `\$\.count`"):
        decode_payload(Numbers, {"count": 1.5, "ratio": 1.0})
    with pytest.raises(PayloadDecodeError, match=r"Expected `float`, got `bool` - at `\$\.ratio`"):
        decode_payload(Numbers, {"count": 1, "ratio": False})


def test_decode_malformed_strings_and_enum_values() -> None:
    """Bad datetimes, UUIDs and enum values are errors that show the offending value."""

    @dataclass
    class Parsed:
        when: datetime | None = None
        ident: uuid.UUID | None = None
        color: Color = Color.RED

    with pytest.raises(
        PayloadDecodeError, match=r"Invalid RFC3339 encoded datetime 'soon' - at `\$\.when`"
    ):
        decode_payload(Parsed, {"when": "soon"})
    with pytest.raises(PayloadDecodeError, match=r"Invalid UUID 'x' - at `\$\.ident`"):
        decode_payload(Parsed, {"ident": "x"})
    with pytest.raises(PayloadDecodeError, match=r"Invalid enum value 'green' - at `\$\.color`"):
        decode_payload(Parsed, {"color": "green"})
    with pytest.raises(PayloadDecodeError, match=r"Expected `datetime \| null`, got `int` - at"):
        decode_payload(Parsed, {"when": 12})


class Cat(msgspec.Struct, tag="cat"):
    lives: int


class Dog(msgspec.Struct, tag="dog"):
    good: bool


class Pets(msgspec.Struct):
    pets: list[Cat | Dog]


def test_decode_an_unknown_union_tag_names_it_once() -> None:
    """A tagged union's unknown tag is shown once, as msgspec words it."""
    with pytest.raises(PayloadDecodeError) as info:
        decode_payload(Pets, {"pets": [{"type": "fish"}]})
    assert str(info.value) == "Pets: Invalid value 'fish' - at `$.pets[0].type`"


def test_decode_union_picks_the_member_by_json_type() -> None:
    """A union takes the member of the value's JSON type, and lists all when none fits."""

    @dataclass
    class Mixed:
        value: int | str
        when: datetime | int

    assert decode_payload(Mixed, {"value": 1, "when": 5}) == Mixed(1, 5)
    decoded = decode_payload(Mixed, {"value": "1", "when": "2024-01-01T00:00:00"})
    assert decoded == Mixed("1", datetime(2024, 1, 1))
    with pytest.raises(PayloadDecodeError, match=r"Expected `int \| str`, got `array` - at"):
        decode_payload(Mixed, {"value": [], "when": 5})


@pytest.mark.parametrize(
    "annotation",
    [datetime | str, Address | Tree, list[int] | tuple[int, ...], Literal[Color.RED, 3]],
)
def test_registration_rejects_unions_msgspec_cannot_tell_apart(annotation: Any) -> None:
    """Unions of two str-like, object-like or array-like types (and Literals of enum members)
    are refused when the class is registered, naming the field and msgspec's reason."""
    holder = dataclasses.make_dataclass("Ambiguous", [("value", annotation)])
    with pytest.raises(ConfigurationError, match=r"Ambiguous\.value has type .* is not supported"):
        job_type("test-registration-ambiguous")(holder)


def test_decode_fixed_tuple_checks_length() -> None:
    """A fixed-size tuple needs exactly that many items."""

    @dataclass
    class Pair:
        pair: tuple[int, str]

    with pytest.raises(
        PayloadDecodeError, match=r"Expected `array` of length 2, got 3 - at `\$\.pair`"
    ):
        decode_payload(Pair, {"pair": [1, "a", 2]})


def test_decode_reports_post_init_validation_as_decode_error() -> None:
    """A __post_init__ that rejects the values turns into a PayloadDecodeError."""

    @dataclass
    class Positive:
        amount: int

        def __post_init__(self) -> None:
            if self.amount <= 0:
                raise ValueError("amount must be positive")

    with pytest.raises(PayloadDecodeError, match="amount must be positive") as info:
        decode_payload(Positive, {"amount": 0})
    assert isinstance(info.value.__cause__, ValueError)


def test_decode_uses_the_cached_plan_without_reinspecting_hints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Type hints are read once at registration; decoding never calls get_type_hints again."""

    @job_type("test-decode-cached-plan")
    @dataclass
    class Cached:
        to: str

    def fail(*args: object, **kwargs: object) -> typing.NoReturn:
        raise AssertionError("get_type_hints called on the hot path")

    monkeypatch.setattr(typing, "get_type_hints", fail)
    assert decode_payload(Cached, {"to": "x"}) == Cached("x")


def test_registration_requires_a_dataclass() -> None:
    """@job_type on a plain class (or above-the-wrong-way @dataclass) names the three kinds."""
    with pytest.raises(
        ConfigurationError,
        match=r"Plain is not a dataclass, a msgspec\.Struct or a pydantic BaseModel: put "
        r"@dataclass below",
    ):

        @job_type("test-registration-requires-dataclass")
        class Plain:
            to: str


def test_registration_without_a_name_is_explained() -> None:
    """Using @job_type without parentheses is an error that says to give a name."""
    with pytest.raises(ConfigurationError, match="needs a name"):
        job_type(Address)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "has space", "with@version", "slash/name", 5])
def test_registration_rejects_bad_names(name: Any) -> None:
    """Names must be non-empty and use only letters, digits and . _ : -."""
    with pytest.raises(ConfigurationError, match=r"job type name .* is invalid"):
        job_type(name)


@pytest.mark.parametrize("version", [0, -1, True, "1", 1.0])
def test_registration_rejects_bad_versions(version: Any) -> None:
    """Versions must be ints >= 1; bools and strings are rejected."""
    with pytest.raises(ConfigurationError, match="the version must be an int >= 1"):
        job_type("test-registration-bad-version", version=version)


def test_registration_accepts_the_full_name_alphabet() -> None:
    """Letters, digits, dots, underscores, colons and dashes are all allowed in a name."""

    @job_type("Test.registration_alphabet:v-2", version=7)
    @dataclass
    class Alphabet:
        to: str

    assert job_type_info(Alphabet).key == "Test.registration_alphabet:v-2@7"


def test_registration_of_same_name_and_version_by_another_class_fails() -> None:
    """A second class claiming a taken (name, version) is an error naming both classes."""

    @job_type("test-registration-conflict")
    @dataclass
    class First:
        to: str

    with pytest.raises(ConfigurationError) as info:

        @job_type("test-registration-conflict")
        @dataclass
        class Second:
            to: str

    message = str(info.value)
    assert "'test-registration-conflict@1' is already registered" in message
    assert "First" in message
    assert "Second" in message
    assert lookup_job_type("test-registration-conflict", 1) == job_type_info(First)


def test_registration_of_the_same_qualified_class_replaces_silently() -> None:
    """Re-decorating the same qualified class (a module reload) replaces the old registration."""

    def define() -> type[Any]:
        @job_type("test-registration-reload")
        @dataclass
        class Reloaded:
            to: str

        return Reloaded

    old, new = define(), define()
    assert old is not new
    info = lookup_job_type("test-registration-reload", 1)
    assert info is not None
    assert info.cls is new


def test_registration_rejects_unsupported_annotations() -> None:
    """An annotation with no JSON form fails at decoration, naming class.field and the type."""
    with pytest.raises(ConfigurationError) as info:

        @job_type("test-registration-unsupported")
        @dataclass
        class WithOpaque:
            to: str
            handle: Opaque

    message = str(info.value)
    assert "WithOpaque.handle has type tests.test_serialization.Opaque" in message
    assert lookup_job_type("test-registration-unsupported", 1) is None


def test_registration_rejects_unsupported_types_nested_in_generics() -> None:
    """Unsupported types inside containers, int dict keys and nested dataclasses are rejected."""
    with pytest.raises(ConfigurationError, match=r"Listed\.items has type list\[.*Opaque\]"):

        @job_type("test-registration-unsupported-nested")
        @dataclass
        class Listed:
            items: list[Opaque]

    @dataclass
    class IntKeys:  # msgspec writes int keys as JSON strings and reads them back as ints
        counts: dict[int, str]

    assert encode_payload(IntKeys({1: "one"})) == {"counts": {"1": "one"}}
    assert decode_payload(IntKeys, {"counts": {"1": "one"}}) == IntKeys({1: "one"})

    @dataclass
    class Inner:
        handle: complex

    with pytest.raises(ConfigurationError, match=r"Inner\.handle has type complex"):

        @job_type("test-registration-unsupported-nested")
        @dataclass
        class Outer:
            inner: Inner


def test_registration_reports_unresolvable_annotations() -> None:
    """A forward reference to an undefined name fails at decoration with a clear message."""
    with pytest.raises(
        ConfigurationError,
        match=r"cannot resolve the annotations of .*Forward: name .DefinedNowhere.",
    ):

        @job_type("test-registration-forward-ref")
        @dataclass
        class Forward:
            later: "DefinedNowhere"  # type: ignore[name-defined]  # noqa: F821


def test_job_type_info_for_class_and_instance() -> None:
    """job_type_info returns the registration for the class and for its instances."""

    @job_type("test-job-type-info", version=2)
    @dataclass
    class Info:
        to: str

    info = job_type_info(Info)
    assert info == JobTypeInfo(name="test-job-type-info", version=2, cls=Info)
    assert info.key == "test-job-type-info@2"
    assert job_type_info(Info("x")) is info
    assert Info.__hostedjobs_type__ is info  # type: ignore[attr-defined]


def test_job_type_info_rejects_undecorated_types_and_subclasses() -> None:
    """Undecorated classes, and subclasses of job types, are not job types."""
    with pytest.raises(PayloadError) as info:
        job_type_info(Address("Brno"))
    assert str(info.value) == (
        "Address is not a job type: decorate the class (a dataclass, a msgspec.Struct or a "
        'pydantic BaseModel) with @job_type("name")'
    )

    @dataclass
    class Child(DecodeTarget):
        extra: int = 0

    with pytest.raises(PayloadError, match="Child is not a job type"):
        job_type_info(Child)


def test_lookup_and_registered_versions() -> None:
    """Lookup finds a (name, version); registered_versions lists the versions, ascending."""

    @job_type("test-lookup-versions", version=2)
    @dataclass
    class V2:
        to: str

    @job_type("test-lookup-versions", version=1)
    @dataclass
    class V1:
        address: str

    assert lookup_job_type("test-lookup-versions", 1) == job_type_info(V1)
    assert lookup_job_type("test-lookup-versions", 2) == job_type_info(V2)
    assert lookup_job_type("test-lookup-versions", 3) is None
    assert lookup_job_type("test-lookup-nobody", 1) is None
    assert registered_versions("test-lookup-versions") == [1, 2]
    assert registered_versions("test-lookup-nobody") == []


def test_dumps_and_loads_round_trip_an_arq_job_record() -> None:
    """An arq job record survives dumps/loads as compact JSON with the payload intact."""
    payload = encode_payload(DecodeTarget("a@b.c", Address("Brno"), [1]))
    record = {"t": 1, "f": "test-decode-errors@3", "a": (payload,), "k": {}, "et": 1700000000000}

    data = dumps(record)

    assert isinstance(data, bytes)
    assert b" " not in data
    assert loads(data) == {**record, "a": [payload]}
    assert decode_payload(DecodeTarget, loads(data)["a"][0]) == DecodeTarget(
        "a@b.c", Address("Brno"), [1]
    )


def test_dumps_encodes_results_like_payloads() -> None:
    """Result values outside JSON (datetimes, dataclasses, enums) use the payload rules
    (msgspec writes UTC as Z, which Python's fromisoformat reads since 3.11)."""
    when = datetime(2024, 5, 6, 7, 8, tzinfo=UTC)
    data = dumps({"s": True, "r": {"at": when, "where": Address("Brno"), "color": Color.RED}})
    assert loads(data) == {
        "s": True,
        "r": {
            "at": "2024-05-06T07:08:00Z",
            "where": {"city": "Brno", "zip_code": None},
            "color": "red",
        },
    }


def test_dumps_stores_exceptions_and_error_message_reads_them() -> None:
    """An exception result becomes an __error__ dict with its cause; error_message renders it."""
    try:
        try:
            raise KeyError("missing")
        except KeyError as cause:
            raise ValueError("bad input") from cause
    except ValueError as exc:
        failure = exc

    stored = loads(dumps({"s": False, "r": failure}))

    assert stored["r"] == {
        "__error__": {"type": "ValueError", "message": "bad input", "cause": "KeyError: 'missing'"}
    }
    assert error_message(stored["r"]) == "ValueError: bad input (caused by KeyError: 'missing')"
    assert error_message(loads(dumps(RuntimeError()))) == "RuntimeError"
    assert loads(dumps(TypeError("x")))["__error__"]["cause"] is None


@pytest.mark.parametrize(
    "value",
    [None, "text", {"__error__": "not a dict"}, {"__error__": {"type": 1}}, {"a": 1, "b": 2}],
)
def test_error_message_is_none_for_other_values(value: Any) -> None:
    """error_message returns None for anything that is not a stored exception."""
    assert error_message(value) is None


def test_dumps_rejects_unencodable_values() -> None:
    """dumps raises PayloadError (a TypeError) for values with no JSON form, naming the path."""
    with pytest.raises(PayloadError, match=r'job data\["r"\]: cannot store a value of type Opaque'):
        dumps({"r": Opaque()})
    with pytest.raises(PayloadError, match="NaN and infinity"):
        dumps({"r": math.nan})


def test_dumps_writes_utf8_and_survives_lone_surrogates() -> None:
    """Non-ASCII text is written as UTF-8; a lone surrogate is escaped so it still loads."""
    assert dumps({"r": "Plzeň"}) == '{"r":"Plzeň"}'.encode()
    surrogate = "\ud800"
    data = dumps({"r": surrogate})
    data.decode("utf-8")
    assert loads(data) == {"r": surrogate}


_PICKLE_RAN: dict[str, bool] = {}


def _pickle_side_effect() -> None:
    _PICKLE_RAN["ran"] = True


class _Planted:
    """Unpickling this calls _pickle_side_effect: stand-in for an attacker's payload."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_pickle_side_effect, ())


def test_loads_refuses_pickles_without_running_them() -> None:
    """loads raises PayloadDecodeError on a pickle and never executes it."""
    with pytest.raises(PayloadDecodeError, match="pickle"):
        loads(pickle.dumps({"f": "x"}))

    planted = pickle.dumps({"f": "x", "a": [_Planted()]})
    _PICKLE_RAN.clear()
    with pytest.raises(PayloadDecodeError, match="never unpickles"):
        loads(planted)
    assert "ran" not in _PICKLE_RAN

    pickle.loads(planted)  # the planted pickle is live: unpickling it would have run code
    assert _PICKLE_RAN == {"ran": True}


@pytest.mark.parametrize("data", [b"not json", b"\xff\xfe", b'{"a": NaN}', b"{} trailing", b""])
def test_loads_rejects_data_that_is_not_json(data: bytes) -> None:
    """Anything that is not strict JSON (including NaN constants) is a PayloadDecodeError."""
    with pytest.raises(PayloadDecodeError, match="not JSON"):
        loads(data)


class Label(str):
    """A str subclass, encoded as its plain text."""


class Point(typing.NamedTuple):
    x: int
    y: int


class Shade(enum.StrEnum):
    DARK = "dark"


class Vector(enum.Enum):
    UP = (0, 1)


UserId = typing.NewType("UserId", int)


def test_subclasses_of_supported_types_encode_as_their_base() -> None:
    """str/int/float subclasses, named tuples, OrderedDicts and enum keys encode as plain JSON."""
    value = {
        "label": Label("x"),
        "level": Level.LOW,
        "point": Point(1, 2),
        "ordered": typing.OrderedDict([("a", 1)]),
        Shade.DARK: Vector.UP,
        Color.RED: frozenset(),
        Label("key"): True,
    }
    payload = encode_payload(Envelope(Holder(value)))
    assert payload == {
        "attachment": {
            "handle": {
                "label": "x",
                "level": 1,
                "point": [1, 2],
                "ordered": {"a": 1},
                "dark": [0, 1],
                "red": [],
                "key": True,
            }
        }
    }
    assert type(payload["attachment"]["handle"]["label"]) is str


def test_reference_cycles_are_rejected() -> None:
    """A self-containing value raises PayloadError instead of recursing forever."""
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(PayloadError, match="reference cycle"):
        encode_payload(Envelope(Holder(cycle)))
    with pytest.raises(PayloadError, match="reference cycle"):
        dumps({"r": cycle})


def test_exception_with_a_broken_str_is_still_stored() -> None:
    """An exception whose __str__ fails is stored with its repr instead."""

    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    message = error_message(loads(dumps(Broken("x"))))
    assert message is not None
    assert message.startswith("Broken: Broken(")


def test_decode_payload_needs_a_dataclass() -> None:
    """decode_payload on a non-dataclass is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="decode_payload needs a dataclass"):
        decode_payload(int, {})


def test_init_false_fields_are_not_stored_and_initvars_are_rejected() -> None:
    """Fields the class computes itself are skipped; InitVars cannot come from a payload."""

    @dataclass
    class Computed:
        base: int
        double: int = field(init=False, default=0)

        def __post_init__(self) -> None:
            self.double = self.base * 2

    assert encode_payload(Computed(2)) == {"base": 2}
    assert decode_payload(Computed, {"base": 3}).double == 6
    with pytest.raises(PayloadDecodeError, match="unknown field `double`"):
        decode_payload(Computed, {"base": 3, "double": 6})

    with pytest.raises(ConfigurationError, match=r"WithInitVar\.seed is an InitVar"):

        @job_type("test-initvar-rejected")
        @dataclass
        class WithInitVar:
            seed: "dataclasses.InitVar[int]"

            def __post_init__(self, seed: int) -> None:
                pass


def test_decode_special_annotations() -> None:
    """NewType, Literal of str/int/None, bare containers, key enums and Flag combos decode."""

    @dataclass
    class Special:
        user: UserId
        mode: Literal["red", 3, None]
        bag: dict  # type: ignore[type-arg]
        items: tuple  # type: ignore[type-arg]
        unique: set  # type: ignore[type-arg]
        by_shade: dict[Shade, int]
        by_name: dict[Literal["a", "b"], int]
        perms: Perm
        amount: Decimal
        direction: list[int]

    data = {
        "user": 7,
        "mode": "red",
        "bag": {"k": [1]},
        "items": [1, "x"],
        "unique": [1, 2],
        "by_shade": {"dark": 1},
        "by_name": {"a": 1},
        "perms": 3,
        "amount": 5,
        "direction": [1],
    }
    assert decode_payload(Special, data) == Special(
        user=UserId(7),
        mode="red",
        bag={"k": [1]},
        items=(1, "x"),
        unique={1, 2},
        by_shade={Shade.DARK: 1},
        by_name={"a": 1},
        perms=Perm.READ | Perm.WRITE,
        amount=Decimal(5),
        direction=[1],
    )
    assert decode_payload(Special, {**data, "mode": None}).mode is None
    assert decode_payload(Special, {**data, "mode": 3}).mode == 3


@pytest.mark.parametrize(
    ("field_name", "value", "expected"),
    [
        ("mode", True, r"Expected `int \| str \| null`, got `bool` - at `\$\.mode`"),
        ("perms", 8, r"Invalid enum value 8 - at `\$\.perms`"),
        ("by_shade", {"light": 1}, r"Invalid enum value 'light' - at `key` in `\$\.by_shade`"),
        ("by_shade", {"dark": "1"}, r"Expected `int`, got `str` - at `\$\.by_shade\[\.\.\.\]`"),
        ("by_shade", [], r"Expected `object`, got `array` - at `\$\.by_shade`"),
        ("unique", [[1]], r"Expected a hashable value, got `list` - at `\$\.unique\[0\]`"),
        ("items", {}, r"Expected `array`, got `object` - at `\$\.items`"),
        ("amount", "abc", r"Invalid decimal string 'abc' - at `\$\.amount`"),
        ("amount", [], r"Expected `decimal`, got `array` - at `\$\.amount`"),
    ],
)
def test_decode_special_annotation_errors(field_name: str, value: Any, expected: str) -> None:
    """Each special annotation rejects ill-fitting data with a message naming the path."""

    @dataclass
    class Special:
        mode: Literal["red", 3, None] = None
        perms: Perm = Perm.READ
        by_shade: dict[Shade, int] = field(default_factory=dict)
        unique: set[Any] = field(default_factory=set)
        items: tuple[int, ...] = ()
        amount: Decimal = Decimal(0)

    with pytest.raises(PayloadDecodeError, match=expected):
        decode_payload(Special, {field_name: value})


@pytest.mark.parametrize(
    ("annotation", "value", "expected"),
    [
        (None, 1, r"Expected `null`, got `int` - at `\$\.value`"),
        (bool, 1, r"Expected `bool`, got `int`"),
        (timedelta, 1e300, r"Expected `duration`, got `float` - at `\$\.value`"),
        (timedelta, "1", r"Invalid ISO8601 duration '1' - at `\$\.value`"),
        (bytes, "***", r"Invalid base64 encoded string '\*\*\*' - at `\$\.value`"),
        (bytearray, "aGk=", None),
        (tuple[int, str], "ab", r"Expected `array`, got `str`"),
        (tuple[int, str], [1, 2], r"Expected `str`, got `int` - at `\$\.value\[1\]`"),
        (Address | None, {}, r"Object missing required field `city` - at `\$\.value`"),
    ],
)
def test_decode_scalar_edge_cases(annotation: Any, value: Any, expected: str | None) -> None:
    """Scalar and tuple decoders accept only their JSON form and explain what they got."""
    holder = dataclasses.make_dataclass("Scalar", [("value", annotation)])
    if expected is None:
        assert decode_payload(holder, {"value": value}).value == bytearray(b"hi")
        return
    with pytest.raises(PayloadDecodeError, match=expected):
        decode_payload(holder, {"value": value})


def test_timedelta_is_seconds_on_the_wire_wherever_it_is() -> None:
    """A timedelta is a float of seconds in a field, a list, a dict, a union, a nested class
    and under Any (msgspec's own form, an ISO 8601 duration, is read too)."""

    @dataclass
    class Inner:
        span: timedelta

    @dataclass
    class Spans:
        one: timedelta
        maybe: timedelta | None
        many: list[timedelta]
        named: dict[str, timedelta]
        pair: tuple[timedelta, int]
        inner: Inner
        loose: Any

    job = Spans(
        one=timedelta(seconds=1.5),
        maybe=timedelta(minutes=1),
        many=[timedelta(days=1)],
        named={"a": timedelta(milliseconds=1)},
        pair=(timedelta(seconds=2), 3),
        inner=Inner(timedelta(hours=1)),
        loose={"x": [timedelta(seconds=4)]},
    )
    payload = encode_payload(job)
    assert payload == {
        "one": 1.5,
        "maybe": 60.0,
        "many": [86400.0],
        "named": {"a": 0.001},
        "pair": [2.0, 3],
        "inner": {"span": 3600.0},
        "loose": {"x": [4.0]},
    }
    assert decode_payload(Spans, payload) == Spans(**{**vars(job), "loose": {"x": [4.0]}})
    assert decode_payload(Spans, {**payload, "one": "PT1.5S"}).one == timedelta(seconds=1.5)


def test_stored_payloads_of_the_hand_written_codec_still_decode() -> None:
    """Bytes written by the codec before msgspec (UTC as +00:00, timedelta as seconds, ...)
    decode to the same values."""

    @job_type("test-old-wire", version=1)
    @dataclass
    class Old:
        when: datetime
        clock: time
        span: timedelta
        ident: uuid.UUID
        price: Decimal
        blob: bytes
        color: Color
        level: Level
        tags: frozenset[str]
        pair: tuple[int, str]
        address: Address

    stored = (
        b'{"when":"2024-07-01T12:00:00+00:00","clock":"08:00:00+02:00","span":60.5,'
        b'"ident":"00000000-0000-0000-0000-000000000001","price":"1.10","blob":"aGk=",'
        b'"color":"red","level":2,"tags":["a"],"pair":[1,"x"],'
        b'"address":{"city":"Brno","zip_code":null}}'
    )
    job = decode_payload(Old, json.loads(stored))
    assert job == Old(
        when=datetime(2024, 7, 1, 12, tzinfo=UTC),
        clock=time(8, tzinfo=PRAGUE_SUMMER),
        span=timedelta(seconds=60.5),
        ident=uuid.UUID(int=1),
        price=Decimal("1.10"),
        blob=b"hi",
        color=Color.RED,
        level=Level.HIGH,
        tags=frozenset({"a"}),
        pair=(1, "x"),
        address=Address("Brno"),
    )
    # What is written now is readable by the hand-written decoder (Python's fromisoformat).
    again = encode_payload(job)
    assert datetime.fromisoformat(again["when"]) == job.when
    assert time.fromisoformat(again["clock"]) == job.clock
    assert again["span"] == 60.5


def test_registration_rejects_enums_and_literals_without_json_values() -> None:
    """Enums with values other than str or int, and bytes literals, are rejected."""

    class Odd(enum.Enum):
        THING = Opaque()

    for annotation in (Odd, Literal[b"x"], Vector):
        holder = dataclasses.make_dataclass("Odd", [("value", annotation)])
        with pytest.raises(ConfigurationError, match=r"Odd\.value has type"):
            job_type("test-registration-odd-values")(holder)


def test_self_referencing_job_type_registers_and_round_trips() -> None:
    """A job type whose fields refer to itself resolves while it is being decorated."""

    @job_type("test-self-referencing")
    @dataclass
    class Node:
        name: str
        children: "list[Node]" = field(default_factory=list)
        parent: "Node | None" = None

    node = Node("root", [Node("a", [Node("b")])], parent=Node("up"))
    assert decode_payload(Node, encode_payload(node)) == node


def test_failed_nested_plan_is_not_cached() -> None:
    """A nested dataclass that fails validation leaves no half-built plan behind."""

    @dataclass
    class Bad:
        handle: Opaque

    @dataclass
    class Good:
        name: str

    @dataclass
    class Outer:
        good: Good
        bad: Bad

    with pytest.raises(ConfigurationError, match=r"Bad\.handle"):
        job_type("test-failed-nested-plan")(Outer)
    with pytest.raises(ConfigurationError, match=r"Bad\.handle"):
        decode_payload(Bad, {"handle": None})
    assert decode_payload(Good, {"name": "x"}) == Good("x")


def test_a_union_reads_seconds_as_a_timedelta_where_it_comes_first() -> None:
    """As the hand-written codec tried members in order: in ``timedelta | int`` a number is a
    timedelta, in ``int | timedelta`` an int stays an int (a float is still seconds), and a
    union without timedelta leaves numbers alone."""

    @dataclass
    class Unions:
        first: timedelta | int
        second: int | timedelta
        neither: str | int | None

    job = decode_payload(Unions, {"first": 5, "second": 5, "neither": 5})
    assert job == Unions(first=timedelta(seconds=5), second=5, neither=5)
    assert decode_payload(Unions, {"first": 1, "second": 1.5, "neither": None}).second == (
        timedelta(seconds=1.5)
    )


def test_a_value_that_does_not_parse_is_shown_with_its_path() -> None:
    """msgspec's "Invalid ..." errors get the offending value, found by the path."""

    @dataclass
    class Visit:
        ids: list[uuid.UUID]
        when: dict[str, datetime]

    with pytest.raises(PayloadDecodeError) as info:
        decode_payload(Visit, {"ids": [str(uuid.UUID(int=1)), "nope"], "when": {}})
    assert str(info.value).endswith("Invalid UUID 'nope' - at `$.ids[1]`")
    with pytest.raises(PayloadDecodeError) as info:  # a dict value's path has no key to follow
        decode_payload(Visit, {"ids": [], "when": {"a": "soon"}})
    assert str(info.value).endswith("Invalid RFC3339 encoded datetime - at `$.when[...]`")


def test_a_builtin_value_is_not_a_job_and_the_error_shows_it() -> None:
    """enqueue("send-email") or enqueue({...}) said "str is not a job type: decorate the
    class...", as if str could be decorated: now it says what a job is and shows the value."""
    for value in ("send-email", {"email": "a@b.c"}):
        with pytest.raises(PayloadError, match=r"a job is an instance of a class decorated"):
            job_type_info(value)
