"""Parameter markers: how a job's parameter asks its run for a value, and FastAPI's ``Depends``.

A parameter of a job, handler or startup action is filled by its run when it says so:

- ``db: Database = Inject()`` or ``db: Annotated[Database, Inject()]``: a service from the
  run's scope (`Inject`);
- ``db: Session = Depends(get_db)`` or ``db: Annotated[Session, Depends(get_db)]``: FastAPI's
  marker (only recognised when fastapi is installed; hostedjobs does not need it). The
  dependency function is called once per run, as FastAPI calls it once per request: sync
  functions in a worker thread, async ones on the loop, (async) generator functions entered
  before the job and closed when the run's scope closes, with the run's exception thrown in
  at the ``yield``. Its own parameters may be ``Depends(...)``, ``Inject()`` or the run's
  `JobContext`. With ``use_cache=True`` (the default) one run calls a dependency once however
  many parameters ask for it.

What cannot work outside an HTTP request is refused when the job is registered, naming the
parameter chain: a ``Request``, ``WebSocket``, ``Response``, ``BackgroundTasks`` or
``SecurityScopes`` parameter, request parameters (``Query``, ``Header``, ``Path``, ``Cookie``,
``Body``, ``Form``, ``File``), ``Security``, and markers of other dependency-injection libraries
(dishka's ``FromDishka``, dependency-injector's ``Provide``, FastDepends/FastStream, taskiq,
docket, injector, wireup, lagom, that-depends) that would otherwise reach the job as the marker
object itself. Plain defaults (``retries: int = 3``) are values, as always.
"""

from __future__ import annotations

__all__ = [
    "Dependency",
    "DependencyRun",
    "Inject",
    "InjectMarker",
    "is_injected",
    "marker_of",
    "refuse_request_type",
]

import contextlib
import inspect
import sys
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Final, Self

from starlette.concurrency import run_in_threadpool

from .context import JobContext
from .exceptions import ConfigurationError

# --- Inject ---------------------------------------------------------------------------------


class InjectMarker:
    """What `Inject()` returns: a parameter resolved from the run's scope."""

    __slots__ = ("service_type",)

    def __init__(self, service_type: type[Any] | None) -> None:
        self.service_type = service_type

    def __repr__(self) -> str:
        if self.service_type is None:
            return "Inject()"
        name = str(getattr(self.service_type, "__qualname__", self.service_type))
        return f"Inject({name.rpartition('<locals>.')[2]})"


def Inject(service_type: type[Any] | None = None) -> Any:
    """Mark a parameter as resolved from the run's scope, like FastAPI's ``Depends()``.

    Write ``db: Database = Inject()`` (typed `Any`, so type checkers accept it as a default for
    any annotation) or ``db: Annotated[Database, Inject()]``. ``Inject(Database)`` resolves
    `Database` whatever the annotation says. Linters that flag calls in defaults (ruff and
    flake8-bugbear B008) accept it once ``hostedjobs.Inject`` is listed in their
    ``extend-immutable-calls`` setting, as is usual for FastAPI's ``Depends``.
    """
    return InjectMarker(service_type)


# --- Depends --------------------------------------------------------------------------------

_SYNC: Final = 0
_ASYNC: Final = 1
_GENERATOR: Final = 2
_ASYNC_GENERATOR: Final = 3


@dataclass(frozen=True, slots=True)
class Dependency:
    """A checked ``Depends(call)`` declaration: what to call, how, and whether to share it."""

    call: Callable[..., Any]
    use_cache: bool
    kind: int

    @classmethod
    def of(cls, call: Callable[..., Any], use_cache: bool) -> Dependency:
        """Classify ``call`` as FastAPI does: coroutine, (async) generator, or sync."""
        dunder_call = (
            None if inspect.isroutine(call) or inspect.isclass(call) else type(call).__call__
        )
        if inspect.isasyncgenfunction(call) or inspect.isasyncgenfunction(dunder_call):
            kind = _ASYNC_GENERATOR
        elif inspect.isgeneratorfunction(call) or inspect.isgeneratorfunction(dunder_call):
            kind = _GENERATOR
        elif inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(dunder_call):
            kind = _ASYNC
        else:
            kind = _SYNC
        return cls(call, use_cache, kind)


Marker = InjectMarker | Dependency
"""What a parameter's default or ``Annotated`` metadata asks for."""


def marker_of(default: Any, annotation: Any, where: str) -> tuple[Marker | None, Any, Any]:
    """The marker a parameter declares, its default without it, and its annotation without
    ``Annotated``: ``(marker or None, default, annotation)``.

    ``default`` and ``annotation`` are ``inspect.Parameter.empty`` when absent. ``where`` names
    the parameter in errors. Raises `ConfigurationError` for a marker hostedjobs cannot honour
    (see the module docstring), for two markers on one parameter, and for ``Depends()`` without
    a dependency or an annotation to take it from.
    """
    empty = inspect.Parameter.empty
    found: list[Marker] = []
    default_marker = _recognise(default, where, in_default=True)
    if default_marker is not None:
        found.append(default_marker)
        default = empty
    if typing.get_origin(annotation) is typing.Annotated:
        for extra in annotation.__metadata__:
            extra_marker = _recognise(extra, where, in_default=False)
            if extra_marker is not None:
                found.append(extra_marker)
        annotation = annotation.__origin__
    if len(found) > 1:
        raise ConfigurationError(
            f"{where} declares {len(found)} injection markers ({', '.join(map(_show, found))}); "
            "keep one, in the default or in Annotated"
        )
    marker = found[0] if found else None
    if isinstance(marker, Dependency) and marker.call is _FROM_ANNOTATION:
        target = _unwrap_optional(annotation)
        if target is empty or not callable(target):
            raise ConfigurationError(
                f"{where} uses Depends() without a dependency, so its annotation must name "
                "the class to call; write Depends(get_value) or annotate it with a class"
            )
        marker = Dependency.of(target, marker.use_cache)
    return marker, default, annotation


def refuse_request_type(annotation: Any, where: str) -> None:
    """Raise `ConfigurationError` if ``annotation`` (unwrapped) is something only an HTTP
    request has: a Starlette/FastAPI ``Request``, ``WebSocket``, ``HTTPConnection``,
    ``Response``, ``BackgroundTasks``, ``UploadFile`` or ``SecurityScopes``."""
    target = _unwrap_optional(annotation)
    if not inspect.isclass(target):
        return
    for klass in target.__mro__:
        why = _REQUEST_TYPES.get(f"{klass.__module__}.{klass.__qualname__}")
        if why is not None:
            raise ConfigurationError(
                f"{where} asks for a {target.__qualname__}, {why}; a job runs outside any "
                "HTTP request, so there is none to give. Pass the values it needs in the "
                "job's payload, or register what it builds as a service and use Inject()"
            )


def is_injected(parameter: inspect.Parameter) -> bool:
    """Whether a run fills ``parameter`` itself: an ``Inject()`` or ``Depends(...)`` default or
    ``Annotated`` metadata, or a `JobContext` annotation (``X | None`` too).

    Such parameters are not the caller's to pass (not part of a job's payload). Give it a
    parameter with evaluated annotations (``inspect.signature(fn, eval_str=True)``): a string
    annotation is not looked into. Never raises; unsupported markers are refused by
    `marker_of` at registration.
    """
    if _is_marker(parameter.default):
        return True
    annotation = parameter.annotation
    if typing.get_origin(annotation) is typing.Annotated:
        if any(_is_marker(extra) for extra in annotation.__metadata__):
            return True
        annotation = annotation.__origin__
    return _unwrap_optional(annotation) is JobContext


class DependencyRun:
    """One run's ``Depends`` values: the cache, and the cleanups of generator dependencies.

    ``async with DependencyRun() as dependencies:`` around the run's code (inside its scope);
    leaving it closes the generators in reverse order, throwing the run's exception in at the
    ``yield``. A cleanup cannot swallow that exception (as in `hostedjobs.scope.Services`).
    """

    __slots__ = ("_cache", "_closed", "_exit_stack", "overrides")

    def __init__(self, overrides: Mapping[Any, Callable[..., Any]] | None = None) -> None:
        self.overrides: Mapping[Any, Callable[..., Any]] = overrides or {}
        """FastAPI's ``app.dependency_overrides``: a dependency to call instead of another."""
        self._cache: dict[Any, Any] = {}
        self._exit_stack: AsyncExitStack | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self._closed = True
        self._cache.clear()
        exit_stack, self._exit_stack = self._exit_stack, None
        if exit_stack is not None:
            await exit_stack.__aexit__(exc_type, exc, traceback)

    async def solve(
        self,
        dependency: Dependency,
        arguments: Callable[[], Awaitable[tuple[list[Any], dict[str, Any]]]],
    ) -> Any:
        """The value of ``dependency`` in this run: cached, or called with ``arguments()``.

        As in FastAPI, every value is remembered, and ``use_cache=False`` only means this
        declaration calls its dependency again.
        """
        call = dependency.call
        if dependency.use_cache and call in self._cache:
            return self._cache[call]
        if self._closed:
            raise ConfigurationError(
                f"cannot call {getattr(call, '__qualname__', call)}: this run's dependencies "
                "have been closed, so its cleanup would never run"
            )
        args, kwargs = await arguments()
        kind = dependency.kind
        if kind == _ASYNC:
            value = await call(*args, **kwargs)
        elif kind == _SYNC:
            value = await run_in_threadpool(call, *args, **kwargs)
        elif kind == _ASYNC_GENERATOR:
            manager = contextlib.asynccontextmanager(call)(*args, **kwargs)
            value = await manager.__aenter__()
            self._stack().push_async_exit(_without_suppressing(manager.__aexit__))
        else:
            sync_manager = contextlib.contextmanager(call)(*args, **kwargs)
            value = await run_in_threadpool(sync_manager.__enter__)

            async def exit_in_thread(*exc_info: Any) -> Any:
                return await run_in_threadpool(sync_manager.__exit__, *exc_info)

            self._stack().push_async_exit(_without_suppressing(exit_in_thread))
        self._cache.setdefault(call, value)
        return value

    def _stack(self) -> AsyncExitStack:
        if self._exit_stack is None:
            self._exit_stack = AsyncExitStack()
        return self._exit_stack


def _without_suppressing(
    exit_: Callable[..., Awaitable[Any]],
) -> Callable[..., Awaitable[bool]]:
    async def exit_without_suppressing(
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> bool:
        await exit_(exc_type, exc, traceback)
        return False

    return exit_without_suppressing


# --- Recognising markers --------------------------------------------------------------------


def _from_annotation() -> None:
    """Stands for ``Depends()``'s missing dependency until the annotation is known."""


_FROM_ANNOTATION: Final[Callable[..., Any]] = _from_annotation

_REQUEST_TYPES: Final = {
    "starlette.requests.HTTPConnection": "which only an HTTP request or WebSocket has",
    "starlette.responses.Response": "which only an HTTP request has",
    "starlette.background.BackgroundTasks": "which belong to an HTTP response",
    "starlette.datastructures.UploadFile": "which only a request's body has",
    "fastapi.security.oauth2.SecurityScopes": "which come from a route's Security()",
}

# Other dependency-injection libraries' markers, by the module (or package) that defines them.
_FOREIGN_MARKERS: Final = {
    "dishka": "dishka (use hostedjobs.integrations.dishka.DishkaScopes and Inject())",
    "dependency_injector": "dependency-injector",
    "fast_depends": "FastDepends (FastStream)",
    "taskiq_dependencies": "taskiq",
    "docket.dependencies": "docket",
    "wireup": "wireup",
    "lagom": "lagom",
    "that_depends": "that-depends",
}


def _recognise(obj: Any, where: str, *, in_default: bool) -> Marker | None:
    """The marker ``obj`` is, None for a plain value; raises for markers we cannot honour."""
    if isinstance(obj, InjectMarker):
        return obj
    if obj is Inject:
        return InjectMarker(None)
    fastapi_params = sys.modules.get("fastapi.params")
    if fastapi_params is not None:
        dependency = _fastapi_marker(obj, fastapi_params, where)
        if dependency is not None:
            return dependency
    library = _foreign_library(obj)
    if library is not None:
        raise ConfigurationError(
            f"{where} has {_show(obj)}, a marker of {library}, which hostedjobs does not "
            "resolve (the job would get the marker object itself); use Inject() for a "
            "service from the run's scope, or FastAPI's Depends(function)"
        )
    pydantic_fields = sys.modules.get("pydantic.fields")
    if (
        in_default
        and pydantic_fields is not None
        and isinstance(obj, getattr(pydantic_fields, "FieldInfo", ()))
    ):
        raise ConfigurationError(
            f"{where} has a pydantic Field(...) default; hostedjobs passes defaults as they "
            "are, so the job would get the FieldInfo object: write the plain default value"
        )
    return None


def _fastapi_marker(obj: Any, params: types.ModuleType, where: str) -> Dependency | None:
    """``Depends(...)`` as a `Dependency`; raises for FastAPI markers a job cannot have."""
    if isinstance(obj, params.Security):
        raise ConfigurationError(
            f"{where} uses Security(...), which needs a request's security scopes; a job "
            "has none: use Depends(function) with a function that does not need the request"
        )
    if isinstance(obj, params.Depends):
        if getattr(obj, "max_concurrency", None) is not None:
            raise ConfigurationError(
                f"{where} uses Depends(..., max_concurrency={obj.max_concurrency}), which "
                "hostedjobs does not enforce; drop max_concurrency for jobs, or limit the "
                "resource in the dependency itself (e.g. an asyncio.Semaphore service)"
            )
        call = obj.dependency
        return Dependency.of(_FROM_ANNOTATION if call is None else call, bool(obj.use_cache))
    if isinstance(obj, params.Param | params.Body):
        raise ConfigurationError(
            f"{where} is a request parameter ({type(obj).__name__}(...)), read from an HTTP "
            "request, which a job does not have; put the value in the job's payload, or "
            "give the parameter a plain default"
        )
    if _defined_in(obj, "fastapi"):
        raise ConfigurationError(
            f"{where} has {_show(obj)} from fastapi, which is not a value; did you mean "
            "Depends(function) (called, with the dependency)?"
        )
    return None


def _foreign_library(obj: Any) -> str | None:
    for module, library in _FOREIGN_MARKERS.items():
        if _defined_in(obj, module):
            return library
    injector = sys.modules.get("injector")
    if injector is not None and any(
        obj is getattr(injector, name, None) for name in ("_inject_marker", "_noinject_marker")
    ):
        return "injector"
    return None


def _defined_in(obj: Any, package: str) -> bool:
    """Whether ``obj`` (a class or function) or its class is defined in ``package``."""
    if inspect.isclass(obj) or inspect.isroutine(obj):
        candidates: tuple[Any, ...] = (obj,)
    else:
        candidates = type(obj).__mro__[:-1]
    for candidate in candidates:
        module = getattr(candidate, "__module__", None) or ""
        if module == package or module.startswith(f"{package}."):
            return True
    return False


def _is_marker(obj: Any) -> bool:
    if isinstance(obj, InjectMarker) or obj is Inject:
        return True
    fastapi_params = sys.modules.get("fastapi.params")
    return fastapi_params is not None and isinstance(obj, fastapi_params.Depends)


def _unwrap_optional(annotation: Any) -> Any:
    """``X | None`` (or ``Optional[X]``) -> ``X``; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if len(args) == 2 and type(None) in args:
            return args[0] if args[1] is type(None) else args[1]
    return annotation


def _show(obj: Any) -> str:
    if isinstance(obj, Dependency):
        return f"Depends({getattr(obj.call, '__qualname__', obj.call)})"
    if inspect.isclass(obj) or inspect.isroutine(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    text = repr(obj)
    return text if len(text) <= 80 else f"{type(obj).__qualname__}(...)"
