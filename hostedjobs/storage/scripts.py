"""The Lua scripts, read from ``lua/*.lua`` beside this module, each with its KEYS and ARGV.

Every script starts with comment lines naming its keys and arguments::

    -- KEYS: job, result, queue, wake
    -- ARGV: record, score_ms, ttl_ms, id, wake_kept

A KEYS line ending in ``then per ...`` takes a variable number of keys after the fixed ones.
`Script.call` checks the number of keys it is given against the header, so a call can never
pass a key as an argument by mistake.

A script that must run when Redis is out of memory (it frees what jobs hold: claim, commit,
recover) starts with Redis 7's ``#!lua flags=allow-oom``. Redis 6.2 knows no flags: there the
line is dropped and those scripts are refused while Redis is full, as every script is.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["Script", "script"]

_HEADER = re.compile(r"^-- (KEYS|ARGV): (.*)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class ScriptSource:
    """One ``.lua`` file and what its header declares."""

    name: str
    text: str
    fixed_keys: int
    """How many keys come first, by name."""
    variable_keys: tuple[int, ...]
    """How many keys each repeated item adds after the fixed ones, per kind of item (``then
    per worker: claims, then per job: meta`` is ``(1, 1)``; none: ``()``)."""


@cache
def source(name: str) -> ScriptSource:
    """The script ``lua/<name>.lua`` and its declared keys."""
    text = resources.files(__package__).joinpath("lua", f"{name}.lua").read_text("utf-8")
    headers = dict(_HEADER.findall(text))
    if "KEYS" not in headers or "ARGV" not in headers:
        raise RuntimeError(f"lua/{name}.lua has no KEYS and ARGV header")
    declared, *repeated = headers["KEYS"].split("then per ")
    fixed = len([k for k in declared.split(",") if k.strip()])
    variable = tuple(
        len([k for k in item.split(":", 1)[1].split(",") if k.strip()]) for item in repeated
    )
    return ScriptSource(name, text, fixed, variable)


def _fits(extra: int, sizes: tuple[int, ...]) -> bool:
    """Whether ``extra`` keys can be whole items of these sizes: a multiple of the one size,
    or of their greatest common divisor when items of several kinds follow (enough for
    recover.lua's 1 + 1, and cheap: the claim checks its keys on every call)."""
    if not sizes:
        return extra == 0
    return extra % math.gcd(*sizes) == 0


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


_FLAGS_LINE = re.compile(r"^#!lua.*$", re.MULTILINE)


@dataclass(slots=True)
class Script:
    """A script for one client: ``await script.call(keys, args)``."""

    source: ScriptSource
    client: Redis
    text: str
    """What Redis runs: the source, without its flags line on a Redis older than 7."""
    sha: str
    """The SHA1 of `text`, for EVALSHA in a pipeline."""

    def check_keys(self, count: int) -> None:
        """Refuse a call whose number of keys does not match the script's header."""
        extra = count - self.source.fixed_keys
        if extra < 0 or not _fits(extra, self.source.variable_keys):
            raise ValueError(f"{self.source.name}.lua got {count} keys: see its KEYS header")

    async def load(self) -> None:
        """Load the script into Redis (after Redis lost its scripts)."""
        try:
            await self.client.script_load(self.text)
        except ResponseError as exc:
            if not (self.text.startswith("#!") and "compiling" in str(exc)):
                raise
            # Redis < 7 reads the flags line as Lua; a comment keeps the line numbers.
            self.text = _FLAGS_LINE.sub("-- (flags need Redis 7)", self.text, count=1)
            self.sha = _sha(self.text)
            await self.client.script_load(self.text)

    async def call(self, keys: list[str], args: list[Any], client: Redis | None = None) -> Any:
        """Run the script (EVALSHA, loading it first if Redis does not have it)."""
        self.check_keys(len(keys))
        target = self.client if client is None else client
        try:
            return await _evalsha(target, self.sha, keys, args)
        except NoScriptError:
            await self.load()
            return await _evalsha(target, self.sha, keys, args)

    async def call_replicated(
        self, keys: list[str], args: list[Any], *, replicas: int, timeout_ms: int
    ) -> tuple[Any, int]:
        """Run the script, then ``WAIT replicas timeout_ms`` in the same round trip:
        ``(the script's reply, how many replicas acknowledged its writes)``."""
        self.check_keys(len(keys))
        try:
            return await self._then_wait(keys, args, replicas, timeout_ms)
        except NoScriptError:
            await self.load()
            return await self._then_wait(keys, args, replicas, timeout_ms)

    async def _then_wait(
        self, keys: list[str], args: list[Any], replicas: int, timeout_ms: int
    ) -> tuple[Any, int]:
        # WAIT counts the replicas holding every write made *on its connection*: it must
        # follow the script on the same one, as a pipeline does.
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.evalsha(self.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", replicas, timeout_ms)
            reply, acknowledged = await pipe.execute()
        return reply, int(acknowledged)


async def _evalsha(client: Redis, sha: str, keys: list[str], args: list[Any]) -> Any:
    # redis-py types EVALSHA's reply as ``Awaitable[str] | str`` for both clients.
    return await client.evalsha(sha, len(keys), *keys, *args)  # type: ignore[misc]


def script(client: Redis, name: str) -> Script:
    """The script ``name`` for ``client``."""
    found = source(name)
    return Script(found, client, found.text, _sha(found.text))
