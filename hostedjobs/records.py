"""JSON data and the arq records that hold it: the serializer pair arq is given, never pickle.

arq's default serializer is pickle, which lets anyone able to write to Redis run code in the
worker; `dumps` and `loads` replace it with JSON. `json_data` turns a Python value into plain
JSON data by the payload rules (see `hostedjobs.serialization`): msgspec does the conversion,
and a short walk finishes what msgspec writes differently (timedelta as seconds, no NaN).
"""

from __future__ import annotations

__all__ = [
    "HEAD_START_FIELD",
    "dumps",
    "error_message",
    "head_start_of",
    "job_record",
    "json_data",
    "loads",
    "queued_due_ms",
    "queued_record",
    "read_record",
    "result_record",
]

import json
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import msgspec

from .clock import LAST_MS
from .exceptions import PayloadDecodeError, PayloadError

SUPPORTED_VALUES = (
    "use str, int, float, bool, None, datetime, date, time, timedelta, UUID, Decimal, Enum, "
    "bytes, lists, dicts, nested dataclasses, msgspec Structs or pydantic models"
)


class Unencodable(Exception):
    """A value with no JSON form; ``path`` collects segments, innermost first."""

    def __init__(self, message: str, located: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.located = located
        """False when raised by msgspec's walk, whose errors carry no path."""
        self.path: list[str] = []


def join_path(root: str, reversed_segments: list[str]) -> str:
    """``root`` followed by path segments collected innermost first (``.name``, ``[0]``)."""
    path = root
    for segment in reversed(reversed_segments):
        path += segment if not path or segment.startswith("[") else f".{segment}"
    return path


def enc_hook(value: Any) -> Any:
    """msgspec's hook for what it leaves to us: subclasses of JSON types, pydantic models."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list | tuple):
        return list(value)
    if _is_pydantic_model(value):
        return value.model_dump(mode="json", by_alias=True)
    raise Unencodable(
        f"cannot store a value of type {type(value).__name__} as JSON; {SUPPORTED_VALUES}",
        located=False,
    )


def _is_pydantic_model(value: object) -> bool:
    pydantic = sys.modules.get("pydantic")  # a model exists only if pydantic was imported
    return pydantic is not None and isinstance(value, pydantic.BaseModel)


def _error_hook(value: Any) -> Any:
    if isinstance(value, BaseException):
        return _encode_error(value)
    return enc_hook(value)


def to_builtins(value: Any, errors: bool = False, keep: bool = True) -> Any:
    """msgspec's builtins of ``value``, timedeltas left as they are for `finish` (unless not
    ``keep``: a class whose fields hold no timedelta is spared the option's cost)."""
    if not keep:
        try:
            return _TO_BUILTINS(value)  # options cost as much as a small payload's walk
        except TypeError:
            pass  # a subclass, a pydantic model, an exception: the hook's
    try:
        return _TO_BUILTINS(
            value,
            builtin_types=_KEEP if keep else None,
            enc_hook=_error_hook if errors else enc_hook,
        )
    except TypeError as exc:  # msgspec's "Encoding objects of type X is unsupported"
        raise Unencodable(str(exc), located=False) from None


_KEEP = (timedelta,)
_TO_BUILTINS = msgspec.to_builtins


def finish(value: Any) -> Any:
    """Plain JSON data from `to_builtins` output: seconds for timedeltas, lists for tuples,
    str keys, and an `Unencodable` for NaN, infinity or a key that is not a str."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return finite(value)
    if kind is dict:
        out: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                if not isinstance(key, str):
                    raise Unencodable(
                        f"cannot store a dict key of type {type(key).__name__} ({key!r:.60}) "
                        f"as JSON; JSON object keys must be str"
                    )
                key = str.__str__(key)
            try:
                out[key] = finish(item)
            except Unencodable as exc:
                exc.path.append(f"[{json.dumps(key)}]")
                raise
        return out
    if kind is list or kind is tuple:
        items: list[Any] = []
        try:
            for item in value:
                items.append(finish(item))
        except Unencodable as exc:
            exc.path.append(f"[{len(items)}]")
            raise
        return items
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def finite(value: float) -> float:
    """``value``, or an `Unencodable` for NaN and infinity (msgspec would write null)."""
    if value - value != 0.0:  # NaN or infinity; cheaper than math.isfinite
        raise Unencodable(
            f"cannot store the float {value!r} as JSON: NaN and infinity have no JSON form"
        )
    return value


def json_data(value: Any, root: str = "job data", errors: bool = False) -> Any:
    """``value`` as plain JSON data (dicts with str keys, lists, str, int, float, bool, None).

    ``errors`` stores exceptions as ``{"__error__": ...}`` (see `error_message`). Raises
    `PayloadError` naming the path below ``root`` of the first value with no JSON form.
    """
    try:
        return finish(to_builtins(value, errors))
    except Unencodable as exc:
        if not exc.located:
            exc = located(value, exc, errors)
        raise PayloadError(f"{join_path(root, exc.path)}: {exc.message}") from None
    except RecursionError:
        raise PayloadError(f"{root} is nested too deeply or contains a reference cycle") from None


def locate_unencodable(value: Any, errors: bool = False) -> Unencodable:
    """The path and reason of the first value in ``value`` with no JSON form (a slow walk,
    for the error message only), or an `Unencodable` saying none was found."""
    for segment, item in _parts(value):
        found = locate_unencodable(item, errors)
        if found.message != _NONE_FOUND:
            found.path.append(segment)
            return found
    try:
        finish(to_builtins(value, errors))
    except Unencodable as exc:
        if exc.located:
            return exc
    except Exception:  # a pydantic model's own serializer refused it
        pass
    else:
        return Unencodable(_NONE_FOUND)
    return Unencodable(
        f"cannot store a value of type {type(value).__name__} as JSON; {SUPPORTED_VALUES}"
    )


def located(value: Any, exc: Unencodable, errors: bool = False) -> Unencodable:
    """``exc`` with the path of the value it is about, found by `locate_unencodable`."""
    found = locate_unencodable(value, errors)
    return exc if found.message == _NONE_FOUND else found


def _parts(value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [(f"[{json.dumps(str(key))}]", item) for key, item in value.items()]
    if isinstance(value, list | tuple | set | frozenset):
        return [(f"[{index}]", item) for index, item in enumerate(value)]
    cls = type(value)
    names = (
        getattr(cls, "__struct_fields__", None)
        or getattr(cls, "__dataclass_fields__", None)
        or (cls.model_fields if _is_pydantic_model(value) else ())
    )
    return [(name, getattr(value, name, None)) for name in names]


_NONE_FOUND = "no unencodable value found"


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


# The hook runs only for what msgspec refuses: a str subclass (a JobId) in a record.
_ENCODE = msgspec.json.Encoder(enc_hook=enc_hook).encode
# msgspec refuses a lone surrogate, which a str may hold; stdlib JSON escapes it as ASCII.
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _encode_json(data: Any) -> bytes:
    """Compact UTF-8 JSON of plain JSON data (from `json_data`, `loads` or `encode_payload`)."""
    try:
        return _ENCODE(data)
    except UnicodeEncodeError:
        return _ASCII_ENCODER.encode(data).encode("ascii")


def dumps(value: Any) -> bytes:
    """Serialize an arq job or result record as compact UTF-8 JSON (arq's ``job_serializer``).

    Values outside JSON follow the rules of `hostedjobs.serialization.encode_payload`; an
    exception (a failed job's result) is stored as ``{"__error__": {"type", "message",
    "cause"}}``, readable with `error_message`. Raises `PayloadError` for a value with no JSON
    form, naming its path.
    """
    return _encode_json(json_data(value, errors=True))


HEAD_START_FIELD = "hs"
"""The job record's field holding a priority's head start, in ms (absent: none). Stock arq
ignores fields it does not know."""


def job_record(
    function: str,
    payload: dict[str, Any],
    enqueue_ms: int,
    traceparent: str | None = None,
    head_start_ms: int = 0,
) -> bytes:
    """arq's stored form of a job whose payload came from `encode_payload` (so is JSON already).

    The same bytes as ``dumps`` of arq's job record, without walking the payload again: this is
    the enqueue hot path. A ``traceparent`` (tracing) travels as the call's keyword argument,
    which arq's record has a place for, so stock arq still reads the job. A priority's
    ``head_start_ms`` (the job is queued that much before ``enqueue_ms``) is kept in
    `HEAD_START_FIELD`.
    """
    return queued_record(function, [payload], enqueue_ms, traceparent, head_start_ms)


def queued_record(
    function: str,
    args: list[Any],
    enqueue_ms: int,
    traceparent: str | None = None,
    head_start_ms: int = 0,
) -> bytes:
    """arq's stored form of a call of ``function`` with JSON ``args`` (see `job_record`)."""
    kwargs = {} if traceparent is None else {"traceparent": traceparent}
    record = {"t": None, "f": function, "a": args, "k": kwargs, "et": enqueue_ms}
    if head_start_ms:
        record[HEAD_START_FIELD] = head_start_ms
    return _encode_json(record)


def head_start_of(record: dict[str, Any]) -> int:
    """The head start (ms) a job or result record keeps (`HEAD_START_FIELD`); 0 if none, or
    if the field holds anything but a whole number from 1."""
    head_start = record.get(HEAD_START_FIELD)
    return head_start if type(head_start) is int and head_start > 0 else 0


def queued_due_ms(score_ms: int | float, record: dict[str, Any] | None) -> int:
    """When a waiting or claimed job is due (ms since the epoch), from its queue score and its
    record (`read_record`).

    A job enqueued with a priority is scored its head start (`HEAD_START_FIELD`) before its
    enqueue time ``et``, so that it is picked before younger jobs: its due time is ``et``.
    Every other score is the due time itself (a retried, recovered or scheduled job is never
    scored before its enqueue time)."""
    if record is not None:
        head_start = head_start_of(record)
        enqueued = record.get("et")
        if head_start and type(enqueued) is int and score_ms == enqueued - head_start:
            return enqueued
    return int(score_ms)


def result_record(record: dict[str, Any], result: Any) -> bytes:
    """arq's stored form of a finished job: ``record`` (whose values came from `loads`, so are
    JSON already) with ``"r": result``; only the result is walked. Raises `PayloadError` like
    `dumps` for a result with no JSON form."""
    kind = type(result)
    if not (result is None or kind is str or kind is int or kind is bool):
        result = json_data(result, errors=True)
    return _encode_json({**record, "r": result})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_MSGSPEC_DECODER = msgspec.json.Decoder()


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
        return _MSGSPEC_DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError, TypeError):
        pass  # msgspec refuses lone surrogates, which stdlib JSON allows; it says what is wrong
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
LONGEST_NAME = 1000
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
        f"the function or job type it calls, a string of 1 to {LONGEST_NAME} characters",
        True,
        lambda v: type(v) is str and 0 < len(v) <= LONGEST_NAME,
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
