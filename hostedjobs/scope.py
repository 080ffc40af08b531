"""Per-run dependency scopes: the built-in service provider, and planning calls into a scope.

A run of a job opens one scope, resolves what its handler asks for, and closes the scope after
the handler in every outcome (success, exception, cancellation, timeout)::

    services = Services()
    services.add_singleton(Settings, Settings())          # one object, shared by every run
    services.add_scoped(Database, open_database)         # one per run, closed after it
    services.add_transient(Clock, Clock)                  # a new one each time it is asked for

    async with services.scope({JobContext: ctx}) as resolver:
        db = await resolver.aget(Database)

Lifetimes: a singleton is created once per `Services` (until `Services.aclose`), a scoped
service at most once per scope, a transient on every resolution. Creation is safe under
concurrency: two tasks asking for the same scoped service in one scope, or for the same
singleton from any scopes, get one instance.

Factories are sync or async callables, or sync or async generator functions that yield once;
code after the ``yield`` is cleanup. Cleanups run when the scope closes (singletons' cleanups at
`Services.aclose`), in reverse creation order, with the run's exception thrown in at the
``yield`` like in `contextlib.asynccontextmanager`, so this works::

    async def open_database(settings: Settings) -> AsyncIterator[Database]:
        db = await Database.connect(settings.dsn)
        try:
            yield db
        except Exception:
            await db.rollback()
            raise
        else:
            await db.commit()
        finally:
            await db.close()

Unlike `contextlib`, a cleanup cannot swallow the run's exception: every cleanup sees it, and
it leaves the scope unchanged (a cleanup that raises a new exception replaces it, as usual).
On cancellation and timeouts the cleanups see `asyncio.CancelledError`.

A factory's parameters are resolved by their annotations from the same scope: the values the
scope was opened with (``provided``, matched by exact type) first, then the registrations; a
parameter with a default that cannot be resolved that way gets its default. A class can be
its own factory (constructor injection). Registrations are checked lazily, so they can be
added in any order; a re-registration of a type replaces the earlier one.

`plan_call` analyses a job's parameters once (``Inject()``, FastAPI's ``Depends``: see
`hostedjobs.depends`) and `call_planned` fills them from a run's scope; adapters for other
containers (`hostedjobs.integrations`) implement `ScopeProvider`.
"""

from __future__ import annotations

__all__ = [
    "CallPlan",
    "Factory",
    "Inject",
    "Resolver",
    "ScopeProvider",
    "Services",
    "call_planned",
    "not_registered_error",
    "plan_call",
]

import asyncio
import contextlib
import functools
import inspect
import types
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Any, Final, Protocol, Self, TypeAlias, TypeVar

from .depends import Dependency, DependencyRun, Inject, InjectMarker, marker_of, refuse_request_type
from .exceptions import ConfigurationError, DependencyResolutionError

T = TypeVar("T")

Factory: TypeAlias = Callable[..., T | Awaitable[T] | Iterator[T] | AsyncIterator[T]]
"""What builds a ``T``: a class, a sync or async function, or a (sync or async) generator
function that yields the ``T`` once and cleans up after the ``yield``."""


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final[Any] = _Missing()
_EMPTY: Final[Mapping[Any, object]] = types.MappingProxyType({})


# --- Protocols ------------------------------------------------------------------------------


class Resolver(Protocol):
    """Resolves services inside one open scope."""

    async def aget(self, service_type: type[T]) -> T:
        """The scope's instance of ``service_type``; `DependencyResolutionError` if none."""
        ...


class ScopeProvider(Protocol):
    """What a `JobHost` needs from a dependency container (`Services`, or an adapter)."""

    def scope(self, provided: Mapping[type[Any], object]) -> AbstractAsyncContextManager[Resolver]:
        """Open one run's scope; ``provided`` values are resolvable by exact type inside it."""
        ...

    async def aclose(self) -> None:
        """Release what outlives scopes (singletons); called when the host stops."""
        ...


# --- Call plans -----------------------------------------------------------------------------

_FROM_PROVIDED: Final = 0
_FROM_SCOPE: Final = 1
_CONSTANT: Final = 2
_FROM_DEPENDS: Final = 3


@dataclass(frozen=True, slots=True)
class _Argument:
    name: str
    service_type: Any
    source: int
    default: Any  # _MISSING: required
    positional: bool
    dependency: tuple[Dependency, CallPlan] | None = None  # _FROM_DEPENDS: what to call, how


@dataclass(frozen=True, slots=True)
class CallPlan:
    """How to call a function or construct a class: analysed once, by `plan_call`.

    ``target`` is what gets called, ``name`` names it in error messages, ``arguments`` is an
    opaque description of where each argument comes from. A plan made from a function whose
    first parameter is an unannotated ``self`` (``plan_call(Handler.handle, ...)``) needs an
    instance: call it through `bound_to`. ``uses_depends`` says whether it (or a dependency of
    it) has FastAPI ``Depends`` parameters, which need a `DependencyRun` to be called.
    """

    target: Callable[..., Any]
    name: str
    arguments: tuple[_Argument, ...]
    is_coroutine_function: bool
    may_return_awaitable: bool
    needs_instance: bool = False
    uses_depends: bool = False

    @property
    def dependencies(self) -> tuple[Any, ...]:
        """The service types this call resolves from the scope (for checks at start-up),
        those of its ``Depends`` functions included."""
        found: list[Any] = []
        for argument in self.arguments:
            if argument.source == _FROM_SCOPE:
                found.append(argument.service_type)
            elif argument.dependency is not None:
                found.extend(argument.dependency[1].dependencies)
        return tuple(found)

    def bound_to(self, instance: object) -> CallPlan:
        """This plan, calling the method of the same name on ``instance`` (its ``self``)."""
        method = getattr(instance, self.target.__name__)
        return CallPlan(
            method,
            self.name,
            self.arguments,
            self.is_coroutine_function,
            self.may_return_awaitable,
            uses_depends=self.uses_depends,
        )


def plan_call(
    fn: Callable[..., Any], *, provided_types: Collection[type[Any]], inject_all: bool
) -> CallPlan:
    """Analyse how to call ``fn`` (a function, class or callable) with values from a scope.

    For each parameter, in this order: an annotation that is one of ``provided_types`` takes
    the run's provided value; an `Inject` default or ``Annotated[T, Inject()]`` resolves ``T``
    from the scope; FastAPI's ``Depends(function)`` default or ``Annotated[T,
    Depends(function)]`` calls the function once per run (see `hostedjobs.depends`), its own
    parameters planned the same way; with ``inject_all`` (class constructors, factories) every
    annotated parameter is resolved, falling back to its default when nothing provides its
    type; otherwise a parameter with a default keeps it. ``X | None`` annotations resolve
    ``X``. ``*args`` and ``**kwargs`` are never filled. For a class, ``__init__`` is analysed.

    Raises `ConfigurationError` naming the function and the parameter (through the chain of
    ``Depends``) when a parameter can be filled by none of these, when its type hints cannot
    be read, when it asks for what only an HTTP request has (``Request``, ``Query()``, ...),
    or when it carries a dependency marker hostedjobs does not resolve.
    """
    return _plan(fn, frozenset(provided_types), inject_all, via="", calls=())


def _plan(
    fn: Callable[..., Any],
    provided: frozenset[Any],
    inject_all: bool,
    *,
    via: str,
    calls: tuple[Any, ...],
) -> CallPlan:
    name = _describe(fn)
    parameters, hints, needs_instance = _signature(fn, name)
    arguments: list[_Argument] = []
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        where = f"parameter {parameter.name!r} of {name}{via}"
        argument = _plan_argument(parameter, hints, where, provided, inject_all, (*calls, fn))
        if argument is not None:
            arguments.append(argument)
    is_class = inspect.isclass(fn)
    is_coroutine_function = not is_class and inspect.iscoroutinefunction(fn)
    return CallPlan(
        target=fn,
        name=name,
        arguments=tuple(arguments),
        is_coroutine_function=is_coroutine_function,
        may_return_awaitable=not is_class and not is_coroutine_function,
        needs_instance=needs_instance,
        uses_depends=any(a.source == _FROM_DEPENDS for a in arguments),
    )


async def call_planned(
    plan: CallPlan,
    resolver: Resolver,
    provided: Mapping[type[Any], object],
    dependencies: DependencyRun | None = None,
) -> Any:
    """Call ``plan.target`` with its arguments from ``provided``, ``resolver`` and (for
    ``Depends`` parameters) ``dependencies``; await the result if it is awaitable, and return it.

    Resolution failures raise `DependencyResolutionError` naming the chain of dependencies.
    A plan that ``uses_depends`` needs ``dependencies`` (`ConfigurationError` otherwise).
    """
    if plan.needs_instance:
        raise ConfigurationError(
            f"{plan.name} is a method: call `plan.bound_to(instance)` and run that plan instead"
        )
    if plan.uses_depends and dependencies is None:
        raise ConfigurationError(
            f"{plan.name} has Depends(...) parameters: call it inside "
            "`async with DependencyRun() as dependencies` and pass `dependencies`"
        )
    if not plan.arguments:
        result = plan.target()
    else:
        args, kwargs = await _arguments(plan, resolver, provided, dependencies)
        result = plan.target(*args, **kwargs)
    if plan.is_coroutine_function or (plan.may_return_awaitable and inspect.isawaitable(result)):
        return await result
    return result


def not_registered_error(service_type: Any, message: str) -> DependencyResolutionError:
    """The error an adapter's `Resolver.aget` raises when nothing provides ``service_type``
    (``message`` says so, and how to register it): a parameter with a default then gets its
    default instead of failing the run."""
    return _NotRegisteredError(message, service_type)


async def _arguments(
    plan: CallPlan,
    resolver: Resolver,
    provided: Mapping[type[Any], object],
    dependencies: DependencyRun | None,
) -> tuple[list[Any], dict[str, Any]]:
    if type(resolver) is _Scope:
        return await resolver._arguments(plan, provided, (plan.name,), None, dependencies)
    return await _generic_arguments(plan, resolver, provided, dependencies)


async def _solve(
    argument: _Argument,
    resolver: Resolver,
    provided: Mapping[type[Any], object],
    dependencies: DependencyRun | None,
) -> Any:
    """A ``Depends`` argument's value: its function called with its own arguments, once per
    run (unless ``use_cache=False``)."""
    assert argument.dependency is not None and dependencies is not None
    dependency, plan = argument.dependency
    override = dependencies.overrides.get(dependency.call) if dependencies.overrides else None
    if override is not None:
        # Planned per run: overrides are a test's tool, set and cleared while the app runs.
        plan = _plan(
            override,
            frozenset(provided),
            False,
            via=f" (override of {_describe(dependency.call)})",
            calls=(),
        )
        dependency = Dependency.of(override, dependency.use_cache)
    if not plan.arguments:
        return await dependencies.solve(dependency, _no_arguments)
    return await dependencies.solve(
        dependency, functools.partial(_arguments, plan, resolver, provided, dependencies)
    )


async def _no_arguments() -> tuple[list[Any], dict[str, Any]]:
    return [], {}


def _signature(
    fn: Callable[..., Any], name: str
) -> tuple[list[inspect.Parameter], dict[str, Any], bool]:
    """The parameters to fill, their type hints, and whether a leading ``self`` was skipped."""
    skip_first = False
    if inspect.isclass(fn):
        if fn.__init__ is not object.__init__:
            hint_source: Any = fn.__init__
            signature_source: Any = fn.__init__
            skip_first = True
        else:
            hint_source = fn.__new__ if fn.__new__ is not object.__new__ else None
            signature_source = fn
    elif isinstance(fn, functools.partial):
        hint_source = fn.func
        while isinstance(hint_source, functools.partial):
            hint_source = hint_source.func
        signature_source = fn
    elif inspect.isfunction(fn) or inspect.ismethod(fn) or inspect.isbuiltin(fn):
        hint_source = signature_source = fn
    else:
        hint_source, signature_source = type(fn).__call__, fn
    try:
        parameters = list(inspect.signature(signature_source).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature take no injected arguments
        return [], {}, False
    hints = _type_hints(hint_source, name)
    needs_instance = False
    if (
        not skip_first
        and inspect.isfunction(fn)
        and parameters
        and parameters[0].name == "self"
        and parameters[0].kind
        in (parameters[0].POSITIONAL_ONLY, parameters[0].POSITIONAL_OR_KEYWORD)
        and "self" not in hints
    ):
        skip_first = needs_instance = True
    if skip_first:
        parameters = parameters[1:]
    return parameters, hints, needs_instance


def _type_hints(source: Any, name: str) -> dict[str, Any]:
    if source is None:
        return {}
    try:
        return typing.get_type_hints(source, include_extras=True)
    except (NameError, AttributeError) as exc:
        raise ConfigurationError(
            f"cannot read the type hints of {name}: {exc}; define the annotated types at "
            f"module level (string annotations are evaluated in the function's module)"
        ) from None
    except TypeError:  # C slots and other objects without annotations
        return {}


def _plan_argument(
    parameter: inspect.Parameter,
    hints: Mapping[str, Any],
    where: str,
    provided: frozenset[Any],
    inject_all: bool,
    calls: tuple[Any, ...],
) -> _Argument | None:
    """Where one parameter's value comes from, or None to leave it to its default."""
    empty = inspect.Parameter.empty
    marker, default, annotation = marker_of(
        parameter.default, hints.get(parameter.name, empty), where
    )
    if default is empty:
        default = _MISSING
    if annotation is empty:
        annotation = _MISSING
    positional = parameter.kind is parameter.POSITIONAL_ONLY

    if isinstance(marker, Dependency):
        if marker.call in calls:
            cycle = " -> ".join(_describe(call) for call in (*calls, marker.call))
            raise ConfigurationError(
                f"{where} depends on itself through Depends: {cycle}; break the cycle"
            )
        plan = _plan(
            marker.call,
            provided,
            False,
            via=f" (Depends of {where})",
            calls=calls,
        )
        return _Argument(parameter.name, None, _FROM_DEPENDS, _MISSING, positional, (marker, plan))
    if isinstance(marker, InjectMarker) and marker.service_type is not None:
        annotation = marker.service_type

    if annotation is _MISSING:
        if marker is not None:
            raise ConfigurationError(
                f"{where} uses Inject() but has no type annotation; annotate it "
                f"(`{parameter.name}: Service = Inject()`) or name the type: Inject(Service)"
            )
        if default is _MISSING:
            raise ConfigurationError(
                f"{where} has no type annotation and no default, so nothing can fill it; "
                f"annotate it with a registered type or give it a default"
            )
        return _Argument(parameter.name, None, _CONSTANT, default, True) if positional else None

    service_type = _unwrap_optional(annotation)
    if service_type in provided:
        return _Argument(parameter.name, service_type, _FROM_PROVIDED, default, positional)
    refuse_request_type(service_type, where)
    if marker is not None or inject_all:
        return _Argument(parameter.name, service_type, _FROM_SCOPE, default, positional)
    if default is not _MISSING:
        return _Argument(parameter.name, None, _CONSTANT, default, True) if positional else None
    provided_names = ", ".join(sorted(_describe(t) for t in provided)) or "none"
    raise ConfigurationError(
        f"{where} cannot be filled: give it a default of Inject() "
        f"(`{parameter.name}: {_describe(annotation)} = Inject()`), annotate it as "
        f"Annotated[{_describe(annotation)}, Inject()], use Depends(function), or annotate "
        f"it with a registered type the run provides ({provided_names})"
    )


def _unwrap_optional(annotation: Any) -> Any:
    """``X | None`` (or ``Optional[X]``) -> ``X``; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if len(args) == 2 and type(None) in args:
            return args[0] if args[1] is type(None) else args[1]
    return annotation


async def _generic_arguments(
    plan: CallPlan,
    resolver: Resolver,
    provided: Mapping[type[Any], object],
    dependencies: DependencyRun | None,
) -> tuple[list[Any], dict[str, Any]]:
    """Arguments through a resolver other than ours (an adapter's)."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for argument in plan.arguments:
        if argument.source == _CONSTANT:
            value = argument.default
        elif argument.source == _FROM_DEPENDS:
            value = await _solve(argument, resolver, provided, dependencies)
        else:
            value = _MISSING
            if argument.source == _FROM_PROVIDED:
                value = provided.get(argument.service_type, _MISSING)
            if value is _MISSING:
                try:
                    value = await resolver.aget(argument.service_type)
                except _NotRegisteredError as exc:
                    if argument.default is _MISSING or exc.service_type != argument.service_type:
                        raise
                    value = argument.default
        if argument.positional:
            args.append(value)
        else:
            kwargs[argument.name] = value
    return args, kwargs


# --- Services -------------------------------------------------------------------------------

_SINGLETON: Final = "singleton"
_SCOPED: Final = "scoped"
_TRANSIENT: Final = "transient"

_INSTANCE: Final = 0
_CALL: Final = 1
_ASYNC_CALL: Final = 2
_GENERATOR: Final = 3
_ASYNC_GENERATOR: Final = 4


class _Registration:
    """One registered type: its lifetime, its analysed factory, and a singleton's value."""

    __slots__ = ("context_manager", "factory", "kind", "lifetime", "plan", "service_type", "value")

    def __init__(self, service_type: Any, lifetime: str, factory: Any, method: str) -> None:
        self.service_type = service_type
        self.lifetime = lifetime
        self.factory = factory
        self.value: Any = _MISSING
        self.context_manager: Callable[..., Any] | None = None
        if not callable(factory):
            raise ConfigurationError(
                f"{method}({_describe(service_type)}, {factory!r}): the factory is not "
                f"callable; pass a class or function that builds a {_describe(service_type)}, "
                f"or use add_singleton({_describe(service_type)}, instance) to share one object"
            )
        try:
            self.plan = plan_call(factory, provided_types=(), inject_all=True)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{method}({_describe(service_type)}, ...): {exc}") from None
        if self.plan.uses_depends:
            raise ConfigurationError(
                f"{method}({_describe(service_type)}, ...): {self.plan.name} has a Depends(...) "
                "parameter, which only a job's own parameters can have; register what it "
                "depends on as a service too, and the factory gets it by annotation"
            )
        if inspect.isasyncgenfunction(factory):
            self.kind = _ASYNC_GENERATOR
            self.context_manager = contextlib.asynccontextmanager(factory)
        elif inspect.isgeneratorfunction(factory):
            self.kind = _GENERATOR
            self.context_manager = contextlib.contextmanager(factory)
        elif self.plan.is_coroutine_function:
            self.kind = _ASYNC_CALL
        else:
            self.kind = _CALL


class Services:
    """The built-in dependency provider: register services, then open one scope per run.

    Each ``add_*`` returns the `Services`, for chaining, and replaces any earlier registration
    of the same type.
    """

    __slots__ = ("_exit_stack", "_pending", "_registrations")

    def __init__(self) -> None:
        self._registrations: dict[Any, _Registration] = {}
        self._pending: dict[_Registration, asyncio.Event | None] | None = None
        self._exit_stack: AsyncExitStack | None = None

    def add_singleton(self, service_type: type[T], instance_or_factory: T | Factory[T]) -> Self:
        """Register one ``service_type`` object shared by every scope.

        ``instance_or_factory`` is stored as the instance when it is an instance of
        ``service_type``, or when it is not a function, method, class, builtin or
        `functools.partial` (so objects with ``__call__`` are instances too); otherwise it
        is a factory, called on first use. To register a function itself as the service,
        wrap it: ``add_singleton(Callback, lambda: my_function)``. A factory must not
        depend on scoped services or on a run's provided values (they would be captured
        by the singleton forever): resolving it raises `DependencyResolutionError`.
        """
        if _is_instance(service_type, instance_or_factory):
            registration = _Registration.__new__(_Registration)
            registration.service_type = service_type
            registration.lifetime = _SINGLETON
            registration.factory = None
            registration.kind = _INSTANCE
            registration.context_manager = None
            registration.value = instance_or_factory
            self._registrations[service_type] = registration
        else:
            self._registrations[service_type] = _Registration(
                service_type, _SINGLETON, instance_or_factory, "add_singleton"
            )
        return self

    def add_scoped(self, service_type: type[T], factory: Factory[T]) -> Self:
        """Register ``service_type`` as created at most once per scope (once per run)."""
        self._registrations[service_type] = _Registration(
            service_type, _SCOPED, factory, "add_scoped"
        )
        return self

    def add_transient(self, service_type: type[T], factory: Factory[T]) -> Self:
        """Register ``service_type`` as created anew every time it is resolved.

        A generator factory's cleanup runs when the scope that created it closes.
        """
        self._registrations[service_type] = _Registration(
            service_type, _TRANSIENT, factory, "add_transient"
        )
        return self

    def scope(
        self, provided: Mapping[type[Any], object] = _EMPTY
    ) -> AbstractAsyncContextManager[Resolver]:
        """Open one run's scope: ``async with services.scope({JobContext: ctx}) as resolver``.

        ``provided`` values are resolvable by exact type and take precedence over
        registrations. Closing the scope runs its cleanups in reverse creation order.
        """
        return _Scope(self, provided)

    async def aclose(self) -> None:
        """Run singletons' cleanups in reverse creation order and forget created singletons.

        Instances given to `add_singleton` are kept; factory-made singletons are created
        again if the `Services` is used after this.
        """
        for registration in self._registrations.values():
            if registration.kind != _INSTANCE:
                registration.value = _MISSING
        exit_stack, self._exit_stack = self._exit_stack, None
        if exit_stack is not None:
            await exit_stack.aclose()

    def __contains__(self, service_type: object) -> bool:
        """Whether ``service_type`` is registered."""
        try:
            return service_type in self._registrations
        except TypeError:
            return False

    async def _singleton(
        self, registration: _Registration, scope: _Scope, chain: tuple[Any, ...]
    ) -> Any:
        """Create ``registration``'s singleton once, whichever scopes ask concurrently."""
        _check_cycle(registration.service_type, chain)
        pending = self._pending
        if pending is None:
            pending = self._pending = {}
        while registration in pending:
            event = pending[registration]
            if event is None:
                event = pending[registration] = asyncio.Event()
            await event.wait()
            if registration.value is not _MISSING:
                return registration.value
        # Nobody is creating it (or its creator failed): this task does.
        pending[registration] = None
        try:
            value = await scope._create(registration, chain, registration.service_type)
            registration.value = value
        finally:
            event = pending.pop(registration)
            if event is not None:
                event.set()
        return value

    def _singleton_exit_stack(self) -> AsyncExitStack:
        if self._exit_stack is None:
            self._exit_stack = AsyncExitStack()
        return self._exit_stack


def _is_instance(service_type: object, obj: object) -> bool:
    if isinstance(service_type, type):
        with contextlib.suppress(TypeError):  # e.g. a Protocol that is not runtime-checkable
            if isinstance(obj, service_type):
                return True
    return not (
        inspect.isfunction(obj)
        or inspect.ismethod(obj)
        or inspect.isclass(obj)
        or inspect.isbuiltin(obj)
        or isinstance(obj, functools.partial)
    )


# --- Scope ----------------------------------------------------------------------------------


class _Scope:
    """One open scope: the `Resolver` that `Services.scope` yields."""

    __slots__ = ("_closed", "_exit_stack", "_instances", "_pending", "_provided", "_services")

    def __init__(self, services: Services, provided: Mapping[type[Any], object]) -> None:
        self._services = services
        self._provided = provided
        self._instances: dict[Any, Any] | None = None
        self._pending: dict[Any, asyncio.Event | None] | None = None
        self._exit_stack: AsyncExitStack | None = None
        self._closed = False

    async def __aenter__(self) -> _Scope:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self._closed = True
        exit_stack = self._exit_stack
        if exit_stack is not None:
            self._exit_stack = None
            # Our exit callbacks never suppress, so the run's exception leaves unchanged.
            await exit_stack.__aexit__(exc_type, exc, traceback)

    async def aget(self, service_type: type[T]) -> T:
        """The scope's instance of ``service_type``; `DependencyResolutionError` if none."""
        value: T = await self._resolve(service_type, (), None, _MISSING)
        return value

    async def _resolve(
        self, service_type: Any, chain: tuple[Any, ...], captive: Any, default: Any
    ) -> Any:
        """Resolve ``service_type`` needed by ``chain``; ``captive`` is the singleton being
        built, if any (it may use neither scoped services nor provided values)."""
        if captive is None:
            value = self._provided.get(service_type, _MISSING)
            if value is not _MISSING:
                return value
        registration = self._services._registrations.get(service_type)
        if registration is None:
            if default is not _MISSING:
                return default
            if captive is not None and service_type in self._provided:
                raise _captive_error(service_type, chain, captive, "provided by each run")
            raise _not_registered(service_type, chain)
        lifetime = registration.lifetime
        if lifetime == _SINGLETON:
            value = registration.value
            if value is not _MISSING:
                return value
            return await self._services._singleton(registration, self, chain)
        if lifetime == _SCOPED:
            if captive is not None:
                raise _captive_error(service_type, chain, captive, "scoped (one per run)")
            if self._instances is not None:
                value = self._instances.get(service_type, _MISSING)
                if value is not _MISSING:
                    return value
            return await self._scoped(registration, chain)
        return await self._create(registration, chain, captive)

    async def _scoped(self, registration: _Registration, chain: tuple[Any, ...]) -> Any:
        """Create ``registration``'s scoped instance once, however many tasks ask at once."""
        service_type = registration.service_type
        _check_cycle(service_type, chain)
        pending = self._pending
        if pending is None:
            pending = self._pending = {}
        while service_type in pending:
            event = pending[service_type]
            if event is None:
                event = pending[service_type] = asyncio.Event()
            await event.wait()
            if self._instances is not None and service_type in self._instances:
                return self._instances[service_type]
        # Nobody is creating it (or its creator failed): this task does.
        pending[service_type] = None
        try:
            value = await self._create(registration, chain, None)
            if self._instances is None:
                self._instances = {}
            self._instances[service_type] = value
        finally:
            event = pending.pop(service_type)
            if event is not None:
                event.set()
        return value

    async def _create(
        self, registration: _Registration, chain: tuple[Any, ...], captive: Any
    ) -> Any:
        """Call ``registration``'s factory with its resolved arguments."""
        service_type = registration.service_type
        _check_cycle(service_type, chain)
        plan = registration.plan
        factory = registration.factory
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        if plan.arguments:
            args, kwargs = await self._arguments(plan, _EMPTY, (*chain, service_type), captive)
        kind = registration.kind
        if kind == _CALL:
            value = factory(*args, **kwargs)
            if plan.may_return_awaitable and inspect.isawaitable(value):
                value = await value
            return value
        if kind == _ASYNC_CALL:
            return await factory(*args, **kwargs)
        assert registration.context_manager is not None
        exit_stack = self._exit_stack_for(service_type, captive)
        manager = registration.context_manager(*args, **kwargs)
        if kind == _ASYNC_GENERATOR:
            value = await manager.__aenter__()
            exit_stack.push_async_exit(_async_exit_without_suppressing(manager))
        else:
            value = manager.__enter__()
            exit_stack.push(_exit_without_suppressing(manager))
        return value

    async def _arguments(
        self,
        plan: CallPlan,
        provided: Mapping[type[Any], object],
        chain: tuple[Any, ...],
        captive: Any,
        dependencies: DependencyRun | None = None,
    ) -> tuple[list[Any], dict[str, Any]]:
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for argument in plan.arguments:
            if argument.source == _CONSTANT:
                value = argument.default
            elif argument.source == _FROM_DEPENDS:
                value = await _solve(argument, self, provided, dependencies)
            else:
                value = _MISSING
                if argument.source == _FROM_PROVIDED:
                    value = provided.get(argument.service_type, _MISSING)
                if value is _MISSING:
                    value = await self._resolve(
                        argument.service_type, chain, captive, argument.default
                    )
            if argument.positional:
                args.append(value)
            else:
                kwargs[argument.name] = value
        return args, kwargs

    def _exit_stack_for(self, service_type: Any, captive: Any) -> AsyncExitStack:
        """Where a new cleanup goes: the singletons' stack, or this scope's."""
        if captive is not None:
            return self._services._singleton_exit_stack()
        if self._closed:
            raise DependencyResolutionError(
                f"cannot create {_describe(service_type)}: its scope has already closed, so "
                f"its cleanup would never run; resolve services inside `async with scope`"
            )
        if self._exit_stack is None:
            self._exit_stack = AsyncExitStack()
        return self._exit_stack


def _async_exit_without_suppressing(
    manager: AbstractAsyncContextManager[Any],
) -> Callable[..., Awaitable[bool]]:
    async def exit_(
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> bool:
        await manager.__aexit__(exc_type, exc, traceback)
        return False

    return exit_


def _exit_without_suppressing(
    manager: contextlib.AbstractContextManager[Any],
) -> Callable[..., bool]:
    def exit_(
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> bool:
        manager.__exit__(exc_type, exc, traceback)
        return False

    return exit_


# --- Errors ---------------------------------------------------------------------------------


class _NotRegisteredError(DependencyResolutionError):
    """Nothing provides ``service_type``; lets a parameter with a default fall back to it."""

    def __init__(self, message: str, service_type: object = None) -> None:
        super().__init__(message)
        self.service_type = service_type


def _describe(obj: object) -> str:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, functools.partial):
        return _describe(obj.func)
    if hasattr(obj, "__origin__"):  # list[int], Annotated[...], unions
        return repr(obj)
    if isinstance(obj, type) or inspect.isfunction(obj) or inspect.ismethod(obj):
        name = str(getattr(obj, "__qualname__", obj))
    elif callable(obj):
        name = str(getattr(obj, "__qualname__", type(obj).__qualname__))
    else:
        return repr(obj)
    # Names defined inside functions read better without their "f.<locals>." prefix.
    return name.rpartition("<locals>.")[2]


def _needed_by(chain: tuple[Any, ...]) -> str:
    return f" (needed by {' -> '.join(_describe(link) for link in chain)})" if chain else ""


def _not_registered(service_type: Any, chain: tuple[Any, ...]) -> _NotRegisteredError:
    name = _describe(service_type)
    return _NotRegisteredError(
        f"cannot resolve {name}{_needed_by(chain)}: it is not registered; add "
        f"services.add_scoped({name}, factory) (or add_singleton / add_transient)",
        service_type,
    )


def _check_cycle(service_type: Any, chain: tuple[Any, ...]) -> None:
    if service_type in chain:
        start = chain.index(service_type)
        cycle = " -> ".join(_describe(link) for link in (*chain[start:], service_type))
        raise DependencyResolutionError(
            f"cannot resolve {_describe(service_type)}{_needed_by(chain)}: dependency cycle "
            f"{cycle}; break it by resolving one of them later (inject a factory) or "
            f"merging them"
        )


def _captive_error(
    service_type: Any, chain: tuple[Any, ...], singleton: Any, what: str
) -> DependencyResolutionError:
    name, owner = _describe(service_type), _describe(singleton)
    return DependencyResolutionError(
        f"cannot resolve {name}{_needed_by(chain)}: singleton {owner} depends on {name}, "
        f"which is {what}; a singleton outlives every run and would keep the first run's "
        f"{name} forever. Make {owner} scoped or transient, or make {name} a singleton"
    )
