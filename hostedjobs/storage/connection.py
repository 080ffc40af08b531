"""Opening the Redis connection pool the host, its worker and its scheduler share."""

from __future__ import annotations

import os
from typing import Any

import hiredis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..exceptions import ConfigurationError, RedisUnavailableError

__all__ = ["REDIS_URL_ENV", "open_redis", "redacted", "resolve_redis_url"]

REDIS_URL_ENV = "HOSTEDJOBS_REDIS_URL"
"""The environment variable consulted when no ``redis_url`` is given."""


def resolve_redis_url(redis_url: str | None) -> str | None:
    """The explicit URL, else ``$HOSTEDJOBS_REDIS_URL``, else None (the embedded default)."""
    url = redis_url or os.environ.get(REDIS_URL_ENV) or None
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            f"invalid Redis URL {redacted(url)!r}: use redis://host:port/db, rediss://... or "
            "unix:///path/to/redis.sock"
        )
    return url


def redacted(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, location = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{location}"


class _HiredisPacking:
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
            packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
            return packed


_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _packing_with_hiredis(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    if cls not in _PACKING:
        _PACKING[cls] = type(f"Hiredis{cls.__name__}", (_HiredisPacking, cls), {})
    return _PACKING[cls]


async def open_redis(url: str) -> Redis:
    """A client with a connection pool on ``url`` that rides out short outages.

    Commands are retried a few times with backoff on connection errors, so a Redis restart
    of a second or two is invisible to runs finishing meanwhile. Raises
    `RedisUnavailableError` if Redis does not answer now.
    """
    connections = ConnectionPool.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=5),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, OSError],
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=30,
    )
    # The URL picks the connection class (TCP, TLS, Unix socket); each packs with hiredis.
    connections.connection_class = _packing_with_hiredis(connections.connection_class)
    pool = Redis(connection_pool=connections)
    try:
        await pool.ping()
    except (RedisError, OSError) as exc:
        await pool.aclose(close_connection_pool=True)
        raise RedisUnavailableError(
            f"cannot reach Redis at {redacted(url)} ({exc}); start Redis there, or set "
            f"{REDIS_URL_ENV} / JobHost(redis_url=...) to one that runs, or leave both unset "
            "to use the embedded redis-server"
        ) from exc
    return pool
