"""Adapters that let a `JobHost` take its per-run scopes from another container.

Each module is an optional extra and imports its library: `hostedjobs.integrations.svcs`
(``pip install hostedjobs[svcs]``) and `hostedjobs.integrations.dishka`
(``pip install hostedjobs[dishka]``). Both implement `hostedjobs.scope.ScopeProvider`.
"""

from typing import Any


def type_name(service_type: Any) -> str:
    """How adapters name a type in errors: its qualified name, without ``f.<locals>.``."""
    name = str(getattr(service_type, "__qualname__", service_type))
    return name.rpartition("<locals>.")[2]
