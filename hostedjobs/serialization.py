"""JSON payloads for on-demand jobs, and the arq serializer pair that stores them.

A job type is a dataclass registered under a stable ``(name, version)`` with `job_type`; the
wire carries ``"name@version"`` and a JSON object of its fields, so classes can move and be
renamed without breaking queued jobs. arq's default serializer is pickle, which lets anyone
able to write to Redis run code in the worker; `dumps` and `loads` replace it with JSON and
never unpickle.

Encoding follows the runtime value (`encode_payload`); decoding follows the field
annotations (`decode_payload`) through a plan built once per class, because it runs for every
job. On the wire: datetime, date and time are ISO 8601 strings (a datetime keeps its UTC
offset), timedelta is a float of total seconds, UUID and Decimal are strings, bytes are
base64, an Enum is its value, tuples and sets are lists, nested dataclasses are objects.
"""

from __future__ import annotations

__all__ = [
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
    "registered_versions",
    "result_record",
]

import base64
import binascii
import dataclasses
import decimal
import enum
import json
import math
import re
import threading
import types
import typing
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal, TypeVar, Union, cast

from .clock import LAST_MS
from .exceptions import ConfigurationError, PayloadDecodeError, PayloadError

T = TypeVar("T")

_Decoder = Callable[[Any], Any]

_SUPPORTED_VALUES = (
    "use str, int, float, bool, None, datetime, date, time, timedelta, UUID, Decimal, Enum, "
    "bytes, lists, dicts or nested dataclasses"
)
_SUPPORTED_ANNOTATIONS = (
    "use str, int, float, bool, None, datetime, date, time, timedelta, UUID, Decimal, bytes, "
    "an Enum, a nested dataclass, Any, Literal[...], X | None, unions of these, list[T], "
    "tuple[T, ...], tuple[A, B], set[T], frozenset[T] or dict[str, T]"
)
_NAME_PATTERN = re.compile(r"[A-Za-z0-9._:-]+")
_TYPE_ATTR = "__hostedjobs_type__"
_NONE_TYPE = type(None)


@dataclass(frozen=True)
class JobTypeInfo:
    """The registration of one job type: its wire name, version and dataclass.

    Handlers are looked up by ``(name, version)``, never by the class's import path, so the
    class can be moved or renamed while jobs for it are queued.
    """

    name: str
    version: int
    cls: type[Any]

    @property
    def key(self) -> str:
        """``"name@version"``: the arq function name a job of this type is enqueued under."""
        return f"{self.name}@{self.version}"


_REGISTRY: dict[tuple[str, int], JobTypeInfo] = {}
_REGISTRY_LOCK = threading.RLock()


def job_type(name: str, version: int = 1) -> Callable[[type[T]], type[T]]:
    """Register a dataclass as the job type ``name`` at ``version``; apply it above @dataclass.

    Everything is checked here, at import time, rather than when the first job runs: the
    name and version, that the class is a dataclass, and that every field annotation is a
    type this module can decode. Bump ``version`` when a change to the fields would not
    decode payloads that are already queued, and keep a handler for the old version until
    they drain.
    """
    if isinstance(name, type):
        raise ConfigurationError(
            f'@job_type needs a name: write @job_type("some-name") above @dataclass on '
            f"{name.__qualname__}"
        )
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        raise ConfigurationError(
            f"job type name {name!r} is invalid: use a non-empty name of letters, digits and "
            f"'.', '_', ':', '-' (no '@', which separates the version on the wire)"
        )
    if len(name) > _LONGEST_NAME - 12:  # room for "@" and the version
        raise ConfigurationError(
            f"job type name {name[:40]!r}... is {len(name)} characters long: use at most "
            f"{_LONGEST_NAME - 12}"
        )
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigurationError(
            f"job type {name!r} has version {version!r}: the version must be an int >= 1"
        )
    version = int(version)

    def register(cls: type[T]) -> type[T]:
        if not isinstance(cls, type) or not dataclasses.is_dataclass(cls):
            shown = getattr(cls, "__qualname__", repr(cls))
            raise ConfigurationError(
                f'{shown} is not a dataclass: put @dataclass below @job_type("{name}") '
                f"(decorators apply bottom-up, so @dataclass must be the one nearest the class)"
            )
        _plan_for(cls)  # checks every annotation now, and warms the decode cache
        info = JobTypeInfo(name=name, version=version, cls=cls)
        with _REGISTRY_LOCK:
            existing = _REGISTRY.get((name, version))
            if (
                existing is not None
                and existing.cls is not cls
                and _qualified_name(existing.cls) != _qualified_name(cls)
            ):
                raise ConfigurationError(
                    f"job type {info.key!r} is already registered by "
                    f"{_qualified_name(existing.cls)}, so {_qualified_name(cls)} cannot use it "
                    f"too: give one of them another name or version"
                )
            # The same qualified name again is a module reload: the new class replaces the old.
            _REGISTRY[(name, version)] = info
        setattr(cls, _TYPE_ATTR, info)
        return cls

    return register


def job_type_info(job_or_cls: object) -> JobTypeInfo:
    """The `JobTypeInfo` of a job type or of one of its instances.

    Raises `PayloadError` for anything not decorated with `job_type` itself; a subclass of a
    job type is not one, since it would be decoded as its parent.
    """
    cls = job_or_cls if isinstance(job_or_cls, type) else type(job_or_cls)
    info = vars(cls).get(_TYPE_ATTR)
    if not isinstance(info, JobTypeInfo):
        raise PayloadError(
            f'{cls.__name__} is not a job type: decorate the dataclass with @job_type("name")'
        )
    return info


def lookup_job_type(name: str, version: int) -> JobTypeInfo | None:
    """The job type registered as ``(name, version)`` in this process, or None."""
    return _REGISTRY.get((name, version))


def registered_versions(name: str) -> list[int]:
    """Every version registered for ``name``, ascending (for "known versions: 1, 2" errors)."""
    with _REGISTRY_LOCK:
        return sorted(version for known, version in _REGISTRY if known == name)


# --------------------------------------------------------------------------------------------
# Encoding: Python values -> JSON data, guided by the runtime value.


class _Unencodable(Exception):
    """Internal: a value with no JSON form; ``path`` collects segments, innermost first."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []


def encode_payload(job: object) -> dict[str, Any]:
    """Turn a job (a dataclass instance) into a JSON-compatible dict of its fields.

    The result holds only dicts, lists, str, int, float, bool and None, so it can be stored
    and read back by any JSON tool. Raises `PayloadError` naming the field path of the first
    value that has no JSON form, at enqueue time rather than in the worker.
    """
    if isinstance(job, type) or not dataclasses.is_dataclass(job):
        raise PayloadError(
            f"{type(job).__name__} is not a job: enqueue an instance of a dataclass decorated "
            f'with @job_type("name")'
        )
    try:
        return _encode_dataclass(job, False)
    except _Unencodable as exc:
        where = _join_path(type(job).__name__, exc.path)
        raise PayloadError(f"{where}: {exc.message}") from None
    except RecursionError:
        raise PayloadError(
            f"{type(job).__name__} is nested too deeply or contains a reference cycle"
        ) from None


def _encode(value: object, errors: bool) -> Any:
    # Exact types first: nearly every value is one of these, and bool must not reach int.
    cls = type(value)
    if cls is str or cls is int or cls is bool or value is None:
        return value
    if cls is float:
        return _encode_float(cast(float, value))
    if cls is dict:
        return _encode_dict(cast("dict[Any, Any]", value), errors)
    if cls is list or cls is tuple or cls is set or cls is frozenset:
        return _encode_items(cast("Iterable[Any]", value), errors)
    simple = _SIMPLE_ENCODERS.get(cls)
    if simple is not None:
        return simple(value)
    return _encode_other(value, errors)


def _encode_float(value: float) -> float:
    if not math.isfinite(value):
        raise _Unencodable(
            f"cannot store the float {value!r} as JSON: NaN and infinity have no JSON form"
        )
    return float(value)


def _encode_items(items: Iterable[Any], errors: bool) -> list[Any]:
    out: list[Any] = []
    try:
        for item in items:
            out.append(_encode(item, errors))
    except _Unencodable as exc:
        exc.path.append(f"[{len(out)}]")
        raise
    return out


def _encode_dict(value: dict[Any, Any], errors: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if type(key) is str:
            name = key
        elif isinstance(key, enum.Enum) and isinstance(key.value, str):
            name = str.__str__(key.value)
        elif isinstance(key, str):
            name = str.__str__(key)
        else:
            raise _Unencodable(
                f"cannot store a dict key of type {type(key).__name__} ({key!r:.60}) as JSON; "
                f"JSON object keys must be str"
            )
        try:
            out[name] = _encode(item, errors)
        except _Unencodable as exc:
            exc.path.append(f"[{json.dumps(name)}]")
            raise
    return out


def _encode_dataclass(value: object, errors: bool) -> dict[str, Any]:
    cls = type(value)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cast(Any, cls)) if f.init)
        _FIELD_NAMES[cls] = names
    out: dict[str, Any] = {}
    for name in names:
        try:
            out[name] = _encode(getattr(value, name), errors)
        except _Unencodable as exc:
            exc.path.append(name)
            raise
    return out


def _encode_error(exc: BaseException) -> dict[str, Any]:
    cause = exc.__cause__
    return {
        "__error__": {
            "type": type(exc).__name__,
            "message": _safe_str(exc),
            "cause": None if cause is None else f"{type(cause).__name__}: {_safe_str(cause)}",
        }
    }


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not lose the failure it describes
        return repr(exc)


def _encode_other(value: object, errors: bool) -> Any:
    """Subclasses of the supported types, Enums, dataclasses and (for `dumps`) exceptions."""
    if isinstance(value, enum.Enum):  # before str and int: StrEnum and IntEnum are both
        return _encode(value.value, errors)
    if errors and isinstance(value, BaseException):
        return _encode_error(value)
    if hasattr(type(value), "__dataclass_fields__") and not isinstance(value, type):
        return _encode_dataclass(value, errors)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):  # bool is final, so this is a real int subclass
        return int(value)
    if isinstance(value, float):
        return _encode_float(value)
    if isinstance(value, dict):
        return _encode_dict(value, errors)
    if isinstance(value, list | tuple | set | frozenset):
        return _encode_items(value, errors)
    for base, encoder in _SIMPLE_ENCODERS.items():  # datetime is listed before date
        if isinstance(value, base):
            return encoder(value)
    raise _Unencodable(
        f"cannot store a value of type {type(value).__name__} as JSON; {_SUPPORTED_VALUES}"
    )


def _encode_bytes(value: bytes | bytearray) -> str:
    return base64.b64encode(value).decode("ascii")


_SIMPLE_ENCODERS: dict[type[Any], Callable[[Any], Any]] = {
    datetime: datetime.isoformat,
    date: date.isoformat,
    time: time.isoformat,
    timedelta: timedelta.total_seconds,
    uuid.UUID: str,
    decimal.Decimal: str,
    bytes: _encode_bytes,
    bytearray: _encode_bytes,
}
_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


# --------------------------------------------------------------------------------------------
# Decoding: JSON data -> Python values, guided by annotations through a per-class plan.


class _Invalid(Exception):
    """Internal: data that does not fit its annotation.

    ``path`` collects segments innermost first while the error unwinds, so the success path
    never builds a path. ``expected`` is set for plain type mismatches, so a union can merge
    its members' into one "expected int or str" message.
    """

    def __init__(
        self, message: str, expected: str | None = None, cause: BaseException | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.expected = expected
        self.cause = cause
        self.path: list[str] = []


def _got(value: object) -> str:
    return "None" if value is None else type(value).__name__


def _mismatch(expected: str, value: object) -> _Invalid:
    return _Invalid(f"expected {expected}, got {_got(value)}", expected)


class _Unsupported(Exception):
    """Internal: an annotation with no decoder; ``part`` is the offending (sub)type."""

    def __init__(self, part: object) -> None:
        super().__init__(part)
        self.part = part


class _DataclassPlan:
    """How to decode one dataclass: its init fields, their decoders, and which are required.

    Built once per class and cached in ``_PLANS``. While it is built it sits in
    ``_BUILDING``, so a dataclass that refers to itself (a tree) resolves to the same plan.
    """

    __slots__ = ("cls", "fields", "names")

    def __init__(self, cls: type[Any]) -> None:
        self.cls = cls
        self.fields: tuple[tuple[str, _Decoder, bool], ...] = ()
        self.names: frozenset[str] = frozenset()

    def decode(self, data: Any) -> Any:
        if type(data) is not dict:
            raise _Invalid(
                f"expected an object with the fields of {self.cls.__qualname__}, got {_got(data)}",
                self.cls.__qualname__,
            )
        kwargs: dict[str, Any] = {}
        for name, decoder, required in self.fields:
            raw = data.get(name, _MISSING)
            if raw is _MISSING:
                if required:
                    exc = _Invalid("missing, and the field has no default")
                    exc.path.append(name)
                    raise exc
                continue
            try:
                kwargs[name] = decoder(raw)
            except _Invalid as exc:
                exc.path.append(name)
                raise
        if len(kwargs) != len(data):
            self._reject_unknown(data)
        try:
            return self.cls(**kwargs)
        except Exception as exc:  # __post_init__ validation: a payload that does not fit
            raise _Invalid(
                f"{self.cls.__qualname__}(...) rejected the values: "
                f"{type(exc).__name__}: {_safe_str(exc)}",
                cause=exc,
            ) from None

    def _reject_unknown(self, data: dict[Any, Any]) -> None:
        unknown = [repr(key) for key in data if key not in self.names]
        known = ", ".join(sorted(self.names)) or "none"
        raise _Invalid(
            f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"({self.cls.__qualname__} has fields: {known})"
        )


_MISSING: Any = object()
_PLANS: dict[type[Any], _DataclassPlan] = {}
_BUILDING: dict[type[Any], _DataclassPlan] = {}  # plans under construction, by this lock holder
_PLANS_LOCK = threading.RLock()


def decode_payload(cls: type[T], data: object) -> T:
    """Rebuild a ``cls`` instance from the JSON dict `encode_payload` made of one.

    Decoding follows the field annotations, so a datetime comes back as a datetime and a
    nested dataclass as that class; a union tries its members in order. A missing required
    field, an unknown field or a value of the wrong type raises `PayloadDecodeError` naming
    the job type and the field path. Nothing in the payload is evaluated or imported.
    """
    plan = _PLANS.get(cls)
    if plan is None:
        if not isinstance(cls, type) or not dataclasses.is_dataclass(cls):
            raise ConfigurationError(
                f"decode_payload needs a dataclass, got {getattr(cls, '__qualname__', cls)!r}"
            )
        plan = _plan_for(cls)
    try:
        return cast(T, plan.decode(data))
    except _Invalid as exc:
        info = vars(cls).get(_TYPE_ATTR)
        where = info.key if isinstance(info, JobTypeInfo) else cls.__qualname__
        raise PayloadDecodeError(f"{where}: {_relative(exc)}") from exc.cause


def _plan_for(cls: type[Any]) -> _DataclassPlan:
    """The cached decode plan of ``cls``; builds it, checking every annotation, if needed."""
    plan = _PLANS.get(cls)
    if plan is not None:
        return plan
    with _PLANS_LOCK:
        plan = _PLANS.get(cls) or _BUILDING.get(cls)
        if plan is not None:  # built by another thread, or in progress up this stack
            return plan
        outermost = not _BUILDING
        plan = _DataclassPlan(cls)
        _BUILDING[cls] = plan
        try:
            _fill_plan(plan)
        except BaseException:
            if outermost:
                _BUILDING.clear()
            raise
        # Plans are published together once the outermost one is complete, so the lock-free
        # read in decode_payload never sees a plan whose fields (or nested plans) are unset.
        if outermost:
            _PLANS.update(_BUILDING)
            _BUILDING.clear()
        return plan


def _fill_plan(plan: _DataclassPlan) -> None:
    cls = plan.cls
    try:
        # The class's own name is passed so a self-referencing dataclass resolves while its
        # decorators run, before the module binds that name.
        hints = typing.get_type_hints(cls, localns={cls.__name__: cls})
    except NameError as exc:
        raise ConfigurationError(
            f"cannot resolve the annotations of {cls.__qualname__}: {exc}; define the "
            f"types it refers to before it (job types are checked when they are decorated)"
        ) from exc
    except Exception as exc:
        raise ConfigurationError(
            f"cannot resolve the annotations of {cls.__qualname__}: {exc}"
        ) from exc
    fields: list[tuple[str, _Decoder, bool]] = []
    for hint_name, hint in hints.items():
        if isinstance(hint, dataclasses.InitVar):
            raise ConfigurationError(
                f"{cls.__qualname__}.{hint_name} is an InitVar, which a stored payload cannot "
                f"supply: make it a regular field"
            )
    for field in dataclasses.fields(cls):
        if not field.init:
            continue  # set by the class itself, so neither stored nor accepted
        annotation = hints.get(field.name, Any)
        try:
            decoder = _build_decoder(annotation)
        except _Unsupported as exc:
            detail = ""
            if exc.part is not annotation:
                detail = f" ({_type_name(exc.part)} is not supported)"
            raise ConfigurationError(
                f"{cls.__qualname__}.{field.name} has type {_type_name(annotation)}{detail}, "
                f"which cannot be stored as JSON; {_SUPPORTED_ANNOTATIONS}"
            ) from None
        required = (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        )
        fields.append((field.name, decoder, required))
    plan.fields = tuple(fields)
    plan.names = frozenset(name for name, _, _ in fields)


def _build_decoder(annotation: Any) -> _Decoder:
    tp = _unwrap(annotation)
    if tp is Any or tp is object:
        return _decode_any
    if tp is None or tp is _NONE_TYPE:
        return _decode_none
    if isinstance(tp, type):
        simple = _SIMPLE_DECODERS.get(tp)
        if simple is not None:
            return simple
        if issubclass(tp, enum.Enum):
            return _enum_decoder(tp)
        if dataclasses.is_dataclass(tp):
            return _plan_for(tp).decode
        if tp in (list, tuple, set, frozenset, dict):
            return _build_decoder(_bare_generic(tp))
        raise _Unsupported(annotation)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union or origin is types.UnionType:
        return _union_decoder(args)
    if origin is Literal:
        return _literal_decoder(args, annotation)
    if origin is list:
        return _list_decoder(_build_decoder(args[0] if args else Any))
    if origin is set or origin is frozenset:
        return _set_decoder(_build_decoder(args[0] if args else Any), origin)
    if origin is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return _variadic_tuple_decoder(_build_decoder(args[0] if args else Any))
        return _fixed_tuple_decoder(tuple(_build_decoder(arg) for arg in args))
    if origin is dict:
        key_type, value_type = args if args else (str, Any)
        return _dict_decoder(_key_decoder(key_type), _build_decoder(value_type))
    raise _Unsupported(annotation)


def _unwrap(annotation: Any) -> Any:
    alias_type = getattr(typing, "TypeAliasType", None)  # `type X = ...`, Python 3.12+
    while True:
        if hasattr(annotation, "__supertype__"):  # typing.NewType
            annotation = annotation.__supertype__
        elif alias_type is not None and isinstance(annotation, alias_type):
            annotation = annotation.__value__
        else:
            return annotation


def _bare_generic(tp: type[Any]) -> Any:
    bare: dict[type[Any], Any] = {
        list: list[Any],
        tuple: tuple[Any, ...],
        set: set[Any],
        frozenset: frozenset[Any],
        dict: dict[str, Any],
    }
    return bare[tp]


def _type_name(annotation: Any) -> str:
    if annotation is None or annotation is _NONE_TYPE:
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        module = annotation.__module__
        if module in ("builtins", "datetime", "uuid", "decimal"):
            return annotation.__qualname__
        return f"{module}.{annotation.__qualname__}"
    return repr(annotation).replace("typing.", "")


def _short_type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return "None" if annotation is _NONE_TYPE else annotation.__qualname__
    return _type_name(annotation)


def _relative(failure: _Invalid) -> str:
    path = _join_path("", failure.path)
    return f"field {path!r}: {failure.message}" if path else failure.message


def _join_or(names: list[str]) -> str:
    unique = list(dict.fromkeys(names))
    if len(unique) == 1:
        return unique[0]
    return f"{', '.join(unique[:-1])} or {unique[-1]}"


def _join_path(root: str, reversed_segments: list[str]) -> str:
    path = root
    for segment in reversed(reversed_segments):
        path += segment if not path or segment.startswith("[") else f".{segment}"
    return path


# Scalar decoders. The first test of each is the exact JSON type, so the common case costs
# one comparison; bool is excluded from int and float explicitly (it subclasses int).


def _decode_any(value: Any) -> Any:
    return value


def _decode_none(value: Any) -> None:
    if value is not None:
        raise _mismatch("None", value)


def _decode_str(value: Any) -> str:
    if type(value) is str or isinstance(value, str):
        return value
    raise _mismatch("str", value)


def _decode_int(value: Any) -> int:
    if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise _mismatch("int", value)


def _decode_float(value: Any) -> float:
    if type(value) is float:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise _mismatch("float", value)


def _decode_bool(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise _mismatch("bool", value)


def _parser(name: str, parse: Callable[[str], Any]) -> _Decoder:
    def decode(value: Any) -> Any:
        if isinstance(value, str):
            try:
                return parse(value)
            except (ValueError, ArithmeticError) as exc:
                raise _Invalid(f"invalid {name} {value!r:.80}: {exc}") from None
        raise _mismatch(f"{name} (as a str)", value)

    return decode


def _decode_timedelta(value: Any) -> timedelta:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return timedelta(seconds=value)
        except (OverflowError, ValueError) as exc:
            raise _Invalid(f"invalid timedelta {value!r}: {exc}") from None
    raise _mismatch("timedelta (as seconds)", value)


def _parse_decimal(value: str) -> decimal.Decimal:
    return decimal.Decimal(value)


def _decode_decimal(value: Any) -> decimal.Decimal:
    if type(value) is int:
        return decimal.Decimal(value)
    return cast(decimal.Decimal, _decimal_from_str(value))


def _parse_bytes(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64 ({exc})") from None


_decimal_from_str = _parser("Decimal", _parse_decimal)
_decode_bytes = _parser("bytes (base64)", _parse_bytes)
_SIMPLE_DECODERS: dict[type[Any], _Decoder] = {
    str: _decode_str,
    int: _decode_int,
    float: _decode_float,
    bool: _decode_bool,
    datetime: _parser("datetime", datetime.fromisoformat),
    date: _parser("date", date.fromisoformat),
    time: _parser("time", time.fromisoformat),
    timedelta: _decode_timedelta,
    uuid.UUID: _parser("UUID", uuid.UUID),
    decimal.Decimal: _decode_decimal,
    bytes: _decode_bytes,
    bytearray: _parser("bytearray (base64)", lambda value: bytearray(_parse_bytes(value))),
}


def _constant_key(value: Any) -> tuple[Any, Any]:
    """A lookup key for a JSON value that tells 1, 1.0 and True apart and handles lists."""
    if type(value) is list or type(value) is dict:
        return ("json", json.dumps(value, sort_keys=True))
    return (type(value), value)


def _constant_table(values: Iterable[Any], annotation: Any) -> dict[tuple[Any, Any], Any]:
    table: dict[tuple[Any, Any], Any] = {}
    for value in values:
        try:
            encoded = _encode(value, False)
        except _Unencodable:
            raise _Unsupported(annotation) from None
        table[_constant_key(encoded)] = value
    return table


def _enum_decoder(tp: type[enum.Enum]) -> _Decoder:
    table = _constant_table(list(tp), tp)
    allowed = ", ".join(repr(member.value) for member in tp)
    is_flag = issubclass(tp, enum.Flag)

    def decode(value: Any) -> Any:
        try:
            return table[_constant_key(value)]
        except (KeyError, TypeError):
            pass
        if is_flag and type(value) is int:  # a combination of flags has no table entry
            try:
                return tp(value)
            except ValueError:
                pass
        raise _Invalid(
            f"expected a {tp.__qualname__} value ({allowed}), got {value!r:.80}", tp.__qualname__
        )

    return decode


def _literal_decoder(args: tuple[Any, ...], annotation: Any) -> _Decoder:
    for arg in args:
        if not isinstance(arg, str | int | bool | enum.Enum) and arg is not None:
            raise _Unsupported(annotation)
    table = _constant_table(args, annotation)
    expected = f"one of {', '.join(repr(_encode(arg, False)) for arg in args)}"

    def decode(value: Any) -> Any:
        try:
            return table[_constant_key(value)]
        except (KeyError, TypeError):
            raise _Invalid(f"expected {expected}, got {value!r:.80}", expected) from None

    return decode


def _union_decoder(args: tuple[Any, ...]) -> _Decoder:
    members = [arg for arg in args if arg is not _NONE_TYPE]
    if len(members) == 1 and len(args) == 2:
        inner = _build_decoder(members[0])

        def decode_optional(value: Any) -> Any:
            if value is None:
                return None
            try:
                return inner(value)
            except _Invalid as exc:
                if exc.expected is not None and not exc.path:
                    raise _mismatch(f"{exc.expected} or None", value) from None
                raise

        return decode_optional

    decoders = [_build_decoder(arg) for arg in args]
    names = [_short_type_name(arg) for arg in args]

    def decode_union(value: Any) -> Any:
        failures: list[_Invalid] = []
        for decoder in decoders:
            try:
                return decoder(value)
            except _Invalid as exc:
                failures.append(exc)
        # Members that got past the type check (a dataclass with a bad field, a malformed
        # datetime string) explain the problem better than "expected A or B".
        closer = [
            (name, failure)
            for name, failure in zip(names, failures, strict=True)
            if failure.expected is None or failure.path
        ]
        if len(closer) == 1:
            raise closer[0][1]
        if closer:
            reasons = "; ".join(f"as {name}: {_relative(failure)}" for name, failure in closer)
            raise _Invalid(f"matches none of {_join_or(names)} ({reasons})")
        raise _mismatch(_join_or([cast(str, f.expected) for f in failures]), value)

    return decode_union


def _list_decoder(item: _Decoder) -> _Decoder:
    def decode(value: Any) -> list[Any]:
        if type(value) is not list:
            raise _mismatch("list", value)
        if item is _decode_any:
            return list(value)
        out = []
        try:
            for element in value:
                out.append(item(element))
        except _Invalid as exc:
            exc.path.append(f"[{len(out)}]")
            raise
        return out

    return decode


def _set_decoder(item: _Decoder, origin: type[Any]) -> _Decoder:
    as_list = _list_decoder(item)

    def decode(value: Any) -> Any:
        elements = as_list(value)
        try:
            return origin(elements)
        except TypeError as exc:
            raise _Invalid(f"cannot make a {origin.__name__} of these items: {exc}") from None

    return decode


def _variadic_tuple_decoder(item: _Decoder) -> _Decoder:
    as_list = _list_decoder(item)

    def decode(value: Any) -> tuple[Any, ...]:
        return tuple(as_list(value))

    return decode


def _fixed_tuple_decoder(items: tuple[_Decoder, ...]) -> _Decoder:
    size = len(items)

    def decode(value: Any) -> tuple[Any, ...]:
        if type(value) is not list:
            raise _mismatch("list", value)
        if len(value) != size:
            raise _Invalid(f"expected a list of {size} items, got {len(value)}")
        out = []
        for index, (decoder, element) in enumerate(zip(items, value, strict=True)):
            try:
                out.append(decoder(element))
            except _Invalid as exc:
                exc.path.append(f"[{index}]")
                raise
        return tuple(out)

    return decode


def _key_decoder(annotation: Any) -> _Decoder:
    """Dict keys are JSON object keys, so only annotations that decode from a str qualify."""
    tp = _unwrap(annotation)
    if tp is str:
        return _decode_any  # JSON object keys are always str
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if all(isinstance(member.value, str) for member in tp):
            return _enum_decoder(tp)
    elif typing.get_origin(tp) is Literal and all(
        isinstance(arg, str) for arg in typing.get_args(tp)
    ):
        return _literal_decoder(typing.get_args(tp), tp)
    raise _Unsupported(annotation)


def _dict_decoder(key: _Decoder, item: _Decoder) -> _Decoder:
    def decode(value: Any) -> dict[Any, Any]:
        if type(value) is not dict:
            raise _mismatch("dict", value)
        if key is _decode_any and item is _decode_any:
            return dict(value)
        out: dict[Any, Any] = {}
        name: Any = None
        try:
            for name, element in value.items():
                out[key(name)] = item(element)
        except _Invalid as exc:
            exc.path.append(f"[{json.dumps(name)}]")
            raise
        return out

    return decode


def _qualified_name(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --------------------------------------------------------------------------------------------
# The arq serializer pair.


def dumps(value: Any) -> bytes:
    """Serialize an arq job or result record as compact UTF-8 JSON (arq's ``job_serializer``).

    Values outside JSON follow the rules of `encode_payload`; an exception (a failed job's
    result) is stored as ``{"__error__": {"type", "message", "cause"}}``, readable with
    `error_message`. Raises `PayloadError` for a value with no JSON form.
    """
    if _is_plain(value):
        try:
            return _UTF8_ENCODER.encode(value).encode("utf-8")
        except (ValueError, UnicodeEncodeError):
            pass  # NaN or a lone surrogate: the careful path below says which
    try:
        data = _encode(value, True)
    except _Unencodable as exc:
        where = _join_path("job data", exc.path)
        raise PayloadError(f"{where}: {exc.message}") from None
    except RecursionError:
        raise PayloadError("job data is nested too deeply or contains a reference cycle") from None
    try:
        return _UTF8_ENCODER.encode(data).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escape it, which keeps the bytes valid UTF-8
        return _ASCII_ENCODER.encode(data).encode("ascii")


_PLAIN_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> bool:
    """True for data that is JSON as it is: exact dicts with str keys, lists, tuples, scalars.

    Records read back from Redis (a job's arguments on the worker) are plain, so most results
    skip the careful walk; this check costs a fraction of it.
    """
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return True
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if kind is list or kind is tuple:
        return all(_plain(v) for v in value)
    return False


def job_record(
    function: str, payload: dict[str, Any], enqueue_ms: int, traceparent: str | None = None
) -> bytes:
    """arq's stored form of a job whose payload came from `encode_payload` (so is JSON already).

    The same bytes as ``dumps`` of arq's job record, without walking the payload again: this is
    the enqueue hot path. A ``traceparent`` (tracing) travels as the call's keyword argument,
    which arq's record has a place for, so stock arq still reads the job.
    """
    return queued_record(function, [payload], enqueue_ms, traceparent)


def queued_record(
    function: str, args: list[Any], enqueue_ms: int, traceparent: str | None = None
) -> bytes:
    """arq's stored form of a call of ``function`` with JSON ``args`` (see `job_record`)."""
    kwargs = {} if traceparent is None else {"traceparent": traceparent}
    record: dict[str, Any] = {
        "t": None,
        "f": function,
        "a": args,
        "k": kwargs,
        "et": enqueue_ms,
    }
    try:
        return _UTF8_ENCODER.encode(record).encode("utf-8")
    except UnicodeEncodeError:
        return _ASCII_ENCODER.encode(record).encode("ascii")


def result_record(record: dict[str, Any], result: Any) -> bytes:
    """arq's stored form of a finished job: ``record`` (whose values came from `loads`, so are
    JSON already) with ``"r": result``. Only the result is checked for the fast path."""
    if _is_plain(result):
        try:
            return _UTF8_ENCODER.encode({**record, "r": result}).encode("utf-8")
        except (ValueError, UnicodeEncodeError):
            pass
    return dumps({**record, "r": result})


def _is_plain(value: Any) -> bool:
    try:
        return _plain(value)
    except RecursionError:  # a reference cycle: the careful path reports it
        return False


# Built once: json.dumps with options builds a new encoder on every call.
_UTF8_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads(data: bytes) -> Any:
    """Parse a record written by `dumps` (arq's ``job_deserializer``); JSON only.

    Returns plain JSON data: exceptions stay ``{"__error__": ...}`` dicts (see
    `error_message`). Anything that is not JSON raises `PayloadDecodeError`; in particular a
    pickle is refused unread, since unpickling data from Redis would let whoever can write
    to Redis run code in this process.
    """
    if data[:1] == b"\x80":
        raise PayloadDecodeError(
            "the stored job data looks like a pickle, and hostedjobs never unpickles (anyone "
            "able to write to Redis could run code in the worker): it was probably enqueued "
            "by an arq client with the default serializer; enqueue with hostedjobs instead"
        )
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        return _DECODER.decode(text)
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise PayloadDecodeError(
            f"the stored job data is not JSON written by hostedjobs ({exc}); was it enqueued "
            f"by another client or serializer?"
        ) from None
    except RecursionError:
        raise PayloadDecodeError(
            "the stored job data is JSON nested too deeply to read; hostedjobs never writes "
            "such data: was it enqueued by another client?"
        ) from None


_MOST_TRIES = 2**31 - 1
_LONGEST_NAME = 1000
"""Characters in a stored function name at most (``name@version`` of a job type included)."""
_NOT_OURS = "was it written to the queue's keys by something other than hostedjobs or arq?"


def read_record(data: bytes) -> dict[str, Any]:
    """A stored job or result record (`loads`), checked field by field to be one.

    A job record is arq's: ``f`` (the function or ``"name@version"``, a non-empty str),
    ``a`` (the call's arguments, a list), ``k`` (its keyword arguments, an object), ``et``
    (enqueue time, ms since the epoch) and ``t`` (tries, a whole number, or null). A result
    record adds ``s`` (bool), ``st`` and ``ft`` (start and finish, ms or null), ``o`` and ``m``
    (outcome and message, str or null), ``q`` and ``id`` (str) and ``r`` (any JSON); each is
    checked when present. Whoever reads the record can then use its fields as they are.
    Raises `PayloadDecodeError` naming the first thing that is wrong, for data that is not
    JSON (a pickle, bytes, an empty string) and for JSON that is no such record.
    """
    if not data:
        raise PayloadDecodeError(f"the stored job record is empty; {_NOT_OURS}")
    record = loads(data)
    problem = _record_problem(record)
    if problem is not None:
        raise PayloadDecodeError(f"the stored job record {problem}; {_NOT_OURS}")
    return cast("dict[str, Any]", record)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _is_ms(value: Any) -> bool:
    return type(value) in (int, float) and 0 <= value <= LAST_MS


# (field, what it holds, required, check): one table, so every reader agrees on the fields.
_RECORD_FIELDS: tuple[tuple[str, str, bool, Callable[[Any], bool]], ...] = (
    (
        "f",
        f"the function or job type it calls, a string of 1 to {_LONGEST_NAME} characters",
        True,
        lambda v: type(v) is str and 0 < len(v) <= _LONGEST_NAME,
    ),
    ("a", "the call's arguments, a list", True, lambda v: type(v) is list),
    ("k", "the call's keyword arguments, an object", True, lambda v: type(v) is dict),
    ("et", "when it was enqueued, in ms since the epoch", True, _is_ms),
    (
        "t",
        "tries started, a whole number from 0, or null",
        False,
        lambda v: v is None or (type(v) is int and 0 <= v <= _MOST_TRIES),
    ),
    ("s", "whether it succeeded, true or false", False, lambda v: type(v) is bool),
    (
        "st",
        "when its last try started, in ms since the epoch, or null",
        False,
        lambda v: v is None or _is_ms(v),
    ),
    (
        "ft",
        "when it finished, in ms since the epoch, or null",
        False,
        lambda v: v is None or _is_ms(v),
    ),
    ("o", "how it ended, a string or null", False, lambda v: v is None or type(v) is str),
    ("m", "its message or error, a string or null", False, lambda v: v is None or type(v) is str),
    ("q", "its queue, a string", False, lambda v: type(v) is str),
    ("id", "its id, a string", False, lambda v: type(v) is str),
)


def _record_problem(record: Any) -> str | None:
    """What is wrong with a decoded record, as the end of "the stored job record ...", or None."""
    if type(record) is not dict:
        return f"is {_json_kind(record)}, not a JSON object"
    for name, holds, required, check in _RECORD_FIELDS:
        if name not in record:
            if required:
                return f"has no {name!r} ({holds})"
            continue
        value = record[name]
        if not check(value):
            shown = f"{value!r:.80}" if isinstance(value, str) else _json_kind(value)
            if isinstance(value, int | float) and not isinstance(value, bool):
                shown = f"{value!r:.40}"
            return f"has {name!r} = {shown}, but it must be {holds}"
    traceparent = record["k"].get("traceparent")
    if traceparent is not None and type(traceparent) is not str:
        return f"has a traceparent of {_json_kind(traceparent)}, but it must be a string"
    return None


def error_message(value: Any) -> str | None:
    """``"ValueError: message"`` for an exception stored by `dumps`, else None.

    A failed job's result is the ``{"__error__": ...}`` dict; this is how the scheduler and
    dashboard show it without reviving exception objects from stored data.
    """
    if type(value) is not dict or len(value) != 1:
        return None
    error = value.get("__error__")
    if type(error) is not dict:
        return None
    kind = error.get("type")
    message = error.get("message")
    if not isinstance(kind, str) or not isinstance(message, str):
        return None
    text = f"{kind}: {message}" if message else kind
    cause = error.get("cause")
    return f"{text} (caused by {cause})" if isinstance(cause, str) and cause else text
