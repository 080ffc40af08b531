"""Redis behind Sentinel: ``redis+sentinel://`` URLs, and a client that follows failovers.

The URL names the sentinels and the service (Sentinel's name for the primary it watches)::

    redis+sentinel://[user:password@]host1:port1,host2:port2,host3:port3/service[/db]
    rediss+sentinel://...?ssl_ca_certs=/path/ca.pem     (TLS to the sentinels and Redis)
    ...?sentinel_username=USER&sentinel_password=PASSWORD  (if the sentinels need a password)

The credentials before ``@`` are Redis's; the sentinels' are query options, as redis-py
(``Sentinel(sentinel_kwargs=...)``) and docket spell them.

The client resolves the primary through redis-py's `SentinelConnectionPool`, and follows a
failover at once rather than on the next error. A watcher subscribed to every sentinel's
failover events acts on two of them:

- ``+failover-state-send-slaveof-noone`` (the leading sentinel is about to promote the
  replica): every connection of the pool, in use or idle, is closed and new ones to the old
  primary are refused until the switch (or the failover's abort). A write the old primary
  takes once the replica is promoted is lost at the switch; this notice comes before the
  promotion, so such writes become calls that wait and are retried instead.
- ``+switch-master``: every connection is closed again, and the old primary stays refused
  for a while. Left alone, a connection keeps writing to the demoted primary until Sentinel
  reconfigures it (seconds later, on its next ``INFO`` refresh), and those writes are lost
  at its resync.

Each new connection asks all the sentinels at once which server is the primary, and trusts
the newest answer: the highest configuration epoch, except that an address the pool refuses
or one a sentinel is still failing over away from ranks below any other (the sentinel
leading a failover names the old primary, with the new epoch, until it has reconfigured
every replica, seconds after the others switched). It then checks with ``ROLE`` that it
reached a primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, RedisError, ResponseError

from ..exceptions import ConfigurationError, RedisUnavailableError
from .client import RedisClient, _Bounds, connection_class, pool_options, redacted

__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "SCHEMES",
    "SentinelURL",
    "is_sentinel_url",
    "open_sentinel",
    "parse_sentinel_url",
]

logger = logging.getLogger("hostedjobs.redis")

SCHEMES = ("redis+sentinel", "rediss+sentinel")
"""The URL schemes of a Redis behind Sentinel (``rediss+``: TLS)."""

DEFAULT_SENTINEL_PORT = 26379
"""The port of a sentinel the URL names without one."""

_SSL_OPTIONS = {
    "ssl_ca_certs": str,
    "ssl_ca_path": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_cert_reqs": str,
    "ssl_check_hostname": bool,
}
_OPTIONS: dict[str, type] = {
    "sentinel_username": str,
    "sentinel_password": str,
    "max_connections": int,
    **_SSL_OPTIONS,
}
"""The query options a Sentinel URL takes, and their types."""


def is_sentinel_url(url: str) -> bool:
    """True if ``url`` is a ``redis+sentinel://`` or ``rediss+sentinel://`` URL."""
    return url.partition("://")[0].lower() in SCHEMES


@dataclass(frozen=True, slots=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    """``(host, port)`` of each sentinel, in the URL's order."""
    service: str
    """The name the sentinels know the primary by (``sentinel monitor NAME ...``)."""
    db: int = 0
    tls: bool = False
    redis_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Connection options for the primary: username, password, ssl_*, max_connections."""
    sentinel_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Connection options for the sentinels: username, password, ssl_*."""


def _malformed(url: str, why: str) -> ConfigurationError:
    return ConfigurationError(
        f"invalid Sentinel URL {redacted(url)!r}: {why}; use "
        "redis+sentinel://[user:password@]host1:port1,host2:port2/service[/db]"
    )


def _option(url: str, name: str, value: str, kind: type) -> Any:
    if kind is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise _malformed(url, f"option {name} must be true or false, not {value!r}")
    if kind is int:
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number <= 0:
            raise _malformed(url, f"option {name} must be a positive whole number, not {value!r}")
        return number
    return value


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse a ``redis+sentinel://`` URL (see the module docstring for its shape).

    Raises `ConfigurationError`, naming what is wrong (never a password), for a URL without
    a sentinel or a service name, a sentinel without a host or with a bad port, a database
    that is not a whole number >= 0, an unknown or malformed query option.
    """
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in SCHEMES:
        raise _malformed(url, f"the scheme must be one of {', '.join(SCHEMES)}")
    # urlsplit reads only the first host of a list: the location is split by hand.
    location, _, query = rest.partition("?")
    location, _, fragment = location.partition("#")
    if fragment or "#" in query:
        raise _malformed(url, "a URL fragment (#...) means nothing here")
    netloc, slash, path = location.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    sentinels: list[tuple[str, int]] = []
    for member in hosts.split(","):
        member = member.strip()
        if not member:
            continue
        try:
            parts = urlsplit(f"//{member}")
            host, port = parts.hostname, parts.port
        except ValueError:
            raise _malformed(url, f"sentinel {member!r} has a bad port (1-65535)") from None
        if not host:
            raise _malformed(url, f"sentinel {member!r} has no host")
        if port == 0:
            raise _malformed(url, f"sentinel {member!r} has a bad port (1-65535)")
        sentinels.append((host, port or DEFAULT_SENTINEL_PORT))
    if not sentinels:
        raise _malformed(url, "it names no sentinel (host:port, comma-separated)")
    segments = [unquote(segment) for segment in path.split("/")] if slash else []
    if not segments or not segments[0]:
        raise _malformed(url, "it names no service (the name in 'sentinel monitor NAME ...')")
    service, *tail = segments
    if len(tail) > 1 or (tail and not tail[0]):
        raise _malformed(url, "after the service name comes only the database (/service/db)")
    db = 0
    if tail:
        if not tail[0].isdigit():
            raise _malformed(url, f"the database must be a whole number >= 0, not {tail[0]!r}")
        db = int(tail[0])
    tls = scheme.lower() == "rediss+sentinel"
    redis_options: dict[str, Any] = {}
    sentinel_options: dict[str, Any] = {}
    if at:
        user, colon, password = credentials.partition(":")
        if user:
            redis_options["username"] = unquote(user)
        if colon and password:
            redis_options["password"] = unquote(password)
    for name, values in parse_qs(query, keep_blank_values=True).items():
        if name not in _OPTIONS:
            raise _malformed(url, f"unknown option {name!r} (known: {', '.join(sorted(_OPTIONS))})")
        if len(values) > 1:
            raise _malformed(url, f"option {name} is given {len(values)} times")
        value = _option(url, name, values[0], _OPTIONS[name])
        if name.startswith("ssl_") and not tls:
            raise _malformed(url, f"option {name} needs TLS: use rediss+sentinel://")
        if name.startswith("sentinel_"):
            sentinel_options[name.removeprefix("sentinel_")] = value
        elif name.startswith("ssl_"):
            # One TLS profile for the whole deployment (a private CA covers both).
            redis_options[name] = sentinel_options[name] = value
        else:
            redis_options[name] = value
    return SentinelURL(
        sentinels=tuple(sentinels),
        service=service,
        db=db,
        tls=tls,
        redis_options=redis_options,
        sentinel_options=sentinel_options,
    )


# -- the client ------------------------------------------------------------------------------


class _Sentinels(Sentinel):
    """redis-py's Sentinel manager, asking every sentinel at once and trusting the newest
    configuration (the highest ``config-epoch``): after a failover, a sentinel that has not
    yet heard of it names the demoted primary."""

    def __init__(self, parsed: SentinelURL, timeout_s: float) -> None:
        # No socket_timeout: each query is bounded by asyncio.timeout (see open_redis).
        super().__init__(  # type: ignore[no-untyped-call]
            list(parsed.sentinels),
            sentinel_kwargs={
                "socket_connect_timeout": timeout_s,
                "ssl": parsed.tls,
                "lib_name": None,
                "lib_version": None,
                **parsed.sentinel_options,
            },
        )
        self.service = parsed.service
        self.timeout_s = timeout_s

    @staticmethod
    def address(sentinel: Redis) -> str:
        kwargs = sentinel.connection_pool.connection_kwargs
        return f"{kwargs['host']}:{kwargs['port']}"

    async def ask(self, sentinel: Redis) -> dict[str, Any] | BaseException:
        """``SENTINEL MASTERS`` of one sentinel, or the error it failed with."""
        try:
            async with asyncio.timeout(self.timeout_s):
                masters = await sentinel.sentinel_masters()  # type: ignore[no-untyped-call]
        except (RedisError, OSError, TimeoutError) as error:
            return error
        return masters if isinstance(masters, dict) else {}

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        answers = await asyncio.gather(*(self.ask(sentinel) for sentinel in self.sentinels))
        best: tuple[tuple[bool, bool, int], tuple[str, int]] | None = None
        for masters in answers:
            if isinstance(masters, BaseException):
                continue
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):
                address = (str(state["ip"]), int(state["port"]))
                # The sentinel leading a failover names the old primary, with the new
                # epoch, until it has reconfigured every replica (seconds after the others
                # have switched): an address being failed over away from, or one the pool
                # is avoiding, ranks below any other.
                rank = (
                    not self.avoid(address),
                    "failover_in_progress" not in str(state.get("flags", "")),
                    int(state.get("config-epoch", 0)),
                )
                if best is None or rank > best[0]:
                    best = (rank, address)
        if best is None:
            raise MasterNotFoundError(self.explain(service_name, answers))
        return best[1]

    def avoid(self, address: tuple[str, int]) -> bool:
        """True for a primary being demoted (the pool replaces this)."""
        return False

    def explain(self, service: str, answers: list[dict[str, Any] | BaseException]) -> str:
        """Why no sentinel named a primary for ``service``."""
        failed = [
            f"{self.address(sentinel)}: {_text(answer)}"
            for sentinel, answer in zip(self.sentinels, answers, strict=True)
            if isinstance(answer, BaseException)
        ]
        answered = [answer for answer in answers if not isinstance(answer, BaseException)]
        if not answered:
            return f"no sentinel answers ({'; '.join(failed)})"
        known = sorted({name for masters in answered for name in masters})
        if not any(service in masters for masters in answered):
            return (
                f"the sentinels do not know service {service!r} (they watch: "
                f"{', '.join(known) or 'nothing'}); put the name of 'sentinel monitor NAME ...' "
                "in the URL"
            )
        return (
            f"the sentinels know service {service!r} but report no primary for it that is up "
            "(it is down, or a failover is under way)"
        )

    async def aclose(self) -> None:
        for sentinel in self.sentinels:
            with contextlib.suppress(RedisError, OSError):
                await sentinel.aclose()


def _decoded(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _text(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return str(error).strip().rstrip(".") or type(error).__name__


class _PrimaryConnection(SentinelManagedConnection):
    """A connection to the service's current primary: it refuses a primary being demoted,
    checks with ``ROLE`` that it reached a primary, and gives up a connection made while the
    pool was following a failover."""

    connection_pool: _PrimaryPool

    async def connect_to(self, address: tuple[str, int]) -> None:
        pool = self.connection_pool
        # A primary being demoted: wait (within the call's deadline) for the switch, then ask
        # again, rather than fail and back off past the moment the new primary is named.
        if pool.fenced(address):
            await pool.settled()
            address = await pool.get_master_address()  # type: ignore[no-untyped-call]
            if pool.fenced(address):
                raise RedisConnectionError(
                    f"Sentinel is failing service {pool.service_name!r} over: {address[0]}:"
                    f"{address[1]} is being demoted, waiting for the new primary"
                )
        switches = pool.switches
        await super().connect_to(address)  # type: ignore[no-untyped-call]
        if pool.switches != switches:
            await self.disconnect()
            raise RedisConnectionError("the primary changed while connecting")

    async def on_connect(self) -> None:
        """The handshake, then the ``ROLE`` check: here, before the connection's connect
        callbacks run, since a pub/sub connection's callback re-subscribes without reading
        the replies, which the check would otherwise read as the role."""
        await super().on_connect()
        try:
            await self.send_command("ROLE", check_health=False)
            role = await self.read_response()
        except NoPermissionError:
            return  # An ACL user without ROLE: the pool's READONLY handling remains.
        if not isinstance(role, list) or not role or role[0] not in (b"master", "master"):
            name = role[0] if isinstance(role, list) and role else role
            # connect() disconnects on an error raised here.
            raise RedisConnectionError(
                f"{self.host}:{self.port} is no longer a primary (ROLE: {name!r})"
            )


class _PrimarySSLConnection(_PrimaryConnection, SSLConnection):
    pass


_FENCE_S = 30.0
"""How long the pool refuses a primary that Sentinel demoted or started to demote (unless
the failover is aborted, or a later one makes it the primary again): long enough for
Sentinel to make it a replica, which ``ROLE`` then tells."""


class _PrimaryPool(SentinelConnectionPool):
    """The pool of connections to the primary of one service."""

    sentinel_manager: _Sentinels
    master_address: tuple[str, int] | None

    def __init__(self, parsed: SentinelURL, sentinels: _Sentinels, **options: Any) -> None:
        super().__init__(parsed.service, sentinels, **options)  # type: ignore[no-untyped-call]
        sentinels.avoid = self.fenced  # type: ignore[method-assign]
        self.switches = 0
        """How many times the pool dropped its connections for a failover."""
        self._fence: tuple[tuple[str, int], float] | None = None
        """The primary being demoted, and until when (loop time) it is refused."""
        self._settled = asyncio.Event()
        """Set when the failover that fenced a primary ends."""

    async def settled(self) -> None:
        """Wait until the failover that fenced a primary ends (switch, abort or `_FENCE_S`)."""
        if self._fence is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(self._fence[1]):
                await self._settled.wait()

    def fenced(self, address: tuple[str, int]) -> bool:
        """True while ``address`` is a primary that Sentinel is demoting."""
        if self._fence is None:
            return False
        fenced, until = self._fence
        if asyncio.get_running_loop().time() >= until:
            self._fence = None
            return False
        return fenced == (str(address[0]), int(address[1]))

    async def fence(self, old: tuple[str, int], promoted: tuple[str, int]) -> None:
        """Sentinel is about to promote ``promoted``: stop writing to ``old`` (its writes
        from now on would be lost at the switch) until the switch, or the failover's abort."""
        if self._fence is not None and self._fence[0] == old:
            return
        self._fence = (old, asyncio.get_running_loop().time() + _FENCE_S)
        self._settled = asyncio.Event()
        logger.warning(
            "Redis Sentinel is failing service %r over from %s:%s to %s:%s: every connection "
            "to the old primary is closed; calls wait for the new one",
            self.service_name,
            *old,
            *promoted,
        )
        await self._drop()

    def unfence(self, old: tuple[str, int]) -> None:
        """The failover away from ``old`` was aborted: it is the primary again."""
        if self._fence is not None and self._fence[0] == old:
            self._fence = None
            self._settled.set()
            logger.warning(
                "Redis Sentinel aborted the failover of service %r: %s:%s stays its primary",
                self.service_name,
                *old,
            )

    async def follow(self, old: tuple[str, int], new: tuple[str, int]) -> None:
        """The service moved to ``new``: drop every connection (in use too), each
        reconnects to the new primary; ``old`` stays refused until Sentinel has made it a
        replica (`_FENCE_S`), though a sentinel may still name it."""
        self.master_address = new
        self._fence = (old, asyncio.get_running_loop().time() + _FENCE_S)
        self._settled.set()
        logger.warning(
            "Redis Sentinel moved service %r from %s:%s to %s:%s: every connection to the old "
            "primary is closed; calls in flight are retried on the new one",
            self.service_name,
            *old,
            *new,
        )
        await self._drop()

    async def _drop(self) -> None:
        self.switches += 1
        await asyncio.gather(
            *(
                connection.disconnect(nowait=True)
                for connection in (*self._available_connections, *self._in_use_connections)
            ),
            return_exceptions=True,
        )


_SWITCH = "+switch-master"
"""Published when a sentinel moves a service to a new primary:
``service old-host old-port new-host new-port``."""
_PROMOTING = "+failover-state-send-slaveof-noone"
"""Published by the sentinel leading a failover just before it promotes the replica:
``slave name host port @ service old-host old-port``."""
_ABORTS = (
    "-failover-abort-not-elected",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
)
"""Published when a failover stops without a switch: ``master service host port``."""


class SentinelClient(RedisClient):
    """A `RedisClient` on the primary of a Sentinel service, following its failovers.

    Its watcher tasks (one subscription to the failover events per sentinel) end with the
    client: ``aclose()`` stops them before closing the pool.
    """

    connection_pool: _PrimaryPool
    _watchers: tuple[asyncio.Task[None], ...] = ()

    @property
    def target(self) -> str:
        """``sentinel service 'NAME' (primary host:port, db N)``, for messages."""
        pool = self.connection_pool
        where = pool.master_address
        primary = f"primary {where[0]}:{where[1]}" if where else "primary not yet resolved"
        db = int(pool.connection_kwargs.get("db") or 0)
        tls = ", TLS" if issubclass(pool.connection_class, SSLConnection) else ""
        return f"sentinel service {pool.service_name!r} ({primary}, db {db}{tls})"

    def start_watchers(self) -> None:
        """Start following the failover events of every sentinel."""
        manager = self.connection_pool.sentinel_manager
        loop = asyncio.get_running_loop()
        self._watchers = tuple(
            loop.create_task(
                self._watch(sentinel), name=f"hostedjobs:sentinel {manager.address(sentinel)}"
            )
            for sentinel in manager.sentinels
        )

    async def _watch(self, sentinel: Redis) -> None:
        """Follow the failovers one sentinel announces; resubscribe if it goes away."""
        pool = self.connection_pool
        manager = pool.sentinel_manager
        backoff = 0.1
        while True:
            pubsub = sentinel.pubsub()
            try:
                async with asyncio.timeout(manager.timeout_s):
                    await pubsub.subscribe(_SWITCH, _PROMOTING, *_ABORTS)
                backoff = 0.1
                # A switch may have happened while this sentinel was out of reach.
                with contextlib.suppress(MasterNotFoundError):
                    await self._moved(await manager.discover_master(pool.service_name))
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                    if message is not None:
                        await self._event(_decoded(message["channel"]), message["data"])
            except (RedisError, OSError, TimeoutError, ValueError):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    async with asyncio.timeout(manager.timeout_s):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _event(self, channel: str, data: Any) -> None:
        """Act on one event a sentinel published (see `_SWITCH`, `_PROMOTING`, `_ABORTS`)."""
        pool = self.connection_pool
        fields = _decoded(data).split()
        if channel == _SWITCH and len(fields) == 5 and fields[0] == pool.service_name:
            await self._moved((fields[3], int(fields[4])))
        elif channel == _PROMOTING and len(fields) == 8 and fields[5] == pool.service_name:
            await pool.fence((fields[6], int(fields[7])), (fields[2], int(fields[3])))
        elif channel in _ABORTS and len(fields) == 4 and fields[1] == pool.service_name:
            pool.unfence((fields[2], int(fields[3])))

    async def _moved(self, primary: tuple[str, int]) -> None:
        pool = self.connection_pool
        old = pool.master_address
        if old is not None and (str(old[0]), int(old[1])) != primary:
            await pool.follow((str(old[0]), int(old[1])), primary)
            self._bounds = dataclasses.replace(self._bounds, target=self.target)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        watchers, self._watchers = self._watchers, ()
        for watcher in watchers:
            watcher.cancel()
        if watchers:
            await asyncio.gather(*watchers, return_exceptions=True)
        await super().aclose(close_connection_pool)
        if close_connection_pool or (
            close_connection_pool is None and self.auto_close_connection_pool
        ):
            await self.connection_pool.sentinel_manager.aclose()


async def open_sentinel(url: str, *, timeout_s: float) -> SentinelClient:
    """A client on the primary of the Sentinel service ``url`` names, following failovers.

    Raises `ConfigurationError` for a malformed URL, `RedisUnavailableError` if no sentinel
    answers (each one's error given), if the sentinels do not know the service (the ones
    they watch given), or if the primary does not answer.
    """
    parsed = parse_sentinel_url(url)
    sentinels = _Sentinels(parsed, timeout_s)
    options = dict(parsed.redis_options)
    ssl = {name: options.pop(name) for name in list(options) if name.startswith("ssl_")}
    pool = _PrimaryPool(
        parsed,
        sentinels,
        connection_class=connection_class(
            _PrimarySSLConnection if parsed.tls else _PrimaryConnection
        ),
        db=parsed.db,
        **pool_options(timeout_s),
        **ssl,
        **options,
    )
    client = SentinelClient(connection_pool=pool)
    client._bounds = _Bounds(client.target, timeout_s)
    where = ", ".join(f"{host}:{port}" for host, port in parsed.sentinels)
    try:
        pool.master_address = await sentinels.discover_master(parsed.service)
    except MasterNotFoundError as error:
        await client.aclose(close_connection_pool=True)
        raise RedisUnavailableError(
            f"cannot find the primary of Sentinel service {parsed.service!r} (sentinels "
            f"{where}): {error}"
        ) from error
    client._bounds = dataclasses.replace(client._bounds, target=client.target)
    try:
        await client.ping()
    except RedisUnavailableError as exc:
        await client.aclose(close_connection_pool=True)
        raise RedisUnavailableError(f"cannot connect to {exc}") from exc.__cause__
    except ResponseError as exc:  # pragma: no cover - ping answers PONG or fails
        await client.aclose(close_connection_pool=True)
        raise RedisUnavailableError(f"{client.target}: {exc}") from exc
    client.start_watchers()
    return client
