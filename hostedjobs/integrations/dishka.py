"""dishka as the jobs' container: ``JobHost(services=DishkaScopes(container))``.

Each run enters one child scope of the app's `dishka.AsyncContainer` (``Scope.REQUEST`` by
default, as an HTTP request would), with the run's values (its `JobContext`, an on-demand
job's payload) as the scope's context: declare the ones your providers need with
``from_context(provides=JobContext, scope=Scope.REQUEST)``. ``Inject()`` parameters and class
handlers' constructor parameters are resolved with ``await container.get(T)``. The scope is
closed when the run ends, in every outcome; dishka sends the run's exception to generator
factories as the value of their ``yield`` (``error = yield session``), and raises
`dishka.exceptions.ExitError` if a finalizer fails.
"""

from __future__ import annotations

__all__ = ["DishkaScopes"]

import types
from collections.abc import Mapping
from typing import Any, TypeVar

from dishka import AsyncContainer, BaseScope, Scope
from dishka.exceptions import NoFactoryError

from ..exceptions import DependencyResolutionError
from ..scope import Resolver, not_registered_error
from . import type_name

T = TypeVar("T")


class DishkaScopes:
    """A `hostedjobs.scope.ScopeProvider` over a dishka `AsyncContainer`: one child scope per
    run (``scope``, default ``Scope.REQUEST``).

    With ``close_container`` (the default) the host closes the container when it stops
    (APP-scope finalizers run); pass False when the container outlives the host, e.g. when
    your web app's lifespan closes it.
    """

    def __init__(
        self,
        container: AsyncContainer,
        *,
        scope: BaseScope = Scope.REQUEST,
        close_container: bool = True,
    ) -> None:
        self.container = container
        self.run_scope = scope
        self.close_container = close_container

    def scope(self, provided: Mapping[type[Any], object]) -> _DishkaScope:
        """One run's child container; ``provided`` values are its context."""
        return _DishkaScope(self.container(context=dict(provided), scope=self.run_scope))

    async def aclose(self) -> None:
        """Close the container, if ``close_container``."""
        if self.close_container:
            await self.container.close()


class _DishkaScope:
    __slots__ = ("_container",)

    def __init__(self, container: AsyncContainer) -> None:
        self._container = container

    async def __aenter__(self) -> Resolver:
        return _DishkaResolver(await self._container.__aenter__())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        await self._container.__aexit__(exc_type, exc, traceback)


class _DishkaResolver:
    __slots__ = ("container",)

    def __init__(self, container: AsyncContainer) -> None:
        self.container = container

    async def aget(self, service_type: type[T]) -> T:
        try:
            value: T = await self.container.get(service_type)
        except NoFactoryError as exc:
            name = type_name(service_type)
            if exc.requested.type_hint is service_type and not exc.path:
                raise not_registered_error(
                    service_type,
                    f"cannot resolve {name}: no dishka provider provides it in the run's "
                    f"scope ({self.container.registry.scope}); {exc}",
                ) from None
            raise DependencyResolutionError(f"cannot resolve {name}: {exc}") from None
        return value
