"""JSON payloads of on-demand jobs: the job type registry and the payload codec (msgspec).

A job type is a dataclass, a ``msgspec.Struct`` or a pydantic ``BaseModel`` registered under
a stable ``(name, version)`` with `job_type`; the wire carries ``"name@version"`` and a JSON
object of its fields, so classes can move and be renamed without breaking queued jobs.

msgspec encodes and validates dataclasses and Structs; where its JSON forms differ from the
hostedjobs wire, a walk planned once per class (`hostedjobs.wire`, only over the fields that
need it) finishes the job. On the wire: datetime, date and time are ISO 8601 strings (a
datetime keeps its UTC offset; UTC is written ``Z``), timedelta is a float of total seconds,
UUID and Decimal are strings, bytes are base64, an Enum is its value, tuples and sets are
lists, nested dataclasses and Structs are objects. A pydantic model's payload is pydantic's
own JSON form (``model_dump(mode="json", by_alias=True)``), validated by pydantic; pydantic
is imported only by whoever defines such a model.

The arq records that carry payloads (`dumps`, `loads`, ...) live in `hostedjobs.records` and
are importable from here too.
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
    "registered_names",
    "registered_versions",
    "result_record",
]

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import msgspec

from .exceptions import ConfigurationError, PayloadDecodeError, PayloadError
from .records import (
    LONGEST_NAME,
    Unencodable,
    dumps,
    error_message,
    job_record,
    join_path,
    loads,
    located,
    queued_record,
    read_record,
    result_record,
)
from .wire import CODECS, KINDS, Invalid, codec_for, with_value

T = TypeVar("T")

_NAME_PATTERN = re.compile(r"[A-Za-z0-9._:-]+")
_TYPE_ATTR = "__hostedjobs_type__"


@dataclass(frozen=True)
class JobTypeInfo:
    """The registration of one job type: its wire name, version and class.

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
    """Register a class as the job type ``name`` at ``version``: a dataclass (apply it above
    @dataclass), a ``msgspec.Struct`` or a pydantic ``BaseModel``.

    Everything is checked here, at import time, rather than when the first job runs: the
    name and version, the kind of class, and that every field annotation is a type the
    payload codec can decode (raises `ConfigurationError` naming ``Class.field``). Bump
    ``version`` when a change to the fields would not decode payloads that are already
    queued, and keep a handler for the old version until they drain.
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
    if len(name) > LONGEST_NAME - 12:  # room for "@" and the version
        raise ConfigurationError(
            f"job type name {name[:40]!r}... is {len(name)} characters long: use at most "
            f"{LONGEST_NAME - 12}"
        )
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigurationError(
            f"job type {name!r} has version {version!r}: the version must be an int >= 1"
        )
    version = int(version)

    def register(cls: type[T]) -> type[T]:
        if codec_for(cls) is None:
            shown = getattr(cls, "__qualname__", repr(cls))
            raise ConfigurationError(
                f'{shown} is not {KINDS}: put @dataclass below @job_type("{name}") '
                f"(decorators apply bottom-up, so @dataclass must be the one nearest the "
                f"class), or derive the class from msgspec.Struct or pydantic.BaseModel"
            )
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
        if cls.__module__ == "builtins":  # enqueue("send-email"), enqueue({...})
            raise PayloadError(
                f"{cls.__name__} is not a job type: a job is an instance of a class decorated "
                f"with @job_type, not {job_or_cls!r:.60}"
            )
        raise PayloadError(
            f'{cls.__name__} is not a job type: decorate the class ({KINDS}) with @job_type("name")'
        )
    return info


def lookup_job_type(name: str, version: int) -> JobTypeInfo | None:
    """The job type registered as ``(name, version)`` in this process, or None."""
    return _REGISTRY.get((name, version))


def registered_versions(name: str) -> list[int]:
    """Every version registered for ``name``, ascending (for "known versions: 1, 2" errors)."""
    with _REGISTRY_LOCK:
        return sorted(version for known, version in _REGISTRY if known == name)


def registered_names() -> set[str]:
    """The name of every job type registered in this process."""
    with _REGISTRY_LOCK:
        return {name for name, _ in _REGISTRY}


def _qualified_name(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --------------------------------------------------------------------------------------------
# The payload API.


def encode_payload(job: object) -> dict[str, Any]:
    """Turn a job (an instance of a dataclass, Struct or pydantic model) into a JSON-compatible
    dict of its fields.

    The result holds only dicts, lists, str, int, float, bool and None, so it can be stored
    and read back by any JSON tool. Raises `PayloadError` naming the field path of the first
    value that has no JSON form, at enqueue time rather than in the worker.
    """
    codec = None if isinstance(job, type) else codec_for(type(job))
    if codec is None:
        raise PayloadError(
            f"{type(job).__name__} is not a job: enqueue an instance of a class ({KINDS}) "
            f'decorated with @job_type("name")'
        )
    try:
        return codec.encode(job)
    except Unencodable as exc:
        if not exc.located:
            exc = located(job, exc)  # msgspec's error names no field: find it
        where = join_path(type(job).__name__, exc.path)
        raise PayloadError(f"{where}: {exc.message}") from None
    except RecursionError:
        raise PayloadError(
            f"{type(job).__name__} is nested too deeply or contains a reference cycle"
        ) from None


def decode_payload(cls: type[T], data: object) -> T:
    """Rebuild a ``cls`` instance from the JSON dict `encode_payload` made of one.

    Decoding follows the field annotations (msgspec, or pydantic for a pydantic model), so a
    datetime comes back as a datetime and a nested dataclass as that class. A missing
    required field, an unknown field of a dataclass or a value of the wrong type raises
    `PayloadDecodeError` naming the job type and the field path, e.g. ``send-email@1:
    Expected `str`, got `int` - at `$.items[2].sku```. Nothing in the payload is evaluated
    or imported.
    """
    codec = CODECS.get(cls) or codec_for(cls)
    if codec is None:
        raise ConfigurationError(
            f"decode_payload needs {KINDS}, got {getattr(cls, '__qualname__', cls)!r}"
        )
    try:
        return cast(T, codec.decode(data))
    except (msgspec.ValidationError, Invalid) as exc:
        info = vars(cls).get(_TYPE_ATTR)
        where = info.key if isinstance(info, JobTypeInfo) else cls.__qualname__
        raise PayloadDecodeError(f"{where}: {with_value(str(exc), data)}") from exc.__cause__
