"""Adapters that let a `JobHost` take its per-run scopes from another container.

Each module is an optional extra and imports its library: `hostedjobs.integrations.svcs`
(``pip install hostedjobs[svcs]``) and `hostedjobs.integrations.dishka`
(``pip install hostedjobs[dishka]``). Both implement `hostedjobs.scope.ScopeProvider`.
"""
