"""The Redis client every part of hostedjobs talks through: bounded, and failing clearly.

Three rules, kept here so no caller needs a ``try`` of its own:

- **Every call is bounded.** A command, pipeline or pub/sub read fails after the client's
  timeout (connection set-up included); a blocking command (``BLPOP``) gets its block time
  on top.
- **Only what a reconnect can cure is retried**: a refused, reset or closed connection (a
  Redis restart), a few times with backoff within the call. A timeout is not retried (a
  frozen or overloaded server would only be asked again), nor is a failed authentication or
  TLS handshake (asking again cannot fix a password). A retry sends the call again, and
  Redis may have run the first send (the connection dropped before the reply): a call that
  must not be applied twice runs inside `sent_once`.
- **Every failure is a `RedisUnavailableError`** (a builtin ``ConnectionError``) whose
  message names the server (host:port/db or socket path, never the password) and the
  cause. An error reply (``OOM``, ``READONLY``, ``NOPERM``...) is raised as one that is
  also an instance of redis-py's class for that reply, so storage code still tells replies
  apart (``except OutOfMemoryError``). Only ``NOSCRIPT`` passes through as it is: the
  store loads the script and calls again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import hiredis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.connection import AbstractConnection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..exceptions import RedisUnavailableError

__all__ = [
    "RedisClient",
    "bounded_client",
    "connection_class",
    "pool_options",
    "redacted",
    "retry_policy",
    "sent_once",
    "unavailable",
]

T = TypeVar("T")

_RETRIES = 5
"""Reconnections one call may try (0.1 + 0.2 + 0.4 + 0.8 + 1 s of backoff): a restart of
a second or two is invisible, a server that stays down fails the call within seconds."""

_BLOCKING = frozenset(
    name
    for command in ("BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX", "BLMOVE", "BRPOPLPUSH")
    for name in (command, command.encode())
)
"""Blocking commands whose last argument is how long they block, in seconds (0: for ever)."""
_WAIT = frozenset(("WAIT", b"WAIT"))
"""WAIT blocks for its last argument in milliseconds (0: for ever)."""


def block_seconds(args: tuple[Any, ...]) -> float:
    """How long the command ``args`` may block the connection: 0 for an ordinary command,
    ``math.inf`` for a blocking one told to wait for ever."""
    if args[0] in _WAIT:
        block = float(args[-1]) / 1000
    elif args[0] in _BLOCKING:
        block = float(args[-1])
    else:
        return 0.0
    return block if block > 0 else math.inf


@dataclass(slots=True)
class _Call:
    """One bounded call in progress (a context variable: nested retries share it)."""

    deadline: float | None
    """The loop time it must end by (None: no bound)."""
    retries_left: int = _RETRIES
    last_error: BaseException | None = None


_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "hostedjobs_redis_call", default=None
)


_RESEND: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "hostedjobs_redis_resend", default=True
)


@contextlib.contextmanager
def sent_once() -> Iterator[None]:
    """Within it, a call whose connection fails is not sent again: it raises
    `RedisUnavailableError` at once. For a write that would do harm applied twice (Redis may
    have run the first send), whose caller recovers in a way of its own."""
    token = _RESEND.set(False)
    try:
        yield
    finally:
        _RESEND.reset(token)


def _transient(error: BaseException) -> bool:
    """True if reconnecting may cure ``error`` (a restart), False if it cannot (a timeout, a
    refused password, a failed TLS handshake)."""
    if isinstance(
        error, AuthenticationError | AuthorizationError | RedisTimeoutError | TimeoutError
    ):
        return False
    # redis-py raises its own ConnectionError in place of the OSError it caught.
    inner = error.__cause__ or error.__context__
    return not isinstance(error, ssl.SSLError) and not isinstance(
        inner, ssl.SSLError | TimeoutError
    )


class _Retry(Retry):
    """redis-py's retry loop, for transient errors only, within the call's retry budget."""

    def __init__(
        self,
        backoff: ExponentialBackoff,
        retries: int,
        on_failure: Callable[[BaseException], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(backoff, retries)
        self._on_failure = on_failure

    async def call_with_retry(
        self, do: Callable[[], Awaitable[T]], fail: Callable[[RedisError], Any]
    ) -> T:
        self._backoff.reset()  # type: ignore[no-untyped-call]
        call = _CALL.get()
        failures = 0
        while True:
            try:
                return await do()
            except self._supported_errors as error:
                failures += 1
                await fail(error)
                backoff = self._backoff.compute(failures)
                if call is None:
                    retry = failures <= self._retries
                else:
                    call.last_error = error
                    call.retries_left -= 1
                    # A retry the deadline would cut short: the real error says more.
                    retry = call.retries_left >= 0 and (
                        call.deadline is None
                        or asyncio.get_running_loop().time() + backoff < call.deadline
                    )
                if not retry or not _transient(error) or not _RESEND.get():
                    raise
                if self._on_failure is not None:
                    await self._on_failure(error)
                await asyncio.sleep(backoff)


def retry_policy(
    on_failure: Callable[[BaseException], Awaitable[None]] | None = None,
) -> Retry:
    """What the connection pool retries with (see the module docstring). ``on_failure`` is
    awaited after each failure that will be retried, before the reconnection (a cluster
    client looks up which node now serves its slot)."""
    return _Retry(ExponentialBackoff(cap=1.0, base=0.05), _RETRIES, on_failure)


def pool_options(
    timeout_s: float | None, *, retry: Retry | None = None, keepalive: bool = True
) -> dict[str, Any]:
    """The connection options of every pool hostedjobs opens (standalone, a cluster node, a
    Sentinel's primary): `retry_policy` (or ``retry``), connecting within ``timeout_s``.

    ``keepalive``: TCP keepalive (redis-py's Unix socket connection takes no such option).
    """
    # No socket_timeout: each call's own deadline bounds its reads and writes. redis-py
    # bounds a write with asyncio.wait_for, which on Python 3.11 can swallow a cancellation
    # (a worker's upkeep task, cancelled at shutdown, then never ended).
    # No health_check_interval: redis-py runs the first check inside a new connection's own
    # hand-shake, and retried there a failing hand-shake (a missing password) recursed, a
    # retry loop per level, without ever failing. A stale connection fails its command,
    # which is then retried on a fresh one.
    return {
        "retry": retry_policy() if retry is None else retry,
        "retry_on_error": [RedisConnectionError, OSError],
        "socket_connect_timeout": timeout_s,
        **({"socket_keepalive": True} if keepalive else {}),
        # No CLIENT SETINFO on each new connection: an ACL user without it (a least-
        # privilege one; Redis < 7.2 cannot even grant it) logs a refusal every time.
        "lib_name": None,
        "lib_version": None,
    }


class _HiredisPacking(AbstractConnection):
    """Packs commands with hiredis (C) rather than redis-py's Python packer, which was most
    of a busy worker's client-side CPU (a commit packs a command per finished job)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        command = args[0]
        if isinstance(command, str):
            args = (*command.encode().split(), *args[1:])
        elif b" " in command:
            args = (*command.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            # A value hiredis does not pack (a bool, say): redis-py's packer says what is wrong.
            return super().pack_command(*args)


_CLASSES: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def connection_class(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """``cls`` (TCP, TLS or Unix socket, as the URL picks) packing with hiredis."""
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Hiredis{cls.__name__}", (_HiredisPacking, cls), {})
    return _CLASSES[cls]


@dataclass(frozen=True, slots=True)
class _Bounds:
    """Where a client points and how long one call may take."""

    target: str
    """host:port/db or the socket path, for messages (never the password)."""
    timeout_s: float | None

    @classmethod
    def of(cls, pool: ConnectionPool, timeout_s: float | None) -> _Bounds:
        kwargs = pool.connection_kwargs
        db = int(kwargs.get("db") or 0)
        if kwargs.get("path"):
            target = str(kwargs["path"]) + (f" (db {db})" if db else "")
        else:
            target = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"
            if issubclass(pool.connection_class, SSLConnection):
                target += " (TLS)"
        return cls(target, timeout_s)

    def limit(self, block_s: float) -> float | None:
        """The deadline of a call that blocks ``block_s`` seconds."""
        if self.timeout_s is None or math.isinf(block_s):
            return None
        return self.timeout_s + block_s


def redacted(url: str) -> str:
    """The URL with every password (before the ``@``, or a ``password`` or
    ``sentinel_password`` query option) replaced by ``***``, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    rest, question, query = rest.partition("?")
    if "@" in rest:
        credentials, _, location = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        rest = f"{user}:***@{location}"
    if query:
        query = re.sub(r"((?:^|&)[^=&]*password=)[^&]*", r"\1***", query)
    return f"{scheme}{sep}{rest}{question}{query}"


def unavailable(
    error: BaseException, target: str, timeout_s: float | None
) -> RedisUnavailableError:
    """The `RedisUnavailableError` to raise for ``error``, naming ``target`` and the cause."""
    return RedisUnavailableError(f"Redis at {target}: {_cause(error, timeout_s)}")


def _cause(error: BaseException, timeout_s: float | None) -> str:
    inner = error.__cause__ or error.__context__
    if isinstance(error, RedisTimeoutError | TimeoutError):
        cause = "no answer" + (f" within {timeout_s:g}s" if timeout_s is not None else "")
        call = _CALL.get()
        last = None if call is None else call.last_error
        if last is not None and last is not error and not isinstance(last, type(error)):
            cause += f" (last error: {_cause(last, timeout_s)})"
        return cause
    if isinstance(error, AuthenticationError):
        return f"authentication failed ({_text(error)})"
    if isinstance(error, NoPermissionError):
        return f"the user's ACL forbids it ({_text(error)})"
    if isinstance(error, OutOfMemoryError):
        return f"Redis is out of memory ({_text(error)})"
    if isinstance(error, ReadOnlyError):
        return f"it is a read-only replica ({_text(error)})"
    if isinstance(error, ConnectionRefusedError) or isinstance(inner, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror) or isinstance(inner, socket.gaierror):
        return f"the host name does not resolve ({_text(error)})"
    return _text(error)


_REPLY_ERRORS: dict[type[ResponseError], type[RedisUnavailableError]] = {}


def _reply_error(error: ResponseError, target: str) -> RedisUnavailableError:
    """``error`` (an error reply: OOM, READONLY, NOPERM...) as a `RedisUnavailableError`
    that is also an instance of redis-py's class for it, so storage code can still tell
    replies apart (``except OutOfMemoryError``) while callers above see one error."""
    kind = type(error)
    if kind not in _REPLY_ERRORS:
        _REPLY_ERRORS[kind] = type(
            RedisUnavailableError.__name__,
            (RedisUnavailableError, kind),
            {"__module__": RedisUnavailableError.__module__},
        )
    return _REPLY_ERRORS[kind](f"Redis at {target}: {_cause(error, None)}")


def _text(error: BaseException) -> str:
    return str(error).strip().rstrip(".") or type(error).__name__


async def _bounded(bounds: _Bounds, block_s: float, call: Awaitable[T]) -> T:
    """Await ``call`` within the bounds, raising `RedisUnavailableError` if it fails."""
    limit = bounds.limit(block_s)
    deadline = None if limit is None else asyncio.get_running_loop().time() + limit
    token = _CALL.set(_Call(deadline))
    try:
        async with asyncio.timeout_at(deadline):
            return await call
    except NoScriptError:
        raise
    except ResponseError as error:
        raise _reply_error(error, bounds.target) from error
    except (RedisError, OSError) as error:
        raise unavailable(error, bounds.target, bounds.timeout_s) from error
    finally:
        _CALL.reset(token)


class RedisClient(Redis):
    """A redis-py client whose every call is bounded and fails with `RedisUnavailableError`.

    Make one with `bounded_client`; its pipelines and pub/sub objects follow the same rules.
    """

    _bounds = _Bounds("Redis", None)
    owns_pool = True
    """False for a pool the application handed in: closing the client leaves it open."""

    @property
    def target(self) -> str:
        """host:port/db (or the socket path) of the server, for messages."""
        return self._bounds.target

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        call = super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        return await _bounded(self._bounds, block_seconds(args), call)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool and self.owns_pool)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = _Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe._bounds = self._bounds
        return pipe

    def pubsub(self, **kwargs: Any) -> PubSub:
        pubsub = _PubSub(self.connection_pool, **kwargs)
        pubsub._bounds = self._bounds
        return pubsub


class _Pipeline(Pipeline):
    _bounds = _Bounds("Redis", None)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        block = max((block_seconds(args) for args, _ in self.command_stack), default=0.0)
        return await _bounded(self._bounds, block, super().execute(raise_on_error))


class _PubSub(PubSub):
    _bounds = _Bounds("Redis", None)

    async def execute_command(self, *args: Any) -> Any:
        return await _bounded(self._bounds, 0.0, super().execute_command(*args))

    async def parse_response(self, block: bool = True, timeout: float = 0) -> Any:  # noqa: ASYNC109
        # Waiting for a message is bounded by the caller's timeout (none: for ever).
        wait = math.inf if block else timeout
        return await _bounded(self._bounds, wait, super().parse_response(block, timeout))


def bounded_client(pool: ConnectionPool, timeout_s: float | None) -> RedisClient:
    """A `RedisClient` on ``pool`` whose every call ends within ``timeout_s`` seconds (plus
    a blocking command's block time; None: no bound)."""
    client = RedisClient(connection_pool=pool)
    client._bounds = _Bounds.of(pool, timeout_s)
    return client
