"""How a payload class maps to the wire: its codec, planned once per class.

msgspec encodes and validates dataclasses and Structs (pydantic validates its models). Where
msgspec's JSON forms differ from the hostedjobs wire (see `hostedjobs.serialization`), a
class's plan adds fixers over only the fields that need them: a timedelta is a float of
seconds, NaN and infinity are refused, tuples are lists, a dataclass refuses fields it does
not have and leaves out its ``init=False`` ones. The plan is made when the class is
registered, which also checks every annotation and names the field msgspec cannot store.
"""

from __future__ import annotations

__all__ = ["CODECS", "KINDS", "Codec", "Invalid", "codec_for", "with_value"]

import dataclasses
import json
import re
import sys
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import msgspec
import msgspec.inspect as mi

from .exceptions import ConfigurationError
from .records import Unencodable, finish, finite, join_path, to_builtins

_Fix = Callable[[Any], Any]

KINDS = "a dataclass, a msgspec.Struct or a pydantic BaseModel"
_SUPPORTED_ANNOTATIONS = (
    "use str, int, float, bool, None, datetime, date, time, timedelta, UUID, Decimal, bytes, "
    "an Enum of str or int values, a nested dataclass or msgspec Struct, Any, Literal[...] of "
    "str, int or None, X | None, list[T], tuple[T, ...], tuple[A, B], set[T], frozenset[T] "
    "or dict[K, T] (msgspec's supported types)"
)


class Invalid(Exception):
    """Data that does not fit; ``path`` collects segments innermost first while unwinding."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []

    def __str__(self) -> str:
        return f"{self.message} - at `{join_path('$', self.path)}`" if self.path else self.message


@dataclass(frozen=True, slots=True)
class Codec:
    encode: Callable[[Any], dict[str, Any]]
    decode: Callable[[Any], Any]


CODECS: dict[type[Any], Codec] = {}
_CODECS_LOCK = threading.RLock()


def codec_for(cls: object) -> Codec | None:
    """The cached codec of a payload class, built on first use; None for other classes."""
    codec = CODECS.get(cast(type[Any], cls))
    if codec is not None or not isinstance(cls, type):
        return codec
    if _is_pydantic_class(cls):
        codec = _pydantic_codec(cls)
    elif issubclass(cls, msgspec.Struct) or dataclasses.is_dataclass(cls):
        codec = _msgspec_codec(cls)
    else:
        return None
    with _CODECS_LOCK:
        return CODECS.setdefault(cls, codec)


def _is_pydantic_class(cls: type[Any]) -> bool:
    pydantic = sys.modules.get("pydantic")  # a model exists only if pydantic was imported
    if pydantic is None:
        return False
    # A pydantic dataclass is a dataclass too, but only pydantic runs its validators.
    return issubclass(cls, pydantic.BaseModel) or pydantic.dataclasses.is_pydantic_dataclass(cls)


def _msgspec_codec(cls: type[Any]) -> Codec:
    tree = _inspect(cls)
    encode_fix = _encode_fixer(tree, {})
    decode_fix = _decode_fixer(tree, {})
    nodes = _nodes(tree, set())
    keep = any(isinstance(n, mi.TimeDeltaType | mi.AnyType | mi.CustomType) for n in nodes)
    # JSON keys are strings; msgspec turns them into ints (say) only if asked, at a cost.
    str_keys = any(isinstance(n, mi.DictType) and _not_str(n.key_type) for n in nodes)
    convert = msgspec.convert

    def encode(job: Any) -> dict[str, Any]:
        data = to_builtins(job, keep=keep)
        return cast("dict[str, Any]", data if encode_fix is None else encode_fix(data))

    def decode(data: Any) -> Any:
        if decode_fix is not None:
            data = decode_fix(data)
        try:
            # Passing an option at all costs as much as converting a small payload.
            return convert(data, cls, str_keys=True) if str_keys else convert(data, cls)
        except msgspec.ValidationError:
            raise
        except Exception as exc:  # __post_init__ raising what msgspec does not wrap
            raise Invalid(
                f"{cls.__qualname__}(...) rejected the values: {type(exc).__name__}: {exc}"
            ) from exc

    return Codec(encode, decode)


def _pydantic_codec(cls: type[Any]) -> Codec:
    import pydantic  # only reached for a pydantic class, so pydantic is installed

    _refuse_masked_secrets(cls, cls.__qualname__, set())
    dump: Callable[..., Any]
    validate: Callable[[Any], Any]
    validate_json: Callable[[bytes], Any]
    if issubclass(cls, pydantic.BaseModel):
        dump, validate, validate_json = cls.model_dump, cls.model_validate, cls.model_validate_json
    else:  # a pydantic dataclass
        adapter = pydantic.TypeAdapter(cls)
        dump = adapter.dump_python
        validate, validate_json = adapter.validate_python, adapter.validate_json

    read_back = False  # whether pydantic has read back a payload it wrote for this class

    def encode(job: Any) -> dict[str, Any]:
        nonlocal read_back
        try:
            data = dump(job, mode="json", by_alias=True)
        except Exception as exc:  # PydanticSerializationError, or a serializer's own error
            raise Unencodable(f"pydantic cannot write it as JSON: {exc}", located=False) from None
        data = finish(data)
        if not read_back:
            # Aliases and `exclude` are the class's: one payload read back shows whether the
            # worker can read what enqueue writes, before a job that cannot run is queued.
            try:
                decode(data)
            except Invalid as exc:
                unreadable = Unencodable(
                    f"pydantic cannot read back the JSON it writes for {cls.__qualname__} "
                    f"({exc.message}), so the job would fail in the worker: check its "
                    "aliases (a serialization_alias needs a matching validation alias; or "
                    "use alias=), exclude=True on required fields, and computed fields "
                    "under extra='forbid'"
                )
                unreadable.path = exc.path
                raise unreadable from None
            read_back = True
        return cast("dict[str, Any]", data)

    def decode(data: Any) -> Any:
        try:
            try:
                text = msgspec.json.encode(data)
            except UnicodeEncodeError:  # a lone surrogate: validate the data as it is
                return validate(data)
            return validate_json(text)
        except pydantic.ValidationError as exc:
            errors = exc.errors(include_url=False)
            first = errors[0]
            message = first["msg"]
            if first["type"] != "missing":
                message += f", got {_json_kind(first['input'])}"
            if len(errors) > 1:
                message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
            invalid = Invalid(message)
            invalid.path = [f"[{p}]" if isinstance(p, int) else str(p) for p in first["loc"]]
            invalid.path.reverse()
            raise invalid from None
        except Exception as exc:  # a validator raising what pydantic does not wrap
            raise Invalid(
                f"{cls.__qualname__}(...) rejected the values: {type(exc).__name__}: {exc}"
            ) from exc

    return Codec(encode, decode)


def _refuse_masked_secrets(cls: type[Any], where: str, seen: set[type[Any]]) -> None:
    """Refuse a pydantic secret field with no JSON serializer of its own: pydantic writes it
    as ``"**********"``, so the handler would get the stars instead of the secret."""
    import pydantic

    if cls in seen:
        return
    seen.add(cls)
    fields = getattr(cls, "__pydantic_fields__", None) or {}
    serialized = {
        name
        for decorator in cls.__pydantic_decorators__.field_serializers.values()
        if decorator.info.when_used in ("always", "json", "json-unless-none")
        for name in decorator.info.fields
    }
    for name, field in fields.items():
        if "*" in serialized or name in serialized:
            continue
        for hint in _hints_within(field.annotation):
            if isinstance(hint, type) and issubclass(
                hint, pydantic.SecretStr | pydantic.SecretBytes | pydantic.Secret
            ):
                raise ConfigurationError(
                    f"{where}.{name} is a {hint.__name__}, which pydantic writes to JSON as "
                    "'**********', so the job would get the stars instead of the secret: pass "
                    "a reference to the secret (a key in your secret store) instead, or give "
                    "the field a @field_serializer(when_used='json') that reveals it"
                )
            if isinstance(hint, type) and _is_pydantic_class(hint):
                _refuse_masked_secrets(hint, f"{where}.{name}", seen)


def _hints_within(hint: Any) -> list[Any]:
    """``hint`` and every type argument inside it, with generics' origins
    (``Secret[int]`` gives `Secret`)."""
    found = [hint, typing.get_origin(hint)]
    for arg in typing.get_args(hint):
        found.extend(_hints_within(arg))
    return found


def _json_kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _inspect(cls: type[Any]) -> mi.Type:
    """msgspec's type tree of ``cls``, with every annotation checked to be storable."""
    hints = _hints(cls)
    if dataclasses.is_dataclass(cls):
        for field_name, hint in hints.items():
            if isinstance(hint, dataclasses.InitVar):
                raise ConfigurationError(
                    f"{cls.__qualname__}.{field_name} is an InitVar, which a stored payload "
                    f"cannot supply: make it a regular field"
                )
    try:
        try:
            tree = mi.type_info(cls)
        except NameError:
            # msgspec resolves names in the module only, so a class defined in a function
            # that refers to itself gets the annotations resolved above.
            own = vars(cls).get("__annotations__", {})
            for field_name, hint in own.items():
                if isinstance(hint, str) and field_name in hints:
                    own[field_name] = hints[field_name]
            tree = mi.type_info(cls)
    except (TypeError, NameError) as exc:
        raise _unsupported(cls, exc) from None
    _check(tree, cls, "", set())
    return tree


def _hints(cls: type[Any]) -> dict[str, Any]:
    try:
        # The class's own name is passed so a self-referencing class resolves while its
        # decorators run, before the module binds that name.
        return typing.get_type_hints(cls, localns={cls.__name__: cls})
    except NameError as exc:
        raise ConfigurationError(
            f"cannot resolve the annotations of {cls.__qualname__}: {exc}; define the "
            f"types it refers to before it (job types are checked when they are decorated)"
        ) from exc
    except Exception as exc:
        raise ConfigurationError(
            f"cannot resolve the annotations of {cls.__qualname__}: {exc}"
        ) from exc


def _unsupported(cls: type[Any], exc: Exception) -> ConfigurationError:
    """msgspec refused ``cls``: find the field (in nested classes too) it refused, and say so."""
    for field_name, hint in _hints(cls).items():
        try:
            mi.type_info(hint)
        except (TypeError, NameError) as inner:
            nested = _nested_class(hint)
            if nested is not None and _refused(nested):
                return _unsupported(nested, inner)
            return ConfigurationError(
                f"{cls.__qualname__}.{field_name} has type {_type_name(hint)}, which cannot be "
                f"stored as JSON ({inner}); {_SUPPORTED_ANNOTATIONS}"
            )
    return ConfigurationError(f"{cls.__qualname__} cannot be stored as JSON: {exc}")


def _refused(cls: type[Any]) -> bool:
    try:
        mi.type_info(cls)
    except (TypeError, NameError):
        return True
    return False


def _nested_class(hint: Any) -> type[Any] | None:
    for part in (hint, *typing.get_args(hint)):
        if isinstance(part, type) and (
            dataclasses.is_dataclass(part) or issubclass(part, msgspec.Struct)
        ):
            return part
    return None


def _check(tree: mi.Type, owner: type[Any], field_name: str, seen: set[type[Any]]) -> None:
    """Refuse types msgspec would hand to a hook (it has none here), naming the field."""
    if isinstance(tree, mi.CustomType) and tree.cls is not object:  # object is Any
        hint = _hints(owner).get(field_name, tree.cls)
        detail = "" if hint is tree.cls else f" ({_type_name(tree.cls)} is not supported)"
        raise ConfigurationError(
            f"{owner.__qualname__}.{field_name} has type {_type_name(hint)}{detail}, which "
            f"cannot be stored as JSON; {_SUPPORTED_ANNOTATIONS}"
        )
    if isinstance(tree, mi.DataclassType | mi.StructType):
        if tree.cls in seen:
            return
        seen.add(tree.cls)
        for field in tree.fields:
            _check(field.type, tree.cls, field.name, seen)
        if isinstance(tree, mi.DataclassType):
            for fld in dataclasses.fields(tree.cls):
                no_default = (
                    fld.default is dataclasses.MISSING
                    and fld.default_factory is dataclasses.MISSING
                )
                if not fld.init and no_default:
                    raise ConfigurationError(
                        f"{tree.cls.__qualname__}.{fld.name} is field(init=False) without a "
                        f"default, which a payload cannot rebuild: give it a default (it is "
                        f"neither stored nor read; __post_init__ may set it)"
                    )
        return
    for child in _children(tree):
        _check(child, owner, field_name, seen)


def _nodes(tree: mi.Type, seen: set[type[Any]]) -> list[mi.Type]:
    """Every node of a type tree, nested classes included (each once)."""
    if isinstance(tree, mi.DataclassType | mi.StructType):
        if tree.cls in seen:
            return []
        seen.add(tree.cls)
        children = [field.type for field in tree.fields]
    else:
        children = _children(tree)
    return [tree, *(node for child in children for node in _nodes(child, seen))]


def _not_str(key: mi.Type) -> bool:
    if isinstance(key, mi.LiteralType | mi.EnumType):
        return not all(isinstance(value, str) for value in _literal_values(key))
    return not isinstance(key, mi.StrType)


def _literal_values(key: mi.LiteralType | mi.EnumType) -> list[Any]:
    if isinstance(key, mi.LiteralType):
        return list(key.values)
    return [member.value for member in key.cls]


def _children(tree: mi.Type) -> list[mi.Type]:
    if isinstance(tree, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return [tree.item_type]
    if isinstance(tree, mi.TupleType):
        return list(tree.item_types)
    if isinstance(tree, mi.DictType):
        return [tree.key_type, tree.value_type]
    if isinstance(tree, mi.UnionType):
        return list(tree.types)
    if isinstance(tree, mi.NamedTupleType | mi.TypedDictType):
        return [field.type for field in tree.fields]
    return []


def _type_name(annotation: Any) -> str:
    if annotation is None or annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        module = annotation.__module__
        if module in ("builtins", "datetime", "uuid", "decimal"):
            return annotation.__qualname__
        return f"{module}.{annotation.__qualname__}"
    return repr(annotation).replace("typing.", "")


# --------------------------------------------------------------------------------------------
# Fixers: where msgspec's JSON forms differ from the wire, a walk over only the fields that
# need it. None means "nothing to do here", so most payloads are msgspec's output as it is.


def _encode_fixer(tree: mi.Type, memo: dict[type[Any], list[_Fix | None]]) -> _Fix | None:
    """From msgspec's builtins (timedeltas kept) to the wire: seconds, lists, no NaN."""
    if isinstance(tree, mi.FloatType):
        return finite
    if isinstance(tree, mi.TimeDeltaType | mi.AnyType | mi.CustomType):  # object is Any
        return finish
    if isinstance(tree, mi.UnionType):
        return finish if any(_encode_fixer(t, memo) for t in tree.types) else None
    if isinstance(tree, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        item = _encode_fixer(tree.item_type, memo)
        if item is None:  # tuples become lists; lists and sets are lists already
            return list if isinstance(tree, mi.VarTupleType) else None
        return _items(item)
    if isinstance(tree, mi.TupleType | mi.NamedTupleType):
        types = tree.item_types if isinstance(tree, mi.TupleType) else [f.type for f in tree.fields]
        return _positions([_encode_fixer(t, memo) for t in types])
    if isinstance(tree, mi.DictType):
        value = _encode_fixer(tree.value_type, memo)
        str_keys = not _not_str(tree.key_type)
        if value is None and str_keys:
            return None
        return _values(value, str_keys)
    if isinstance(tree, mi.DataclassType | mi.StructType | mi.TypedDictType):
        return _object_fixer(tree, memo, _encode_fixer, encoding=True)
    return None


def _decode_fixer(tree: mi.Type, memo: dict[type[Any], list[_Fix | None]]) -> _Fix | None:
    """From the wire to what msgspec takes: timedeltas from seconds; unknown fields refused."""
    if isinstance(tree, mi.TimeDeltaType):
        return _timedelta
    if isinstance(tree, mi.UnionType):
        return _union_fixer(tree, memo)
    if isinstance(tree, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        item = _decode_fixer(tree.item_type, memo)
        return None if item is None else _items(item)
    if isinstance(tree, mi.TupleType | mi.NamedTupleType):
        types = tree.item_types if isinstance(tree, mi.TupleType) else [f.type for f in tree.fields]
        fixers = [_decode_fixer(t, memo) for t in types]
        return None if not any(fixers) else _positions(fixers)
    if isinstance(tree, mi.DictType):
        value = _decode_fixer(tree.value_type, memo)
        return None if value is None else _values(value, True)
    if isinstance(tree, mi.DataclassType | mi.StructType | mi.TypedDictType):
        return _object_fixer(tree, memo, _decode_fixer, encoding=False)
    return None


def _timedelta(value: Any) -> Any:
    if type(value) is float or type(value) is int:
        try:
            return timedelta(seconds=value)
        except OverflowError:
            pass  # msgspec then says "Expected `duration`, got `float`" with the path
    return value


_ARRAYS = (
    mi.ListType,
    mi.SetType,
    mi.FrozenSetType,
    mi.VarTupleType,
    mi.TupleType,
    mi.NamedTupleType,
)


def _union_fixer(tree: mi.UnionType, memo: dict[type[Any], list[_Fix | None]]) -> _Fix | None:
    # A number is seconds if the timedelta comes before every member that would take it, as
    # the hand-written codec tried a union's members in order.
    kinds = [type(t) for t in tree.types]
    at = kinds.index(mi.TimeDeltaType) if mi.TimeDeltaType in kinds else None
    ints = [i for i, kind in enumerate(kinds) if kind in (mi.IntType, mi.FloatType)]
    floats = [i for i, kind in enumerate(kinds) if kind is mi.FloatType]
    for_int = at is not None and at < min(ints, default=len(kinds))
    for_float = at is not None and at < min(floats, default=len(kinds))
    seconds = for_int or for_float
    objects = next(
        (
            _decode_fixer(t, memo)
            for t in tree.types
            if isinstance(t, mi.DataclassType | mi.StructType | mi.TypedDictType | mi.DictType)
        ),
        None,
    )
    arrays = next(
        (_decode_fixer(t, memo) for t in tree.types if isinstance(t, _ARRAYS)),
        None,
    )
    if not seconds and objects is None and arrays is None:
        return None

    def fix(value: Any) -> Any:
        kind = type(value)
        if (kind is int and for_int) or (kind is float and for_float):
            return _timedelta(value)
        if objects is not None and type(value) is dict:
            return objects(value)
        if arrays is not None and type(value) is list:
            return arrays(value)
        return value

    return fix


def _items(item: _Fix) -> _Fix:
    def fix(value: Any) -> Any:
        if type(value) is not list and type(value) is not tuple:
            return value  # msgspec reports the wrong type
        out: list[Any] = []
        try:
            for element in value:
                out.append(item(element))
        except (Unencodable, Invalid) as exc:
            exc.path.append(f"[{len(out)}]")
            raise
        return out

    return fix


def _positions(items: list[_Fix | None]) -> _Fix:
    def fix(value: Any) -> Any:
        if type(value) is not list and type(value) is not tuple:
            return value
        out = list(value)
        for index, (item, element) in enumerate(zip(items, value, strict=False)):
            if item is not None:
                try:
                    out[index] = item(element)
                except (Unencodable, Invalid) as exc:
                    exc.path.append(f"[{index}]")
                    raise
        return out

    return fix


def _values(item: _Fix | None, str_keys: bool) -> _Fix:
    def fix(value: Any) -> Any:
        if type(value) is not dict:
            return value
        out: dict[Any, Any] = {}
        for key, element in value.items():
            try:
                out[key if str_keys else str(key)] = element if item is None else item(element)
            except (Unencodable, Invalid) as exc:
                exc.path.append(f"[{json.dumps(str(key))}]")
                raise
        return out

    return fix


def _object_fixer(
    tree: mi.DataclassType | mi.StructType | mi.TypedDictType,
    memo: dict[type[Any], list[_Fix | None]],
    build: Callable[[mi.Type, dict[type[Any], list[_Fix | None]]], _Fix | None],
    encoding: bool,
) -> _Fix | None:
    cls = tree.cls
    pending = memo.get(cls)
    if pending is not None:  # a class that contains itself: resolved once it is built

        def later(value: Any) -> Any:
            fixer = pending[0]
            return value if fixer is None else fixer(value)

        return later
    cell: list[_Fix | None] = [None]
    memo[cls] = cell
    skipped: frozenset[str] = frozenset()
    if isinstance(tree, mi.DataclassType):
        skipped = frozenset(f.name for f in dataclasses.fields(cls) if not f.init)
    fields = [
        (field.encode_name, fixer)
        for field in tree.fields
        if field.name not in skipped and (fixer := build(field.type, memo)) is not None
    ]
    names = frozenset(f.encode_name for f in tree.fields if f.name not in skipped)
    strict = isinstance(tree, mi.DataclassType) and not encoding  # Structs follow their config
    if not fields and not skipped and not strict:
        return None

    def fix(value: Any) -> Any:
        if type(value) is not dict:
            return value
        if strict and not names.issuperset(value):
            unknown = ", ".join(f"`{key}`" for key in value if key not in names)
            known = ", ".join(sorted(names)) or "none"
            raise Invalid(
                f"Object contains unknown field{'s' if ', ' in unknown else ''} {unknown} "
                f"({cls.__qualname__} has fields: {known})"
            )
        if not fields and not skipped:
            return value
        out = value if encoding else dict(value)  # msgspec's output is ours to change
        for name in skipped:
            out.pop(name, None)
        for name, fixer in fields:
            if name in out:
                try:
                    out[name] = fixer(out[name])
                except (Unencodable, Invalid) as exc:
                    exc.path.append(name)
                    raise
        return out

    cell[0] = fix
    return fix


_UNPARSED = re.compile(r"(Invalid [^`]*?) - at `\$((?:\.[^.\[`]+|\[\d+\])*)`")
_SEGMENT = re.compile(r"\.([^.\[`]+)|\[(\d+)\]")


def with_value(message: str, data: Any) -> str:
    """msgspec's "Invalid UUID - at `$.id`" with the value it could not parse: "Invalid UUID
    'x' - at `$.id`" (its enum and union tag messages show the value already)."""
    match = _UNPARSED.fullmatch(message)
    if match is None or match[1].startswith(("Invalid enum value", "Invalid value")):
        return message
    value = data
    for name, index in _SEGMENT.findall(match[2]):
        try:
            value = value[name] if name else value[int(index)]
        except (LookupError, TypeError):
            return message
    return f"{match[1]} {value!r:.80} - at `${match[2]}`"
