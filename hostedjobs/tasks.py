"""Function jobs: ``@host.task`` makes a typed async function an on-demand job.

The function's parameters that the caller passes become a payload class generated from its
signature (a dataclass registered with `job_type`, so the wire, the registry, parking of
unknown versions and the dashboard treat it as any job type); the parameters the run fills
(``ctx: JobContext``, ``Inject()`` services, FastAPI ``Depends``: `depends.is_injected`) are
resolved per run, like a handler's. The function's return value is the job's result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import re
import sys
import typing
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from .context import JobContext
from .depends import is_injected
from .durations import Seconds, seconds
from .exceptions import ConfigurationError, PayloadDecodeError, PayloadError
from .results import JobResult
from .scheduler import JobId, JobPayload, Scheduler
from .serialization import decode_payload, encode_payload, job_type

__all__ = ["Task", "TaskDecorator"]

P = ParamSpec("P")
R = TypeVar("R")

_PAYLOAD_PARAMETER = "_hostedjobs_payload"
_UNSTABLE = re.compile(r"<[a-z]+>")  # "<locals>", "<lambda>"


class Task(Generic[P, R]):
    """An async function registered as an on-demand job by ``@host.task``.

    ``await task.enqueue(...)`` and ``await task.schedule(when, ...)`` take the function's
    arguments (those the run does not inject), check them against its signature and store
    them as the job's payload; the returned `JobId` types ``scheduler.get(job_id).result``
    as the function's return type ``R``.

    Attributes:
        name: the job type's name on the wire (default ``"module.qualname"``).
        version: the job type's version.
        function: the decorated function, unchanged (call it directly in unit tests).
        payload_type: the generated payload dataclass (a registered job type), whose
            instances `Scheduler.enqueue` also takes (see `payload`).
        handler: the handler registered for ``payload_type``: calls ``function`` with the
            payload's fields and the injected values.
        decode_result: rebuilds a stored result as the return type (None: kept as JSON).
    """

    def __init__(
        self,
        function: Callable[..., Awaitable[R]],
        *,
        name: str | None,
        version: int,
        scheduler: Callable[[], Scheduler],
    ) -> None:
        if not inspect.iscoroutinefunction(function):
            raise ConfigurationError(
                f"task {_describe(function)} must be an async function (async def)"
            )
        self.function = function
        self.name = _task_name(function) if name is None else name
        self.version = version
        self._scheduler = scheduler
        signature = inspect.signature(function)
        hints = _type_hints(function)
        passed: list[inspect.Parameter] = []
        injected: list[inspect.Parameter] = []
        for parameter in signature.parameters.values():
            hint = hints.get(parameter.name, inspect.Parameter.empty)
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise ConfigurationError(
                    f"task {self}: parameter {parameter.name!r} is *args or **kwargs, which "
                    "a payload cannot hold; name each parameter"
                )
            if is_injected(parameter.replace(annotation=hint)):
                injected.append(parameter)
            elif hint is inspect.Parameter.empty:
                raise ConfigurationError(
                    f"task {self}: parameter {parameter.name!r} has no type annotation; "
                    "annotate it, so its value can be stored and checked"
                )
            else:
                passed.append(parameter.replace(annotation=hint))
        self._signature = inspect.Signature(passed)
        self._injected = frozenset(parameter.name for parameter in injected)
        self._positional = [
            p.name for p in signature.parameters.values() if p.kind is p.POSITIONAL_ONLY
        ]
        self.payload_type: type[Any] = self._payload_class(passed)
        self.handler = self._handler(injected, hints)
        self.decode_result = _result_decoder(function, hints.get("return", Any))

    def __repr__(self) -> str:
        return f"<Task {getattr(self, 'name', '?')}@{getattr(self, 'version', '?')}>"

    def __str__(self) -> str:
        return _describe(self.function)

    def _payload_class(self, passed: list[inspect.Parameter]) -> type[Any]:
        cls = _pydantic_payload(self.function, passed) or self._dataclass_payload(passed)
        cls.__module__ = self.function.__module__
        cls.__qualname__ = self.function.__qualname__
        cls.__doc__ = f"The arguments of a call of {self}."
        try:
            return job_type(self.name, self.version)(cls)
        except ConfigurationError as exc:
            if "cannot be stored as JSON" not in str(exc):
                raise
            raise ConfigurationError(
                f"{exc}. If the run should provide it (a service, a session), mark it: "
                "`= Inject()` or `= Depends(function)`"
            ) from None

    def _dataclass_payload(self, passed: list[inspect.Parameter]) -> type[Any]:
        fields = [
            (
                p.name,
                p.annotation,
                dataclasses.field()
                if p.default is p.empty
                else dataclasses.field(default=p.default),
            )
            for p in passed
        ]
        try:
            cls = dataclasses.make_dataclass(
                self.function.__name__,
                fields,
                kw_only=True,
                frozen=True,
            )
        except (TypeError, ValueError) as exc:  # a mutable default, say
            raise ConfigurationError(f"task {self}: {exc}") from None
        return cls

    def _handler(
        self, injected: list[inspect.Parameter], hints: dict[str, Any]
    ) -> Callable[..., Awaitable[R]]:
        """An async function taking the payload first, then the injected parameters (as
        keywords, with their annotations and defaults, for the scope planning), that calls
        the task's function with both."""
        function = self.function
        names = [p.name for p in self._signature.parameters.values()]
        positional = self._positional

        async def run(payload: Any, /, **injected_values: Any) -> R:
            values = {name: getattr(payload, name) for name in names}
            values.update(injected_values)
            args = [values.pop(name) for name in positional]
            return await function(*args, **values)

        parameters = [
            inspect.Parameter(
                _PAYLOAD_PARAMETER, inspect.Parameter.POSITIONAL_ONLY, annotation=self.payload_type
            ),
            *(
                p.replace(kind=p.KEYWORD_ONLY, annotation=hints.get(p.name, p.empty))
                for p in injected
            ),
        ]
        run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {
            p.name: p.annotation for p in parameters if p.annotation is not p.empty
        }
        run.__name__ = function.__name__
        run.__qualname__ = function.__qualname__
        run.__module__ = function.__module__
        return run

    def payload(self, *args: P.args, **kwargs: P.kwargs) -> JobPayload:
        """The job for a call with these arguments, checked as `enqueue` checks them, for
        `Scheduler.enqueue` (``job_id=``) and `Scheduler.enqueue_many`."""
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            unknown = self._injected.intersection(kwargs)
            if unknown:
                name = sorted(unknown)[0]
                raise TypeError(
                    f"{self}: argument {name!r} is filled by each run (injected), not passed"
                ) from None
            raise TypeError(f"{self}: {exc}") from None
        try:
            payload = self.payload_type(**bound.arguments)
        except ValueError as exc:  # pydantic's ValidationError, for a model payload
            raise PayloadError(f"{self}: {exc}") from None
        try:
            decode_payload(self.payload_type, encode_payload(payload))
        except PayloadDecodeError as exc:
            raise PayloadError(f"{self}: {exc}") from None
        return cast(JobPayload, payload)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobId[R]:
        """Queue a call with these arguments to run as soon as possible; returns its id.

        Raises `TypeError` naming the function and argument for a missing, unknown or
        injected argument, `PayloadError` (a TypeError) for a value that does not fit its
        annotation or cannot be stored, and what `Scheduler.enqueue` raises.
        """
        job = self.payload(*args, **kwargs)
        return cast(JobId[R], await self._scheduler().enqueue(job))

    async def schedule(
        self, when: Seconds | datetime, /, *args: P.args, **kwargs: P.kwargs
    ) -> JobId[R]:
        """Queue a call to run at ``when``: an aware `datetime`, or a delay (a `timedelta`
        or seconds). Arguments are checked as `enqueue` checks them; returns the id."""
        job = self.payload(*args, **kwargs)
        scheduler = self._scheduler()
        if isinstance(when, datetime):
            return cast(JobId[R], await scheduler.schedule(job, at=when))
        delay = seconds(f"{self}.schedule(when, ...)'s delay", when)
        return cast(JobId[R], await scheduler.schedule(job, delay=delay))


class TaskDecorator:
    """What ``@host.task(name=..., ...)`` returns: makes the decorated function a `Task`."""

    def __init__(self, register: Callable[[Callable[..., Awaitable[Any]]], Task[Any, Any]]) -> None:
        self._register = register

    @overload
    def __call__(
        self, function: Callable[Concatenate[JobContext, P], Awaitable[R]], /
    ) -> Task[P, R]: ...
    @overload
    def __call__(self, function: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...
    def __call__(self, function: Callable[..., Awaitable[Any]], /) -> Task[Any, Any]:
        return self._register(function)


def _pydantic_payload(
    function: Callable[..., Any], passed: list[inspect.Parameter]
) -> type[Any] | None:
    """A frozen pydantic model of the passed parameters, when one of them is (or holds) a
    pydantic model, which only pydantic can validate; else None (a dataclass will do)."""
    pydantic = sys.modules.get("pydantic")  # a model exists only if pydantic was imported
    if pydantic is None or not any(_mentions(p.annotation, pydantic.BaseModel) for p in passed):
        return None
    fields: dict[str, Any] = {
        p.name: (p.annotation, ... if p.default is p.empty else p.default) for p in passed
    }
    try:
        return cast(
            type[Any],
            pydantic.create_model(
                function.__name__,
                __config__=pydantic.ConfigDict(frozen=True, extra="forbid"),
                **fields,
            ),
        )
    except (TypeError, ValueError, NameError, pydantic.PydanticUserError) as exc:
        raise ConfigurationError(f"task {_describe(function)}: {exc}") from None


def _mentions(hint: Any, base: type[Any]) -> bool:
    """Whether ``hint`` is a subclass of ``base`` or holds one (``list[Model] | None``)."""
    with contextlib.suppress(TypeError):  # list[int] passes isinstance(type) on 3.11
        if isinstance(hint, type) and issubclass(hint, base):
            return True
    return any(_mentions(arg, base) for arg in typing.get_args(hint))


def _result_decoder(function: Callable[..., Any], hint: Any) -> Callable[[Any], Any] | None:
    """What rebuilds the function's return value from its stored JSON form, through the
    payload codec; None where there is nothing to rebuild (no annotation, Any, None, a
    `JobResult`) or the codec cannot decode the type (the JSON form is then kept)."""
    if hint in (Any, object, None, type(None)) or _mentions_job_result(hint):
        return None
    holder = dataclasses.make_dataclass(f"{function.__name__}_result", [("value", hint)])
    try:
        decode_payload(holder, {"value": None})  # builds the plan, checking the annotation
    except PayloadDecodeError:
        pass  # None is not a value of the type: the plan is built all the same
    except ConfigurationError:
        return _pydantic_result_decoder(hint)

    def decode(value: Any) -> Any:
        try:
            return decode_payload(holder, {"value": value}).value
        except PayloadDecodeError:  # stored by other code: shown as stored
            return value

    return decode


def _pydantic_result_decoder(hint: Any) -> Callable[[Any], Any] | None:
    """A decoder for a return type msgspec cannot rebuild because it holds pydantic models
    (``-> Model``, ``-> list[Model]``); None if pydantic cannot rebuild it either."""
    pydantic = sys.modules.get("pydantic")  # a model exists only if pydantic was imported
    if pydantic is None:
        return None
    try:
        adapter = pydantic.TypeAdapter(hint)
    except Exception:  # pydantic has no schema for it: the JSON form is kept
        return None

    def decode(value: Any) -> Any:
        try:
            return adapter.validate_python(value)
        except pydantic.ValidationError:  # stored by other code: shown as stored
            return value

    return decode


def _mentions_job_result(hint: Any) -> bool:
    return hint is JobResult or any(_mentions_job_result(arg) for arg in typing.get_args(hint))


def _task_name(function: Callable[..., Any]) -> str:
    qualname = getattr(function, "__qualname__", "")
    if not qualname or _UNSTABLE.search(qualname):
        raise ConfigurationError(
            f"task {_describe(function)} has no stable default name (it is defined inside a "
            "function, or is a lambda): name it, @host.task(name='...')"
        )
    return f"{_module_name(function.__module__)}.{qualname}"


def _module_name(module: str) -> str:
    """The module's importable name: a script run as ``python app.py`` (or ``python -m
    app``) is ``__main__`` there but ``app`` in a worker that imports it (``hostedjobs
    worker app:host``), and both must give the task the same name."""
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name).removesuffix(".__main__")
    file = getattr(main, "__file__", None)
    return Path(file).stem if isinstance(file, str) else module


def _type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function, include_extras=True)
    except (NameError, AttributeError, TypeError) as exc:
        raise ConfigurationError(
            f"cannot read the type hints of task {_describe(function)}: {exc}; define the "
            "annotated types at module level"
        ) from None


def _describe(function: Callable[..., Any]) -> str:
    return str(getattr(function, "__qualname__", function))
