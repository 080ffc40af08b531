"""A checker that Lua scripts touch only the keys they declare, from Redis's MONITOR stream.

Redis requires every key a script (``EVAL``/``EVALSHA``/``FCALL``) accesses to be passed in its
KEYS: a key built inside the script from ARGV works on one server but breaks Redis Cluster
(the key may live on another node), proxies that route by key, and ACL key patterns. MONITOR
shows each command a script runs, tagged ``lua``, beside the script call; `ScriptKeyWatch`
records the stream while a workload runs, asks Redis which arguments of each inner command
are keys (``COMMAND GETKEYS``), and reports every inner key missing from its call's KEYS::

    async with ScriptKeyWatch(redis_url) as watch:
        ...  # the workload
    assert not watch.findings, summarize(watch.findings)

Commands outside scripts (plain ones, pipelines, MULTI/EXEC) are ignored, except that the
scripts they carry are checked. The parsing helpers are pure, so they can be unit-tested on
captured lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ResponseError

__all__ = [
    "SCRIPT_CALLS",
    "MonitorLine",
    "ScriptCall",
    "ScriptKeyWatch",
    "UndeclaredKey",
    "command_keys",
    "group_script_calls",
    "inner_commands_follow_their_call",
    "parse_monitor_line",
    "script_bodies",
    "split_args",
    "summarize",
    "undeclared_keys",
]

SCRIPT_CALLS = frozenset({b"EVAL", b"EVALSHA", b"EVAL_RO", b"EVALSHA_RO", b"FCALL", b"FCALL_RO"})
"""Commands that run a script; each is followed by numkeys and the keys it declares."""

SCRIPT_SOURCE = "lua"
"""MONITOR's client tag for a command a script ran."""

# sdscatrepr's escapes (what MONITOR uses to quote arguments), besides \xHH.
_ESCAPES = {
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
    ord("a"): b"\a",
    ord("b"): b"\b",
    ord('"'): b'"',
    ord("\\"): b"\\",
}
_HEX = frozenset(b"0123456789abcdefABCDEF")

# "<seconds>.<micros> [<db> <client>] <quoted args>"; the client is "lua", "unix:<path>",
# "ip:port" or "[ipv6]:port".
_LINE = re.compile(rb"^(\d+(?:\.\d+)?) \[(\d+) (\S+)\] (.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class MonitorLine:
    """One command as MONITOR reported it."""

    time: float
    db: int
    source: str
    """The client's address, or ``"lua"`` for a command run by a script."""
    args: tuple[bytes, ...]
    """The command name and its arguments, unescaped."""

    @property
    def name(self) -> bytes:
        """The command's name, upper-cased."""
        return self.args[0].upper() if self.args else b""

    @property
    def from_script(self) -> bool:
        """True for a command that a script ran."""
        return self.source == SCRIPT_SOURCE

    @property
    def is_script_call(self) -> bool:
        """True for a client's EVAL, EVALSHA or FCALL (and their read-only forms)."""
        return not self.from_script and self.name in SCRIPT_CALLS

    def __str__(self) -> str:
        return " ".join(_show(arg) for arg in self.args)


def split_args(text: bytes) -> tuple[bytes, ...]:
    """The arguments of a MONITOR line: double-quoted, space-separated, sdscatrepr-escaped.

    Raises ValueError on anything else (an unterminated quote, an unknown escape).
    """
    args: list[bytes] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == 0x20:  # space
            i += 1
            continue
        if text[i] != 0x22:  # '"'
            raise ValueError(f"expected a quoted argument at offset {i} of {text!r}")
        i += 1
        arg = bytearray()
        while True:
            if i >= n:
                raise ValueError(f"unterminated quoted argument in {text!r}")
            c = text[i]
            if c == 0x22:
                i += 1
                break
            if c != 0x5C:  # not a backslash
                arg.append(c)
                i += 1
                continue
            if i + 1 >= n:
                raise ValueError(f"a backslash ends {text!r}")
            escape = text[i + 1]
            if escape == ord("x"):
                digits = text[i + 2 : i + 4]
                if len(digits) != 2 or not set(digits) <= _HEX:
                    raise ValueError(f"bad \\x escape at offset {i} of {text!r}")
                arg.append(int(digits, 16))
                i += 4
            elif escape in _ESCAPES:
                arg += _ESCAPES[escape]
                i += 2
            else:
                raise ValueError(f"unknown escape \\{chr(escape)} at offset {i} of {text!r}")
        if i < n and text[i] != 0x20:
            raise ValueError(f"expected a space after the argument ending at {i} of {text!r}")
        args.append(bytes(arg))
    return tuple(args)


def parse_monitor_line(line: bytes | str) -> MonitorLine | None:
    """Parse one MONITOR line; None for a line that reports no command (such as ``OK``)."""
    raw = line.encode() if isinstance(line, str) else bytes(line)
    raw = raw.removeprefix(b"+").removesuffix(b"\r\n")
    match = _LINE.match(raw)
    if match is None:
        return None
    seconds, db, source, rest = match.groups()
    return MonitorLine(float(seconds), int(db), source.decode(), split_args(rest))


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """A script call and the commands it ran, in order."""

    call: MonitorLine | None
    """The EVAL/EVALSHA/FCALL line; None for inner commands whose call was not seen."""
    inner: tuple[MonitorLine, ...]

    @property
    def declared_keys(self) -> tuple[bytes, ...]:
        """The keys the call passed (after the script, sha or function name, and numkeys)."""
        if self.call is None or len(self.call.args) < 3:
            return ()
        try:
            numkeys = int(self.call.args[2])
        except ValueError:
            return ()
        return self.call.args[3 : 3 + numkeys]

    def label(self, bodies: Mapping[str, bytes] | None = None) -> str:
        """Which script this is: its sha (or function name) and first line, when known."""
        if self.call is None:
            return "(commands of a script call MONITOR did not show)"
        name = self.call.name.decode()
        target = self.call.args[1] if len(self.call.args) > 1 else b""
        if name.startswith("FCALL"):
            return f"{name} {_show(target)}"
        if name.startswith("EVALSHA"):
            sha = target.decode(errors="replace").lower()
            body = (bodies or {}).get(sha)
        else:
            body = target
            sha = hashlib.sha1(body).hexdigest()
        first = _first_line(body) if body is not None else None
        return f"{name} {sha[:12]}" + (f" ({first})" if first else "")


def inner_commands_follow_their_call(lines: Sequence[MonitorLine], probe_key: bytes) -> bool:
    """Whether this server shows a script's commands after its call (True) or before it.

    Told from a probe script call that declares ``probe_key`` and runs ``EXISTS probe_key``;
    raises RuntimeError if the stream does not show it, since then nothing can be checked.
    """
    for i, line in enumerate(lines):
        if line.is_script_call and probe_key in line.args:
            for j in (i + 1, i - 1):
                if 0 <= j < len(lines) and lines[j].from_script and probe_key in lines[j].args:
                    return j > i
            raise RuntimeError(
                "MONITOR showed the probe script call but not the command it ran; this Redis "
                "does not show scripts' commands, so their keys cannot be checked"
            )
    raise RuntimeError("MONITOR did not show the probe script call")


def group_script_calls(
    lines: Iterable[MonitorLine], *, inner_after_call: bool = True
) -> list[ScriptCall]:
    """Each script call with the commands it ran; other commands are left out.

    Redis runs a script without running anything else meanwhile, so a call's commands are the
    run of ``lua`` lines right after it (or right before it, with ``inner_after_call=False``).
    Lines that belong to no call seen are grouped with ``call=None``.
    """
    calls: list[ScriptCall] = []
    current: MonitorLine | None = None
    inner: list[MonitorLine] = []
    have_group = False

    def close() -> None:
        nonlocal current, inner, have_group
        if have_group:
            calls.append(ScriptCall(current, tuple(inner)))
        current, inner, have_group = None, [], False

    for line in lines:
        if line.from_script:
            inner.append(line)
            have_group = True
        elif line.is_script_call:
            if inner_after_call:
                close()
                current, have_group = line, True
            else:
                current, have_group = line, True
                close()
        else:
            close()
    close()
    return calls


def script_bodies(lines: Iterable[MonitorLine]) -> dict[str, bytes]:
    """Scripts seen in the stream (``SCRIPT LOAD`` and ``EVAL``), by their sha1."""
    bodies: dict[str, bytes] = {}
    for line in lines:
        body: bytes | None = None
        if line.name == b"SCRIPT" and len(line.args) >= 3 and line.args[1].upper() == b"LOAD":
            body = line.args[2]
        elif line.name in (b"EVAL", b"EVAL_RO") and len(line.args) >= 2:
            body = line.args[1]
        if body is not None:
            bodies[hashlib.sha1(body).hexdigest()] = body
    return bodies


@dataclass(frozen=True, slots=True)
class UndeclaredKey:
    """A key a script's command accessed that the script call did not declare."""

    script: str
    command: tuple[bytes, ...]
    key: bytes
    declared: tuple[bytes, ...]

    def __str__(self) -> str:
        declared = ", ".join(_show(k) for k in self.declared) or "none"
        command = " ".join(_show(a) for a in self.command)
        return f"{self.script}: {command!s} uses {_show(self.key)}; KEYS were [{declared}]"


def undeclared_keys(
    calls: Iterable[ScriptCall],
    keys_of: Mapping[tuple[bytes, ...], Sequence[bytes]],
    bodies: Mapping[str, bytes] | None = None,
) -> list[UndeclaredKey]:
    """Every key an inner command used (per ``keys_of``, from `command_keys`) that its
    call's KEYS do not hold, in stream order."""
    found: list[UndeclaredKey] = []
    for call in calls:
        declared = call.declared_keys
        allowed = set(declared)
        for line in call.inner:
            for key in keys_of[line.args]:
                if key not in allowed:
                    found.append(UndeclaredKey(call.label(bodies), line.args, key, declared))
    return found


_NO_KEYS = ("no key arguments", "wrong number of arguments")
"""How COMMAND GETKEYS answers for a command without keys (PUBLISH; TIME, with no args)."""


async def command_keys(
    client: aioredis.Redis, commands: Iterable[tuple[bytes, ...]]
) -> dict[tuple[bytes, ...], tuple[bytes, ...]]:
    """The keys of each command, as ``COMMAND GETKEYS`` finds them (pipelined).

    A command with no keys maps to ``()``; any other refusal raises RuntimeError, since its
    keys could not be checked.
    """
    unique = list(dict.fromkeys(commands))
    result: dict[tuple[bytes, ...], tuple[bytes, ...]] = {}
    for start in range(0, len(unique), 500):
        batch = unique[start : start + 500]
        async with client.pipeline(transaction=False) as pipe:
            for args in batch:
                pipe.execute_command("COMMAND GETKEYS", *args)
            replies = await pipe.execute(raise_on_error=False)
        for args, reply in zip(batch, replies, strict=True):
            if isinstance(reply, ResponseError):
                if any(reason in str(reply) for reason in _NO_KEYS):
                    result[args] = ()
                    continue
                shown = " ".join(_show(a) for a in args)
                raise RuntimeError(f"COMMAND GETKEYS {shown} failed: {reply}")
            result[args] = tuple(bytes(k) for k in reply)
    return result


def summarize(findings: Sequence[UndeclaredKey], *, limit: int = 40) -> str:
    """The findings grouped by script and command name, with a count and an example each."""
    groups: Counter[tuple[str, bytes]] = Counter()
    example: dict[tuple[str, bytes], UndeclaredKey] = {}
    for finding in findings:
        group = (finding.script, finding.command[0].upper())
        groups[group] += 1
        example.setdefault(group, finding)
    lines = [f"{len(findings)} key(s) used inside scripts without being declared in KEYS:"]
    for group, count in groups.most_common(limit):
        lines.append(f"  {count:>5} x {example[group]}")
    if len(groups) > limit:
        lines.append(f"  ... and {len(groups) - limit} more kinds")
    return "\n".join(lines)


_PROBE = "return redis.call('EXISTS', KEYS[1])"


class ScriptKeyWatch:
    """Records MONITOR while the block runs; then `findings` lists the undeclared keys.

    Use it around a workload on a Redis of the test's own: MONITOR sees every client, so
    other users' scripts would be checked too. If the block raises, nothing is checked.
    """

    def __init__(
        self, redis_url: str, *, flush_scripts: bool = False, stop_timeout_s: float = 60.0
    ) -> None:
        """``flush_scripts``: empty Redis's script cache first, so that every script is loaded
        again where MONITOR sees its body (findings then quote its first line); clients must
        handle NOSCRIPT, as redis-py's registered scripts do."""
        self.redis_url = redis_url
        self.flush_scripts = flush_scripts
        self.stop_timeout_s = stop_timeout_s
        self.lines: list[MonitorLine] = []
        """Every command seen (once the block has ended)."""
        self.calls: list[ScriptCall] = []
        """The script calls seen, with their commands."""
        self.findings: list[UndeclaredKey] = []
        token = uuid.uuid4().hex
        self._probe_key = f"hostedjobs-test:script-keys:probe:{token}".encode()
        self._end_key = f"hostedjobs-test:script-keys:end:{token}".encode()
        self._raw: list[bytes] = []
        self._ended = asyncio.Event()
        self._client: aioredis.Redis | None = None
        self._pool: ConnectionPool | None = None
        self._connection: AbstractConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ScriptKeyWatch:
        self._client = aioredis.Redis.from_url(self.redis_url)
        # Keys are bytes, maybe not UTF-8: redis-py would decode GETKEYS' answer.
        self._client.set_response_callback("COMMAND GETKEYS", _as_is)
        self._pool = ConnectionPool.from_url(self.redis_url)
        connection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        self._connection = connection
        try:
            await connection.connect()
            await connection.send_command("MONITOR")
            reply = await connection.read_response()
            if reply not in (b"OK", "OK"):
                raise RuntimeError(f"MONITOR answered {reply!r}")
            self._reader = asyncio.get_running_loop().create_task(self._read(connection))
            if self.flush_scripts:
                await self._client.script_flush()
            await self._client.eval(_PROBE, 1, self._probe_key.decode())  # type: ignore[misc]
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                await self._finish()
        finally:
            await self._close()

    async def _read(self, connection: AbstractConnection) -> None:
        while True:
            line = await connection.read_response()
            raw = line.encode() if isinstance(line, str) else bytes(line)
            self._raw.append(raw)
            if self._end_key in raw:
                self._ended.set()

    async def _finish(self) -> None:
        assert self._client is not None and self._reader is not None
        # A command of our own marks the end: everything before it has been sent to us.
        await self._client.exists(self._end_key)
        ended = asyncio.get_running_loop().create_task(self._ended.wait())
        try:
            await asyncio.wait(
                {ended, self._reader},
                timeout=self.stop_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            ended.cancel()
        if self._reader.done():
            self._reader.result()  # raises what ended the reader
        if not self._ended.is_set():
            raise RuntimeError(f"MONITOR did not show our end marker in {self.stop_timeout_s}s")
        self.lines = [line for raw in self._raw if (line := parse_monitor_line(raw)) is not None]
        after = inner_commands_follow_their_call(self.lines, self._probe_key)
        self.calls = group_script_calls(self.lines, inner_after_call=after)
        keys_of = await command_keys(
            self._client, (line.args for call in self.calls for line in call.inner)
        )
        self.findings = undeclared_keys(self.calls, keys_of, script_bodies(self.lines))

    async def _close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.disconnect()
        if self._pool is not None:
            await self._pool.disconnect()
        if self._client is not None:
            await self._client.aclose()


def _as_is(response: Any, **options: Any) -> Any:
    return response


def _show(value: bytes) -> str:
    """A byte string for a message: plain text as is, anything else as a bytes literal."""
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return repr(value)
    return text if text.isprintable() and " " not in text and text else repr(text)


def _first_line(body: bytes) -> str | None:
    for line in body.decode(errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("--"):
            return line[:60]
    return None
