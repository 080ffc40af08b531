"""Redis Cluster: a queue's client pinned to the primary that serves the queue's slot.

In cluster mode every key of a queue carries one hash tag (``{hostedjobs:<queue>}``, see
`KeyLayout`), so all of them live in one slot, on one primary. The queue's client is therefore
a standalone one (bounded, as every hostedjobs client) connected to that primary: scripts,
``MULTI`` transactions and pub/sub (``PUBLISH`` reaches every node of a cluster) work as on a
single Redis. redis-py's cluster client offers none of that in one piece (its async pipeline
has no transactions, it has no pub/sub), and would only route every call to the same node.

The client follows the slot when it moves:

- a ``MOVED`` reply (the slot migrated, or a replica took over) points it at the new owner,
  and the call is sent again there (the node ran nothing of it);
- ``ASK``, ``TRYAGAIN`` and ``CLUSTERDOWN`` (a migration in progress, a failover under way)
  are waited out within the call's deadline;
- a lost node (refused or dropped connection) makes it ask the cluster which node serves the
  slot now before it reconnects.

URL: ``redis+cluster://[user:password@]host:port[,host:port...][?option=value...]``, or
``rediss+cluster://`` for TLS; the options are redis-py's URL options (``ssl_ca_certs``,
``ssl_cert_reqs``...) and apply to every node. A cluster has database 0 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.cluster import ClusterParser
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoPermissionError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from ..exceptions import ConfigurationError, RedisConfigurationError, RedisUnavailableError
from .client import (
    RedisClient,
    _bounded,
    _Bounds,
    _Pipeline,
    _PubSub,
    block_seconds,
    bounded_client,
    connection_class,
    pool_options,
    retry_policy,
)
from .layout import KeyLayout

__all__ = ["CLUSTER_SCHEMES", "ClusterURL", "is_cluster_url", "open_cluster", "queue_slot"]

T = TypeVar("T")

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
"""The URL schemes of a Redis Cluster (the second with TLS)."""

_REDIRECTS = 20
"""How many redirections one call follows at most (a slot that keeps moving is an error)."""

_RELOCATE_S = 0.1
"""A lookup of the slot's owner this recent is not repeated."""

_USAGE = "use redis+cluster://[user:password@]host:port[,host:port...][?options]"


def is_cluster_url(url: str) -> bool:
    """True if ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    return url.startswith(CLUSTER_SCHEMES)


def queue_slot(queue_name: str) -> int:
    """The cluster slot (0-16383) every key of the queue ``queue_name`` hashes to."""
    return key_slot(KeyLayout(queue_name, hash_tag=True).namespace.encode())


@dataclass(frozen=True, slots=True)
class ClusterURL:
    """A parsed ``redis+cluster://`` URL."""

    seeds: tuple[tuple[str, int], ...]
    """The nodes named in the URL, ``(host, port)``: any of them tells where the slots are."""
    tls: bool
    username: str | None
    password: str | None
    query: str
    """The URL's options, as given (without the ``?``)."""

    @classmethod
    def parse(cls, url: str) -> ClusterURL:
        """Raises `ConfigurationError` saying what is wrong with a malformed URL."""
        scheme, _, rest = url.partition("://")
        shown = _redacted(url)
        if scheme + "://" not in CLUSTER_SCHEMES:
            raise ConfigurationError(f"invalid Redis Cluster URL {shown!r}: {_USAGE}")
        rest, _, query = rest.partition("?")
        rest = rest.partition("#")[0]
        credentials, at, location = rest.rpartition("@")
        hosts, slash, path = location.partition("/")
        if slash and path not in ("", "0"):
            raise ConfigurationError(
                f"invalid Redis Cluster URL {shown!r}: a cluster has database 0 only, "
                f"not {path!r}; drop /{path} from the URL"
            )
        username = password = None
        if at:
            user, colon, secret = credentials.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if colon else None
        seeds = tuple(_address(part.strip(), shown) for part in hosts.split(","))
        return cls(seeds, scheme == "rediss+cluster", username, password, query)

    def node_url(self, host: str, port: int) -> str:
        """A standalone URL of one node, with the cluster URL's credentials and options."""
        credentials = ""
        if self.username or self.password:
            credentials = quote(self.username or "", safe="")
            if self.password is not None:
                credentials += ":" + quote(self.password, safe="")
            credentials += "@"
        location = f"[{host}]" if ":" in host else host
        query = f"?{self.query}" if self.query else ""
        return f"{'rediss' if self.tls else 'redis'}://{credentials}{location}:{port}/0{query}"


def _address(text: str, shown: str) -> tuple[str, int]:
    """``(host, port)`` of one ``host[:port]`` of the URL (``[v6]:port`` too; port 6379 if
    none is given)."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") if bracket else ""
        if not bracket or (rest and not rest.startswith(":")):
            host = ""
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ConfigurationError(
            f"invalid Redis Cluster URL {shown!r}: {text!r} names no host; {_USAGE}"
        )
    try:
        port = int(port_text) if port_text else 6379
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ConfigurationError(
            f"invalid Redis Cluster URL {shown!r}: {port_text!r} in {text!r} is not a port; "
            f"{_USAGE}"
        )
    return host, port


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, location = rest.rpartition("@")
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{location}"


def _text(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


class _SlotOwner:
    """Which primary serves the queue's slot, as far as the client knows."""

    def __init__(self, url: ClusterURL, slot: int, timeout_s: float | None) -> None:
        self.url = url
        self.slot = slot
        self.timeout_s = timeout_s
        self.address: tuple[str, int] = url.seeds[0]
        self.generation = 0
        """Counts the owner's changes: a connection made before the last one is dropped."""
        self.nodes: list[tuple[str, int]] = list(url.seeds)
        """Nodes to ask where the slot is: the URL's, then every node the cluster named."""
        self._lock = asyncio.Lock()
        self._located_at = -math.inf
        self.on_change: Callable[[], None] = lambda: None

    @property
    def target(self) -> str:
        """The node and the cluster, for messages."""
        tls = " (TLS)" if self.url.tls else ""
        seeds = ",".join(map(_text, self.url.seeds))
        return f"{_text(self.address)}/0{tls} (cluster node of slot {self.slot}; seeds {seeds})"

    def moved(self, address: tuple[str, int]) -> None:
        """The slot now lives at ``address``."""
        if address != self.address:
            self.address = address
            self.generation += 1
            if address not in self.nodes:
                self.nodes.append(address)
            self.on_change()

    async def locate(self) -> None:
        """Ask the nodes, in turn, which one serves the slot (``CLUSTER SLOTS``), and follow.

        Raises `RedisUnavailableError` if none answers or none serves the slot,
        `ConfigurationError` if a node is not in cluster mode, and `RedisConfigurationError`
        if the user may not run ``CLUSTER SLOTS``."""
        generation = self.generation
        async with self._lock:
            now = asyncio.get_running_loop().time()
            if self.generation != generation or now - self._located_at < _RELOCATE_S:
                return  # another call looked meanwhile: many calls fail at once on a lost node
            failures: list[str] = []
            # The current owner last: it is the one most likely lost.
            nodes = sorted(self.nodes, key=lambda node: node == self.address)
            for node in nodes:
                try:
                    slots = await self._slots(node)
                except RedisUnavailableError as error:
                    failures.append(str(error))
                    continue
                owner = self._owner(node, slots)
                if owner is None:
                    failures.append(f"{_text(node)} says no node serves slot {self.slot}")
                    continue
                self.moved(owner)
                self._located_at = asyncio.get_running_loop().time()
                return
            raise RedisUnavailableError(
                f"Redis Cluster at {','.join(map(_text, self.url.seeds))}: no node says which "
                f"primary serves slot {self.slot} ({'; '.join(failures)})"
            )

    async def _slots(self, node: tuple[str, int]) -> Any:
        # Not retried: the next node is asked instead.
        pool = _pool(self.url.node_url(*node), self.timeout_s, Retry(NoBackoff(), 0))
        client = bounded_client(pool, self.timeout_s)
        try:
            return await client.execute_command("CLUSTER", "SLOTS")
        except NoPermissionError as error:
            user = self.url.username or "default"
            raise RedisConfigurationError(
                f"Redis at {_text(node)}: the ACL user {user!r} may not run CLUSTER SLOTS, "
                "which a redis+cluster:// client needs to find the node of its queue's slot. "
                f"Grant it on every node with: ACL SETUSER {user} +cluster|slots"
            ) from error
        except ResponseError as error:
            if "cluster support disabled" in str(error):
                raise RedisConfigurationError(
                    f"Redis at {_text(node)} is not in cluster mode: use a redis:// URL for a "
                    "standalone Redis, or name the nodes of a cluster in redis+cluster://"
                ) from error
            raise
        finally:
            await client.aclose(close_connection_pool=True)

    def _owner(self, asked: tuple[str, int], slots: Sequence[Any]) -> tuple[str, int] | None:
        owner = None
        for start, end, primary, *replicas in slots:
            for node in (primary, *replicas):
                # Replicas too: one may be the primary after a failover.
                address = _endpoint(node, asked)
                if address not in self.nodes:
                    self.nodes.append(address)
            if int(start) <= self.slot <= int(end):
                owner = _endpoint(primary, asked)
        return owner


def _endpoint(node: Sequence[Any], asked: tuple[str, int]) -> tuple[str, int]:
    """``(host, port)`` of a node in a ``CLUSTER SLOTS`` reply."""
    host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
    # An empty or "?" endpoint: the node is reached at the address we asked.
    return (host if host not in ("", "?") else asked[0], int(node[1]))


def _following(base: type[AbstractConnection], owner: _SlotOwner) -> type[AbstractConnection]:
    """``base`` connecting to wherever the owner is now, and dropping a connection to a node
    the slot left."""

    class Following(base):  # type: ignore[valid-type,misc]
        _generation = -1

        async def connect(self) -> None:
            if self.is_connected and self._generation != owner.generation:
                await self.disconnect()
            await super().connect()

        async def _connect(self) -> None:
            self.host, self.port = owner.address
            self._generation = owner.generation
            await super()._connect()

    Following.__name__ = f"Following{base.__name__}"
    return Following


def _pool(url: str, timeout_s: float | None, retry: Any, **options: Any) -> ConnectionPool:
    """A pool on one node with the options `open_redis` gives a standalone one."""
    try:
        pool = ConnectionPool.from_url(url, **pool_options(timeout_s, retry=retry), **options)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"invalid Redis Cluster URL option: {exc}") from exc
    pool.connection_class = connection_class(pool.connection_class)
    return pool


_WAIT_S = (0.02, 0.05, 0.1, 0.2, 0.5)


async def _follow(owner: _SlotOwner, call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call``, following the slot on a redirection and again after it."""
    for attempt in range(_REDIRECTS):
        try:
            return await call()
        except MovedError as error:
            if int(error.slot_id) == owner.slot:
                owner.moved((error.host, int(error.port)))
            else:
                # A key of another slot (never one of the queue's): the call is wrong.
                raise ResponseError(str(error)) from error
            last: ResponseError = error
        except (AskError, TryAgainError, ClusterDownError) as error:
            # A migration or a failover under way: wait for it to end.
            await asyncio.sleep(_WAIT_S[min(attempt, len(_WAIT_S) - 1)])
            if isinstance(error, ClusterDownError):
                await owner.locate()
            last = error
    # Plain errors: the bounded client's messages cannot build redirection errors.
    raise RedisConnectionError(f"slot {owner.slot} keeps moving ({last})") from last


class ClusterClient(RedisClient):
    """A `RedisClient` pinned to the primary serving one slot, following it when it moves."""

    _owner: _SlotOwner

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        def send() -> Awaitable[Any]:
            return Redis.execute_command(self, *args, **options)  # type: ignore[no-untyped-call]

        call = _follow(self._owner, send)
        return await _bounded(self._bounds, block_seconds(args), call)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = _ClusterPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe._bounds = self._bounds
        pipe._owner = self._owner
        return pipe

    def pubsub(self, **kwargs: Any) -> PubSub:
        # PUBLISH reaches every node: a subscription on the slot's node hears them all.
        pubsub = _PubSub(self.connection_pool, **kwargs)
        pubsub._bounds = self._bounds
        return pubsub


class _ClusterPipeline(_Pipeline):
    _owner: _SlotOwner

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack = list(self.command_stack)
        block = max((block_seconds(args) for args, _ in stack), default=0.0)

        async def attempt() -> list[Any]:
            self.command_stack = list(stack)  # a failed execute emptied it
            return await Pipeline.execute(self, raise_on_error)

        return await _bounded(self._bounds, block, _follow(self._owner, attempt))


async def open_cluster(url: str, queue_name: str, *, timeout_s: float | None) -> ClusterClient:
    """A client on the primary of the Redis Cluster at ``url`` that serves the slot of the
    queue ``queue_name``, checked with a PING; it follows the slot when it moves.

    Raises `ConfigurationError` for a malformed URL or a node not in cluster mode,
    `RedisConfigurationError` if the ACL user may not run ``CLUSTER SLOTS``, and
    `RedisUnavailableError` if no node named in the URL answers, or none serves the slot.
    """
    parsed = ClusterURL.parse(url)
    owner = _SlotOwner(parsed, queue_slot(queue_name), timeout_s)
    await owner.locate()

    async def relocate(error: BaseException) -> None:
        # A lost node: ask where the slot is before reconnecting (a replica may have taken
        # over). The call's own deadline bounds this; a failure leaves the owner as it was.
        with contextlib.suppress(RedisError, OSError):
            await owner.locate()

    pool = _pool(
        parsed.node_url(*owner.address),
        timeout_s,
        retry_policy(relocate),
        parser_class=ClusterParser,
    )
    pool.connection_class = _following(pool.connection_class, owner)
    client = ClusterClient(connection_pool=pool)
    client._owner = owner
    client._bounds = _Bounds(owner.target, timeout_s)

    def retarget() -> None:
        client._bounds = dataclasses.replace(client._bounds, target=owner.target)

    owner.on_change = retarget
    try:
        await client.ping()
    except RedisUnavailableError:
        await client.aclose(close_connection_pool=True)
        raise
    return client
