"""svcs as the jobs' container: ``JobHost(services=SvcsScopes(registry))``.

Each run gets its own `svcs.Container` on the registry, with the run's values (its
`JobContext`, an on-demand job's payload) registered as local values, so factories that take
the container can ``await container.aget(JobContext)``. ``Inject()`` parameters and class
handlers' constructor parameters are resolved with `svcs.Container.aget`. The container is
closed when the run ends, in every outcome: generator factories registered with
``suppress_context_exit=False`` see the run's exception, as svcs passes it to them; svcs logs
and ignores errors raised by cleanups.
"""

from __future__ import annotations

__all__ = ["SvcsScopes"]

import types
from collections.abc import Mapping
from typing import Any, TypeVar

import svcs

from ..exceptions import DependencyResolutionError
from ..scope import Resolver, not_registered_error
from . import type_name

T = TypeVar("T")


class SvcsScopes:
    """A `hostedjobs.scope.ScopeProvider` over an `svcs.Registry`: one container per run.

    With ``close_registry`` (the default) the host closes the registry when it stops
    (`svcs.Registry.aclose`: on-registry-close callbacks run and registrations are cleared);
    pass False when the registry outlives the host, e.g. when your web app's lifespan closes it.
    """

    def __init__(self, registry: svcs.Registry, *, close_registry: bool = True) -> None:
        self.registry = registry
        self.close_registry = close_registry

    def scope(self, provided: Mapping[type[Any], object]) -> _SvcsScope:
        """One run's container; ``provided`` values are local values in it."""
        return _SvcsScope(self.registry, provided)

    async def aclose(self) -> None:
        """Close the registry, if ``close_registry``."""
        if self.close_registry:
            await self.registry.aclose()


class _SvcsScope:
    __slots__ = ("_container", "_provided", "_registry")

    def __init__(self, registry: svcs.Registry, provided: Mapping[type[Any], object]) -> None:
        self._registry = registry
        self._provided = provided
        self._container: svcs.Container | None = None

    async def __aenter__(self) -> Resolver:
        container = self._container = svcs.Container(self._registry)
        for service_type, value in self._provided.items():
            container.register_local_value(service_type, value)
        return _SvcsResolver(container)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        container, self._container = self._container, None
        if container is not None:
            await container.aclose(exc_type, exc, traceback)


class _SvcsResolver:
    __slots__ = ("container",)

    def __init__(self, container: svcs.Container) -> None:
        self.container = container

    async def aget(self, service_type: type[T]) -> T:
        try:
            value: T = await self.container.aget(service_type)
        except svcs.exceptions.ServiceNotFoundError as exc:
            missing = exc.args[0] if exc.args else service_type
            name = type_name(service_type)
            if missing is service_type:
                raise not_registered_error(
                    service_type,
                    f"cannot resolve {name}: it is not registered on the svcs registry; add "
                    f"registry.register_factory({name}, factory) or register_value",
                ) from None
            raise DependencyResolutionError(
                f"cannot resolve {name}: its factory asked svcs for "
                f"{type_name(missing)}, which is not registered"
            ) from None
        return value
