"""Opening the Redis connection pool the host, its worker and its scheduler share."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import ssl
from typing import Literal

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import SSLConnection
from redis.exceptions import AuthenticationError

from ..exceptions import ConfigurationError, RedisUnavailableError
from .client import RedisClient, bounded_client, connection_class, pool_options, redacted
from .cluster import ClusterURL, is_cluster_url, open_cluster
from .sentinel import is_sentinel_url, open_sentinel, parse_sentinel_url

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "REDIS_URL_ENV",
    "Durability",
    "adopt_redis",
    "check_redis_client",
    "open_redis",
    "redacted",
    "resolve_redis_url",
]

REDIS_URL_ENV = "HOSTEDJOBS_REDIS_URL"
"""The environment variable consulted when no ``redis_url`` is given."""

DEFAULT_TIMEOUT_S = 5.0
"""How long one Redis call may wait by default (``JobHost(redis_timeout=...)``)."""


Durability = Literal["primary", "replicated"]
"""When a write counts as done: once the primary has it, or once a replica has it too."""


def resolve_redis_url(redis_url: str | None) -> str | None:
    """The explicit URL, else ``$HOSTEDJOBS_REDIS_URL``, else None (the embedded default)."""
    url = redis_url or os.environ.get(REDIS_URL_ENV) or None
    if url is not None and is_sentinel_url(url):
        parse_sentinel_url(url)  # raises ConfigurationError naming what is wrong
    elif url is not None and is_cluster_url(url):
        cluster = ClusterURL.parse(url)  # raises ConfigurationError naming what is wrong
        _check_options(cluster.node_url(*cluster.seeds[0]), redacted(url))
    elif url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            f"invalid Redis URL {redacted(url)!r}: use redis://host:port/db, rediss://..., "
            "unix:///path/to/redis.sock, redis+sentinel://host:port,host:port,.../service or "
            "redis+cluster://host:port,host:port,..."
        )
    elif url is not None:
        _check_options(url, redacted(url))
    return url


def _check_options(url: str, shown: str) -> None:
    """Raise `ConfigurationError` if a connection could not be made from the options of
    ``url`` (an unknown option, a bad value, a TLS option on a plain URL), without
    connecting: redis-py finds those only at the first connection, as a ``TypeError``."""
    try:
        pool = ConnectionPool.from_url(url)
        pool.make_connection()  # type: ignore[no-untyped-call]
    except (ValueError, TypeError) as exc:
        text = str(exc)
        unknown = re.search(r"unexpected keyword argument '([^']+)'", text)
        if unknown is None:
            raise ConfigurationError(f"invalid Redis URL {shown!r}: {text}") from exc
        option = unknown.group(1)
        hint = (
            "TLS options need a rediss:// (or rediss+cluster://) URL"
            if option.startswith("ssl_")
            else "see redis-py's URL options"
        )
        raise ConfigurationError(
            f"invalid Redis URL {shown!r}: unknown option {option!r} for this scheme; {hint}"
        ) from exc
    _check_bytes(pool, f"Redis URL {shown!r}")


def _check_bytes(pool: ConnectionPool, what: str) -> None:
    """Refuse a pool that decodes replies to str: hostedjobs reads ids, records and results
    as bytes (a worker would fail on every claim)."""
    if pool.connection_kwargs.get("decode_responses"):
        raise ConfigurationError(
            f"{what} decodes replies (decode_responses=True); hostedjobs needs the bytes: "
            "give it a client or pool without decode_responses"
        )


async def open_redis(
    url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, queue_name: str | None = None
) -> RedisClient:
    """A client with a connection pool on ``url``, checked with a PING.

    A ``redis+cluster://`` URL needs ``queue_name``: the client is then one on the primary
    serving the queue's slot, following the slot when it moves (see ``cluster``).

    Every call on it waits at most ``timeout_s`` seconds (connection set-up included; a
    blocking command its block time on top) and fails with `RedisUnavailableError`; a
    refused or dropped connection is retried within the call, so a Redis restart of a
    second or two is invisible.

    Raises `RedisUnavailableError` if Redis does not answer the PING, saying why and how to
    fix it (a missing or wrong password, TLS on one side only, nothing listening, an
    unknown host, no answer in time), and `ConfigurationError` for a malformed URL option.

    A ``redis+sentinel://`` URL gives a client on the primary the sentinels name, which
    follows their failovers (see `hostedjobs.storage.sentinel`).
    """
    if is_sentinel_url(url):
        return await open_sentinel(url, timeout_s=timeout_s)
    if is_cluster_url(url):
        if queue_name is None:
            raise ConfigurationError("a redis+cluster:// URL needs open_redis(queue_name=...)")
        return await open_cluster(url, queue_name, timeout_s=timeout_s)
    try:
        connections = ConnectionPool.from_url(
            url, **pool_options(timeout_s, keepalive=not url.startswith("unix://"))
        )
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"invalid Redis URL {redacted(url)!r}: {exc}") from exc
    connections.connection_class = connection_class(connections.connection_class)
    client = bounded_client(connections, timeout_s)
    try:
        await client.ping()
    except RedisUnavailableError as exc:
        await client.aclose(close_connection_pool=True)
        hint = await _hint(connections, exc.__cause__)
        raise RedisUnavailableError(f"cannot connect to {exc}; {hint}") from exc.__cause__
    return client


async def _hint(pool: ConnectionPool, cause: BaseException | None) -> str:
    """How to fix a failed first PING, from its cause (and, where the cause is ambiguous, a
    look at whether the port speaks TLS)."""
    text = str(cause)
    if isinstance(cause, AuthenticationError):
        if "without any password configured" in text or "no password is set" in text:
            return "the URL gives a password but this Redis has none: remove it from the URL"
        if "required" in text.lower():
            return (
                "this Redis requires a password (requirepass or ACL): put it in the URL, "
                "redis://:PASSWORD@host:port/db or redis://USER:PASSWORD@host:port/db"
            )
        return (
            "the user name or password in the URL is wrong, or the user is disabled "
            "(special characters in a password must be %-encoded in a URL)"
        )
    if "DB index is out of range" in text:
        return (
            "the server has fewer databases than the URL's /N asks for, or it is a Redis "
            "Cluster node (database 0 only): use a lower number, or redis+cluster://"
        )
    inner = cause.__cause__ or cause.__context__ if cause is not None else None
    if isinstance(inner, ssl.SSLCertVerificationError):
        return (
            "the server's TLS certificate is not trusted: give its CA with "
            "?ssl_ca_certs=/path/to/ca.pem in the URL"
        )
    if isinstance(inner, ConnectionRefusedError):
        return (
            f"nothing listens there: start Redis, or set {REDIS_URL_ENV} / "
            "JobHost(redis_url=...) to one that runs, or leave both unset to use the embedded "
            "redis-server"
        )
    if isinstance(inner, socket.gaierror):
        return "the host name does not resolve: check the host in the URL"
    kwargs = pool.connection_kwargs
    host, port = kwargs.get("host"), kwargs.get("port")
    if host and port:
        if not issubclass(pool.connection_class, SSLConnection):
            if await _speaks_tls(host, port):
                return "this port speaks TLS: use rediss:// instead of redis://"
        elif not await _speaks_tls(host, port) and await _speaks_plain_redis(host, port):
            return "this port serves plain Redis, not TLS: use redis:// instead of rediss://"
    return (
        "check that Redis listens there and answers (redis-cli -u URL ping); "
        "JobHost(redis_timeout=...) sets how long a call may wait"
    )


_PROBE_S = 2.0


async def _speaks_tls(host: str, port: int) -> bool:
    """True if a TLS handshake with ``host:port`` gets an answer (certificate unchecked)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(_PROBE_S):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
    except (OSError, TimeoutError):  # ssl.SSLError included
        return False
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(_PROBE_S):
            await writer.wait_closed()
    return True


async def _speaks_plain_redis(host: str, port: int) -> bool:
    """True if ``host:port`` answers an inline PING as Redis does (PONG, or an error)."""
    try:
        async with asyncio.timeout(_PROBE_S):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"PING\r\n")
                await writer.drain()
                reply = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    return reply.startswith((b"+", b"-"))


def check_redis_client(given: object) -> None:
    """Raise `ConfigurationError` unless ``given`` is a redis-py asyncio client or pool that
    returns bytes."""
    if not isinstance(given, Redis | ConnectionPool):
        raise ConfigurationError(
            "redis_client must be a redis.asyncio.Redis client or a "
            f"redis.asyncio.ConnectionPool, got {type(given).__name__}"
        )
    _check_bytes(
        given if isinstance(given, ConnectionPool) else given.connection_pool, "redis_client"
    )


async def adopt_redis(given: Redis | ConnectionPool, *, timeout_s: float) -> RedisClient:
    """A bounded client on the pool of ``given`` (a client or pool the application set up:
    its TLS, credential provider, proxy), checked with a PING. The pool stays the
    application's: closing the client does not close it.

    Raises `RedisUnavailableError` if it does not answer the PING.
    """
    pool = given if isinstance(given, ConnectionPool) else given.connection_pool
    client = bounded_client(pool, timeout_s)
    client.owns_pool = False
    await client.ping()
    return client
