"""The Lua scripts, read from ``lua/*.lua`` beside this module, each with its KEYS and ARGV.

Every script starts with comment lines naming its keys and arguments::

    -- KEYS: job, result, queue, wake
    -- ARGV: record, score_ms, ttl_ms, id, wake_kept

A KEYS line ending in ``then per ...`` takes a variable number of keys after the fixed ones.
`Script.call` checks the number of keys it is given against the header, so a call can never
pass a key as an argument by mistake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["Script", "script"]

_HEADER = re.compile(r"^-- (KEYS|ARGV): (.*)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class ScriptSource:
    """One ``.lua`` file and what its header declares."""

    name: str
    text: str
    fixed_keys: int
    """How many keys come first, by name."""
    variable_keys: int
    """How many keys each repeated item adds after the fixed ones (0: none)."""


@cache
def source(name: str) -> ScriptSource:
    """The script ``lua/<name>.lua`` and its declared keys."""
    text = resources.files(__package__).joinpath("lua", f"{name}.lua").read_text("utf-8")
    headers = dict(_HEADER.findall(text))
    if "KEYS" not in headers or "ARGV" not in headers:
        raise RuntimeError(f"lua/{name}.lua has no KEYS and ARGV header")
    declared, _, repeated = headers["KEYS"].partition("then per ")
    fixed = len([k for k in declared.split(",") if k.strip()])
    variable = len(repeated.split(":", 1)[1].split(",")) if repeated else 0
    return ScriptSource(name, text, fixed, variable)


@dataclass(slots=True)
class Script:
    """A script registered on one client: ``await script.call(keys, args)``."""

    source: ScriptSource
    _registered: AsyncScript = field(repr=False)

    @property
    def sha(self) -> str:
        """The script's SHA1, for EVALSHA in a pipeline."""
        return str(self._registered.sha)

    def check_keys(self, count: int) -> None:
        """Refuse a call whose number of keys does not match the script's header."""
        fixed, variable = self.source.fixed_keys, self.source.variable_keys
        extra = count - fixed
        if extra < 0 or (variable == 0 and extra) or (variable and extra % variable):
            raise ValueError(f"{self.source.name}.lua got {count} keys: see its KEYS header")

    async def load(self) -> None:
        """Load the script into Redis (after Redis lost its scripts)."""
        await self._registered.registered_client.script_load(self.source.text)

    async def call(self, keys: list[str], args: list[Any], client: Redis | None = None) -> Any:
        """Run the script (EVALSHA, loading it first if Redis does not have it)."""
        self.check_keys(len(keys))
        return await self._registered(keys=keys, args=args, client=client)


def script(client: Redis, name: str) -> Script:
    """The script ``name`` registered on ``client``."""
    found = source(name)
    return Script(found, client.register_script(found.text))
