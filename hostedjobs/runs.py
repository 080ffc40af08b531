"""A job's code, analysed once at registration: what to construct and call, and with what.

A hosted job is an async function (``ctx: JobContext`` by annotation, services by ``Inject()``,
FastAPI dependencies by ``Depends(function)``)
or a class whose constructor is resolved from the run's scope and that has
``async def run(self, ctx) -> JobResult | None``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeAlias

from .context import JobContext
from .depends import DependencyRun
from .exceptions import ConfigurationError
from .scope import CallPlan, Resolver, call_planned, plan_call

__all__ = ["JobCallable", "JobClass", "JobCode", "job_name_of"]


class JobClass(Protocol):
    """For type checkers: a job class, with an ``async def run(self, ...)`` method."""

    def run(self, *args: Any, **kwargs: Any) -> Awaitable[object]:
        """Run once."""
        ...


JobCode: TypeAlias = Callable[..., Awaitable[object]] | type[JobClass]
"""What hosted jobs and startup actions are: an async function, or a class with an async
``run`` method (type checkers reject sync ones, as registration does at run time)."""

_NO_DEPENDENCIES: Final = contextlib.nullcontext(None)


def job_name_of(target: Any) -> str:
    """The default name of a job: its function's or class's ``__name__``.

    Lambdas have no name of their own, so they must be named explicitly.
    """
    name = getattr(target, "__name__", None)
    if not isinstance(name, str) or name == "<lambda>":
        raise ConfigurationError(
            f"{target!r} has no stable name (a lambda, or a callable object); "
            "pass name='...' when registering it"
        )
    return name


@dataclass(frozen=True, slots=True)
class JobCallable:
    """A job's code, analysed once at registration, called once per run."""

    target: Any
    _construct: CallPlan | None
    _call: CallPlan

    @classmethod
    def create(
        cls,
        target: Any,
        *,
        method: str = "run",
        provided_types: tuple[type[Any], ...] = (JobContext,),
        what: str = "job",
    ) -> JobCallable:
        """Analyse an async function, or a class with an async ``method``.

        Parameters annotated with one of ``provided_types`` get the run's values; the rest
        come from the scope (``Inject()`` for functions, every constructor parameter for
        classes). Anything that cannot be filled is refused here, at registration.
        """
        if inspect.isclass(target):
            function = getattr(target, method, None)
            if function is None or not inspect.iscoroutinefunction(function):
                raise ConfigurationError(
                    f"{what} class {target.__qualname__} needs an "
                    f"`async def {method}(self, ...)` method"
                )
            construct = plan_call(target, provided_types=provided_types, inject_all=True)
            call = plan_call(function, provided_types=provided_types, inject_all=False)
            return cls(target, construct, call)
        if not inspect.iscoroutinefunction(target):
            raise ConfigurationError(
                f"{what} {getattr(target, '__qualname__', target)!r} must be an async function "
                f"(async def) or a class with an async {method}() method"
            )
        return cls(target, None, plan_call(target, provided_types=provided_types, inject_all=False))

    def dependencies(
        self, overrides: Mapping[Any, Callable[..., Any]] | None = None
    ) -> AbstractAsyncContextManager[DependencyRun | None]:
        """What holds one run's ``Depends`` values: enter it inside the run's scope, around
        `call`; None (and nothing to close) when the code has no ``Depends`` parameter.
        ``overrides`` maps a dependency to the one to call instead (FastAPI's
        ``app.dependency_overrides``)."""
        if self._call.uses_depends or (
            self._construct is not None and self._construct.uses_depends
        ):
            return DependencyRun(overrides)
        return _NO_DEPENDENCIES

    async def call(
        self,
        resolver: Resolver,
        provided: Mapping[type[Any], object],
        dependencies: DependencyRun | None = None,
    ) -> Any:
        """Construct (for a class) and call, with arguments from ``provided``, the scope and
        ``dependencies`` (from `dependencies`)."""
        if self._construct is None:
            return await call_planned(self._call, resolver, provided, dependencies)
        instance = await call_planned(self._construct, resolver, provided, dependencies)
        return await call_planned(self._call.bound_to(instance), resolver, provided, dependencies)
